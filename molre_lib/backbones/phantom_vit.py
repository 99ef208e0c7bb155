"""phantom_vit: the demo backbone, a small timm ViT pretrained here without finding labels.

It plays the foundation model in the demo: ``molre pretrain-demo`` (``phantom_pretrain.py``) trains it on
phantom slices with label-free objectives and caches it at ``$MOLRE_CACHE_DIR/phantom_vit/``
(``config.json`` + ``model.safetensors``); ``create_model("phantom_vit", pretrained=True)`` loads that cache.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

from .registry import BackboneSpec, BuiltEncoder, get_spec, register_backbone
from molre_lib.data.windowing import HEAD_CT_WINDOWS
from .vit2d import _check_overrides, timm_pooled
from .weights import load_state_dict_file, load_strict, weight_file

PHANTOM_VIT_ARCH: dict[str, Any] = dict(img_size=64, patch_size=8, in_chans=3, embed_dim=192, depth=4, num_heads=3,
                                        mlp_ratio=4.0, class_token=True, global_pool="token", num_classes=0)
REDUCED_ARCH: dict[str, Any] = dict(PHANTOM_VIT_ARCH, img_size=32, embed_dim=32, depth=2, num_heads=2)


def build_phantom_vit(arch: dict[str, Any]):
    """The timm VisionTransformer of the demo backbone (also used by the pretraining script)."""
    from timm.models.vision_transformer import VisionTransformer

    return VisionTransformer(**arch)


@register_backbone(BackboneSpec(
    name="phantom_vit", family="demo", dims=2, n_params=1_829_568, published_params=None,
    published_source="built here (ViT 64 px, patch 8, width 192, depth 4, 3 heads); not a published model",
    feature_dim=192, in_chans=3, input_size=(64, 64), windows=HEAD_CT_WINDOWS, normalize="none", mean=(0.0,),
    std=(1.0,), spacing=None, target_modules=r"encoder\.blocks\.\d+\.attn\.(qkv|proj)", cam_layer="encoder.blocks.3",
    num_prefix_tokens=1, patch_size=(8, 8), hub_id=None, weight_files=("config.json", "model.safetensors"),
    weight_format="molre (safetensors + config.json)", reduced_input_size=(32, 32),
    description="Demo ViT pretrained label-free on phantom slices (masked patches, slice position, window id)",
    source="built on this machine by `molre pretrain-demo`", features=timm_pooled,
))
def phantom_vit(weights: Optional[Path] = None, reduced: bool = False, **overrides: Any) -> BuiltEncoder:
    return build_demo_vit("phantom_vit", weights, reduced, overrides)


def build_demo_vit(name: str, weights: Optional[Path], reduced: bool, overrides: dict[str, Any]) -> BuiltEncoder:
    """A demo ViT (phantom_vit's architecture) from its cache folder or file, or at random init."""
    _check_overrides(name, overrides, set())
    arch = dict(REDUCED_ARCH if reduced else PHANTOM_VIT_ARCH)
    folder = None if weights is None else (weights if weights.is_dir() else weights.parent)
    if folder is not None and (folder / "config.json").is_file():
        arch = dict(PHANTOM_VIT_ARCH, **json.loads((folder / "config.json").read_text())["arch"])
    # Fine-tuning accepts other slice sizes (TrainConfig.image_size): timm resamples the position embedding to the
    # patch grid it is given, and leaves it as it is at the pretrained size. The pretraining keeps the fixed size.
    model = build_phantom_vit(dict(arch, dynamic_img_size=True))
    if weights is not None:
        spec = get_spec(name)
        file = weight_file(weights, spec, item=1) if weights.is_dir() else weights
        load_strict(model, load_state_dict_file(file), spec, file)
    size = (arch["img_size"], arch["img_size"])
    return BuiltEncoder(model, arch["embed_dim"], f"blocks.{arch['depth'] - 1}", size)
