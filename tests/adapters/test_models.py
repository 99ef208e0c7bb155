"""Injection into the model families users bring: timm ViT, transformers SigLIP / DINOv2, MONAI 3D nets."""
from __future__ import annotations

import pytest
import torch

from molre_lib.adapters import MoLREConfig, inject, routing_log


def _check(model, cfg, x, n_expected, layer, gate_shape, trainable=("head",)):
    torch.manual_seed(0)
    model.eval()
    with torch.no_grad():
        before = model(x)
    report = inject(model, cfg, trainable=trainable)
    assert len(report.adapted) == n_expected
    with torch.no_grad(), routing_log(model) as log:
        after = model(x)
    before = before if torch.is_tensor(before) else before.last_hidden_state
    after = after if torch.is_tensor(after) else after.last_hidden_state
    torch.testing.assert_close(after, before)  # identity at init, whole model
    assert tuple(log.concat(layer).shape) == gate_shape
    assert report.params.pct_added > 0
    return report


@pytest.mark.parametrize("router", ["token", "sample"])
def test_timm_vit(router: str) -> None:
    timm = pytest.importorskip("timm")
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, depth=2, num_classes=4)
    cfg = MoLREConfig(r=2, n_experts=3, router=router, target_modules=r"blocks\.\d+\.attn\.(qkv|proj)")
    shape = (2, 5, 3) if router == "token" else (2, 3)  # 4 patches + CLS
    _check(model, cfg, torch.randn(2, 3, 32, 32), 4, "blocks.1.attn.qkv", shape)


def test_transformers_siglip_vision() -> None:
    transformers = pytest.importorskip("transformers")
    config = transformers.SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                             num_attention_heads=4, image_size=32, patch_size=8)
    model = transformers.SiglipVisionModel(config)
    cfg = MoLREConfig(r=2, n_experts=2, target_modules=r".*self_attn\.(q|k|v|out)_proj")
    _check(model, cfg, torch.randn(2, 3, 32, 32), 8, "encoder.layers.0.self_attn.q_proj", (2, 16, 2),
           trainable=("post_layernorm",))


def test_transformers_dinov2() -> None:
    transformers = pytest.importorskip("transformers")
    config = transformers.Dinov2Config(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                       num_attention_heads=4, image_size=32, patch_size=8)
    model = transformers.Dinov2Model(config)
    cfg = MoLREConfig(r=2, n_experts=2, router="sample",
                      target_modules=r"encoder\.layer\.\d+\.attention\.(q|k|v|o)_proj")
    _check(model, cfg, torch.randn(2, 3, 32, 32), 8, "encoder.layer.0.attention.q_proj", (2, 2),
           trainable=("layernorm",))


def test_monai_3d_network() -> None:
    monai = pytest.importorskip("monai")
    model = monai.networks.nets.SegResNet(spatial_dims=3, in_channels=1, out_channels=2, init_filters=8,
                                          blocks_down=(1, 1), blocks_up=(1,))
    cfg = MoLREConfig(r=2, n_experts=2, target_modules=r"down_layers\.\d+\.\d+\.conv\d\.conv")
    x = torch.randn(1, 1, 8, 8, 8)
    report = _check(model, cfg, x, 4, "down_layers.1.1.conv1.conv", (1, 4, 4, 4, 2), trainable=("conv_final",))
    assert all(name.startswith("down_layers") for name in report.adapted)
