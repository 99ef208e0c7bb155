"""A sweep's arms compared over paired seeds from their prediction files (molre_lib.analysis.seeds), the per-arm
table of a tuned sweep, and the tuning figures drawn from those tables."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from molre_lib.analysis.seeds import arm_summary, delta_replicates, design_comparisons, seed_comparisons
from molre_lib.engine.run_files import write_predictions
from molre_lib.stats.seeds import compare_seeds, hierarchical_delta

KEYS = ["ich", "sah", "fracture"]


def _runs(tmp_path, n_seeds=3, n_scans=80, gaps=(("lora", 0.2), ("molre", 0.4))):
    tmp_path.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    labels = (rng.random((n_scans, len(KEYS))) < 0.4).astype(float)
    mask = np.ones_like(labels)
    scan_ids = [f"s{i:03d}" for i in range(n_scans)]
    rows, probs = [], {}
    for arm, gap in gaps:
        for seed in range(n_seeds):
            p = labels * gap + rng.random(labels.shape)
            order = rng.permutation(n_scans) if arm == "molre" else np.arange(n_scans)  # files in any scan order
            run_dir = tmp_path / f"{arm}_seed{seed}"
            run_dir.mkdir()
            write_predictions(run_dir / "predictions_test.parquet", {"scan_id": [scan_ids[i] for i in order],
                              "probs": p[order], "labels": labels[order], "mask": mask[order]}, "test", KEYS)
            probs[arm, seed] = p
            rows.append({"run": run_dir.name, "run_dir": str(run_dir), "status": "finished", "backbone": "b",
                         "arm": arm, "seed": seed, "ADAPTER": arm, "macro_auc": 0.6 + gap / 10 + seed / 100})
    rows.append({"run": "molre_seed9", "run_dir": str(tmp_path / "x"), "status": "failed", "backbone": "b",
                 "arm": "molre", "seed": 9, "ADAPTER": "molre", "macro_auc": np.nan})
    return pd.DataFrame(rows), labels, mask, probs


def test_seed_comparisons_pair_runs_by_seed_on_the_same_scans(tmp_path):
    runs, labels, mask, probs = _runs(tmp_path)
    summary, per_seed = seed_comparisons(runs, n_boot=200, baseline="lora")
    assert len(summary) == 1 and (summary.loc[0, "arm_a"], summary.loc[0, "arm_b"]) == ("molre", "lora")
    direct = compare_seeds(labels, [probs["molre", s] for s in range(3)], [probs["lora", s] for s in range(3)],
                           mask, n_boot=200)
    assert summary.loc[0, "mean_delta"] == pytest.approx(direct.mean_delta)
    assert summary.loc[0, "delta_ci_low"] == pytest.approx(direct.ci_low)  # the failed seed 9 is not paired
    assert summary.loc[0, "sign_flip_p"] == pytest.approx(direct.sign_flip_p) and summary.loc[0, "n_seeds"] == 3
    np.testing.assert_allclose(per_seed["delta"], direct.deltas, atol=1e-6)


def test_delta_replicates_are_the_draws_behind_the_ci(tmp_path):
    runs, labels, mask, probs = _runs(tmp_path)
    reps = delta_replicates(runs, "b", "molre", "lora", n_boot=200, seed=3)
    direct = hierarchical_delta(labels, [probs["molre", s] for s in range(3)], [probs["lora", s] for s in range(3)],
                                mask, n_boot=200, seed=3)
    np.testing.assert_allclose(reps, direct, atol=1e-12)  # file order and the failed seed 9 do not enter
    summary, _ = seed_comparisons(runs, n_boot=200, seed=3, baseline="lora")
    assert np.quantile(reps, 0.025) == pytest.approx(summary.loc[0, "delta_ci_low"])
    with pytest.raises(ValueError, match="b: molre and probe share 0 finished seed"):
        delta_replicates(runs, "b", "molre", "probe")


def test_design_comparisons_pair_each_arm_with_itself_in_an_earlier_design(tmp_path):
    """A changed design (say, longer training) on the same data: each arm against its earlier self, paired by seed
    and scan, with the statistics of the arm-vs-arm comparison."""
    now, labels, mask, probs = _runs(tmp_path / "now")
    before, _, _, probs_before = _runs(tmp_path / "before", gaps=(("molre", 0.1), ("lora", 0.3)))
    summary, per_seed = design_comparisons(now, before, n_boot=200)
    assert list(zip(summary["arm_a"], summary["arm_b"])) == [("lora", "lora"), ("molre", "molre")]
    for arm in ("lora", "molre"):
        direct = compare_seeds(labels, [probs[arm, s] for s in range(3)], [probs_before[arm, s] for s in range(3)],
                               mask, n_boot=200)
        row = summary[summary["arm_a"] == arm].iloc[0]
        assert row["mean_delta"] == pytest.approx(direct.mean_delta) and row["n_seeds"] == 3
        assert row["delta_ci_low"] == pytest.approx(direct.ci_low) and row["sign_flip_p"] == pytest.approx(direct.sign_flip_p)
    assert summary.set_index("arm_a").loc["molre", "mean_delta"] > 0 > summary.set_index("arm_a").loc["lora", "mean_delta"]
    assert len(per_seed) == 6
    # an arm the earlier design did not run is left out; a design on other scans cannot be paired
    summary, _ = design_comparisons(now, before[before["arm"] == "lora"], n_boot=20)
    assert list(summary["arm_a"]) == ["lora"]
    other, *_ = _runs(tmp_path / "other", n_scans=60)
    with pytest.raises(ValueError, match="not scored on the same test scans"):
        design_comparisons(now, other, n_boot=20)


def test_arm_summary_joins_the_selection_to_its_final_runs(tmp_path):
    runs, *_ = _runs(tmp_path)
    selected = pd.DataFrame([{"ADAPTER": "lora", "arm": "lora", "n_trials": 4, "param_LR": 0.01},
                             {"ADAPTER": "molre", "arm": "molre", "n_trials": 4, "param_LR": 0.003}])
    table = arm_summary(selected, runs).set_index("arm")
    assert table.loc["lora", "n_seeds"] == 3 and table.loc["molre", "n_seeds"] == 3  # the failed run left out
    assert table.loc["molre", "mean_test_auc"] == pytest.approx(np.mean([0.64, 0.65, 0.66]))


def test_tuning_figures_from_the_tables(tmp_path):
    from molre_lib.plots.tuning import plot_optimisation_history, plot_seed_comparison, plot_slices

    trials = pd.DataFrame({"arm": ["lora"] * 3 + ["molre"] * 3, "trial": [0, 1, 2] * 2,
                           "state": ["COMPLETE", "FAIL", "COMPLETE", "COMPLETE", "COMPLETE", "COMPLETE"],
                           "val_auc": [0.6, np.nan, 0.7, 0.65, 0.62, 0.71],
                           "param_LR": [1e-4, 1e-3, 1e-2, 1e-4, 1e-3, 1e-1], "param_LORA_ALPHA": [1, 2, 4, 8, 16, 32]})
    fig = plot_optimisation_history(trials)
    best = {line.get_label(): line.get_ydata()[-1] for line in fig.axes[0].get_lines()}
    assert best == {"lora": 0.7, "molre": 0.71}  # best so far over the completed trials
    fig = plot_slices(trials)
    assert len(fig.axes) == 2 and fig.axes[0].get_xscale() == "log"  # one row (no backbone column), 2 parameters
    runs, *_ = _runs(tmp_path)
    fig = plot_seed_comparison(seed_comparisons(runs, n_boot=20)[1])
    assert len(fig.axes[0].get_lines()) == 3  # one paired line per seed


def test_tuning_figures_of_a_sweep_panel_by_backbone_with_paper_names_and_fixed_colours():
    """trials.csv starts with the grid keys: one panel (row) per backbone, arms under their paper names, and an
    arm has the same colour in the history, the slices and the seed comparison."""
    from matplotlib.collections import PathCollection
    from matplotlib.colors import to_hex

    from molre_lib.plots.tuning import plot_optimisation_history, plot_seed_comparison, plot_slices

    rows = []
    for backbone in ("phantom_vit", "natural_vit"):
        for adapter, shared in (("lora", False), ("molre", True), ("molre", False), ("linear_probe", False)):
            for t, lr in enumerate((0.001, 0.003, 0.009)):
                rows.append({"BACKBONE": backbone, "ADAPTER": adapter, "SHARED_A": shared,
                             "arm": f"{backbone}_{adapter}_shared_a{shared}", "trial": t, "state": "COMPLETE",
                             "val_auc": 0.6 + t / 100, "param_LR": lr,
                             "param_LORA_ALPHA_PER_RANK": np.nan if adapter == "linear_probe" else 0.5 * (t + 1)})
    trials = pd.DataFrame(rows)
    fig = plot_optimisation_history(trials)
    assert [ax.get_title() for ax in fig.axes] == ["phantom_vit", "natural_vit"]  # the sweep's order
    history = {line.get_label(): to_hex(line.get_color()) for line in fig.axes[0].get_lines()}
    assert set(history) == {"LoRA", "MoLRE (shared A)", "MoLRE", "Linear probe"}
    fig = plot_slices(trials)
    assert len(fig.axes) == 4 and fig.axes[0].get_ylabel().startswith("phantom_vit")
    # the probe has no alpha: its dots are in the LR column only (2 collections per arm: dots and the ringed best)
    assert len(fig.axes[0].collections) == 8 and len(fig.axes[1].collections) == 6
    per_seed = pd.DataFrame([{"backbone": "natural_vit", "arm_a": a, "arm_b": "lora", "seed": s, "auc_a": 0.7,
                              "auc_b": 0.69} for a in ("molre SHARED_A=True", "molre") for s in range(3)])
    fig = plot_seed_comparison(per_seed)
    ticks = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    assert ticks == ["LoRA", "MoLRE\n(shared A)", "MoLRE"] and len(fig.axes[0].get_lines()) == 3  # a line per seed
    scatters = [c for c in fig.axes[0].collections if isinstance(c, PathCollection)]  # not the mean bars
    dots = {ticks[k].replace("\n", " "): to_hex(c.get_facecolor()[0]) for k, c in enumerate(scatters)}
    assert all(dots[name] == history[name] for name in dots)


def test_slice_plot_rings_the_confirmed_choice_not_the_lucky_trial():
    """With confirmation (trials.csv's mean_val_auc for the candidates), the ring marks the best mean over seeds."""
    from molre_lib.plots.tuning import plot_slices

    trials = pd.DataFrame({"arm": ["lora"] * 3, "trial": [0, 1, 2], "state": ["COMPLETE"] * 3,
                           "val_auc": [0.60, 0.70, 0.65], "mean_val_auc": [np.nan, 0.58, 0.64],
                           "param_LR": [0.001, 0.009, 0.003]})
    ring = plot_slices(trials).axes[0].collections[1]  # dots, then the ring
    assert ring.get_offsets()[0][1] == pytest.approx(0.65)  # LR 0.003: best mean, not LR 0.009's lucky 0.70
    ring = plot_slices(trials.drop(columns="mean_val_auc")).axes[0].collections[1]
    assert ring.get_offsets()[0][1] == pytest.approx(0.70)  # without confirmation: the best trial
