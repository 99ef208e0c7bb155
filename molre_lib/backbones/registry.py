"""Backbone registry in the timm style: one decorated function per foundation model.

An entry is a function ``fn(weights: Path | None, reduced: bool, **overrides) -> BuiltEncoder`` that builds
the exact architecture (``reduced=True``: the same classes at toy size, for tests) and, when ``weights`` is a
local file or folder, loads it in the model's official format. Its :class:`BackboneSpec` says everything a
notebook needs without building the model: input, adapter targets, Grad-CAM layer, weight source.
``create_model`` resolves weights offline (``weights.py``) and wraps the encoder with a classifier head
(``model.py`` for 3D encoders, ``slice_encoder.py`` for 2D ones).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional, Sequence, Union

import torch
from torch import nn

if TYPE_CHECKING:
    from .model import HeadCTModel

FAMILIES = ("general-2D", "medical-2D", "ct-3D", "demo")


@dataclass
class BuiltEncoder:
    """What an entry function returns: the foundation model and how to read it."""

    module: nn.Module = field(metadata={"help": "the foundation model (adapters go in here)"})
    feature_dim: int = field(metadata={"help": "size of the pooled feature vector"})
    cam_layer: str = field(metadata={"help": "module name inside `module` whose output Grad-CAM uses"})
    input_size: Optional[tuple[int, ...]] = field(
        default=None, metadata={"help": "spatial size the module requires (inputs are resized); None = any size"})
    patch_size: Optional[tuple[int, ...]] = field(
        default=None, metadata={"help": "token patch size of this build when it differs from the spec's"})


@dataclass
class BackboneSpec:
    """Static description of a registry entry (full-size values)."""

    name: str = field(metadata={"help": "registry name, e.g. 'dinov3_vitb16'"})
    family: str = field(metadata={"help": "one of general-2D, medical-2D, ct-3D, demo"})
    dims: int = field(metadata={"help": "2: per-slice encoder run by SliceEncoder3D; 3: volume encoder"})
    n_params: int = field(metadata={"help": "encoder parameters of the full-size build, counted on the meta device"})
    published_params: Optional[float] = field(
        metadata={"help": "published parameter count (None where no figure is published)"})
    published_source: str = field(metadata={"help": "where the published count comes from"})
    feature_dim: int = field(metadata={"help": "pooled feature size of the full-size encoder"})
    in_chans: int = field(metadata={"help": "input channels the weights expect (3 CT windows, or 1 for HU)"})
    input_size: tuple[int, ...] = field(metadata={"help": "slice (H, W) for 2D, volume (D, H, W) for 3D"})
    windows: tuple[tuple[float, float], ...] = field(
        metadata={"help": "(level, width) HU windows to stack as channels, each mapped to [0, 1]"})
    normalize: str = field(metadata={"help": "'meanstd' (fixed mean/std on [0,1] channels) or 'zscore' (per scan)"})
    mean: tuple[float, ...] = field(metadata={"help": "per-channel mean for 'meanstd'"})
    std: tuple[float, ...] = field(metadata={"help": "per-channel std for 'meanstd'"})
    spacing: Optional[tuple[float, float, float]] = field(
        metadata={"help": "voxel spacing (dz, dy, dx) mm the weights were trained at, if any"})
    target_modules: Union[str, list[str]] = field(
        metadata={"help": "default adapter targets (PEFT semantics: str = full-match regex, list = names/suffixes)"})
    cam_layer: str = field(metadata={"help": "Grad-CAM module name inside HeadCTModel (full-size build)"})
    num_prefix_tokens: int = field(metadata={"help": "class/register tokens before the patch tokens (0 for CNNs)"})
    patch_size: tuple[int, ...] = field(metadata={"help": "patch size per spatial axis (token -> grid reshape)"})
    hub_id: Optional[str] = field(metadata={"help": "Hugging Face hub repository of the official weights"})
    weight_files: tuple[str, ...] = field(metadata={"help": "files the official weights consist of"})
    weight_format: str = field(metadata={"help": "timm | transformers | open_clip | ct-fm | merlin | medicalnet | ..."})
    reduced_input_size: tuple[int, ...] = field(metadata={"help": "input size of the reduced (test) build"})
    description: str = field(default="", metadata={"help": "one line for the table"})
    source: str = field(default="", metadata={"help": "paper / repository of the weights"})
    builder: Optional[Callable[..., BuiltEncoder]] = field(default=None, repr=False,
                                                          metadata={"help": "the registered entry function"})
    features: Optional[Callable[[nn.Module, torch.Tensor], torch.Tensor]] = field(
        default=None, repr=False, metadata={"help": "encoder, input -> pooled features (N, F)"})

    def patch_grid(self, size: Sequence[int]) -> tuple[int, ...]:
        """Token grid of an input of spatial ``size`` (for the token -> grid reshape of CAMs)."""
        if len(size) != len(self.patch_size):
            raise ValueError(f"{self.name}: size {tuple(size)} has {len(size)} axes, patch_size {self.patch_size}")
        return tuple(s // p for s, p in zip(size, self.patch_size))

    def to_row(self) -> dict[str, Any]:
        """Plain fields for tables / JSON (callables left out)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in ("builder", "features")}


_REGISTRY: dict[str, BackboneSpec] = {}


def register_backbone(spec: BackboneSpec) -> Callable[[Callable[..., BuiltEncoder]], Callable[..., BuiltEncoder]]:
    """Decorator: ``@register_backbone(BackboneSpec(...))`` above an entry function."""
    if spec.family not in FAMILIES:
        raise ValueError(f"backbone {spec.name!r}: family {spec.family!r} is not one of {FAMILIES}")
    if spec.dims not in (2, 3):
        raise ValueError(f"backbone {spec.name!r}: dims must be 2 or 3, got {spec.dims}")

    def wrap(fn: Callable[..., BuiltEncoder]) -> Callable[..., BuiltEncoder]:
        if spec.name in _REGISTRY:
            raise ValueError(f"backbone {spec.name!r} is registered twice")
        spec.builder = fn
        if spec.features is None:
            raise ValueError(f"backbone {spec.name!r}: spec.features (encoder -> pooled features) is required")
        _REGISTRY[spec.name] = spec
        return fn

    return wrap


def list_backbones(family: Optional[str] = None) -> list[BackboneSpec]:
    """Registered specs, in registration order, optionally of one family."""
    return [s for s in _REGISTRY.values() if family is None or s.family == family]


def get_spec(name: str) -> BackboneSpec:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown backbone {name!r}; registered: {', '.join(_REGISTRY)}") from None


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
) -> "HeadCTModel":
    """Build backbone ``name`` with a classifier head -> :class:`HeadCTModel` (logits (B, num_classes)).

    ``weights``: a local file or folder in the official format (implies pretrained). ``pretrained=True`` without
    ``weights`` looks in the Hugging Face cache (offline) and then ``$MOLRE_WEIGHTS_DIR/<name>/``, and raises
    :class:`MissingWeightsError` saying what to put where. ``reduced`` builds a toy-size copy for tests.
    Overrides: ``aggregator``, ``chunk_size``, ``image_size``, ``checkpoint``, ``agg_heads``, ``agg_layers`` (2D
    wrapper), ``head_dropout``; anything else goes to the entry function (e.g. ``in_chans``, ``drop_path_rate``).
    """
    from .model import HeadCTModel, VolumeModel
    from .slice_encoder import SliceEncoder3D
    from .weights import resolve_weights

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
