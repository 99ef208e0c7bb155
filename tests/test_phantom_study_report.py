"""benchmarks/phantom_study.py turns the study's sweep folder into its answers: checked here on a small sweep folder
written by hand (05's runs and paper table, 03's comparison tables, 02's specialisation tests) with known sums."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from benchmark_scripts import load_benchmark



def _module():
    return load_benchmark("phantom_study")


def _sweep(tmp_path: Path) -> tuple[Path, pd.DataFrame, pd.DataFrame]:
    runs = []
    for backbone, family in (("phantom_vit", "demo"), ("natural_vit", "general-2D")):
        for arm in ("lora", "molre SHARED_A=True"):
            for seed in (0, 1):
                runs.append({"run": f"{backbone}_{arm.split()[0]}_{seed}", "backbone": backbone, "family": family,
                             "arm": arm, "seed": seed, "status": "finished", "pct_added": 0.5, "n_test_scans": 1000,
                             "macro_auc": 0.70 + 0.01 * seed + (0.02 if arm != "lora" and family != "demo" else 0)})
    runs.append({**runs[-1], "run": "natural_vit_molre_2", "seed": 2, "status": "failed", "macro_auc": np.nan})
    runs = pd.DataFrame(runs)
    table = pd.DataFrame([{"backbone": b, "arm": "molre SHARED_A=True", "delta_auc": d, "delta_ci_low": lo,
                           "delta_ci_high": hi} for b, d, lo, hi in (("phantom_vit", 0.0, -0.01, 0.01),
                                                                     ("natural_vit", 0.02, 0.01, 0.03))])
    for backbone in ("phantom_vit", "natural_vit"):
        for seed in (0, 1):
            group = tmp_path / "analysis" / f"{backbone}_{seed}"
            group.mkdir(parents=True)
            pd.DataFrame({"finding": ["a", "b", "c"], "category": ["hemorrhage", "hemorrhage", "trauma"],
                          "delta_auc": [0.01, 0.03, np.nan], "n_pos": [10, 10, 10], "borderline_a": [4, 4, 0],
                          "moved_up": [2, 1, 0], "moved_down": [0, 1, 0], "confident_a": [5, 5, 0],
                          "confident_b": [6, 5, 0]}).to_csv(
                group / f"compare_{backbone}_molre_{seed}_vs_{backbone}_lora_{seed}.csv", index=False)
    spec_dir = tmp_path / "natural_vit_molre_0"
    spec_dir.mkdir()
    pd.DataFrame({"layer": ["l0", "l1", "l0", "l1"], "target": ["tissue", "tissue", "lesion", "lesion"],
                  "p": [0.001, 0.2, 0.04, 0.5]}).to_csv(spec_dir / "routing_specialisation_tests.csv", index=False)
    return tmp_path, runs, table


def test_arms_shifts_categories_and_answers(tmp_path):
    mod = _module()
    sweep, runs, table = _sweep(tmp_path)
    arms = mod.arm_table(runs, table)
    assert len(arms) == 4  # backbone x arm; the failed run is not averaged in
    natural = arms[(arms["backbone"] == "natural_vit") & (arms["arm"] != "lora")].iloc[0]
    assert natural["n_seeds"] == 2 and np.isclose(natural["mean_auc"], 0.725) and natural["delta_ci_low"] == 0.01
    assert np.isnan(arms[arms["arm"] == "lora"]["delta_vs_lora"]).all()

    tables = mod.comparisons(sweep, runs)
    shifts = mod.regime_shift(tables)
    assert len(shifts) == 4 and set(shifts["arm"]) == {"molre SHARED_A=True"}
    cats = mod.category_deltas(tables)
    hem = cats[(cats["backbone"] == "phantom_vit") & (cats["category"] == "hemorrhage")].iloc[0]
    assert np.isclose(hem["mean_delta"], 0.02) and hem["n_seeds"] == 2
    assert "trauma" not in set(cats["category"])  # no defined ΔAUC there

    ans = mod.answers(arms, shifts, mod.specialisation(sweep))
    assert ans["molre_vs_lora"]["natural_vit / molre SHARED_A=True"]["verdict"] == "better"
    assert ans["molre_vs_lora"]["phantom_vit / molre SHARED_A=True"]["verdict"] == "not resolved"
    assert ans["delta_by_family"] == {"demo / molre SHARED_A=True": 0.0, "general-2D / molre SHARED_A=True": 0.02}
    shift = ans["confidence_shift"]["natural_vit / molre SHARED_A=True"]  # 2 seeds x 3 findings summed
    assert shift == {"n_pos": 60, "borderline_a": 16, "moved_up": 6, "moved_down": 2, "confident_a": 20,
                     "confident_b": 22}
    assert ans["specialisation"]["natural_vit_molre_0 / tissue"] == {"layers": 2, "layers_p<0.05": 1}


def test_ablation_pairs_runs_by_grid_values_not_names(tmp_path):
    """Each alpha run is paired with the study's LoRA and MoLRE of its backbone, seed (and, for MoLRE, layout),
    found through both sweeps' runs.csv; identical predictions give Δ = 0 exactly."""
    from molre_lib.engine.run_files import finding_keys, write_predictions

    mod = _module()
    rng = np.random.default_rng(0)
    keys = finding_keys(3)
    labels = (rng.random((40, 3)) < 0.4).astype(np.float32)
    probs = rng.random((40, 3)).astype(np.float32)
    out = {"scan_id": [f"s{i}" for i in range(40)], "probs": probs, "labels": labels, "mask": np.ones((40, 3), bool)}

    def sweep(name, rows):
        folder = tmp_path / name
        for r in rows:
            run_dir = folder / r["run"]
            run_dir.mkdir(parents=True)
            write_predictions(run_dir / "predictions_test.parquet", out, "test", keys)
            (run_dir / "metrics.json").write_text('{"test": {"summary": {"macro_auc": {"value": 0.5}}}}')
            r["run_dir"] = str(run_dir)
        pd.DataFrame(rows).to_csv(folder / "runs.csv", index=False)
        return folder

    study = sweep("study", [{"run": f"x{i}", "BACKBONE": "b", "ADAPTER": a, "SHARED_A": s, "SEED": 0}
                            for i, (a, s) in enumerate((("lora", False), ("molre", False), ("molre", True)))]
                   + [{"run": "other_seed", "BACKBONE": "b", "ADAPTER": "lora", "SHARED_A": False, "SEED": 1}])
    alpha = sweep("alpha", [{"run": "m", "BACKBONE": "b", "ADAPTER": "molre", "SHARED_A": True, "LORA_ALPHA": 16.0,
                             "SEED": 0},
                            {"run": "l", "BACKBONE": "b", "ADAPTER": "lora", "SHARED_A": False, "LORA_ALPHA": 4.0,
                             "SEED": 0}])
    abl = mod.ablation(study, alpha, n_boot=20)
    assert sorted(zip(abl["run"], abl["reference"])) == [("l", "x0"), ("l", "x1"), ("l", "x2"), ("m", "x0"), ("m", "x2")]
    assert (abl["delta"] == 0).all()
