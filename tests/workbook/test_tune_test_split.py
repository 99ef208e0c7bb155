"""Tuning never reads the test split: trials of the real 01_train code on a tiny phantom give the same validation
AUCs and the same chosen configuration after the test labels were scrambled and the test scans deleted.

The trials train in this process (the notebook's own two calls: ``check_parameters`` + ``train``) instead of
under papermill, to keep the test cheap; the sweep's papermill path is tested in test_tune.py with stand-in
notebooks, and here once with the real ones, from the trials to 05_summary's tuned comparison.
"""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from molre_lib.workbook.sweep import SweepConfig
from molre_lib.workbook.tune import read_selected, read_trials
from molre_lib.workbook.tune_trials import run_tuning

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"


def _train_here(job) -> None:
    from molre_lib.engine.train import train
    from molre_lib.workbook.params import check_parameters, train_config
    from molre_lib.workbook.sweep_checks import declared_parameters

    params = check_parameters("01_train", {**declared_parameters(job.notebook), **job.parameters})
    train(train_config(params), params["RUN_DIR"])
    return None


def _tune(tmp_path: Path, name: str, manifest: Path) -> Path:
    cfg = SweepConfig.from_dict({
        "name": name, "notebooks_dir": str(NOTEBOOKS), "runs_dir": str(tmp_path / "runs"), "cwd": str(tmp_path),
        "figures_dir": str(tmp_path / "figures"), "grid": {"BACKBONE": ["phantom_vit"], "ADAPTER": ["lora"]},
        "parameters": {"MANIFEST": str(manifest), "N_EXPERTS": 1, "RANK": 2, "MAX_STEPS": 2, "BATCH_SIZE": 4,
                       "PRETRAINED": False, "REDUCED": True, "EVAL_BOOTSTRAP": 0, "DEVICE": "cpu", "NUM_WORKERS": 0,
                       "CACHE_DIR": "", "VOLUME_SHAPE": [8, 32, 32], "FIGURES_DIR": "{run_dir}/figures"},
        "tune": {"n_trials": 2, "final_seeds": 1, "space": {"LR": {"choices": [0.001, 0.05]}}}})
    run_tuning(cfg, log=lambda *_: None, execute=_train_here)
    return tmp_path / "runs" / name


@pytest.mark.slow
def test_poisoned_test_labels_and_deleted_test_scans_change_nothing(tmp_path):
    from molre_lib.data.synth import synthesize

    manifest = synthesize(tmp_path / "data", 20, shape=(8, 32, 32), seed=0)
    clean = _tune(tmp_path, "clean", manifest)
    rows = list(csv.DictReader(open(manifest)))
    rng = np.random.default_rng(1)
    tests = [r for r in rows if r["split"] == "test"]
    assert tests, "the phantom set needs test rows for this test"
    for r in tests:  # every test label flipped at random, every test scan removed from disk
        for key in r:
            if r[key] in ("0", "1") and key not in ("scan_id", "patient_id", "split", "path"):
                r[key] = str(int(rng.random() < 0.5))
        target = manifest.parent / r["path"]
        target.unlink() if target.is_file() else None
    with open(manifest, "w", newline="") as fh:
        writer = csv.DictWriter(fh, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    poisoned = _tune(tmp_path, "poisoned", manifest)
    a, b = read_trials(clean), read_trials(poisoned)
    assert list(a["state"]) == ["COMPLETE", "COMPLETE"] == list(b["state"])
    np.testing.assert_allclose(a["val_auc"], b["val_auc"], rtol=0, atol=1e-9)
    assert list(a["param_LR"]) == list(b["param_LR"])
    sa, sb = read_selected(clean), read_selected(poisoned)
    assert (sa.loc[0, "best_trial"], sa.loc[0, "param_LR"]) == (sb.loc[0, "best_trial"], sb.loc[0, "param_LR"])
    for trial in (poisoned / "tune" / "phantom_vit_lora").glob("trial*"):
        assert not (trial / "predictions_test.parquet").exists() and (trial / "predictions_val.parquet").is_file()


@pytest.mark.slow
def test_a_tuned_sweep_through_the_real_notebooks_ends_in_05s_tuned_comparison(tmp_path):
    """The user's path end to end, at toy size: 01_train trials and final seeds under papermill, then 05_summary's
    section 4 (the tuned arms, the seed-level statistics, the three tuning figures) on what they wrote."""
    from molre_lib.data.synth import synthesize
    from molre_lib.workbook.sweep import run_sweep

    manifest = synthesize(tmp_path / "data", 24, shape=(8, 32, 32), seed=0)
    cfg = SweepConfig.from_dict({
        "name": "tiny", "notebooks_dir": str(NOTEBOOKS), "kernel": "molre", "runs_dir": str(tmp_path / "runs"),
        "cwd": str(tmp_path), "figures_dir": str(tmp_path / "figures"),
        "grid": {"BACKBONE": ["phantom_vit"], "ADAPTER": ["lora", "molre"]},
        "parameters": {"MANIFEST": str(manifest), "RANK": 2, "MAX_STEPS": 2, "BATCH_SIZE": 4, "PRETRAINED": False,
                       "REDUCED": True, "EVAL_BOOTSTRAP": 0, "DEVICE": "cpu", "NUM_WORKERS": 0, "THREADS": 1,
                       "CACHE_DIR": "", "VOLUME_SHAPE": [4, 32, 32], "FIGURES_DIR": "{figures_dir}/{run}"},
        "overrides": {"ADAPTER": {"lora": {"N_EXPERTS": 1}, "molre": {"N_EXPERTS": 2}}},
        "tune": {"n_trials": 2, "final_seeds": 2, "space": {"LR": {"choices": [0.001, 0.01]}}},
        "analysis": [{"notebook": "05_summary.ipynb", "per": "sweep",
                      "parameters": {"SWEEP_DIR": "{sweep_dir}", "REFERENCE": "lora",
                                     "FIGURES_DIR": "{figures_dir}/05_summary"}}]})
    rows = run_sweep(cfg, log=lambda *_: None)
    assert {r["status"] for r in rows} == {"ok"}, [r for r in rows if r["status"] != "ok"]
    sweep = tmp_path / "runs" / "tiny"
    arms = list(csv.DictReader(open(sweep / "tune" / "tuned_arms.csv")))
    assert len(arms) == 2 and {a["n_seeds"] for a in arms} == {"2"}
    comparison = list(csv.DictReader(open(sweep / "tune" / "seed_comparisons.csv")))
    assert [(c["arm_a"], c["arm_b"], c["n_seeds"]) for c in comparison] == [("molre", "lora", "2")]
    for name in ("tuning_history", "tuning_slices", "seed_comparison"):
        assert (tmp_path / "figures" / "tiny" / "05_summary" / f"{name}.pdf").is_file(), name
