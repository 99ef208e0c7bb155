"""`molre backbones` and `molre pretrain-demo` end to end (subprocesses)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from molre_lib.backbones import create_model

pytestmark = pytest.mark.slow


def _molre(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", "import sys; from molre_lib.cli import main; sys.exit(main())", *args], capture_output=True, text=True, env=env,
                          timeout=300)


def test_backbones_table_and_pretrain_demo(tmp_path):
    env = dict(os.environ, MOLRE_CACHE_DIR=str(tmp_path / "cache"), HF_HUB_OFFLINE="1",
               HF_HUB_CACHE=str(tmp_path / "hf"))
    table = _molre("backbones", env=env)
    assert table.returncode == 0, table.stderr
    for name in ("dinov3_vitb16", "medsiglip_448", "ctfm_segresenc", "phantom_vit"):
        assert name in table.stdout
    rows = json.loads(_molre("backbones", "--json", env=env).stdout)
    assert all(r["weights"] == "not found" for r in rows)

    run = _molre("pretrain-demo", "--steps", "2", "--subjects", "2", env=env)
    assert run.returncode == 0, run.stderr
    assert "cached at" in run.stdout
    again = _molre("pretrain-demo", env=env)
    assert "already cached" in again.stdout
    rows = {r["name"]: r for r in json.loads(_molre("backbones", "--json", env=env).stdout)}
    assert rows["phantom_vit"]["weights"] == str(tmp_path / "cache" / "phantom_vit")

    meta = json.loads((tmp_path / "cache" / "phantom_vit" / "config.json").read_text())
    assert meta["finding_labels_used"] is False and meta["steps_done"] == 2
    model = create_model("phantom_vit", weights=tmp_path / "cache" / "phantom_vit")
    assert model(torch.rand(1, 3, 4, 64, 64)).shape == (1, 75)


def test_pretrain_natural_vit_from_bundled_photos(tmp_path):
    """The general-domain twin learns from photographs shipped in packages (no download) and loads like phantom_vit."""
    env = dict(os.environ, MOLRE_CACHE_DIR=str(tmp_path / "cache"), HF_HUB_OFFLINE="1",
               HF_HUB_CACHE=str(tmp_path / "hf"))
    run = _molre("pretrain-demo", "--backbone", "natural_vit", "--steps", "3", env=env)
    assert run.returncode == 0, run.stderr
    folder = tmp_path / "cache" / "natural_vit"
    meta = json.loads((folder / "config.json").read_text())
    assert meta["steps_done"] == 3 and meta["photos"] >= 15 and "no CT" in meta["data"]
    rows = {r["name"]: r for r in json.loads(_molre("backbones", "--json", env=env).stdout)}
    assert rows["natural_vit"]["weights"] == str(folder) and rows["natural_vit"]["family"] == "general-2D"
    assert rows["phantom_vit"]["weights"] == "not found"
    torch.manual_seed(0)
    random_init = create_model("natural_vit")
    pretrained = create_model("natural_vit", weights=folder)
    x = torch.rand(1, 3, 4, 64, 64)
    assert pretrained(x).shape == (1, 75)
    enc_a, enc_b = random_init.state_dict(), pretrained.state_dict()
    assert any(not torch.equal(enc_a[k], enc_b[k]) for k in enc_a if "encoder" in k)
    bad = _molre("pretrain-demo", "--backbone", "natural_vit", "--subjects", "4", "--force", env=env)
    assert bad.returncode != 0 and "phantom_vit only" in bad.stderr


def test_photo_crops_are_in_range_and_scaled():
    from molre_lib.backbones.natural_vit import load_photos, random_crops

    photos = load_photos()
    assert all(p.shape[0] == 3 and 0.0 <= float(p.min()) and float(p.max()) <= 1.0 for p in photos)
    gen = torch.Generator().manual_seed(0)
    x, scale = random_crops(photos, 16, 64, gen)
    assert x.shape == (16, 3, 64, 64) and float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    assert float(scale.min()) >= 0.0 and float(scale.max()) <= 1.0 and float(scale.std()) > 0.05
