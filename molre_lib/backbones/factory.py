"""The factory beside the registry (like timm's ``_factory.py``): registry entry -> model with a head.

``create_model`` resolves weights offline (``weights.py``), runs the entry function and wraps the encoder with a
classifier head (``model.py`` for 3D encoders, ``slice_encoder.py`` for 2D ones).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Union

import torch

from .model import HeadCTModel, VolumeModel
from .registry import BuiltEncoder, get_spec
from .slice_encoder import SliceEncoder3D
from .weights import resolve_weights


def build_encoder(name: str, weights: Optional[Path] = None, reduced: bool = False, **overrides: Any) -> BuiltEncoder:
    """Run the entry function (no weight resolution: ``weights`` is already a local path or None)."""
    spec = get_spec(name)
    assert spec.builder is not None
    return spec.builder(weights=weights, reduced=reduced, **overrides)


def count_params_meta(name: str, reduced: bool = False, **overrides: Any) -> int:
    """Encoder parameter count of a build on the ``meta`` device (no memory, no weights)."""
    with torch.device("meta"):
        built = build_encoder(name, None, reduced, **overrides)
    return sum(p.numel() for p in built.module.parameters())


def create_model(
    name: str,
    num_classes: int = 75,
    weights: Union[str, Path, None] = None,
    pretrained: bool = False,
    reduced: bool = False,
    **overrides: Any,
) -> HeadCTModel:
    """Build backbone ``name`` of the registry with a classifier head -> :class:`HeadCTModel`.

    The model maps an image ``(B, C, D, H, W)`` to logits ``(B, num_classes)``; ``.encoder`` is the foundation
    model (where adapters go), ``.head`` the classifier, ``.spec`` the :class:`BackboneSpec`. Nothing is ever
    downloaded.

    Args:
        name: a registry name (``molre backbones`` lists them), e.g. ``"dinov3_vitb16"``, ``"phantom_vit"``.
        num_classes: outputs of the head (the 75 findings by default).
        weights: a local file or folder in the official format (implies ``pretrained``).
        pretrained: without ``weights``, look in the Hugging Face cache (offline), then
            ``$MOLRE_WEIGHTS_DIR/<name>/`` (and, for the demo backbones, ``$MOLRE_CACHE_DIR/<name>/``);
            ``False`` gives random initialisation.
        reduced: a toy-size copy for tests (a few narrow blocks, small input).
        **overrides: ``aggregator`` (``mean`` / ``max`` / ``attention`` / ``transformer`` over slices),
            ``chunk_size``, ``image_size``, ``checkpoint``, ``agg_heads``, ``agg_layers`` (2D wrapper),
            ``head_dropout``; anything else goes to the entry function (e.g. ``in_chans``, ``drop_path_rate``).

    Returns:
        The model, on the CPU.

    Raises:
        MissingWeightsError: ``pretrained=True`` and no weights were found; the message names the files, the
            hub id to fetch them from on a connected machine and the folder to copy them to.
        KeyError: ``name`` is not registered (the message lists the registered names).
        ValueError: a 2D-wrapper option (``aggregator``, ``chunk_size``, ...) given for a 3D backbone.

    Example:
        ```python
        model = create_model("phantom_vit")                     # random init
        logits = model(torch.rand(2, 3, 4, 64, 64))              # (2, 75)
        ```
    """
    spec = get_spec(name)
    wrapper_keys = {"aggregator", "chunk_size", "image_size", "head_dropout", "agg_heads", "agg_layers", "checkpoint"}
    wrapper_kw = {k: overrides.pop(k) for k in list(overrides) if k in wrapper_keys}
    path = resolve_weights(spec, weights) if (weights is not None or pretrained) else None
    built = build_encoder(name, path, reduced, **overrides)
    model: HeadCTModel
    if spec.dims == 2:
        model = SliceEncoder3D(built, spec, num_classes=num_classes, **wrapper_kw)
    else:
        unknown = set(wrapper_kw) - {"head_dropout"}
        if unknown:
            raise ValueError(f"{name} is a 3D backbone; options {sorted(unknown)} apply to 2D backbones only")
        model = VolumeModel(built, spec, num_classes=num_classes, **wrapper_kw)
    model.weights_path = path
    return model
