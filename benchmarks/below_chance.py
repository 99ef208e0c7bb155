"""Are the demo's below-chance findings chance with few positives, or a systematic inversion?

On the demo's test split (``make demo``: 400 phantom scans, ~60 of them test) several findings score far
below AUC 0.5. This script scores the demo's two trained runs (``runs/demo/phantom_vit_{lora,molre}_seed0``)
on a large fresh phantom set drawn exactly as the demo's (00_data's parameters of ``notebooks/sweeps/demo.yaml``:
shape, prevalence scale, label noise) but with a seed whose scan and patient seeds are disjoint from the demo's,
every scan in the test split. Per finding and run it records the number of positives and the AUC on the demo's
test split, on its validation split (a second small draw) and on the fresh set, the fresh AUC's DeLong 95% CI, and, for the demo split, the one-sided chance
probability of an AUC this low from a random ranking with that many positives (Mann-Whitney, normal
approximation with the exact variance). A finding is called systematically inverted when its fresh-set
upper CI bound lies below 0.5 with at least ``--min-pos`` positives. Writes
``benchmarks/results/below_chance.json``.

    flock /tmp/molre-heavy.lock .venv/bin/python benchmarks/below_chance.py [--n-scans 1500] [--seed 7]
"""
from __future__ import annotations

import argparse
import ast
import json
import os
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "below_chance.json"
RUNS = ("phantom_vit_lora_seed0", "phantom_vit_molre_seed0")


def data_settings() -> dict:
    """00_data's parameter defaults with the demo sweep's values (the settings of the demo's phantom set)."""
    import yaml

    cell = next(c for c in json.loads((ROOT / "notebooks" / "00_data.ipynb").read_text())["cells"]
                if "parameters" in c.get("metadata", {}).get("tags", []))
    p = {n.targets[0].id: ast.literal_eval(n.value) for n in ast.parse("".join(cell["source"])).body}
    sweep = yaml.safe_load((ROOT / "notebooks" / "sweeps" / "demo.yaml").read_text())
    p.update({k: v for k, v in sweep["prepare"][0]["parameters"].items() if k in p and not str(v).startswith("{")})
    return p


def fresh_set(work: Path, n_scans: int, seed: int, settings: dict) -> Path:
    """A phantom set drawn as the demo's, every scan in the test split (reused when already there)."""
    from molre_lib.data.phantom import PhantomConfig
    from molre_lib.data.synth import synthesize

    if seed == settings["SEED"]:
        raise SystemExit(f"error: --seed {seed} is the demo's own phantom seed; choose another")
    manifest = work / f"fresh_seed{seed}_n{n_scans}" / "manifest.csv"
    if manifest.is_file():
        return manifest
    return synthesize(manifest.parent, n_scans, shape=tuple(settings["SHAPE"]), seed=seed,
                      label_noise=settings["LABEL_NOISE"], splits=(0.0, 0.0, 1.0),
                      cfg=PhantomConfig(prevalence_scale=settings["PREVALENCE_SCALE"]))


def predict_fresh(run_dir: Path, manifest: Path | None, work: Path) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    """(keys, probs, labels, mask) of a trained run on the test split of ``manifest`` (None: the run's own
    manifest), preprocessed as the run was trained."""
    from molre_lib.backbones import get_spec
    from molre_lib.engine.distributed import DistInfo
    from molre_lib.engine.evaluate import load_run_model
    from molre_lib.engine.loaders import build_datasets, predict_dataset
    from molre_lib.data.taxonomy import FINDING_KEYS

    model, cfg = load_run_model(run_dir)
    if manifest is not None:
        cfg = replace(cfg, manifest=str(manifest), data_root=None, cache_dir=str(work / "cache"))
    ds = build_datasets(cfg, get_spec(cfg.backbone), ["test"])["test"]
    out = predict_dataset(model, ds, DistInfo(), batch_size=32, progress=run_dir.name)
    return list(FINDING_KEYS), out["probs"], out["labels"], out["mask"].astype(bool)


def auc_with_ci(y: np.ndarray, s: np.ndarray) -> dict:
    """AUC, its DeLong 95% CI (needs >= 2 of each class) and n positives / negatives."""
    from scipy.stats import norm

    from molre_lib.stats.delong import placements

    m, n = int((y == 1).sum()), int((y == 0).sum())
    out = {"n_pos": m, "n_neg": n, "auc": None, "ci_low": None, "ci_high": None}
    if m == 0 or n == 0:
        return out
    auc, v_pos, v_neg = placements(s[None], y)
    out["auc"] = float(auc[0])
    if m >= 2 and n >= 2:
        se = float(np.sqrt(np.var(v_pos[0], ddof=1) / m + np.var(v_neg[0], ddof=1) / n))
        half = float(norm.ppf(0.975)) * se
        out["ci_low"], out["ci_high"] = max(0.0, out["auc"] - half), min(1.0, out["auc"] + half)
    return out


def chance_p(auc: float | None, m: int, n: int) -> float | None:
    """P(AUC <= auc) for a random ranking of m positives among n negatives (normal approximation)."""
    from scipy.stats import norm

    if auc is None or m == 0 or n == 0:
        return None
    sd = np.sqrt((m + n + 1) / (12.0 * m * n))  # exact sd of the Mann-Whitney AUC under H0 (no ties)
    return float(norm.cdf((auc - 0.5) / sd))


def per_finding(keys, probs, labels, mask) -> dict[str, dict]:
    mask = np.asarray(mask) > 0  # known labels only
    return {k: auc_with_ci(labels[mask[:, j], j], probs[mask[:, j], j]) for j, k in enumerate(keys)}


def _f(v: float | None, digits: int = 2) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--demo-dir", type=Path, default=ROOT / "runs" / "demo", help="make demo's sweep folder")
    ap.add_argument("--work", type=Path, default=ROOT / "runs" / "below_chance", help="fresh set and its cache")
    ap.add_argument("--n-scans", type=int, default=1500)
    ap.add_argument("--seed", type=int, default=7, help="phantom seed of the fresh set (not the demo's)")
    ap.add_argument("--threshold", type=float, default=0.3, help="demo test AUC below which a finding is listed")
    ap.add_argument("--min-pos", type=int, default=20, help="fresh positives needed to call an inversion")
    a = ap.parse_args()
    import torch

    from molre_lib.data.taxonomy import FINDING_KEYS
    from molre_lib.engine.run_files import read_predictions
    from molre_lib.plots.names import finding_name

    torch.set_num_threads(2)
    for run in RUNS:
        if not (a.demo_dir / run / "predictions_test.parquet").is_file():
            raise SystemExit(f"error: {a.demo_dir / run} has no predictions_test.parquet; run `make demo` first")
    settings = data_settings()
    load0, t0 = os.getloadavg()[0], time.perf_counter()
    manifest = fresh_set(a.work, a.n_scans, a.seed, settings)
    t_synth = time.perf_counter() - t0
    runs = {}
    for run in RUNS:
        _, keys, probs, labels, mask = read_predictions(a.demo_dir / run / "predictions_test.parquet")
        demo = per_finding(keys, probs, labels, mask)
        val = per_finding(*read_predictions(a.demo_dir / run / "predictions_val.parquet")[1:])
        # the same code on the demo's own test split must give the run's own predictions (same preprocessing)
        _, again, _, _ = predict_fresh(a.demo_dir / run, None, a.work)
        same = float(np.abs(again - probs).max())
        if same > 1e-5:
            raise SystemExit(f"error: {run}: re-predicting its test split differs from predictions_test.parquet by "
                             f"{same:.2g}; the fresh set would not be scored as the run scores")
        t1 = time.perf_counter()
        fresh = per_finding(*predict_fresh(a.demo_dir / run, manifest, a.work))
        print(f"{run}: fresh set predicted in {time.perf_counter() - t1:.0f}s", flush=True)
        rows = {}
        for k in FINDING_KEYS:
            d, f = demo[k], fresh[k]
            rows[k] = {"name": finding_name(k), "demo_n_pos": d["n_pos"], "demo_auc": d["auc"],
                       "demo_chance_p": chance_p(d["auc"], d["n_pos"], d["n_neg"]),
                       "demo_val_n_pos": val[k]["n_pos"], "demo_val_auc": val[k]["auc"],
                       "fresh_n_pos": f["n_pos"], "fresh_auc": f["auc"], "fresh_ci": [f["ci_low"], f["ci_high"]],
                       "inverted": bool(f["ci_high"] is not None and f["ci_high"] < 0.5 and f["n_pos"] >= a.min_pos)}
        below = {k: r for k, r in rows.items() if r["demo_auc"] is not None and r["demo_auc"] < a.threshold}
        valid = [r["fresh_auc"] for r in rows.values() if r["fresh_auc"] is not None]
        # how many findings a model with no signal at all would put below the threshold on the demo's split
        by_chance = sum(chance_p(a.threshold, d["n_pos"], d["n_neg"]) or 0.0 for d in demo.values())
        runs[run] = {"demo_test_repredicted_max_abs_diff": same, "fresh_macro_auc": float(np.mean(valid)),
                     "demo_findings_with_auc": sum(1 for d in demo.values() if d["auc"] is not None),
                     "demo_below_threshold_expected_without_signal": round(by_chance, 2),
                     "demo_below_threshold": sorted(below, key=lambda k: rows[k]["demo_auc"]),
                     "inverted_on_fresh": [k for k, r in rows.items() if r["inverted"]],
                     "fresh_below_0.5": sorted((k for k, r in rows.items() if r["fresh_auc"] is not None
                                                and r["fresh_auc"] < 0.5), key=lambda k: rows[k]["fresh_auc"]),
                     "per_finding": rows}
        for k in runs[run]["demo_below_threshold"]:
            r = rows[k]
            lo, hi = (_f(v) for v in r["fresh_ci"])
            print(f"  {r['name'][:40]:40s} demo {_f(r['demo_auc'])} (n+ {r['demo_n_pos']}, chance p "
                  f"{_f(r['demo_chance_p'], 3)})  fresh {_f(r['fresh_auc'])} [{lo}, {hi}] (n+ {r['fresh_n_pos']})")
    doc = {"question": __doc__.splitlines()[0],
           "fresh_set": {"n_scans": a.n_scans, "seed": a.seed, "shape": settings["SHAPE"],
                         "prevalence_scale": settings["PREVALENCE_SCALE"], "label_noise": settings["LABEL_NOISE"],
                         "demo_seed": settings["SEED"], "synth_s": round(t_synth, 1)},
           "threshold": a.threshold, "min_pos": a.min_pos, "wall_s": round(time.perf_counter() - t0, 1),
           "load_average_1min": [round(load0, 2), round(os.getloadavg()[0], 2)], "cores": os.cpu_count(),
           "runs": runs}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(doc, indent=1) + "\n")
    print("->", RESULTS.relative_to(ROOT))


if __name__ == "__main__":
    main()
