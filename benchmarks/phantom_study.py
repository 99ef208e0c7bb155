"""The phantom study's answers, from what its sweep wrote (``make phantom-study`` runs the sweep, then this).

Reads ``runs/phantom_study/`` (05's ``summary_runs.csv`` and ``summary_table.csv``, 03's per-group comparison
tables, 02's specialisation tests) and writes

- ``benchmarks/results/phantom_study.csv``: one row per backbone x arm: backbone, family, arm, n_seeds, mean
  macro AUC over seeds (and its range), delta vs LoRA with the paired-bootstrap CI over seeds (05's numbers);
- ``benchmarks/results/phantom_study.json``: the same plus the answers to the study's questions (does MoLRE beat
  LoRA per backbone, is the gain larger for the general-domain backbone, do positives move from borderline to
  confident, do experts specialise) and the sweep's wall time;
- ``benchmarks/results/phantom_study_categories.csv``: mean per-finding ΔAUC vs LoRA per category, per backbone x
  arm, over seeds (03's paired DeLong tables);
- ``benchmarks/results/phantom_study_alpha.csv``: the scaling ablation (``runs/phantom_alpha/``, seed 0: MoLRE at
  alpha = E x 2r, LoRA at alpha = r / 2) against the study's seed-0 runs at alpha = 2r, paired on the same test scans.

    python benchmarks/phantom_study.py [--sweep-dir runs/phantom_study] [--ablation-dir runs/phantom_alpha]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

RESULTS = Path(__file__).parent / "results"


def arm_table(runs: pd.DataFrame, table: pd.DataFrame, reference: str = "lora") -> pd.DataFrame:
    """One row per backbone x arm (the reference included, with no delta)."""
    done = runs[runs["status"] == "finished"]
    rows = []
    for (backbone, arm), g in done.groupby(["backbone", "arm"], sort=False):
        row = {"backbone": backbone, "family": g["family"].iloc[0], "arm": arm, "n_seeds": int(g["seed"].nunique()),
               "mean_auc": g["macro_auc"].mean(), "min_auc": g["macro_auc"].min(), "max_auc": g["macro_auc"].max(),
               "added_pct": g["pct_added"].mean(), "n_test_scans": int(g["n_test_scans"].max())}
        hit = table[(table["backbone"] == backbone) & (table["arm"] == arm)]
        if arm != reference and len(hit):
            h = hit.iloc[0]
            row.update(delta_vs_lora=h["delta_auc"], delta_ci_low=h["delta_ci_low"], delta_ci_high=h["delta_ci_high"])
        rows.append(row)
    return pd.DataFrame(rows)


def comparisons(sweep_dir: Path, runs: pd.DataFrame) -> list[tuple[dict, pd.DataFrame]]:
    """03's per-finding comparison tables (one per backbone x seed x arm, against LoRA), each read once, with the
    compared run's backbone, arm and seed from the runs table; tables of runs not in it are left out."""
    arm_of = runs.set_index("run")[["backbone", "arm", "seed"]]
    out = []
    for path in sorted((sweep_dir / "analysis").glob("*/compare_*_vs_*.csv")):
        run = path.stem.removeprefix("compare_").split("_vs_")[0]
        if run in arm_of.index:
            out.append(({"group": path.parent.name, "run": run, **arm_of.loc[run].to_dict()}, pd.read_csv(path)))
    return out


SHIFT_COLUMNS = ["n_pos", "borderline_a", "moved_up", "moved_down", "confident_a", "confident_b"]


def regime_shift(tables: list[tuple[dict, pd.DataFrame]]) -> pd.DataFrame:
    """Per comparison, summed over findings: positives borderline (0.3-0.7) under LoRA, those moved up to confident
    (> 0.7) under the arm, confident positives moved down to borderline, and confident positives under each."""
    return pd.DataFrame([{**meta, **{c: int(df[c].sum()) for c in SHIFT_COLUMNS}}
                         for meta, df in tables if set(SHIFT_COLUMNS) <= set(df.columns)])


def category_deltas(tables: list[tuple[dict, pd.DataFrame]]) -> pd.DataFrame:
    """Mean per-finding ΔAUC (arm - LoRA, 03's DeLong tables) per category, per backbone x arm, averaged over seeds,
    with the seeds' range."""
    rows = [{"backbone": meta["backbone"], "arm": meta["arm"], "seed": meta["seed"], "category": cat,
             "delta": g["delta_auc"].mean()}
            for meta, df in tables if {"category", "delta_auc"} <= set(df.columns)
            for cat, g in df.dropna(subset=["delta_auc"]).groupby("category", sort=False)]
    if not rows:
        return pd.DataFrame()
    return (pd.DataFrame(rows).groupby(["backbone", "arm", "category"], sort=False)["delta"]
            .agg(mean_delta="mean", min_delta="min", max_delta="max", n_seeds="size").reset_index())


def specialisation(sweep_dir: Path) -> pd.DataFrame:
    rows = []
    for path in sorted(sweep_dir.glob("*/routing_specialisation_tests.csv")):
        df = pd.read_csv(path)
        df.insert(0, "run", path.parent.name)
        rows.append(df)
    return pd.concat(rows, ignore_index=True) if rows else pd.DataFrame()


def answers(arms: pd.DataFrame, shifts: pd.DataFrame, spec: pd.DataFrame) -> dict:
    out: dict = {"molre_vs_lora": {}}
    for _, r in arms[arms["arm"].str.startswith("molre")].iterrows():
        lo, hi = r.get("delta_ci_low", np.nan), r.get("delta_ci_high", np.nan)
        verdict = "better" if lo > 0 else "worse" if hi < 0 else "not resolved"
        out["molre_vs_lora"][f"{r['backbone']} / {r['arm']}"] = {
            "delta": r.get("delta_vs_lora"), "ci": [lo, hi], "verdict": verdict}
    fam = arms[arms["arm"].str.startswith("molre")].groupby(["family", "arm"])["delta_vs_lora"].mean()
    out["delta_by_family"] = {f"{f} / {a}": float(v) for (f, a), v in fam.items()}
    if len(shifts):  # summed over findings and seeds, per backbone and arm (vs LoRA of the same seed)
        out["confidence_shift"] = {
            f"{b} / {a}": {k: int(v) for k, v in g[SHIFT_COLUMNS].sum().items()}
            for (b, a), g in shifts.groupby(["backbone", "arm"], sort=False)}
    if len(spec) and "p" in spec.columns:
        by = spec.groupby(["run", "target"])
        out["specialisation"] = {f"{run} / {target}": {"layers": int(len(g)), "layers_p<0.05": int((g["p"] < 0.05).sum())}
                                 for (run, target), g in by}
    return out


def ablation(sweep_dir: Path, ablation_dir: Path, n_boot: int = 1000) -> pd.DataFrame:
    """Each run of the alpha sweep (MoLRE at alpha = E x 2r = 16, LoRA r8 at alpha = 4) against the study's runs of
    the same backbone and seed: its LoRA and its MoLRE of the same layout (a LoRA run: both MoLRE layouts), all at
    alpha = 2r. Macro ΔAUC (ablation run minus reference) with its paired scan-bootstrap CI, same test scans.
    Runs are matched through both sweeps' ``runs.csv`` (their grid values), never through run names."""
    from molre_lib.analysis.summary import RUNS_FILE, paired_macro_delta

    study, alpha = (pd.read_csv(d / RUNS_FILE) for d in (sweep_dir, ablation_dir))
    rows = []
    for _, r in alpha.iterrows():
        run = Path(r["run_dir"])
        if not (run / "metrics.json").is_file():
            continue
        same = study[(study["BACKBONE"] == r["BACKBONE"]) & (study["SEED"] == r["SEED"])]
        refs = same[(same["ADAPTER"] == "lora") | (same["ADAPTER"] == "molre")
                    & ((r["ADAPTER"] == "lora") | (same["SHARED_A"] == r["SHARED_A"]))]
        auc = json.loads((run / "metrics.json").read_text())["test"]["summary"]["macro_auc"]["value"]
        for _, ref in refs.iterrows():
            if ref["run"] == r["run"] or not (Path(ref["run_dir"]) / "metrics.json").is_file():
                continue
            delta, reps = paired_macro_delta(ref["run_dir"], run, "test", n_boot, seed=0)
            lo, hi = np.nanpercentile(reps, [2.5, 97.5])
            rows.append({"backbone": r["BACKBONE"], "run": r["run"], "adapter": r["ADAPTER"], "shared_a": r["SHARED_A"],
                         "alpha": r["LORA_ALPHA"], "macro_auc": auc, "reference": ref["run"], "delta": delta,
                         "ci_low": lo, "ci_high": hi})
    return pd.DataFrame(rows)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sweep-dir", default="runs/phantom_study")
    ap.add_argument("--ablation-dir", default="runs/phantom_alpha", help="the alpha = E x 2r sweep (phantom_alpha.yaml)")
    ap.add_argument("--out", default=str(RESULTS / "phantom_study.csv"))
    args = ap.parse_args()
    sweep_dir = Path(args.sweep_dir)
    runs_csv, table_csv = sweep_dir / "summary_runs.csv", sweep_dir / "summary_table.csv"
    for f in (runs_csv, table_csv):
        if not f.is_file():
            print(f"error: {f} not found: run the sweep first (make phantom-study)", file=sys.stderr)
            return 2
    runs = pd.read_csv(runs_csv)
    arms = arm_table(runs, pd.read_csv(table_csv))
    arms.to_csv(args.out, index=False, float_format="%.4f")
    tables = comparisons(sweep_dir, runs)
    shifts, spec = regime_shift(tables), specialisation(sweep_dir)
    status = pd.read_csv(sweep_dir / "sweep_status.csv") if (sweep_dir / "sweep_status.csv").is_file() else None
    abl = (ablation(sweep_dir, Path(args.ablation_dir)) if (Path(args.ablation_dir) / "runs.csv").is_file()
           else pd.DataFrame())
    if len(abl):
        abl.to_csv(Path(args.out).with_name("phantom_study_alpha.csv"), index=False, float_format="%.4f")
        print(abl.round(4).to_string(index=False))
    cats = category_deltas(tables)
    if len(cats):
        cats.to_csv(Path(args.out).with_name("phantom_study_categories.csv"), index=False, float_format="%.4f")
    doc = {"arms": arms.to_dict(orient="records"), "answers": answers(arms, shifts, spec),
           "category_deltas": cats.to_dict(orient="records"),
           "alpha_ablation": abl.to_dict(orient="records"),
           "regime_shift": shifts.to_dict(orient="records"),
           "notebook_seconds": float(status["seconds"].sum()) if status is not None and "seconds" in status else None}
    Path(args.out).with_suffix(".json").write_text(json.dumps(doc, indent=2, default=float))
    print(arms.round(4).to_string(index=False))
    print(json.dumps(doc["answers"], indent=2, default=float))
    print(f"wrote {args.out} and {Path(args.out).with_suffix('.json')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
