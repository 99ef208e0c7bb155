"""Device-agnostic paths under bf16 autocast: adapters, registry models, training steps and Grad-CAM.

Every test runs on the CPU (bf16 autocast exists there too) and again on CUDA when a GPU is present, so the
same assertions check the GPU path on a machine that has one (`benchmarks/gpu.py` runs this file first).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from molre_lib.adapters import MoLREConfig, inject, routing_log

sys.path.insert(0, str(Path(__file__).parent))

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device"))]


def _randomise_b(model: nn.Module) -> None:
    for name, p in model.named_parameters():
        if "lora_B" in name:
            nn.init.normal_(p, std=0.05)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shared_a", [False, True])
@pytest.mark.parametrize("kind", ["linear", "conv3d"])
def test_molre_layer_under_bf16_autocast_matches_fp32(device, kind, shared_a):
    torch.manual_seed(0)
    base = nn.Linear(64, 96) if kind == "linear" else nn.Conv3d(8, 16, 3, padding=1)
    model = nn.Sequential(base)
    inject(model, MoLREConfig(r=4, n_experts=4, shared_a=shared_a, target_modules=["0"]), trainable=())
    _randomise_b(model)
    x = torch.randn(2, 10, 64) if kind == "linear" else torch.randn(2, 8, 4, 6, 6)
    reference = model(x).detach()  # fp32 on the CPU
    model.to(device)
    with routing_log(model, to_cpu=True) as log, torch.autocast(device, dtype=torch.bfloat16):
        y = model(x.to(device))
    assert y.dtype == torch.bfloat16 and y.device.type == device
    scale = reference.abs().max()
    torch.testing.assert_close(y.float().cpu(), reference, rtol=0, atol=0.03 * float(scale))
    assert log.concat("0").device.type == "cpu"
    y.float().square().mean().backward()
    for name, p in model.named_parameters():
        if p.requires_grad:  # adapters and router train in fp32 under autocast
            assert p.grad is not None and p.grad.dtype == torch.float32 and torch.isfinite(p.grad).all(), name


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", ["phantom_vit", "medsiglip_448", "medicalnet_resnet10"])
def test_registry_model_with_molre_bf16_forward_backward(device, name):
    from molre_lib.backbones import create_model

    torch.manual_seed(0)
    model = create_model(name, reduced=True)
    inject(model, MoLREConfig(r=2, n_experts=3, shared_a=True, target_modules=model.spec.target_modules),
           trainable=model.trainable_modules)
    model.to(device).train()
    size = model.spec.reduced_input_size
    shape = (2, model.in_chans, 3, *size) if model.spec.dims == 2 else (2, model.in_chans, *size)
    with torch.autocast(device, dtype=torch.bfloat16):
        logits = model(torch.rand(shape, device=device))
    assert logits.shape == (2, 75) and torch.isfinite(logits.float()).all()
    logits.float().sum().backward()
    grads = [p.grad for n, p in model.named_parameters() if "lora_B" in n]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("device", DEVICES)
def test_training_steps_in_bf16_write_a_run(device, tmp_path):
    from engine_toys import ToyModel, toy_config, toy_datasets

    from molre_lib.engine.train import seed_everything, train

    seed_everything(0)
    cfg = toy_config(device=device, amp="bf16", max_steps=3, eval_every=3, checkpoint_every=3)
    run = train(cfg, tmp_path / "run", model=ToyModel(head_norm=True), datasets=toy_datasets())
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["steps"] == 3 and 0.0 <= metrics["test"]["summary"]["macro_auc"]["value"] <= 1.0
    config = json.loads((run / "config.json").read_text())
    assert config["train"]["amp"] == "bf16" and config["train"]["device"] == device


@pytest.mark.parametrize("device", DEVICES)
def test_gradcam_on_device(device):
    from molre_lib.analysis import explain
    from molre_lib.backbones import create_model

    torch.manual_seed(0)
    model = create_model("phantom_vit", reduced=True, chunk_size=2).to(device).eval()
    size = model.spec.reduced_input_size
    cam = explain.gradcam(model, torch.rand(1, model.in_chans, 3, *size), finding=0)
    assert cam.shape == (3, *size) and cam.dtype.name == "float32"
    assert float(cam.max()) > float(cam.min())


@pytest.mark.slow
def test_gpu_check_script_runs_in_smoke_mode(tmp_path):
    """benchmarks/gpu.py is run once on a lent GPU machine; here its smoke mode checks that it still runs."""
    import subprocess

    root = Path(__file__).resolve().parents[1]
    out = root / "benchmarks" / "results" / "gpu_smoke.json"
    out.unlink(missing_ok=True)
    proc = subprocess.run([sys.executable, "benchmarks/gpu.py", "--smoke", "--skip-tests"], cwd=root,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(out.read_text())
    for key in ("train_step_vit_b16_224", "train_step_medsiglip_448"):
        assert set(res[key]) >= {"lora_r16", "molre_e4_r4", "molre_e4_r4_shared_a", "linear_probe",
                                 "molre_vs_lora_step_ratio"}
        assert res[key]["linear_probe"]["added_params_pct"] == 0.0 < res[key]["molre_e4_r4"]["added_params_pct"]
    assert {k for k in res["slice_encoder_64"] if k.startswith("chunk")} == {
        "chunk4_plain", "chunk4_checkpoint", "chunk16_plain", "chunk16_checkpoint"}
