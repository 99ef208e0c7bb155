"""Sweep summary: run statuses from the sweep's files and the paired ΔAUC of the paper table."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from molre_lib.data.taxonomy import FINDING_KEYS
from molre_lib.analysis.summary import collect_runs, paper_table

N = 80


def _write_run(run_dir, adapter: str, probs: np.ndarray, labels: np.ndarray, macro: float, shared_a: bool = False) -> None:
    run_dir.mkdir(parents=True)
    train = {"backbone": "phantom_vit", "adapter": adapter, "seed": 0, "rank": 4, "n_experts": 4, "router": "token",
             "shared_a": shared_a}
    params = {"pct_trainable": 1.0, "pct_added": 0.5}
    (run_dir / "config.json").write_text(json.dumps({"train": train, "params": params}))
    summary = {"macro_auc": {"value": macro, "ci_low": macro - 0.05, "ci_high": macro + 0.05},
               "micro_auc": {"value": macro, "ci_low": 0, "ci_high": 1}}
    (run_dir / "metrics.json").write_text(json.dumps({"test": {"summary": summary, "n_scans": N}}))
    frame = {"scan_id": [f"s{i}" for i in range(N)]}
    frame.update({f"prob_{k}": probs[:, j] for j, k in enumerate(FINDING_KEYS)})
    frame.update({f"label_{k}": labels[:, j] for j, k in enumerate(FINDING_KEYS)})
    pd.DataFrame(frame).to_parquet(run_dir / "predictions_test.parquet")


@pytest.fixture
def sweep(tmp_path):
    rng = np.random.default_rng(0)
    labels = (rng.random((N, 75)) < 0.3).astype(float)
    probs = {"lora": labels * 0.3 + rng.random((N, 75)), "molre": labels * 0.6 + rng.random((N, 75))}
    rows = []
    for adapter in ("lora", "molre"):
        run = tmp_path / f"phantom_vit_{adapter}"
        _write_run(run, adapter, probs[adapter], labels, 0.7)
        rows.append({"run": run.name, "run_dir": str(run)})
    rows.append({"run": "broken", "run_dir": str(tmp_path / "broken")})
    pd.DataFrame(rows).to_csv(tmp_path / "runs.csv", index=False)
    pd.DataFrame([
        {"step": "01_train", "key": "broken", "status": "failed", "error": "exploded"},
        {"step": "02_routing", "key": "phantom_vit_molre", "status": "failed", "error": "plot bug"},
    ]).to_csv(tmp_path / "sweep_status.csv", index=False)
    return tmp_path, labels, probs


def test_statuses_come_from_training_only(sweep) -> None:
    runs = collect_runs(sweep[0])
    status = dict(zip(runs["run"], runs["status"]))
    # an analysis notebook that failed does not make a finished run "failed"; the failed training is listed
    assert status == {"phantom_vit_lora": "finished", "phantom_vit_molre": "finished", "broken": "failed"}
    assert runs.loc[runs["run"] == "broken", "error"].item() == "exploded"


def test_paper_table_delta_matches_scikit_learn(sweep) -> None:
    sweep_dir, labels, probs = sweep
    table = paper_table(collect_runs(sweep_dir), n_boot=200, seed=0)
    expected = np.mean([roc_auc_score(labels[:, j], probs["molre"][:, j]) - roc_auc_score(labels[:, j], probs["lora"][:, j])
                        for j in range(75)])
    row = table.iloc[0]
    assert len(table) == 1 and (row["reference"], row["arm"]) == ("lora", "molre")
    assert row["delta_auc"] == pytest.approx(expected, abs=1e-12)
    assert row["delta_ci_low"] < row["delta_auc"] < row["delta_ci_high"]
    assert row["delta_auc"] > 0  # MoLRE's scores were made more separable


def test_paper_table_refuses_two_variants_of_one_adapter(sweep) -> None:
    sweep_dir, labels, probs = sweep
    _write_run(sweep_dir / "phantom_vit_molre_shared", "molre", probs["molre"], labels, 0.7)
    runs_csv = sweep_dir / "runs.csv"
    table = pd.read_csv(runs_csv)
    table.loc[len(table)] = {"run": "phantom_vit_molre_shared", "run_dir": str(sweep_dir / "phantom_vit_molre_shared")}
    table.to_csv(runs_csv, index=False)
    runs = collect_runs(sweep_dir)
    with pytest.raises(ValueError, match=r"\['phantom_vit_molre', 'phantom_vit_molre_shared'\] share backbone"):
        paper_table(runs, n_boot=0)
    chosen = runs[runs["run"] != "phantom_vit_molre_shared"]  # one variant per adapter pairs cleanly
    assert len(paper_table(chosen, n_boot=0)) == 1


def test_arms_from_the_sweep_grid_pair_each_variant_with_the_reference(tmp_path) -> None:
    rng = np.random.default_rng(1)
    labels = (rng.random((N, 75)) < 0.3).astype(float)
    rows = []
    probs = {}
    for adapter, shared in (("lora", False), ("molre", False), ("molre", True)):
        run = tmp_path / f"{adapter}_shared{int(shared)}"
        probs[run.name] = labels * rng.uniform(0.2, 0.8) + rng.random((N, 75))
        _write_run(run, adapter, probs[run.name], labels, 0.7, shared_a=shared)
        rows.append({"run": run.name, "run_dir": str(run), "BACKBONE": "phantom_vit", "ADAPTER": adapter,
                     "SHARED_A": shared, "SEED": 0})
    pd.DataFrame(rows).to_csv(tmp_path / "runs.csv", index=False)
    runs = collect_runs(tmp_path)
    assert list(runs["arm"]) == ["lora", "molre SHARED_A=False", "molre SHARED_A=True"]  # LoRA never varies it
    table = paper_table(runs, n_boot=0).set_index("arm")
    assert list(table.index) == ["molre SHARED_A=False", "molre SHARED_A=True"]
    for arm, run in (("molre SHARED_A=False", "molre_shared0"), ("molre SHARED_A=True", "molre_shared1")):
        expected = np.mean([roc_auc_score(labels[:, j], probs[run][:, j]) - roc_auc_score(labels[:, j], probs["lora_shared0"][:, j])
                            for j in range(75)])
        assert table.loc[arm, "delta_auc"] == pytest.approx(expected, abs=1e-12)


def test_paired_category_delta_matches_scikit_learn_and_the_macro_delta(sweep) -> None:
    from molre_lib.analysis.summary import paired_category_delta
    from molre_lib.data.taxonomy import CATEGORY_OF

    sweep_dir, labels, probs = sweep
    table = paired_category_delta(sweep_dir / "phantom_vit_lora", sweep_dir / "phantom_vit_molre", n_boot=200)
    assert list(table["category"])[-1] == "all" and len(table) == 7
    delta = {k: roc_auc_score(labels[:, j], probs["molre"][:, j]) - roc_auc_score(labels[:, j], probs["lora"][:, j])
             for j, k in enumerate(FINDING_KEYS)}
    row = table.set_index("category").loc["mass"]
    assert row["delta_auc"] == pytest.approx(np.mean([d for k, d in delta.items() if CATEGORY_OF[k] == "mass"]), abs=1e-12)
    assert row["ci_low"] < row["delta_auc"] < row["ci_high"]
    macro = paper_table(collect_runs(sweep_dir), n_boot=200).iloc[0]
    everything = table.set_index("category").loc["all"]
    assert everything["delta_auc"] == pytest.approx(macro["delta_auc"], abs=1e-12)
    assert everything["ci_low"] == pytest.approx(macro["delta_ci_low"]) and everything["n_findings"] == 75


def test_paper_table_refuses_what_compare_runs_refuses(sweep) -> None:
    """Both pair runs with engine.run_files.paired_predictions: a label that differs on a shared scan means the
    runs were not scored on the same test set, for the per-finding comparison and for the paper table alike."""
    from molre_lib.engine.evaluate import compare_runs

    sweep_dir, labels, probs = sweep
    changed = labels.copy()
    changed[5, 3] = 1 - changed[5, 3]
    frame = pd.DataFrame({"scan_id": [f"s{i}" for i in range(N)],
                          **{f"prob_{k}": probs["molre"][:, j] for j, k in enumerate(FINDING_KEYS)},
                          **{f"label_{k}": changed[:, j] for j, k in enumerate(FINDING_KEYS)}})
    frame.to_parquet(sweep_dir / "phantom_vit_molre" / "predictions_test.parquet")
    message = rf"labels differ .* for scan 's5', finding '{FINDING_KEYS[3]}': not the same test set"
    with pytest.raises(ValueError, match=message):
        compare_runs(sweep_dir / "phantom_vit_lora", sweep_dir / "phantom_vit_molre", out_dir=sweep_dir / "cmp")
    with pytest.raises(ValueError, match=message):
        paper_table(collect_runs(sweep_dir), n_boot=0)


def test_long_table_bars_use_seed_range_when_several_seeds() -> None:
    """A bar is the mean over seeds; its whisker is one run's CI only when there is one run, else the seeds' range."""
    from molre_lib.analysis.summary import long_table

    runs = pd.DataFrame([{"backbone": "b", "arm": arm, "seed": s, "status": st, "macro_auc": auc, "ci_low": auc - 0.1,
                          "ci_high": auc + 0.1}
                         for arm, s, st, auc in (("lora", 0, "finished", 0.60), ("lora", 1, "finished", 0.70),
                                                 ("lora", 2, "failed", np.nan), ("molre", 0, "finished", 0.65))])
    bars = long_table(runs).set_index("arm")
    assert bars.loc["lora", ["mean_auc", "ci_low", "ci_high", "n_seeds"]].tolist() == pytest.approx([0.65, 0.6, 0.7, 2])
    assert bars.loc["molre", ["ci_low", "ci_high"]].tolist() == pytest.approx([0.55, 0.75])  # its own bootstrap CI
    assert long_table(runs).attrs["interval"] == "95% CI of one seed, range over several"
    assert long_table(runs[runs["arm"] == "molre"]).attrs["interval"] == "95% CI"
