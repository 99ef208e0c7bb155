"""benchmarks/phantom_tuned_length.py retrains a tuned sweep's final runs for longer on train + val only and
compares each seed with its study run: checked on two real (tiny) final runs trained here, and on what a user sees
when the sweep is missing or unfinished."""
from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from molre_lib.cli import main

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "phantom_tuned_length.py"


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, cwd=ROOT)


def _sweep(tmp_path: Path) -> Path:
    from molre_lib.data.synth import synthesize

    sweep = tmp_path / "sweep"
    manifest = synthesize(sweep / "data", 24, shape=(8, 32, 32), seed=0, workers=1)
    (sweep / "tune").mkdir()
    rows = pd.read_csv(manifest)
    rows[rows["split"] != "test"].to_csv(sweep / "tune" / "manifest_no_test_abc.csv", index=False)
    common = ["--manifest", str(manifest), "--backbone", "phantom_vit", "--reduced", "--no-pretrained",
              "--volume-shape", "4", "32", "32", "--epochs", "1", "--batch-size", "8", "--lr", "3e-3", "--device", "cpu",
              "--seed", "0", "--threads", "1"]
    arms = {"phantom_vit_lora_shared0_seed0": ("lora", False, ["--adapter", "lora", "--rank", "4"]),
            "phantom_vit_molre_shared1_seed0": ("molre", True, ["--adapter", "molre", "--rank", "2", "--n-experts",
                                                                 "2", "--shared-a"])}
    with open(sweep / "runs.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["run", "run_dir", "BACKBONE", "ADAPTER", "SHARED_A", "SEED"])
        for run, (adapter, shared, flags) in arms.items():
            assert main(["train", "--run-dir", str(sweep / run), *common, *flags]) == 0
            writer.writerow([run, f"/elsewhere/{run}", "phantom_vit", adapter, shared, 0])  # a moved folder
    return sweep


@pytest.mark.slow
def test_longer_runs_read_no_test_scans_and_are_compared_seed_by_seed(tmp_path):
    sweep = _sweep(tmp_path)
    out = tmp_path / "length.json"
    proc = _run("--sweep-dir", str(sweep), "--seeds", "0", "--epochs", "2", "--work", str(tmp_path / "work"),
                "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    assert result["study_epochs"] == [1] and result["longer_epochs"] == 2
    assert set(result["arms"]) == {"LoRA", "MoLRE shared A"}
    for name, arm in result["arms"].items():
        (seed,) = arm["seeds"]
        assert seed["delta"] == pytest.approx(seed["longer_val_auc"] - seed["study_val_auc"], abs=1e-3)
        assert len(seed["study_curve"]) == 1 and len(seed["longer_curve"]) == 2
    lora, molre = (result["arms"][k]["seeds"][0] for k in ("LoRA", "MoLRE shared A"))
    gap = result["gap_to_lora"]["MoLRE shared A"]
    assert gap["longer_gap_mean"] == pytest.approx(molre["longer_val_auc"] - lora["longer_val_auc"], abs=1e-3)
    # the longer run: the study run's configuration but for its length, on the view without the test rows
    longer = json.loads((tmp_path / "work" / "phantom_vit_molre_shared1_seed0_e2" / "config.json").read_text())["train"]
    study = json.loads((sweep / "phantom_vit_molre_shared1_seed0" / "config.json").read_text())["train"]
    assert longer["test_split"] == "" and longer["manifest"].endswith("manifest_no_test_abc.csv")
    assert {k for k in study if study[k] != longer[k]} <= {"epochs", "test_split", "manifest", "data_root", "eval_bootstrap",
                                                           "tensorboard"}
    assert not (tmp_path / "work" / "phantom_vit_molre_shared1_seed0_e2" / "predictions_test.parquet").exists()
    # on smaller slices: the study's slice count, the encoder and the volume at H x W, in their own folder
    proc = _run("--sweep-dir", str(sweep), "--seeds", "0", "--epochs", "2", "--arms", "lora", "--image-size", "16", "16",
                "--work", str(tmp_path / "work"), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert json.loads(out.read_text())["longer_image_size"] == [16, 16]
    small = json.loads((tmp_path / "work" / "phantom_vit_lora_shared0_seed0_e2_px16x16" / "config.json").read_text())
    assert small["train"]["image_size"] == [16, 16] and small["train"]["volume_shape"] == [4, 16, 16]


def test_without_a_finished_sweep_it_says_what_is_missing(tmp_path):
    proc = _run("--sweep-dir", str(tmp_path / "nowhere"), "--work", str(tmp_path / "w"))
    assert proc.returncode == 2 and "nowhere/runs.csv not found" in proc.stderr and "make phantom-study" in proc.stderr
    assert "Traceback" not in proc.stderr
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    (sweep / "runs.csv").write_text("run,run_dir,BACKBONE,ADAPTER,SHARED_A,SEED\n"
                                    "phantom_vit_lora_shared0_seed0,x,phantom_vit,lora,False,0\n")
    proc = _run("--sweep-dir", str(sweep), "--work", str(tmp_path / "w"))
    assert proc.returncode == 2 and "phantom_vit_lora_shared0_seed0: no metrics.json" in proc.stderr
    proc = _run("--sweep-dir", str(sweep), "--backbone", "natural_vit", "--work", str(tmp_path / "w"))
    assert proc.returncode == 2 and "no run of backbone 'natural_vit'" in proc.stderr
