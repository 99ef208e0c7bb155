"""2D foundation models (timm, transformers, open_clip checkpoints), run per slice by SliceEncoder3D.

Each entry builds the published architecture with the library that defines it and loads the official
checkpoint format from a local path; ``reduced=True`` builds the same class at toy size for tests.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import torch
from torch import nn

from molre_lib.data.windowing import HEAD_CT_WINDOWS
from .registry import BackboneSpec, BuiltEncoder, register_backbone
from .weights import load_state_dict_file, load_strict, weight_file

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
CLIP_MEAN, CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)


def timm_pooled(encoder: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return encoder(x)  # (N, F): timm models built with num_classes=0 return pooled features


def hf_pooled(encoder: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return encoder(pixel_values=x).pooler_output  # (N, F)


def siglip_pooled(encoder: nn.Module, x: torch.Tensor) -> torch.Tensor:
    tokens = encoder(pixel_values=x).last_hidden_state  # (N, T, F)
    return encoder.map_pool(tokens)  # (N, F): SigLIP's attention-pooling (MAP) head


def _rename_siglip_head(model: nn.Module) -> None:
    """Move SigLIP's pooling head from ``head`` to ``map_pool``.

    ``inject(..., trainable=("head",))`` matches names by suffix, so a frozen foundation-model module called
    ``encoder.head`` would be unfrozen with the classifier; under its new name it stays frozen.
    """
    if getattr(model, "use_head", False):
        model.map_pool = model.head
        del model.head
        model.use_head = False


def _check_overrides(name: str, overrides: dict[str, Any], allowed: set[str]) -> None:
    unknown = set(overrides) - allowed
    if unknown:
        raise ValueError(f"{name}: unknown option(s) {sorted(unknown)}; allowed: {sorted(allowed)}")


# ----------------------------------------------------------------------------------------------- timm DINOv3
def _dinov3(arch: str, weights: Optional[Path], reduced: bool, spec_name: str, **overrides: Any) -> BuiltEncoder:
    import timm

    _check_overrides(spec_name, overrides, {"drop_path_rate"})
    kw: dict[str, Any] = dict(num_classes=0, global_pool="token", dynamic_img_size=True, **overrides)
    if reduced:
        kw.update(embed_dim=48, depth=2, num_heads=2, img_size=32)
    if weights is not None:
        from .registry import get_spec

        file = weight_file(weights, get_spec(spec_name))
        # timm's own loader: reads safetensors / .pth, converts Meta's original DINOv3 keys, loads strictly
        model = timm.create_model(arch, pretrained=True, pretrained_cfg_overlay=dict(file=str(file)), **kw)
    else:
        model = timm.create_model(arch, pretrained=False, **kw)
    depth = len(model.blocks)
    return BuiltEncoder(model, model.num_features, f"blocks.{depth - 1}", (32, 32) if reduced else (256, 256))


_TIMM_TARGETS = r"encoder\.blocks\.\d+\.attn\.(qkv|proj)"


@register_backbone(BackboneSpec(
    name="dinov3_vits16", family="general-2D", dims=2, n_params=21_586_944,
    published_params=21.6e6, published_source="timm model card vit_small_patch16_dinov3.lvd1689m (21.6M; paper: 21M)",
    feature_dim=384, in_chans=3, input_size=(256, 256), windows=HEAD_CT_WINDOWS, normalize="meanstd",
    mean=IMAGENET_MEAN, std=IMAGENET_STD, spacing=None, target_modules=_TIMM_TARGETS, cam_layer="encoder.blocks.11",
    num_prefix_tokens=5, patch_size=(16, 16), hub_id="timm/vit_small_patch16_dinov3.lvd1689m",
    weight_files=("model.safetensors|pytorch_model.bin",), weight_format="timm", reduced_input_size=(32, 32),
    description="DINOv3 ViT-S/16 distilled (LVD-1689M), CLS + 4 register tokens, RoPE",
    source="Simeoni et al. 2025, DINOv3 (arXiv 2508.10104)", features=timm_pooled,
))
def dinov3_vits16(weights: Optional[Path] = None, reduced: bool = False, **overrides: Any) -> BuiltEncoder:
    return _dinov3("vit_small_patch16_dinov3", weights, reduced, "dinov3_vits16", **overrides)


@register_backbone(BackboneSpec(
    name="dinov3_vitb16", family="general-2D", dims=2, n_params=85_641_216,
    published_params=85.6e6, published_source="timm model card vit_base_patch16_dinov3.lvd1689m (85.6M; paper: 86M)",
    feature_dim=768, in_chans=3, input_size=(256, 256), windows=HEAD_CT_WINDOWS, normalize="meanstd",
    mean=IMAGENET_MEAN, std=IMAGENET_STD, spacing=None, target_modules=_TIMM_TARGETS, cam_layer="encoder.blocks.11",
    num_prefix_tokens=5, patch_size=(16, 16), hub_id="timm/vit_base_patch16_dinov3.lvd1689m",
    weight_files=("model.safetensors|pytorch_model.bin",), weight_format="timm", reduced_input_size=(32, 32),
    description="DINOv3 ViT-B/16 distilled (LVD-1689M), CLS + 4 register tokens, RoPE",
    source="Simeoni et al. 2025, DINOv3 (arXiv 2508.10104)", features=timm_pooled,
))
def dinov3_vitb16(weights: Optional[Path] = None, reduced: bool = False, **overrides: Any) -> BuiltEncoder:
    return _dinov3("vit_base_patch16_dinov3", weights, reduced, "dinov3_vitb16", **overrides)


# ------------------------------------------------------------------------------------ transformers entries
def _hf_from_pretrained(cls: type, weights: Path, spec_name: str) -> nn.Module:
    """``cls.from_pretrained`` on a local folder, offline, refusing a load that leaves weights random."""
    from transformers.utils import logging as hf_logging

    folder = weights if weights.is_dir() else weights.parent
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the text tower of a full CLIP/SigLIP checkpoint is "unexpected" by design
    hf_logging.disable_progress_bar()
    try:
        model, info = cls.from_pretrained(str(folder), local_files_only=True, output_loading_info=True,
                                          dtype=torch.float32)
    finally:
        hf_logging.set_verbosity(verbosity)
        hf_logging.enable_progress_bar()
    missing = list(info.get("missing_keys", []))
    mismatched = list(info.get("mismatched_keys", []))
    if missing or mismatched:
        raise ValueError(f"{spec_name}: {folder} left {len(missing)} weights missing (e.g. {missing[:4]}) and "
                         f"{len(mismatched)} with mismatched shapes; is it the right checkpoint?")
    return model


@register_backbone(BackboneSpec(
    name="medsiglip_448", family="medical-2D", dims=2, n_params=428_565_440,
    published_params=428e6, published_source="SigLIP So400m/14 vision tower (Alabdulmohsin et al. 2023: 428M); "
                                               "MedSigLIP card: '400M vision encoder'",
    feature_dim=1152, in_chans=3, input_size=(448, 448), windows=HEAD_CT_WINDOWS, normalize="meanstd",
    mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), spacing=None,
    target_modules=r"encoder\.encoder\.layers\.\d+\.self_attn\.(q_proj|k_proj|v_proj|out_proj)",
    cam_layer="encoder.encoder.layers.26", num_prefix_tokens=0, patch_size=(14, 14),
    hub_id="google/medsiglip-448", weight_files=("config.json", "model.safetensors"), weight_format="transformers",
    reduced_input_size=(28, 28), description="MedSigLIP-448 vision tower (SigLIP So400m/14, MAP pooling), MedGemma's encoder",
    source="Sellergren et al. 2025, MedGemma technical report (arXiv 2507.05201)", features=siglip_pooled,
))
def medsiglip_448(weights: Optional[Path] = None, reduced: bool = False, **overrides: Any) -> BuiltEncoder:
    from transformers import SiglipVisionConfig, SiglipVisionModel

    _check_overrides("medsiglip_448", overrides, set())
    if weights is not None:
        # the hub checkpoint is a full SiglipModel; its vision_model.* keys are SiglipVisionModel's keys
        model = _hf_from_pretrained(SiglipVisionModel, weights, "medsiglip_448")
    else:
        cfg = (SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                                  image_size=28, patch_size=14) if reduced else
               SiglipVisionConfig(hidden_size=1152, intermediate_size=4304, num_hidden_layers=27,
                                  num_attention_heads=16, image_size=448, patch_size=14))
        model = SiglipVisionModel(cfg)
    _rename_siglip_head(model)
    cfg = model.config
    return BuiltEncoder(model, cfg.hidden_size, f"encoder.layers.{cfg.num_hidden_layers - 1}",
                        (cfg.image_size, cfg.image_size))


@register_backbone(BackboneSpec(
    name="rad_dino", family="medical-2D", dims=2, n_params=86_580_480,
    published_params=86.6e6, published_source="DINOv2 ViT-B/14 (Oquab et al. 2023: 86M); rad-dino safetensors 346 MB fp32",
    feature_dim=768, in_chans=3, input_size=(518, 518), windows=HEAD_CT_WINDOWS, normalize="meanstd",
    mean=(0.5307, 0.5307, 0.5307), std=(0.2583, 0.2583, 0.2583), spacing=None,
    target_modules=r"encoder\.encoder\.layer\.\d+\.attention\.(q_proj|k_proj|v_proj|o_proj|attention\.(query|key|value)|output\.dense)",
    cam_layer="encoder.encoder.layer.11", num_prefix_tokens=1, patch_size=(14, 14), hub_id="microsoft/rad-dino",
    weight_files=("config.json", "model.safetensors"), weight_format="transformers", reduced_input_size=(28, 28),
    description="RAD-DINO ViT-B/14 (DINOv2 continued on chest X-rays), CLS pooled",
    source="Perez-Garcia et al. 2025, RAD-DINO (Nature Machine Intelligence; arXiv 2401.10815)", features=hf_pooled,
))
def rad_dino(weights: Optional[Path] = None, reduced: bool = False, **overrides: Any) -> BuiltEncoder:
    from transformers import Dinov2Config, Dinov2Model

    _check_overrides("rad_dino", overrides, set())
    if weights is not None:
        model = _hf_from_pretrained(Dinov2Model, weights, "rad_dino")
    else:
        cfg = (Dinov2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, image_size=28, patch_size=14,
                            layerscale_value=1.0) if reduced else
               Dinov2Config(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, image_size=518,
                            patch_size=14, layerscale_value=1.0))
        model = Dinov2Model(cfg)
    cfg = model.config
    return BuiltEncoder(model, cfg.hidden_size, f"encoder.layer.{cfg.num_hidden_layers - 1}",
                        (cfg.image_size, cfg.image_size))


# ------------------------------------------------------------------------------------------- open_clip trunk
@register_backbone(BackboneSpec(
    name="biomedclip_vitb16", family="medical-2D", dims=2, n_params=85_798_656,
    published_params=86e6, published_source="ViT-B/16 (Dosovitskiy et al. 2021: 86M), BiomedCLIP image encoder",
    feature_dim=768, in_chans=3, input_size=(224, 224), windows=HEAD_CT_WINDOWS, normalize="meanstd",
    mean=CLIP_MEAN, std=CLIP_STD, spacing=None, target_modules=_TIMM_TARGETS, cam_layer="encoder.blocks.11",
    num_prefix_tokens=1, patch_size=(16, 16), hub_id="microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224",
    weight_files=("open_clip_pytorch_model.bin|open_clip_model.safetensors",), weight_format="open_clip",
    reduced_input_size=(224, 224), description="BiomedCLIP image trunk (timm ViT-B/16 from open_clip visual.trunk.*)",
    source="Zhang et al. 2023, BiomedCLIP (arXiv 2303.00915)", features=timm_pooled,
))
def biomedclip_vitb16(weights: Optional[Path] = None, reduced: bool = False, **overrides: Any) -> BuiltEncoder:
    import timm
    from .registry import get_spec

    _check_overrides("biomedclip_vitb16", overrides, {"drop_path_rate"})
    # open_clip_config.json: timm_model_name vit_base_patch16_224, timm_pool "" (trunk keeps its CLS pooling)
    kw: dict[str, Any] = dict(num_classes=0, **overrides)
    if reduced:  # same class at ViT-Ti width: the layout of open_clip's timm tower "vit_tiny_patch16_224"
        kw.update(embed_dim=192, depth=12, num_heads=3)
    model = timm.create_model("vit_base_patch16_224", pretrained=False, **kw)
    if weights is not None:
        spec = get_spec("biomedclip_vitb16")
        file = weight_file(weights, spec)
        state = load_state_dict_file(file)
        prefix = "visual.trunk."
        trunk = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        if not trunk:
            raise ValueError(f"biomedclip_vitb16: {file} has no '{prefix}*' keys; expected an open_clip state dict "
                             f"(first keys: {list(state)[:4]})")
        load_strict(model, trunk, spec, file)
    return BuiltEncoder(model, model.num_features, f"blocks.{len(model.blocks) - 1}", (224, 224))
