"""The tuned phantom study's answers, from what its sweep wrote (``make phantom-study`` runs the sweep, then this).

Reads ``runs/phantom_tuned/`` (``tune/selected.csv`` and ``tune/trials.csv`` from the tuning stage, the final
runs' ``config.json`` / ``metrics.json`` / test predictions) and writes

- ``benchmarks/results/phantom_tuned.csv``: one row per backbone x arm: backbone, family, arm, n_trials, best_lr,
  best_alpha, effective_step, n_seeds, mean_auc, min_auc, max_auc (test macro AUC over the final seeds),
  delta_vs_lora with its hierarchical bootstrap CI (seeds, then the same test scans), sign_flip_p (exact paired
  sign-flip test over seeds), p_better (P(arm > LoRA) across seeds); then best_val_auc, the validation AUC that
  chose each configuration (its trial, and its mean / min over the trial and confirmation seeds, when the sweep
  confirms) beside the final seeds' (final_val_mean / _min), the lowest and highest validation AUC of the arm's
  trials (trial_val_min / _max: what the choice was worth), and each arm's mean test AUC in an earlier design of
  the study with the change (before_mean_auc / before_change; ``phantom_tuned_1epoch.csv``: one epoch of 8 slices
  on 2,300 scans, so other data and test scans: unpaired). ``--before-sweep`` (the earlier design's sweep folder,
  when it ran on the same data and test scans) pairs that change by seed and scan: before_change is then the mean
  of the per-seed changes, with its hierarchical bootstrap CI (before_ci_low / _high) and sign-flip p
  (before_sign_flip_p). ``--untuned`` (an untuned study on the same data) and
  ``--one-seed`` (the same study choosing by one trial) add untuned_mean_auc / tuning_change and one_seed_* /
  confirmation_change;
- ``benchmarks/results/phantom_tuned.json``: the same plus the answers (does a tuned MoLRE beat a tuned LoRA per
  backbone; does the best adapter beat the tuned linear probe; is the gain larger on the general-domain backbone,
  with a CI for the difference; how much tuning changed each arm; the validation AUC of the one trial that chose
  each configuration beside that of its final seeds; each arm's trial spread; the change from the earlier
  design, with its CI when paired), every chosen configuration at the edge of its grid, every arm's validation AUC after each epoch of its
  final runs (mean / min / max over seeds, and what the last epochs added: has it levelled off?), and the sweep's
  notebook seconds.

    python benchmarks/phantom_tuned.py [--sweep-dir runs/phantom_tuned] [--before benchmarks/results/phantom_tuned_1epoch.csv]
        [--before-sweep DIR] [--untuned TABLE] [--one-seed TABLE]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

RESULTS = Path(__file__).parent / "results"
REFERENCE, PROBE = "lora", "linear_probe"
GRID_KEYS = ("BACKBONE", "ADAPTER", "SHARED_A")
CSV_COLUMNS = ["backbone", "family", "arm", "n_trials", "best_lr", "best_alpha", "effective_step", "n_seeds",
               "mean_auc", "min_auc", "max_auc", "delta_vs_lora", "delta_ci_low", "delta_ci_high", "sign_flip_p",
               "p_better", "best_val_auc", "selection_val_mean", "selection_val_min", "final_val_mean", "final_val_min",
               "untuned_mean_auc", "tuning_change", "one_seed_lr", "one_seed_alpha", "one_seed_mean_auc",
               "confirmation_change", "trial_val_min", "trial_val_max", "before_mean_auc", "before_change",
               "before_ci_low", "before_ci_high", "before_sign_flip_p"]


def _match(runs: pd.DataFrame, row: pd.Series) -> pd.DataFrame:
    """The final runs of one tuned arm (``selected.csv`` row), joined on the grid keys both tables hold."""
    keep = np.ones(len(runs), dtype=bool)
    for key in GRID_KEYS:
        if key in row and key in runs:
            keep &= runs[key].astype(str).to_numpy() == str(row[key])
    return runs[keep]


def _same_arm(table: pd.DataFrame | None, row: dict) -> pd.Series | None:
    """The row of another study's table (untuned, one-seed, earlier design) for the same backbone and arm."""
    if table is None:
        return None
    hit = table[(table["backbone"] == row["backbone"]) & (table["arm"] == row["arm"])]
    return hit.iloc[0] if len(hit) else None


def arm_table(selected: pd.DataFrame, runs: pd.DataFrame, vs_lora: pd.DataFrame,
              untuned: pd.DataFrame | None, runs_val: pd.DataFrame | None = None,
              one_seed: pd.DataFrame | None = None, trials: pd.DataFrame | None = None,
              before: pd.DataFrame | None = None, before_paired: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per tuned arm: its tuning (trials, chosen LR and alpha, effective step from the final runs'
    config.json) and its final seeds' test AUCs, with the comparison against the same backbone's tuned LoRA;
    with ``runs_val`` (``collect_runs(sweep, "val")``) also the final seeds' validation AUCs, to set beside the
    validation AUC that chose the configuration (best_val_auc: its trial; selection_val_mean / _min: over the
    trial and confirmation seeds, when the sweep confirms); with ``one_seed`` (this study's table when each arm
    took its best single trial) that choice and its test AUC; with ``trials`` (``trials.csv``) the lowest and highest
    validation AUC of the arm's completed trials (how much the choice mattered); with ``before`` (an earlier design
    of the study, on other data and test scans) that design's mean test AUC for the arm, unpaired; with
    ``before_paired`` (``design_comparisons`` of this sweep and the earlier design's, on the same test scans) the
    change paired by seed and scan, with its CI and sign-flip p."""
    rows = []
    for _, sel in selected.iterrows():
        mine = _match(runs, sel)
        done = mine[mine["status"] == "finished"]
        if mine.empty:
            raise ValueError(f"selected arm {sel['arm']!r} has no final runs in the sweep folder")
        first = (done if len(done) else mine).iloc[0]  # a finished run's config.json (an unfinished one may lack it)
        config = json.loads((Path(first["run_dir"]) / "config.json").read_text()) if len(done) else {}
        scaling = config.get("scaling") or {}
        adapter = str(first["adapter"])
        row = {"backbone": first["backbone"], "family": first["family"], "arm": first["arm"],
               "n_trials": int(sel["n_trials"]), "best_lr": float(sel["param_LR"]),
               "best_alpha": float(scaling["alpha"]) if adapter != PROBE and scaling.get("alpha") is not None else np.nan,
               "effective_step": scaling.get("effective_step", sel.get("effective_step")) if adapter != PROBE else np.nan,
               "n_seeds": len(done), "mean_auc": done["macro_auc"].mean(), "min_auc": done["macro_auc"].min(),
               "max_auc": done["macro_auc"].max(), "best_val_auc": float(sel["best_val_auc"]),
               "selection_val_mean": float(sel.get("mean_val_auc", np.nan)),
               "selection_val_min": float(sel.get("min_val_auc", np.nan))}
        if runs_val is not None:
            val = _match(runs_val, sel)
            val = val.loc[val["status"] == "finished", "macro_auc"]
            row.update(final_val_mean=val.mean(), final_val_min=val.min())
        hit = vs_lora[(vs_lora["backbone"] == row["backbone"]) & (vs_lora["arm_a"] == row["arm"])]
        if len(hit):
            h = hit.iloc[0]
            row.update(delta_vs_lora=h["mean_delta"], delta_ci_low=h["delta_ci_low"], delta_ci_high=h["delta_ci_high"],
                       sign_flip_p=h["sign_flip_p"], p_better=h["p_better"])
        old = _same_arm(untuned, row)
        if old is not None:
            row.update(untuned_mean_auc=float(old["mean_auc"]), tuning_change=row["mean_auc"] - float(old["mean_auc"]))
        if trials is not None:
            mine_trials = trials[(trials["arm"] == sel["arm"]) & (trials["state"] == "COMPLETE")]
            aucs = pd.to_numeric(mine_trials["val_auc"], errors="coerce")
            row.update(trial_val_min=aucs.min(), trial_val_max=aucs.max())
        old = _same_arm(before, row)
        if old is not None:
            row.update(before_mean_auc=float(old["mean_auc"]), before_change=row["mean_auc"] - float(old["mean_auc"]))
        if before_paired is not None:
            hit = before_paired[(before_paired["backbone"] == row["backbone"]) & (before_paired["arm_a"] == row["arm"])]
            if len(hit) and not pd.isna(hit.iloc[0]["mean_delta"]):
                h = hit.iloc[0]
                row.update(before_change=h["mean_delta"], before_ci_low=h["delta_ci_low"],
                           before_ci_high=h["delta_ci_high"], before_sign_flip_p=h["sign_flip_p"])
        old = _same_arm(one_seed, row)
        if old is not None:
            row.update(one_seed_lr=old["best_lr"], one_seed_alpha=old["best_alpha"],
                       one_seed_mean_auc=old["mean_auc"], confirmation_change=row["mean_auc"] - old["mean_auc"])
        rows.append(row)
    return pd.DataFrame(rows).reindex(columns=CSV_COLUMNS)


def _values(*xs) -> list[float | None]:
    """[LR, alpha] for the JSON: a probe's missing alpha as null."""
    return [None if pd.isna(x) else float(x) for x in xs]


def _ci(reps: np.ndarray) -> list[float]:
    return [float(x) for x in np.nanquantile(reps, [0.025, 0.975])]


def answers(arms: pd.DataFrame, vs_lora: pd.DataFrame, vs_probe: pd.DataFrame, runs: pd.DataFrame,
            n_boot: int) -> dict:
    """The study's questions, answered from the tables (numbers rounded for reading; the CSV keeps them all)."""
    from molre_lib.analysis.seeds import delta_replicates

    out: dict = {"molre_vs_lora": {}, "best_adapter_vs_probe": {}, "tuning_change": {}, "confirmation_change": {},
                 "tuning_spread": {}, "design_change": {}}
    for backbone, group in arms.groupby("backbone", sort=False):
        for _, a in group[group["arm"].str.startswith("molre")].iterrows():
            out["molre_vs_lora"].setdefault(backbone, {})[a["arm"]] = {
                "delta": round(a["delta_vs_lora"], 4), "ci": [round(a["delta_ci_low"], 4), round(a["delta_ci_high"], 4)],
                "sign_flip_p": round(a["sign_flip_p"], 4), "p_better": round(a["p_better"], 3),
                "resolved": bool(a["delta_ci_low"] > 0 or a["delta_ci_high"] < 0)}
        adapters = group[group["arm"] != PROBE]
        best = adapters.loc[adapters["mean_auc"].idxmax()]
        hit = vs_probe[(vs_probe["backbone"] == backbone) & (vs_probe["arm_a"] == best["arm"])].iloc[0]
        out["best_adapter_vs_probe"][backbone] = {
            "arm": best["arm"], "delta": round(hit["mean_delta"], 4),
            "ci": [round(hit["delta_ci_low"], 4), round(hit["delta_ci_high"], 4)],
            "sign_flip_p": round(hit["sign_flip_p"], 4), "p_better": round(hit["p_better"], 3)}
        out.setdefault("chosen_trial_vs_final_seeds_val", {})[backbone] = {
            a["arm"]: {"trial": round(a["best_val_auc"], 4), "final_mean": round(a["final_val_mean"], 4),
                       "final_min": round(a["final_val_min"], 4)}
            for _, a in group.iterrows() if not pd.isna(a["final_val_mean"])}
        out["tuning_change"][backbone] = {a["arm"]: None if pd.isna(a["tuning_change"]) else round(a["tuning_change"], 4)
                                          for _, a in group.iterrows()}
        out["tuning_spread"][backbone] = {  # validation AUC of the arm's worst and best trial: what the choice is worth
            a["arm"]: [round(a["trial_val_min"], 4), round(a["trial_val_max"], 4)]
            for _, a in group.iterrows() if not pd.isna(a["trial_val_max"])}
        out["design_change"][backbone] = {a["arm"]: round(a["before_change"], 4)
                                          for _, a in group.iterrows() if not pd.isna(a["before_change"])}
        paired = {a["arm"]: {"change": round(a["before_change"], 4),
                             "ci": [round(a["before_ci_low"], 4), round(a["before_ci_high"], 4)],
                             "sign_flip_p": round(a["before_sign_flip_p"], 4)}
                  for _, a in group.iterrows() if not pd.isna(a["before_ci_low"])}
        if paired:  # the earlier design scored the same test scans: the change with its uncertainty
            out.setdefault("design_change_paired", {})[backbone] = paired
        out["confirmation_change"][backbone] = {
            a["arm"]: {"one_seed_choice": _values(a["one_seed_lr"], a["one_seed_alpha"]),
                       "choice": _values(a["best_lr"], a["best_alpha"]),
                       "test_auc_change": round(a["confirmation_change"], 4)}
            for _, a in group.iterrows() if not pd.isna(a["confirmation_change"])}
    # Is the MoLRE - LoRA gain larger on the general-domain backbone? The two backbones' bootstrap replicates are
    # independent (different runs, independently resampled), so their difference is a replicate of the difference.
    backbones = {f: b for b, f in arms.groupby("backbone", sort=False)["family"].first().items()}
    general = next((b for f, b in backbones.items() if f.startswith("general")), None)
    ct = next((b for f, b in backbones.items() if not f.startswith("general")), None)
    if general and ct:
        out["general_minus_ct_gain"] = {}
        for arm in sorted(set(arms["arm"]) - {REFERENCE, PROBE}):
            d = (delta_replicates(runs, general, arm, REFERENCE, n_boot=n_boot, seed=1)
                 - delta_replicates(runs, ct, arm, REFERENCE, n_boot=n_boot, seed=2))
            point = (arms[(arms["backbone"] == general) & (arms["arm"] == arm)]["delta_vs_lora"].iloc[0]
                     - arms[(arms["backbone"] == ct) & (arms["arm"] == arm)]["delta_vs_lora"].iloc[0])
            out["general_minus_ct_gain"][arm] = {"general": general, "ct": ct, "difference": round(float(point), 4),
                                                 "ci": [round(x, 4) for x in _ci(d)]}
    return out


def edges(trials: pd.DataFrame, selected: pd.DataFrame) -> list[str]:
    """Chosen values at the end of their arm's searched values (then the arm was not tuned inside its range)."""
    notes = []
    for _, sel in selected.iterrows():
        tried = trials[(trials["arm"] == sel["arm"]) & (trials["state"] == "COMPLETE")]
        for col in [c for c in selected.columns if c.startswith("param_")]:
            values = pd.to_numeric(tried[col], errors="coerce").dropna()
            chosen = pd.to_numeric(pd.Series([sel[col]]), errors="coerce").iloc[0]
            if len(values.unique()) > 1 and not pd.isna(chosen) and chosen in (values.min(), values.max()):
                notes.append(f"{sel['arm']}: {col.removeprefix('param_')} = {chosen:g} is the "
                             f"{'lowest' if chosen == values.min() else 'highest'} value tried")
    return notes


def main(argv: list[str] | None = None) -> int:
    from molre_lib.analysis.seeds import design_comparisons, seed_comparisons, validation_curves
    from molre_lib.analysis.summary import collect_runs
    from molre_lib.plots.style import paper_style, save_figure
    from molre_lib.plots.tuning import plot_validation_curves
    from molre_lib.workbook.tune import read_selected, read_trials

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sweep-dir", default="runs/phantom_tuned")
    ap.add_argument("--untuned", default="",
                    help="an untuned study's table on the same data and test scans: how much tuning changed each arm")
    ap.add_argument("--one-seed", default="",
                    help="this study's table on the same data when each arm took its best single trial (no "
                         "confirm_top): what confirming over seeds changed")
    ap.add_argument("--before", default=str(RESULTS / "phantom_tuned_1epoch.csv"),
                    help="an earlier design of this study (other data and test scans, so unpaired): each arm's mean "
                         "test AUC there and the change; '' to skip")
    ap.add_argument("--before-sweep", default="",
                    help="the earlier design's sweep folder, run on the same data and test scans: the change of "
                         "each arm paired by seed and scan, with its CI (a missing folder: a note, unpaired)")
    ap.add_argument("--out-dir", default=str(RESULTS))
    ap.add_argument("--figures-dir", default="figures/phantom_tuned",
                    help="where val_curves.{png,pdf,svg} goes (every arm's validation AUC per epoch)")
    ap.add_argument("--n-boot", type=int, default=2000)
    args = ap.parse_args(argv)
    sweep = Path(args.sweep_dir)
    try:
        selected, trials = read_selected(sweep), read_trials(sweep)
    except FileNotFoundError as err:
        print(f"error: {err} (run the sweep first: make phantom-study)", file=sys.stderr)
        return 2
    runs = collect_runs(sweep)
    untuned = pd.read_csv(args.untuned) if args.untuned and Path(args.untuned).is_file() else None
    vs_lora, _ = seed_comparisons(runs, "test", args.n_boot, 0, baseline=REFERENCE)
    vs_probe, _ = seed_comparisons(runs, "test", args.n_boot, 0, baseline=PROBE)
    one_seed = pd.read_csv(args.one_seed) if args.one_seed and Path(args.one_seed).is_file() else None
    before = pd.read_csv(args.before) if args.before and Path(args.before).is_file() else None
    before_paired = None
    if args.before_sweep and not Path(args.before_sweep).is_dir():
        print(f"note: no earlier design's sweep folder {args.before_sweep}: the change of design is unpaired",
              file=sys.stderr)
    elif args.before_sweep:
        try:
            before_paired, _ = design_comparisons(runs, collect_runs(Path(args.before_sweep)), "test", args.n_boot, 0)
        except ValueError as err:  # other data or test scans: the means can still be set side by side
            print(f"note: {args.before_sweep} cannot be paired with {sweep} ({err}): the change of design is unpaired",
                  file=sys.stderr)
    arms = arm_table(selected, runs, vs_lora, untuned, collect_runs(sweep, "val"), one_seed, trials, before,
                     before_paired)
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    arms.to_csv(out / "phantom_tuned.csv", index=False, float_format="%.6g")
    status = pd.read_csv(sweep / "sweep_status.csv") if (sweep / "sweep_status.csv").is_file() else pd.DataFrame()
    report = {"sweep_dir": str(sweep), "n_test_scans": int(runs["n_test_scans"].max()),
              "arms": json.loads(arms.to_json(orient="records")),
              "answers": answers(arms, vs_lora, vs_probe, runs, args.n_boot),
              "chosen_at_grid_edge": edges(trials, selected),
              "val_curves": validation_curves(runs),
              "trials": {"n": int(len(trials)), "states": trials["state"].value_counts().to_dict(),
                         "train_seconds": float(pd.to_numeric(trials["train_seconds"], errors="coerce").sum())},
              "notebook_seconds": float(status["seconds"].sum()) if "seconds" in status else None}
    (out / "phantom_tuned.json").write_text(json.dumps(report, indent=2) + "\n")
    with paper_style():
        figures = save_figure(plot_validation_curves(report["val_curves"]), args.figures_dir, "val_curves")
    with pd.option_context("display.width", 200, "display.max_columns", 30):
        print(arms.round(4).to_string(index=False))
    print(json.dumps(report["answers"], indent=2))
    for note in report["chosen_at_grid_edge"]:
        print(f"note: {note}")
    print(f"wrote {out / 'phantom_tuned.csv'}, {out / 'phantom_tuned.json'} and {', '.join(map(str, figures))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
