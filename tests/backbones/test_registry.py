"""Every registry entry: reduced build + forward shape, full-size meta parameter counts, adapter injection."""
from __future__ import annotations

import math
import re

import pytest
import torch

from molre_lib.backbones import (
    AGGREGATORS,
    HeadCTModel,
    SliceEncoder3D,
    count_params_meta,
    create_model,
    get_spec,
    list_backbones,
)

NAMES = [s.name for s in list_backbones()]


def _needs(name: str) -> None:
    """merlin_i3resnet is built from the merlin-vlm package's own class; skip (not fail) where it is absent."""
    if name == "merlin_i3resnet":
        pytest.importorskip("merlin.models.i3res", reason="merlin-vlm is not installed")


def _input(model: HeadCTModel, batch: int = 2, slices: int = 3) -> torch.Tensor:
    spec = model.spec
    size = spec.reduced_input_size
    if spec.dims == 2:
        return torch.rand(batch, model.in_chans, slices, *size)  # (B, C, D, H, W)
    return torch.rand(batch, model.in_chans, *size)


def test_registry_covers_the_study_range():
    specs = list_backbones()
    assert len(specs) >= 8
    assert {s.family for s in specs} >= {"general-2D", "medical-2D", "ct-3D", "demo"}
    counts = [s.n_params for s in specs if s.family != "demo"]
    assert min(counts) < 15e6 and max(counts) > 400e6
    with pytest.raises(KeyError, match="unknown backbone 'nope'"):
        get_spec("nope")


@pytest.mark.parametrize("name", NAMES)
def test_reduced_build_forward_shape(name):
    _needs(name)
    torch.manual_seed(0)
    model = create_model(name, num_classes=75, reduced=True).eval()
    assert isinstance(model, HeadCTModel) and model.spec.name == name
    assert isinstance(model.head, torch.nn.Linear) and model.head.out_features == 75
    x = _input(model)
    with torch.no_grad():
        logits = model(x)
    assert logits.shape == (2, 75) and torch.isfinite(logits).all()
    # the Grad-CAM layer named by the model exists and produces an output during forward
    seen = []
    handle = model.get_submodule(model.cam_layer).register_forward_hook(lambda m, i, o: seen.append(o))
    with torch.no_grad():
        model(x)
    handle.remove()
    assert seen, f"{name}: cam layer {model.cam_layer} never ran"


@pytest.mark.parametrize("name", NAMES)
def test_meta_param_count_matches_spec_and_published(name):
    _needs(name)
    spec = get_spec(name)
    n = count_params_meta(name)
    assert n == spec.n_params
    if spec.published_params is not None:
        assert abs(n - spec.published_params) / spec.published_params <= 0.02, spec.published_source
    else:
        assert spec.published_source  # says why there is no published figure


@pytest.mark.parametrize("name", NAMES)
def test_spec_cam_layer_and_targets_exist_in_full_size_build(name):
    _needs(name)
    spec = get_spec(name)
    with torch.device("meta"):
        model = create_model(name)
    names = [n for n, _ in model.named_modules()]
    assert spec.cam_layer in names and model.cam_layer == spec.cam_layer
    targets = [n for n in names if re.fullmatch(spec.target_modules, n)]
    assert targets and all(n.startswith("encoder.") for n in targets)
    assert model.feature_dim == spec.feature_dim


@pytest.mark.parametrize("router", ["token", "sample"])
@pytest.mark.parametrize("name", NAMES)
def test_inject_default_targets(name, router):
    _needs(name)
    from molre_lib.adapters import MoLREConfig, inject, routing_log

    torch.manual_seed(0)
    model = create_model(name, reduced=True)
    report = inject(model, MoLREConfig(r=2, n_experts=2, router=router, target_modules=model.spec.target_modules))
    assert report.adapted and all(n.startswith("encoder.") for n in report.adapted)
    assert all(p.requires_grad for p in model.head.parameters())
    x = _input(model, batch=2, slices=3)
    with routing_log(model) as log:
        logits = model(x)
    logits.sum().backward()
    gates = log.concat(report.adapted[0])
    rows = 2 * 3 if model.spec.dims == 2 else 2  # 2D: one row per slice, b-major
    assert gates.shape[0] == rows and gates.shape[-1] == 2
    if router == "sample":
        assert gates.ndim == 2
    grads = [p.grad for n, p in model.named_parameters() if "lora_B" in n]
    assert grads and all(g is not None for g in grads)
    frozen = [p for n, p in model.encoder.named_parameters() if "lora_" not in n and "router" not in n]
    assert not any(p.requires_grad for p in frozen)


@pytest.mark.parametrize("name", ["dinov3_vits16", "medsiglip_448", "rad_dino", "headct_vit3d", "phantom_vit"])
def test_tokens_to_grid_drops_prefix_tokens(name):
    """The CAM layer's tokens of every ViT entry fill the patch grid that analysis.routing derives from the model."""
    from molre_lib.analysis.routing import patch_grid, tokens_to_grid

    model = create_model(name, reduced=True).eval()
    seen = []
    model.get_submodule(model.cam_layer).register_forward_hook(
        lambda m, i, o: seen.append(o[0] if isinstance(o, tuple) else o))
    with torch.no_grad():
        model(_input(model, batch=1, slices=2))
    spatial = tuple(s // p for s, p in zip(model.input_size, model.patch_size))
    assert patch_grid(model) == spatial
    grid = tokens_to_grid(seen[0], spatial, model.spec.num_prefix_tokens)
    assert grid.shape == (seen[0].shape[0], seen[0].shape[-1], *spatial)
    body = seen[0][:, model.spec.num_prefix_tokens:]
    assert torch.equal(grid.flatten(2).transpose(1, 2), body)


@pytest.mark.parametrize("name", ["ctfm_segresenc", "medicalnet_resnet10", "merlin_i3resnet"])
def test_frozen_batchnorm_keeps_its_statistics_while_adapters_train(name):
    _needs(name)
    from molre_lib.adapters import MoLREConfig, inject

    torch.manual_seed(0)
    model = create_model(name, reduced=True)
    inject(model, MoLREConfig.lora(r=2, target_modules=model.spec.target_modules), trainable=model.trainable_modules)
    bns = {n: m for n, m in model.encoder.named_modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)}
    assert bns
    before = {n: m.running_mean.clone() for n, m in bns.items()}
    model.train()
    assert not any(m.training for m in bns.values()) and model.head_norm.training
    model(_input(model)).sum().backward()
    assert all(torch.equal(bns[n].running_mean, before[n]) for n in bns)

    model.requires_grad_(True)  # full fine-tuning: BatchNorm trains as usual
    model.train()
    assert all(m.training for m in bns.values())
    model(_input(model))
    assert not all(torch.equal(bns[n].running_mean, before[n]) for n in bns)


def test_wrong_channel_count_names_the_windows():
    model = create_model("ctfm_segresenc", reduced=True)
    with pytest.raises(ValueError, match=r"expect 1.*windows.*\(512, 3072\)"):
        model(torch.rand(1, 3, 16, 16, 16))


# ------------------------------------------------------------------------------------------ SliceEncoder3D
@pytest.mark.parametrize("aggregator", AGGREGATORS)
def test_slice_encoder_aggregators(aggregator):
    torch.manual_seed(0)
    model = create_model("dinov3_vits16", reduced=True, aggregator=aggregator, chunk_size=4)
    assert isinstance(model, SliceEncoder3D)
    x = torch.rand(2, 3, 5, 32, 32)
    logits = model(x)
    assert logits.shape == (2, 75)
    logits.sum().backward()
    assert model.head.weight.grad is not None
    if aggregator == "attention":
        w = model.aggregator.last_weights
        assert w.shape == (2, 5) and torch.allclose(w.sum(dim=1), torch.ones(2))


def test_slice_chunking_is_bounded_b_major_and_exact():
    torch.manual_seed(0)
    model = create_model("dinov3_vits16", reduced=True, aggregator="mean", chunk_size=3).eval()
    sizes = []
    model.encoder.register_forward_hook(lambda m, i, o: sizes.append(i[0].shape[0]))
    x = torch.rand(2, 3, 7, 32, 32)  # B*D = 14 slices
    with torch.no_grad():
        feats = model.slice_features(x)
    assert sizes == [3, 3, 3, 3, 2] and max(sizes) <= model.chunk_size
    assert feats.shape == (2, 7, model.feature_dim)
    with torch.no_grad():  # slice (b, d) equals the encoder run on that slice alone
        ref = model.spec.features(model.encoder, model.norm(x)[1, :, 4][None])
    assert torch.allclose(feats[1, 4], ref[0], atol=1e-5)
    model.chunk_size = 64
    with torch.no_grad():
        assert torch.allclose(model.slice_features(x), feats, atol=1e-5)
    assert math.ceil(14 / 3) == 5


def test_slice_checkpointing_gives_the_same_gradients():
    torch.manual_seed(0)
    a = create_model("dinov3_vits16", reduced=True, aggregator="mean", chunk_size=2)
    b = create_model("dinov3_vits16", reduced=True, aggregator="mean", chunk_size=2, checkpoint=True)
    b.load_state_dict(a.state_dict())
    x = torch.rand(1, 3, 4, 32, 32)
    a(x).sum().backward()
    b(x).sum().backward()
    ga = a.encoder.blocks[0].attn.qkv.weight.grad
    gb = b.encoder.blocks[0].attn.qkv.weight.grad
    assert torch.allclose(ga, gb, atol=1e-5)


def test_unknown_options_raise():
    with pytest.raises(ValueError, match="unknown option"):
        create_model("rad_dino", reduced=True, depth=3)
    with pytest.raises(ValueError, match="2D backbones only"):
        create_model("headct_vit3d", reduced=True, aggregator="mean")
    with pytest.raises(ValueError, match="aggregator must be one of"):
        create_model("dinov3_vits16", reduced=True, aggregator="sum")
