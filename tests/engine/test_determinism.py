"""What a rerun needs to reproduce: the pinned thread count and deterministic kernels, recorded in config.json."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from molre_lib.common.determinism import determinism_state, set_determinism

sys.path.insert(0, str(Path(__file__).parents[1]))  # engine_toys


@pytest.fixture
def torch_settings():
    """Give the rest of the session back torch's thread count and deterministic mode."""
    before = (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled(),
              torch.is_deterministic_algorithms_warn_only_enabled())
    yield
    torch.set_num_threads(before[0])
    torch.use_deterministic_algorithms(before[1], warn_only=before[2])


def test_set_determinism_pins_threads_and_kernels(torch_settings) -> None:
    state = set_determinism(1, deterministic=True)
    assert state["torch_threads"] == torch.get_num_threads() == 1
    assert state["deterministic_algorithms"] and torch.is_deterministic_algorithms_warn_only_enabled()
    assert state == determinism_state()
    with pytest.raises(ValueError, match="threads=-1"):
        set_determinism(-1)


def test_training_applies_and_records_threads_scaling_and_effective_step(tmp_path, torch_settings) -> None:
    from engine_toys import ToyModel, toy_config, toy_datasets

    from molre_lib.engine.train import train

    torch.set_num_threads(2)
    cfg = toy_config(threads=1, epochs=1, eval_every=0, checkpoint_every=0, adapter="lora", rank=2, lora_alpha=4.0,
                     scaling="rslora", lr=0.01, tensorboard=False)
    train(cfg, tmp_path / "run", model=ToyModel(), datasets=toy_datasets())
    doc = json.loads((tmp_path / "run" / "config.json").read_text())
    assert doc["determinism"]["torch_threads"] == 1 and doc["determinism"]["deterministic_algorithms"]
    assert doc["train"]["threads"] == 1
    assert doc["scaling"]["rule"] == "rslora" and doc["scaling"]["scale"] == pytest.approx(4.0 / 2 ** 0.5)
    assert doc["scaling"]["effective_step"] == pytest.approx(0.01 * 4.0 / 2 ** 0.5)


def test_pretraining_pins_its_threads_and_gives_the_caller_its_own_back(torch_settings) -> None:
    from molre_lib.backbones.mae import MAEConfig, pretrain_mae
    from molre_lib.backbones.phantom_vit import REDUCED_ARCH, build_phantom_vit

    seen = []
    vit = build_phantom_vit(REDUCED_ARCH)
    grid, n = vit.patch_embed.grid_size[0], vit.patch_embed.num_patches

    def sample(step: int):
        seen.append(torch.get_num_threads())
        g = torch.Generator().manual_seed(step)
        return (torch.rand(4, 3, 32, 32, generator=g), torch.full((4, n, 3), 1 / 3), torch.rand(4, generator=g),
                torch.randn(4, 3, generator=g))

    torch.set_num_threads(2)
    pretrain_mae(vit, sample, 3, MAEConfig(steps=2, threads=1, device="cpu", batch_size=4), "toy", log=lambda m: None)
    assert seen == [1, 1] and torch.get_num_threads() == 2 and grid == 4


def test_demo_states_the_backbone_checksum_and_whether_it_is_the_reference(tmp_path, monkeypatch) -> None:
    import hashlib

    from molre_lib.cli import demo

    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"weights")
    digest = hashlib.sha256(b"weights").hexdigest()
    monkeypatch.setattr(demo, "REFERENCE_CHECKSUMS", {})
    assert f"sha256 {digest}: no reference" in demo.checksum_line("phantom_vit", weights)
    monkeypatch.setattr(demo, "REFERENCE_CHECKSUMS", {"phantom_vit": (digest, "here")})
    assert "the reference backbone" in demo.checksum_line("phantom_vit", weights)
    monkeypatch.setattr(demo, "REFERENCE_CHECKSUMS", {"phantom_vit": ("0" * 64, "here")})
    assert "differs from the reference" in demo.checksum_line("phantom_vit", weights)
