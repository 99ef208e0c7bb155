"""Comparisons of a sweep's arms over paired seeds (the tuned comparison's answer; statistics in
:mod:`molre_lib.stats.seeds`).

Within each backbone, every pair of arms (or every arm against ``baseline``) is compared on the seeds both
finished: per-seed Δ of test macro AUC, the exact paired sign-flip p, P(A > B) across seeds and the
hierarchical bootstrap CI (seeds, then the same test scans for both arms). The same statistics compare each arm
with itself in an earlier design of the study on the same scans (:func:`design_comparisons`).
"""
from __future__ import annotations

import itertools
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd

from molre_lib.engine.run_files import read_predictions
from molre_lib.stats.seeds import compare_seeds, hierarchical_delta

COMPARISON_COLUMNS = ["backbone", "arm_a", "arm_b", "n_seeds", "mean_auc_a", "mean_auc_b", "mean_delta",
                      "delta_ci_low", "delta_ci_high", "sign_flip_p", "p_better", "wins", "min_delta", "max_delta",
                      "n_scans", "note"]


def _aligned(run_dirs: list[str], split: str) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """(labels, mask, probs per run) of runs scored on the same scans, in scan_id order (so the bootstrap does not
    depend on the files' row order)."""
    first, keys, p0, y0, m0 = read_predictions(Path(run_dirs[0]) / f"predictions_{split}.parquet")
    sort = np.argsort(first["scan_id"].astype(str).to_numpy(), kind="stable")
    first, p0, y0, m0 = first.iloc[sort].reset_index(drop=True), p0[sort], y0[sort], m0[sort]
    order = {s: i for i, s in enumerate(first["scan_id"])}
    probs = [p0]
    for run_dir in run_dirs[1:]:
        df, keys_i, p, y, m = read_predictions(Path(run_dir) / f"predictions_{split}.parquet")
        idx = np.array([order.get(s, -1) for s in df["scan_id"]])
        if keys_i != keys or len(df) != len(first) or (idx < 0).any():
            raise ValueError(f"{run_dir} and {run_dirs[0]} were not scored on the same {split} scans and findings")
        back = np.empty_like(idx)
        back[idx] = np.arange(len(idx))  # row of each of the first run's scans in this run's file
        if not (np.array_equal(y[back] * m[back], y0 * m0) and np.array_equal(m[back], m0)):
            raise ValueError(f"labels differ between {run_dir} and {run_dirs[0]}: not the same {split} set")
        probs.append(p[back])
    return y0, m0, probs


def seed_comparisons(runs: pd.DataFrame, split: str = "test", n_boot: int = 2000, seed: int = 0,
                     baseline: Optional[str] = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(one row per comparison, one row per comparison x seed) from a ``collect_runs`` table.

    Args:
        runs: ``molre_lib.analysis.summary.collect_runs(sweep_dir)`` (columns backbone, arm, seed, status, run_dir).
        baseline: an arm name; every other arm is compared with it (default: every pair, in table order).
    Returns:
        summary with :data:`COMPARISON_COLUMNS` (Δ = A - B); per-seed rows backbone, arm_a, arm_b, seed, auc_a,
        auc_b, delta. A pair with fewer than 2 shared seeds is listed with a note and no statistics.
    """
    finished = runs[runs["status"] == "finished"]
    rows, per_seed = [], []
    for backbone, group in finished.groupby("backbone", sort=False):
        arms = list(dict.fromkeys(group["arm"]))
        pairs = [(a, baseline) for a in arms if a != baseline] if baseline in arms else list(itertools.combinations(arms, 2))
        for a, b in pairs:
            row, seed_rows = _compare(backbone, a, b, group[group["arm"] == a], group[group["arm"] == b], split,
                                      n_boot, seed)
            rows.append(row)
            per_seed += seed_rows
    return (pd.DataFrame(rows).reindex(columns=COMPARISON_COLUMNS),
            pd.DataFrame(per_seed, columns=["backbone", "arm_a", "arm_b", "seed", "auc_a", "auc_b", "delta"]))


def design_comparisons(runs: pd.DataFrame, before: pd.DataFrame, split: str = "test", n_boot: int = 2000,
                       seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Every arm of a sweep against the same arm of an earlier design of it (``collect_runs`` of both sweep
    folders), paired by seed and by scan: what the change of design (longer training, say) did to each arm, with
    the same statistics as :func:`seed_comparisons` (Δ = this design - the earlier one; ``arm_a`` = ``arm_b``).

    The two designs must have scored the same ``split`` scans with the same labels (the same data, a changed
    training); a ValueError says which runs differ otherwise. An arm missing from the earlier design is left out.
    """
    now, old = (r[r["status"] == "finished"] for r in (runs, before))
    rows, per_seed = [], []
    for (backbone, arm), group in now.groupby(["backbone", "arm"], sort=False):
        earlier = old[(old["backbone"] == backbone) & (old["arm"] == arm)]
        if len(earlier):
            row, seed_rows = _compare(backbone, arm, arm, group, earlier, split, n_boot, seed)
            rows.append(row)
            per_seed += seed_rows
    return (pd.DataFrame(rows).reindex(columns=COMPARISON_COLUMNS),
            pd.DataFrame(per_seed, columns=["backbone", "arm_a", "arm_b", "seed", "auc_a", "auc_b", "delta"]))


def _compare(backbone: str, a: str, b: str, runs_a: pd.DataFrame, runs_b: pd.DataFrame, split: str, n_boot: int,
             seed: int) -> tuple[dict, list[dict]]:
    """Arm A's runs against arm B's on the seeds both finished: (a summary row, a row per seed)."""
    ra, rb = runs_a.set_index("seed")["run_dir"], runs_b.set_index("seed")["run_dir"]
    seeds = sorted(set(ra.index) & set(rb.index))
    base = {"backbone": backbone, "arm_a": a, "arm_b": b, "n_seeds": len(seeds)}
    if len(seeds) < 2:
        return {**base, "note": f"{len(seeds)} paired seed(s): no seed-level statistics"}, []
    labels, mask, probs = _aligned([ra[s] for s in seeds] + [rb[s] for s in seeds], split)
    res = compare_seeds(labels, probs[:len(seeds)], probs[len(seeds):], mask, n_boot=n_boot, seed=seed)
    return ({**base, **res.row(), "n_scans": len(labels), "note": ""},
            [{"backbone": backbone, "arm_a": a, "arm_b": b, "seed": s, "auc_a": x, "auc_b": y, "delta": x - y}
             for s, x, y in zip(seeds, res.auc_a, res.auc_b)])


def arm_summary(selected: pd.DataFrame, runs: pd.DataFrame, split: str = "test") -> pd.DataFrame:
    """Per tuned arm (``tune/selected.csv``): trials used, chosen parameters, effective step, and its final runs'
    seeds with their mean / min / max macro AUC on ``split`` (the runs joined on the grid keys both tables hold)."""
    keys = [c for c in selected.columns if c.isupper() and c in runs.columns and c != "SEED"]
    finished = runs[runs["status"] == "finished"]
    out = []
    for _, row in selected.iterrows():
        match = np.ones(len(finished), dtype=bool)
        for key in keys:
            match &= finished[key].astype(str).to_numpy() == str(row[key])
        aucs = finished.loc[match, "macro_auc"].astype(float)
        out.append({**row.to_dict(), "n_seeds": int(aucs.size), f"mean_{split}_auc": aucs.mean() if aucs.size else np.nan,
                    f"min_{split}_auc": aucs.min() if aucs.size else np.nan,
                    f"max_{split}_auc": aucs.max() if aucs.size else np.nan})
    return pd.DataFrame(out)


def delta_replicates(runs: pd.DataFrame, backbone: str, arm_a: str, arm_b: str, split: str = "test",
                     n_boot: int = 2000, seed: int = 0) -> np.ndarray:
    """(n_boot,) hierarchical bootstrap replicates of mean-over-seeds ΔAUC (A - B) within ``backbone``: the draws
    behind :func:`seed_comparisons`' CI, for questions about two comparisons at once (e.g. is a gain larger on one
    backbone than on another: the replicates of two backbones are independent, so their difference is one too)."""
    finished = runs[(runs["status"] == "finished") & (runs["backbone"] == backbone)]
    ra = finished[finished["arm"] == arm_a].set_index("seed")["run_dir"]
    rb = finished[finished["arm"] == arm_b].set_index("seed")["run_dir"]
    seeds = sorted(set(ra.index) & set(rb.index))
    if len(seeds) < 2:
        raise ValueError(f"{backbone}: {arm_a} and {arm_b} share {len(seeds)} finished seed(s); 2 or more are needed")
    labels, mask, probs = _aligned([ra[s] for s in seeds] + [rb[s] for s in seeds], split)
    return hierarchical_delta(labels, probs[:len(seeds)], probs[len(seeds):], mask, n_boot, seed)


def validation_curves(runs: pd.DataFrame) -> dict:
    """Validation macro AUC after each epoch of every arm's finished runs (their ``train_log.csv``), per backbone:
    ``{backbone: {arm: {epochs, n_seeds, mean, min, max, last_epoch_gain, last_two_epochs_gain}}}`` with the mean,
    min and max over seeds per epoch and the mean gain of the last epoch and of the last two: has training levelled
    off at the length the comparison used? ``runs``: ``collect_runs(sweep_dir)``."""
    curves: dict = {}
    done = runs[runs["status"] == "finished"]
    for (backbone, arm), group in done.groupby(["backbone", "arm"], sort=False):
        per_seed = []
        for run_dir in group["run_dir"]:
            log = pd.read_csv(Path(run_dir) / "train_log.csv")
            log = log[pd.to_numeric(log["val_macro_auc"], errors="coerce").notna()]
            per_seed.append(log.groupby("epoch")["val_macro_auc"].last())
        table = pd.concat(per_seed, axis=1)  # epochs x seeds
        mean = table.mean(axis=1)
        curves.setdefault(backbone, {})[arm] = {
            "epochs": [int(e) + 1 for e in table.index], "n_seeds": int(table.shape[1]),
            "mean": [round(float(x), 4) for x in mean], "min": [round(float(x), 4) for x in table.min(axis=1)],
            "max": [round(float(x), 4) for x in table.max(axis=1)],
            "last_epoch_gain": round(float(mean.iloc[-1] - mean.iloc[-2]), 4) if len(mean) > 1 else None,
            "last_two_epochs_gain": round(float(mean.iloc[-1] - mean.iloc[-3]), 4) if len(mean) > 2 else None}
    return curves
