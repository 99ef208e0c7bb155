"""3D CT foundation models: the volume goes in whole, pooled features come out (B, F).

CT-FM (MONAI SegResEncoder, project-lighter), a head-CT 3D ViT (MONAI ViT, FM-HeadCT-style 96^3 / patch 12),
Merlin's I3D ResNet-152 image tower (the ``merlin-vlm`` package's own class) and MedicalNet ResNet-10 (MONAI).
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import nn

from .registry import BackboneSpec, BuiltEncoder, get_spec, register_backbone
from molre_lib.data.windowing import HEAD_CT_WINDOWS
from .vit2d import _check_overrides
from .weights import load_state_dict_file, load_strict, weight_file

_NO_NORM = dict(normalize="none", mean=(0.0,), std=(1.0,))


def _conv_allowed(overrides: dict[str, Any], name: str) -> int:
    _check_overrides(name, overrides, {"in_chans"})
    return int(overrides.get("in_chans", get_spec(name).in_chans))


# ------------------------------------------------------------------------------------------------- CT-FM
CTFM_CONFIG = dict(spatial_dims=3, in_channels=1, init_filters=32, blocks_down=(1, 2, 2, 4, 4))


def ctfm_features(encoder: nn.Module, x: torch.Tensor) -> torch.Tensor:
    # as CT-FM's feature extractor: last stage of the encoder pyramid, global average pooled
    return F.adaptive_avg_pool3d(encoder(x)[-1], 1).flatten(1)  # (B, 512)


@register_backbone(BackboneSpec(
    name="ctfm_segresenc", family="ct-3D", dims=3, n_params=77_760_992, published_params=None,
    published_source="no count published; model.safetensors of project-lighter/ct_fm_feature_extractor holds "
                     "the SegResEncoder(init_filters=32, blocks_down=[1,2,2,4,4]) of its config.json",
    feature_dim=512, in_chans=1, input_size=(128, 128, 128), windows=((512.0, 3072.0),),
    spacing=None, target_modules=r"encoder\.layers\.\d+\.blocks\.\d+\.conv[12]", cam_layer="encoder.layers.4.blocks",
    num_prefix_tokens=0, patch_size=(16, 16, 16), hub_id="project-lighter/ct_fm_feature_extractor",
    weight_files=("config.json", "model.safetensors"), weight_format="ct-fm (huggingface_hub PyTorchModelHubMixin)",
    reduced_input_size=(16, 16, 16), description="CT-FM SegResNet encoder, contrastive SSL on 148k CTs; HU [-1024, 2048] -> [0, 1]",
    source="Pai et al. 2025, Vision Foundation Models for Computed Tomography (arXiv 2501.09001)",
    features=ctfm_features, **_NO_NORM,
))
def ctfm_segresenc(weights: Optional[Path] = None, reduced: bool = False, **overrides: Any) -> BuiltEncoder:
    from monai.networks.nets.segresnet_ds import SegResEncoder

    in_chans = _conv_allowed(overrides, "ctfm_segresenc")
    cfg: dict[str, Any] = dict(CTFM_CONFIG, in_channels=in_chans)
    if reduced:
        cfg.update(init_filters=4, blocks_down=(1, 1, 1))
    if weights is not None:
        spec = get_spec("ctfm_segresenc")
        folder = weights if weights.is_dir() else weights.parent
        if (folder / "config.json").is_file():  # the mixin's config.json holds the constructor arguments
            cfg = dict(CTFM_CONFIG, **json.loads((folder / "config.json").read_text()))
        model = SegResEncoder(**cfg)
        file = weight_file(weights, spec, item=1) if weights.is_dir() else weights
        # huggingface_hub's mixin loads with strict=False and would leave a mismatched encoder random: load strictly
        load_strict(model, load_state_dict_file(file), spec, file)
    else:
        model = SegResEncoder(**cfg)
    n_levels = len(cfg["blocks_down"])
    model.molre_in_chans = int(cfg["in_channels"])
    return BuiltEncoder(model, int(cfg["init_filters"]) * 2 ** (n_levels - 1), f"layers.{n_levels - 1}.blocks", None)


# ------------------------------------------------------------------------------------------ head-CT 3D ViT
def vit3d_features(encoder: nn.Module, x: torch.Tensor) -> torch.Tensor:
    tokens, _ = encoder(x)  # (B, T, F), final LayerNorm applied
    return tokens.mean(dim=1)  # (B, F)


def _unwrap(state: dict) -> dict:
    for key in ("state_dict", "model", "teacher", "student"):
        if key in state and isinstance(state[key], dict):
            return _unwrap(state[key])
    return state


@register_backbone(BackboneSpec(
    name="headct_vit3d", family="ct-3D", dims=3, n_params=89_422_080, published_params=None,
    published_source="FM-HeadCT publishes no count; ViT-B body is 85.0M, plus the 12^3x3 patch embedding (4.0M) "
                     "and 512 learned positions",
    feature_dim=768, in_chans=3, input_size=(96, 96, 96), windows=HEAD_CT_WINDOWS, spacing=None,
    target_modules=r"encoder\.blocks\.\d+\.attn\.(qkv|out_proj)", cam_layer="encoder.blocks.11",
    num_prefix_tokens=0, patch_size=(12, 12, 12), hub_id=None,
    weight_files=("model.safetensors|model.pth|pytorch_model.bin",), weight_format="torch state dict (MONAI ViT keys)",
    reduced_input_size=(24, 24, 24), description="Head-CT 3D ViT-B (MONAI ViT), 96^3 volume, 12^3 patches, 3 windows",
    source="Zhu et al. 2025, FM-HeadCT (arXiv 2502.02779), github.com/NYUMedML/headCT_foundation",
    features=vit3d_features, **_NO_NORM,
))
def headct_vit3d(weights: Optional[Path] = None, reduced: bool = False, **overrides: Any) -> BuiltEncoder:
    from monai.networks.nets import ViT

    in_chans = _conv_allowed(overrides, "headct_vit3d")
    kw: dict[str, Any] = dict(in_channels=in_chans, img_size=96, patch_size=12, hidden_size=768, mlp_dim=3072,
                              num_layers=12, num_heads=12, proj_type="conv", classification=False, spatial_dims=3)
    if reduced:
        kw.update(img_size=24, patch_size=8, hidden_size=32, mlp_dim=64, num_layers=2, num_heads=2)
    model = ViT(**kw)
    if weights is not None:
        spec = get_spec("headct_vit3d")
        file = weight_file(weights, spec)
        # the FM-HeadCT loader strips DDP / SSL-wrapper prefixes the same way
        state = {k.replace("module.", "").replace("backbone.", ""): v
                 for k, v in _unwrap(load_state_dict_file(file)).items()}
        load_strict(model, state, spec, file)
    model.molre_in_chans = in_chans
    return BuiltEncoder(model, kw["hidden_size"], f"blocks.{kw['num_layers'] - 1}", (kw["img_size"],) * 3,
                        (kw["patch_size"],) * 3)


# ------------------------------------------------------------------------------------------ Merlin I3ResNet
MERLIN_PREFIX = "encode_image.i3_resnet."


def merlin_features(encoder: nn.Module, x: torch.Tensor) -> torch.Tensor:
    if x.shape[1] == 1:  # Merlin stacks its single HU channel three times before conv1
        x = x.repeat(1, 3, 1, 1, 1)
    x = encoder.maxpool(encoder.relu(encoder.bn1(encoder.conv1(x))))  # (B, 64, D/2, H/4, W/4)
    with warnings.catch_warnings():  # Merlin's blocks call torch.utils.checkpoint without use_reentrant
        warnings.simplefilter("ignore", UserWarning)
        x = encoder.layer4(encoder.layer3(encoder.layer2(encoder.layer1(x))))  # (B, 2048, d, h, w)
    return F.adaptive_avg_pool3d(x, 1).flatten(1)  # (B, 2048): Merlin's image embedding before its heads


@register_backbone(BackboneSpec(
    name="merlin_i3resnet", family="ct-3D", dims=3, n_params=121_882_204, published_params=None,
    published_source="Merlin publishes no count; the I3D inflation of torchvision ResNet-152 (60.2M 2D) plus its "
                     "1692-phecode and 512-d contrastive heads",
    feature_dim=2048, in_chans=1, input_size=(160, 224, 224), windows=((0.0, 2000.0),), spacing=(3.0, 1.5, 1.5),
    target_modules=r"encoder\.layer[34]\.\d+\.conv[123]", cam_layer="encoder.layer4", num_prefix_tokens=0,
    patch_size=(16, 32, 32), hub_id="stanfordmimi/Merlin",
    weight_files=("i3_resnet_clinical_longformer_best_clip_04-02-2024_23-21-36_epoch_99.pt",),
    weight_format="merlin (torch state dict, encode_image.i3_resnet.* keys)", reduced_input_size=(16, 32, 32),
    description="Merlin image tower: I3D ResNet-152 (merlin-vlm package class), no text encoder",
    source="Blankemeier et al. 2026, Merlin (Nature; arXiv 2406.06512)", features=merlin_features, **_NO_NORM,
))
def merlin_i3resnet(weights: Optional[Path] = None, reduced: bool = False, **overrides: Any) -> BuiltEncoder:
    import torchvision
    from torchvision.models.resnet import Bottleneck, ResNet

    try:
        from merlin.models.i3res import I3ResNet
    except ImportError as err:
        raise ImportError(f"merlin_i3resnet needs the merlin-vlm package (pip install merlin-vlm nltk): {err}") from None
    _check_overrides("merlin_i3resnet", overrides, set())
    # resnet152(weights=None): no ImageNet download; the inflated weights come from Merlin's checkpoint
    resnet2d = ResNet(Bottleneck, [1, 1, 1, 1], width_per_group=8) if reduced else torchvision.models.resnet152(weights=None)
    model = I3ResNet(resnet2d, class_nb=1692, conv_class=True)
    if weights is not None:
        spec = get_spec("merlin_i3resnet")
        file = weight_file(weights, spec)
        state = load_state_dict_file(file)
        if any(k.startswith(MERLIN_PREFIX) for k in state):  # full MerlinArchitecture: keep the image tower only
            state = {k[len(MERLIN_PREFIX):]: v for k, v in state.items() if k.startswith(MERLIN_PREFIX)}
        load_strict(model, state, spec, file)
    return BuiltEncoder(model, 2048, "layer4", None)


# ------------------------------------------------------------------------------------ MedicalNet ResNet-10
def resnet_features(encoder: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return encoder(x)  # (B, 512): MONAI ResNet with feed_forward=False ends in global average pooling


@register_backbone(BackboneSpec(
    name="medicalnet_resnet10", family="ct-3D", dims=3, n_params=14_355_520, published_params=None,
    published_source="Med3D publishes no count; 3D ResNet-10 (BasicBlock [1,1,1,1], shortcut B)",
    feature_dim=512, in_chans=1, input_size=(56, 224, 224), windows=((500.0, 3000.0),),
    normalize="zscore", mean=(0.0,), std=(1.0,), spacing=None,
    target_modules=r"encoder\.layer[34]\.\d+\.conv[12]", cam_layer="encoder.layer4", num_prefix_tokens=0,
    patch_size=(8, 32, 32), hub_id="TencentMedicalNet/MedicalNet-Resnet10",
    weight_files=("resnet_10_23dataset.pth|resnet_10.pth",), weight_format="medicalnet (torch {'state_dict'}, module.*)",
    reduced_input_size=(16, 16, 16), description="MedicalNet (Med3D) 3D ResNet-10, 23 CT/MR segmentation sets; small 3D CNN",
    source="Chen et al. 2019, Med3D (arXiv 1904.00625)", features=resnet_features,
))
def medicalnet_resnet10(weights: Optional[Path] = None, reduced: bool = False, **overrides: Any) -> BuiltEncoder:
    from monai.networks.nets import ResNet

    in_chans = _conv_allowed(overrides, "medicalnet_resnet10")
    planes = [8, 16, 32, 64] if reduced else [64, 128, 256, 512]
    model = ResNet(block="basic", layers=[1, 1, 1, 1], block_inplanes=planes, spatial_dims=3, n_input_channels=in_chans,
                   shortcut_type="B", bias_downsample=False, feed_forward=False)
    if weights is not None:
        spec = get_spec("medicalnet_resnet10")
        file = weight_file(weights, spec)
        state = _unwrap(load_state_dict_file(file))
        # as MONAI's MedicalNet loader: drop DataParallel's "module."; conv_seg is Med3D's segmentation decoder
        state = {k.replace("module.", "", 1): v for k, v in state.items()}
        state = {k: v for k, v in state.items() if not k.startswith("conv_seg.")}
        load_strict(model, state, spec, file)
    model.molre_in_chans = in_chans
    return BuiltEncoder(model, planes[-1], "layer4", None)
