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
