"""The phantom study's answers, from what its sweep wrote (``make phantom-study`` runs the sweep, then this).

Reads ``runs/phantom_study/`` (05's ``summary_runs.csv`` and ``summary_table.csv``, 03's per-group comparison
tables, 02's specialisation tests) and writes

- ``benchmarks/results/phantom_study.csv``: one row per backbone x arm: backbone, family, arm, n_seeds, mean
  macro AUC over seeds (and its range), delta vs LoRA with the paired-bootstrap CI over seeds (05's numbers);
- ``benchmarks/results/phantom_study.json``: the same plus the answers to the study's questions (does MoLRE beat
  LoRA per backbone, is the gain larger for the general-domain backbone, do positives move from borderline to
  confident, do experts specialise) and the sweep's wall time;
- ``benchmarks/results/phantom_study_alpha.csv``: the alpha = E x 2r ablation (``runs/phantom_alpha/``, seed 0)
  against the study's seed-0 LoRA and MoLRE at alpha = 2r, paired on the same test scans.

    python benchmarks/phantom_study.py [--sweep-dir runs/phantom_study] [--ablation-dir runs/phantom_alpha]
"""
from __future__ import annotations

import argparse
import json
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


def regime_shift(sweep_dir: Path) -> pd.DataFrame:
    """Positives moved from borderline (LoRA) to confident (arm) and back, summed over findings, per comparison."""
    rows = []
    for path in sorted((sweep_dir / "analysis").glob("*/compare_*_vs_*.csv")):
        df = pd.read_csv(path)
        if not {"moved_up", "moved_down"} <= set(df.columns):
            continue
        arm = path.stem.removeprefix("compare_").split("_vs_")[0]
        rows.append({"group": path.parent.name, "run": arm, "moved_up": int(df["moved_up"].sum()),
                     "moved_down": int(df["moved_down"].sum())})
    return pd.DataFrame(rows)


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
    if len(shifts):
        out["confidence_shift"] = {"moved_up": int(shifts["moved_up"].sum()),
                                   "moved_down": int(shifts["moved_down"].sum())}
    if len(spec) and "p" in spec.columns:
        by = spec.groupby(["run", "target"])
        out["specialisation"] = {f"{run} / {target}": {"layers": int(len(g)), "layers_p<0.05": int((g["p"] < 0.05).sum())}
                                 for (run, target), g in by}
    return out


def ablation(sweep_dir: Path, ablation_dir: Path, n_boot: int = 1000) -> pd.DataFrame:
    """Each alpha = E x 2r run against the study's seed-0 LoRA and the same MoLRE at alpha = 2r (same backbone,
    seed, layout and test scans): macro ΔAUC with its paired scan-bootstrap CI."""
    from molre_lib.analysis.summary import paired_macro_delta

    rows = []
    for run in sorted(p for p in ablation_dir.glob("*_alpha16_seed0") if (p / "metrics.json").is_file()):
        backbone, layout = run.name.split("_molre_")[0], run.name.split("_molre_")[1].split("_")[0]
        for ref in (f"{backbone}_lora_shared0_seed0", f"{backbone}_molre_{layout}_seed0"):
            ref_dir = sweep_dir / ref
            if not (ref_dir / "metrics.json").is_file():
                continue
            delta, reps = paired_macro_delta(ref_dir, run, "test", n_boot, seed=0)
            lo, hi = np.nanpercentile(reps, [2.5, 97.5])
            auc = json.loads((run / "metrics.json").read_text())["test"]["summary"]["macro_auc"]["value"]
            rows.append({"backbone": backbone, "run": run.name, "shared_a": layout == "shared1", "alpha": 16.0,
                         "macro_auc": auc, "reference": ref, "delta": delta, "ci_low": lo, "ci_high": hi})
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
            raise SystemExit(f"error: {f} not found: run the sweep first (make phantom-study)")
    arms = arm_table(pd.read_csv(runs_csv), pd.read_csv(table_csv))
    arms.to_csv(args.out, index=False, float_format="%.4f")
    shifts, spec = regime_shift(sweep_dir), specialisation(sweep_dir)
    status = pd.read_csv(sweep_dir / "sweep_status.csv") if (sweep_dir / "sweep_status.csv").is_file() else None
    abl = ablation(sweep_dir, Path(args.ablation_dir)) if Path(args.ablation_dir).is_dir() else pd.DataFrame()
    if len(abl):
        abl.to_csv(Path(args.out).with_name("phantom_study_alpha.csv"), index=False, float_format="%.4f")
        print(abl.round(4).to_string(index=False))
    doc = {"arms": arms.to_dict(orient="records"), "answers": answers(arms, shifts, spec),
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
