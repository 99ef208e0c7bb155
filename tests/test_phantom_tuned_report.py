"""benchmarks/phantom_tuned.py turns the tuned study's sweep folder into phantom_tuned.csv and its answers: checked
on a small tuned sweep written here (prediction files, config.json, selected.csv, trials.csv) whose gains are
known: MoLRE is better than LoRA by a wide margin on the general-domain backbone only."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from molre_lib.analysis.seeds import seed_comparisons
from molre_lib.engine.run_files import write_predictions

from benchmark_scripts import load_benchmark

KEYS = ["ich", "sah", "fracture"]
# backbone -> family, and each arm's signal strength in its predictions (higher: a better arm)
BACKBONES = {"phantom_vit": ("demo", {"lora": 0.3, "molre": 0.3, "linear_probe": 0.1}),
             "natural_vit": ("general-2D", {"lora": 0.2, "molre": 0.6, "linear_probe": 0.1})}


def _module():
    return load_benchmark("phantom_tuned")


def _sweep(tmp_path: Path, n_seeds: int = 3, n_scans: int = 120, scale: float = 1.0):
    """A tuned sweep's tables and run files; ``scale`` multiplies every arm's signal (an earlier, weaker design of
    the study on the same scans)."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    labels = (rng.random((n_scans, len(KEYS))) < 0.4).astype(float)
    mask = np.ones_like(labels)
    rows, selected, trials = [], [], []
    for backbone, (family, signal) in BACKBONES.items():
        for adapter, gap in signal.items():
            gap *= scale
            arm_name = f"BACKBONE={backbone} ADAPTER={adapter}"
            for seed in range(n_seeds):
                run_dir = tmp_path / f"{backbone}_{adapter}_seed{seed}"
                run_dir.mkdir()
                write_predictions(run_dir / "predictions_test.parquet",
                                  {"scan_id": [f"s{i:03d}" for i in range(n_scans)], "probs": labels * gap
                                   + rng.random(labels.shape), "labels": labels, "mask": mask}, "test", KEYS)
                alpha = None if adapter == "linear_probe" else 4.0
                (run_dir / "config.json").write_text(json.dumps({"scaling": {"alpha": alpha, "effective_step": 0.002}}))
                # validation after each of 3 epochs (a step without validation in between, as 01_train logs it)
                (run_dir / "train_log.csv").write_text(
                    "step,epoch,loss,lr,val_macro_auc,elapsed_s\n1,0,0.2,0.01,,0.1\n"
                    + "".join(f"{2 * e + 2},{e},0.1,0.01,{0.6 + gap / 4 + e * (0.02 - 0.01 * e) + seed / 100:.4f},1\n"
                              for e in range(3)))
                rows.append({"run": run_dir.name, "run_dir": str(run_dir), "status": "finished", "backbone": backbone,
                             "family": family, "arm": adapter, "adapter": adapter, "seed": seed, "n_test_scans": n_scans,
                             "macro_auc": 0.6 + gap / 2 + seed / 100, "BACKBONE": backbone, "ADAPTER": adapter})
            lrs = [0.001, 0.002, 0.005, 0.01]
            for t, lr in enumerate(lrs):
                trials.append({"arm": arm_name, "trial": t, "state": "COMPLETE", "val_auc": 0.6 + t / 100,
                               "param_LR": lr})
            selected.append({"BACKBONE": backbone, "ADAPTER": adapter, "arm": arm_name, "n_trials": 4,
                             "best_val_auc": 0.63, "param_LR": 0.01 if adapter == "lora" else 0.005})
    return pd.DataFrame(rows), pd.DataFrame(selected), pd.DataFrame(trials)


def test_arm_table_answers_and_grid_edges(tmp_path):
    mod = _module()
    runs, selected, trials = _sweep(tmp_path)
    vs_lora, _ = seed_comparisons(runs, n_boot=200, baseline="lora")
    vs_probe, _ = seed_comparisons(runs, n_boot=200, baseline="linear_probe")
    untuned = pd.DataFrame([{"backbone": "natural_vit", "arm": "lora", "mean_auc": 0.65}])
    runs_val = runs.assign(macro_auc=runs["macro_auc"] - 0.05)  # the final seeds' validation AUCs
    selected["mean_val_auc"], selected["min_val_auc"] = 0.62, 0.61  # the choice over its trial + confirmation seeds
    one_seed = pd.DataFrame([{"backbone": "natural_vit", "arm": "molre", "best_lr": 0.009, "best_alpha": 1.0,
                              "mean_auc": 0.8}])  # the same arm when it took its best single trial
    before = pd.DataFrame([{"backbone": "phantom_vit", "arm": "molre", "mean_auc": 0.7}])  # an earlier design
    arms = mod.arm_table(selected, runs, vs_lora, untuned, runs_val, one_seed, trials, before)

    assert list(arms.columns[:16]) == ["backbone", "family", "arm", "n_trials", "best_lr", "best_alpha",
                                       "effective_step", "n_seeds", "mean_auc", "min_auc", "max_auc", "delta_vs_lora",
                                       "delta_ci_low", "delta_ci_high", "sign_flip_p", "p_better"]
    row = arms.set_index(["backbone", "arm"])
    assert row.loc[("natural_vit", "lora"), "mean_auc"] == pytest.approx(0.71)  # 0.6 + 0.1 + mean seed 0.01
    assert row.loc[("natural_vit", "lora"), "tuning_change"] == pytest.approx(0.06)
    assert row.loc[("natural_vit", "lora"), "final_val_mean"] == pytest.approx(0.66)  # beside the trial's 0.63
    assert row.loc[("natural_vit", "lora"), "final_val_min"] == pytest.approx(0.65)
    assert row.loc[("natural_vit", "lora"), "selection_val_mean"] == pytest.approx(0.62)
    assert row.loc[("natural_vit", "molre"), "one_seed_lr"] == 0.009
    assert row.loc[("natural_vit", "molre"), "confirmation_change"] == pytest.approx(0.91 - 0.8)  # 0.6 + 0.3 + 0.01
    assert np.isnan(row.loc[("natural_vit", "lora"), "confirmation_change"])
    assert (row.loc[("natural_vit", "lora"), "trial_val_min"], row.loc[("natural_vit", "lora"), "trial_val_max"]) == \
        pytest.approx((0.6, 0.63))                                              # its 4 trials: 0.60 ... 0.63
    assert row.loc[("phantom_vit", "molre"), "before_change"] == pytest.approx(0.76 - 0.7)  # 0.6 + 0.15 + 0.01
    assert np.isnan(row.loc[("natural_vit", "molre"), "before_change"])      # no row in the earlier design
    assert np.isnan(row.loc[("natural_vit", "lora"), "delta_vs_lora"])          # the reference itself
    assert np.isnan(row.loc[("phantom_vit", "linear_probe"), "best_alpha"])     # a probe has no alpha
    assert row.loc[("phantom_vit", "molre"), "best_alpha"] == 4.0 and row.loc[("phantom_vit", "molre"), "n_seeds"] == 3
    molre = row.loc[("natural_vit", "molre")]
    assert molre["delta_ci_low"] > 0 and molre["p_better"] == 1.0
    assert molre["sign_flip_p"] == pytest.approx(0.25)  # 3 seeds, all positive: 2 / 2^3

    out = mod.answers(arms, vs_lora, vs_probe, runs, n_boot=200)
    assert out["molre_vs_lora"]["natural_vit"]["molre"]["resolved"]
    assert out["best_adapter_vs_probe"]["natural_vit"]["arm"] == "molre"
    assert out["confirmation_change"]["natural_vit"] == {"molre": {"one_seed_choice": [0.009, 1.0],
                                                                   "choice": [0.005, 4.0], "test_auc_change": 0.11}}
    assert out["tuning_spread"]["phantom_vit"]["lora"] == [0.6, 0.63]
    assert out["design_change"]["phantom_vit"] == {"molre": 0.06}
    gain = out["general_minus_ct_gain"]["molre"]
    assert gain["general"] == "natural_vit" and gain["ct"] == "phantom_vit"
    assert gain["ci"][0] < gain["difference"] < gain["ci"][1] and gain["ci"][0] > 0  # larger on the general backbone

    notes = mod.edges(trials, selected)  # LoRA chose 0.01, the highest LR tried; the others an inner value
    assert notes == [f"BACKBONE={b} ADAPTER=lora: LR = 0.01 is the highest value tried" for b in BACKBONES]


def test_a_design_change_on_the_same_test_scans_is_paired(tmp_path):
    """An earlier design of the study on the same data (here: every arm's signal halved): each arm's change is the
    mean of its per-seed changes, with a CI and sign-flip p, in the table and the answers."""
    from molre_lib.analysis.seeds import design_comparisons

    mod = _module()
    runs, selected, trials = _sweep(tmp_path / "now")
    before_runs, _, _ = _sweep(tmp_path / "before", scale=0.5)
    vs_lora, _ = seed_comparisons(runs, n_boot=200, baseline="lora")
    vs_probe, _ = seed_comparisons(runs, n_boot=200, baseline="linear_probe")
    paired, _ = design_comparisons(runs, before_runs, n_boot=200)
    before = pd.DataFrame([{"backbone": "natural_vit", "arm": "molre", "mean_auc": 0.7}])
    arms = mod.arm_table(selected, runs, vs_lora, None, None, None, trials, before, paired).set_index(["backbone", "arm"])
    molre = arms.loc[("natural_vit", "molre")]
    hit = paired[(paired["backbone"] == "natural_vit") & (paired["arm_a"] == "molre")].iloc[0]
    assert molre["before_change"] == pytest.approx(hit["mean_delta"]) and molre["before_change"] > 0  # twice the signal
    assert molre["before_ci_low"] > 0 and molre["before_sign_flip_p"] == pytest.approx(0.25)  # 3 seeds, all better
    assert molre["before_mean_auc"] == 0.7                                  # the earlier table's mean, beside it
    out = mod.answers(arms.reset_index(), vs_lora, vs_probe, runs, n_boot=200)
    assert out["design_change_paired"]["natural_vit"]["molre"]["ci"][0] > 0
    assert set(out["design_change_paired"]) == set(BACKBONES)


def test_validation_curves_of_the_final_runs(tmp_path):
    """Each arm's validation AUC per epoch, over its seeds, and how much the last epochs still added."""
    from molre_lib.analysis.seeds import validation_curves
    from molre_lib.plots.tuning import plot_validation_curves

    runs, _, _ = _sweep(tmp_path)
    curves = validation_curves(runs)
    lora = curves["natural_vit"]["lora"]  # gap 0.2: 0.65 + e * (0.02 - 0.01 e) + seed / 100, seeds 0-2
    assert lora["epochs"] == [1, 2, 3] and lora["n_seeds"] == 3
    assert lora["mean"] == pytest.approx([0.66, 0.67, 0.66])
    assert lora["min"] == pytest.approx([0.65, 0.66, 0.65]) and lora["max"] == pytest.approx([0.67, 0.68, 0.67])
    assert lora["last_epoch_gain"] == pytest.approx(-0.01) and lora["last_two_epochs_gain"] == pytest.approx(0.0)
    fig = plot_validation_curves(curves)  # one panel per backbone, a line (mean) and a band (range) per arm
    assert [ax.get_title() for ax in fig.axes] == [f"{b} (mean and range over 3 seeds)" for b in BACKBONES]
    assert all(len(ax.lines) == 3 and len(ax.collections) == 3 for ax in fig.axes)
    assert fig.axes[1].lines[0].get_ydata() == pytest.approx(curves["natural_vit"]["lora"]["mean"])


def test_a_moved_sweep_folder_is_read_where_it_is_now(tmp_path):
    """runs.csv keeps the absolute run folders of where the sweep ran; after moving the sweep folder the runs are
    read from the new place, not reported missing, nor taken from a new sweep that reuses the old place."""
    from molre_lib.analysis.summary import collect_runs

    old = tmp_path / "scratch" / "sweep"
    run_dir = old / "r_seed0"
    run_dir.mkdir(parents=True)  # not started yet: no config.json, so only where it is matters
    pd.DataFrame([{"run": "r_seed0", "run_dir": str(run_dir), "SEED": 0}]).to_csv(old / "runs.csv", index=False)
    new = tmp_path / "home" / "sweep"
    new.parent.mkdir()
    old.rename(new)
    assert collect_runs(new)["run_dir"].tolist() == [str(new / "r_seed0")]
    assert collect_runs(new)["status"].tolist() == ["missing"]
    # a new sweep of the same name now runs where the moved one was: the moved sweep still reads its own runs
    (old / "r_seed0").mkdir(parents=True)
    assert collect_runs(new)["run_dir"].tolist() == [str(new / "r_seed0")]
    # a sweep read where it ran keeps the recorded paths
    pd.DataFrame([{"run": "r_seed0", "run_dir": str(old / "r_seed0"), "SEED": 0}]).to_csv(old / "runs.csv", index=False)
    assert collect_runs(old)["run_dir"].tolist() == [str(old / "r_seed0")]


def test_without_a_tuned_sweep_it_says_what_to_run(tmp_path, capsys):
    assert _module().main(["--sweep-dir", str(tmp_path / "none"), "--out-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "selected.csv not found" in err and "make phantom-study" in err
    assert "\n" not in err and not list(tmp_path.glob("phantom_tuned.*"))
