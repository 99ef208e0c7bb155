"""Cross-run summary of a sweep: the paper-style table of backbones × adapters.

``collect_runs`` reads what a sweep left on disk (``runs.csv``, ``sweep_status.csv``, each run's
``config.json`` and ``metrics.json``) — or, without a sweep, every run directory under a folder —
and lists failed and unfinished runs instead of dropping them. Each run belongs to an **arm**: its adapter,
plus every other grid setting that takes more than one value among that adapter's runs (a sweep over
``SHARED_A: [false, true]`` gives arms ``lora``, ``molre SHARED_A=False`` and ``molre SHARED_A=True``).
``paper_table`` pairs every arm with the reference arm (LoRA) per backbone and seed and gives the
macro-AUC difference with a paired bootstrap CI (the same resampled scans for both runs, so the CI
reflects the paired design).
"""
from __future__ import annotations

import json
from pathlib import Path
import numpy as np
import pandas as pd

from molre_lib.common.arms import arm_labels
from molre_lib.stats.auroc import bootstrap_counts, per_finding_auc
from molre_lib.engine.run_files import paired_predictions

TRAIN_STEP = "01_train"  # the sweep's training notebook; failures of analysis steps do not fail a run


RUN_COLUMNS = ["run", "run_dir", "backbone", "family", "dims", "backbone_params", "adapter", "arm", "seed", "rank",
               "n_experts", "shared_a", "router", "status", "error", "pct_trainable", "pct_added", "macro_auc", "ci_low",
               "ci_high", "micro_auc", "n_test_scans", "ece", "steps", "train_seconds"]


# The files a sweep folder holds (written by molre_lib.workbook.sweep, read here).
STATUS_FILE = "sweep_status.csv"
RUNS_FILE = "runs.csv"


def _run_dirs(sweep_dir: Path) -> pd.DataFrame:
    """``run``, ``run_dir`` and the sweep's grid values (upper-case columns of runs.csv) when there are any."""
    runs_csv = sweep_dir / RUNS_FILE
    if runs_csv.is_file():
        runs = pd.read_csv(runs_csv, dtype={"run": str, "run_dir": str})
        # A sweep folder that was moved or copied (cluster scratch -> laptop) keeps runs.csv's old absolute paths:
        # a run folder present in this sweep folder under its run name is read from here, also when the old path
        # exists (a new sweep of the same name ran where this one was: its runs are not this sweep's).
        return runs.assign(run_dir=[_here(sweep_dir / run, d) for run, d in zip(runs["run"], runs["run_dir"])])
    dirs = sorted(p.parent for p in sweep_dir.glob("*/config.json"))
    if not dirs:
        raise FileNotFoundError(f"{sweep_dir}: no {RUNS_FILE} and no run directory (*/config.json) below it")
    return pd.DataFrame({"run": [d.name for d in dirs], "run_dir": [str(d) for d in dirs]})


def _here(local: Path, recorded: str) -> str:
    """The run folder to read: the recorded path unless this sweep folder holds the run as another folder."""
    if local.is_dir() and not (Path(recorded).is_dir() and Path(recorded).resolve() == local.resolve()):
        return str(local)
    return recorded


def _failures(sweep_dir: Path) -> dict[str, str]:
    status = sweep_dir / STATUS_FILE
    if not status.is_file():
        return {}
    table = pd.read_csv(status, dtype=str).fillna("")
    failed = table[(table["status"] == "failed") & (table["step"] == TRAIN_STEP)]
    return dict(zip(failed["key"], failed["error"]))


def collect_runs(sweep_dir: str | Path, split: str = "test") -> pd.DataFrame:
    """One row per run of the sweep: setup, status (finished / unfinished / failed / missing) and error, the
    ``split`` macro AUC with its CI, micro AUC, ECE, steps and training time, then the sweep's grid values."""
    from molre_lib.backbones import get_spec

    sweep_dir = Path(sweep_dir)
    failures = _failures(sweep_dir)
    runs = _run_dirs(sweep_dir)
    grid = [c for c in runs.columns if c not in ("run", "run_dir")]
    rows = []
    for record in runs.to_dict("records"):
        run, run_dir = record["run"], Path(record["run_dir"])
        row: dict = {"run": run, "run_dir": str(run_dir), "status": "missing", "error": failures.get(run, "")}
        cfg_path, metrics_path = run_dir / "config.json", run_dir / "metrics.json"
        if cfg_path.is_file():
            config = json.loads(cfg_path.read_text())
            train = config["train"]
            spec = get_spec(train["backbone"])
            row.update(backbone=spec.name, family=spec.family, dims=spec.dims, backbone_params=spec.n_params,
                       adapter=train["adapter"], seed=train["seed"], rank=train["rank"], n_experts=train["n_experts"],
                       shared_a=train.get("shared_a", False),  # runs made before the option existed had separate A_e
                       router=train["router"], pct_trainable=config["params"]["pct_trainable"],
                       pct_added=config["params"]["pct_added"], status="unfinished")
        if metrics_path.is_file():
            metrics = json.loads(metrics_path.read_text())
            row.update(steps=metrics.get("steps"), train_seconds=metrics.get("train_seconds"))
            if split in metrics:
                part, summary = metrics[split], metrics[split]["summary"]
                row.update(status="finished", macro_auc=summary["macro_auc"]["value"],
                           ci_low=summary["macro_auc"]["ci_low"], ci_high=summary["macro_auc"]["ci_high"],
                           micro_auc=summary.get("micro_auc", {}).get("value"), n_test_scans=part.get("n_scans"),
                           ece=part.get("ece"))
        if run in failures:
            row["status"] = "failed"
        row.update({key: record[key] for key in grid})
        rows.append(row)
    table = pd.DataFrame(rows).reindex(columns=RUN_COLUMNS + grid)
    table["arm"] = arm_labels(table, grid)
    return table


def method_names(run_dirs) -> dict[str, str]:
    """Paper name of each run's method (LoRA, MoLRE, MoLRE (shared A)) from its ``config.json``, keyed by folder
    name; runs that would share a name (e.g. two seeds of one method) keep their folder name in parentheses."""
    from molre_lib.plots.paper_tables import method_name

    names = {}
    for run_dir in map(Path, run_dirs):
        train = json.loads((run_dir / "config.json").read_text())["train"]
        names[run_dir.name] = method_name(train["adapter"], shared_a=train.get("shared_a", False))
    counts = pd.Series(list(names.values())).value_counts()
    return {run: (f"{name} ({run})" if counts[name] > 1 else name) for run, name in names.items()}


def _paired_finding_aucs(run_a: str | Path, run_b: str | Path, split: str, n_boot: int, seed: int):
    """Per-finding AUCs of A and B on their shared scans: point (F,) each, bootstrap (n_boot, F) each, keys.

    Both runs are scored on the same resampled scans (the paired design)."""
    pair = paired_predictions(run_a, run_b, split)  # refuses runs whose labels differ (as compare_runs does)
    y, m, pa, pb = pair.labels, pair.mask, pair.probs_a, pair.probs_b
    point = per_finding_auc(y, pa, m), per_finding_auc(y, pb, m)
    if n_boot > 0:
        counts = bootstrap_counts(len(y), n_boot, seed)
        reps = per_finding_auc(y, pa, m, counts), per_finding_auc(y, pb, m, counts)
    else:
        reps = np.empty((0, len(pair.keys))), np.empty((0, len(pair.keys)))
    return point, reps, pair.keys


def _mean_defined(d: np.ndarray, columns=None) -> np.ndarray:
    """Mean over findings (last axis, optionally a subset) where defined; NaN where none is."""
    d = np.atleast_2d(d if columns is None else d[..., columns])
    ok = ~np.isnan(d)
    return np.where(ok.any(-1), np.where(ok, d, 0).sum(-1) / np.maximum(ok.sum(-1), 1), np.nan)


def paired_macro_delta(run_a: str | Path, run_b: str | Path, split: str = "test", n_boot: int = 1000,
                       seed: int = 0) -> tuple[float, np.ndarray]:
    """Macro AUC of B minus A on their shared scans, and its (n_boot,) paired bootstrap replicates.

    Both runs are scored on the same resampled scans; a replicate averages the findings defined for both.
    """
    (a, b), (ra, rb), _ = _paired_finding_aucs(run_a, run_b, split, n_boot, seed)
    reps = _mean_defined(rb - ra) if n_boot > 0 else np.empty(0)
    return float(_mean_defined(b - a)[0]), reps


def paired_category_delta(run_a: str | Path, run_b: str | Path, split: str = "test", n_boot: int = 1000,
                          seed: int = 0, level: float = 0.95) -> pd.DataFrame:
    """Per taxonomy category and over all findings ("all", the macro Δ): findings with an AUC under both runs,
    mean AUC of A and B over them, ΔAUC (B − A) and its paired bootstrap CI (same resampled scans for both)."""
    from molre_lib.stats.auroc import default_categories

    (a, b), (ra, rb), keys = _paired_finding_aucs(run_a, run_b, split, n_boot, seed)
    cats = default_categories(keys) or {}
    both = ~np.isnan(a) & ~np.isnan(b)
    tail = (1 - level) / 2 * 100
    rows = []
    for cat in [*dict.fromkeys(cats[k] for k in keys if k in cats), "all"]:
        cols = np.array([cat == "all" or cats.get(k) == cat for k in keys]) & both
        reps = _mean_defined(rb - ra, cols) if n_boot > 0 and cols.any() else np.empty(0)
        finite = reps[~np.isnan(reps)]
        lo, hi = np.percentile(finite, [tail, 100 - tail]) if finite.size else (np.nan, np.nan)
        rows.append({"category": cat, "n_findings": int(cols.sum()),
                     "auc_a": float(a[cols].mean()) if cols.any() else np.nan,
                     "auc_b": float(b[cols].mean()) if cols.any() else np.nan,
                     "delta_auc": float((b - a)[cols].mean()) if cols.any() else np.nan,
                     "ci_low": float(lo), "ci_high": float(hi)})
    return pd.DataFrame(rows)


def paper_table(runs: pd.DataFrame, split: str = "test", n_boot: int = 1000, seed: int = 0,
                level: float = 0.95, reference: str = "lora") -> pd.DataFrame:
    """One row per backbone and arm other than ``reference``: family, params, added and trainable % of the
    backbone, mean macro AUC of the reference and the arm, and Δ (arm − reference) with its paired bootstrap CI.

    Seeds of one backbone are averaged: Δ and its replicates are the mean over the paired seeds.
    """
    done = runs[runs["status"] == "finished"]
    repeated = done[done.duplicated(["backbone", "arm", "seed"], keep=False)]
    if len(repeated):  # only without the sweep's runs.csv: the arms cannot be told apart
        first = repeated.iloc[0]
        names = repeated[(repeated["backbone"] == first["backbone"]) & (repeated["arm"] == first["arm"])
                         & (repeated["seed"] == first["seed"])]["run"].tolist()
        raise ValueError(f"paper_table: runs {names} share backbone={first['backbone']!r}, arm={first['arm']!r}, "
                         f"seed={first['seed']}; pairing them by seed would mix them: select one per arm "
                         "(filter the runs table), or summarise the sweep folder, whose runs.csv tells them apart")
    rows = []
    tail = (1 - level) / 2 * 100
    for backbone, group in done.groupby("backbone", sort=False):
        ref = group[group["arm"] == reference]
        for arm, other in group[group["arm"] != reference].groupby("arm", sort=False):
            row = {"backbone": backbone, "family": group["family"].iloc[0],
                   "params_M": group["backbone_params"].iloc[0] / 1e6, "reference": reference, "arm": arm,
                   "added_pct_reference": ref["pct_added"].mean(), "added_pct_arm": other["pct_added"].mean(),
                   "trainable_pct_reference": ref["pct_trainable"].mean(), "trainable_pct_arm": other["pct_trainable"].mean(),
                   "auc_reference": ref["macro_auc"].mean(), "auc_arm": other["macro_auc"].mean(),
                   "n_test_scans": pd.concat([ref, other])["n_test_scans"].max()}
            paired = ref.merge(other, on="seed", suffixes=("_a", "_b"))
            row["n_seeds"] = len(paired)
            if len(paired):
                results = [paired_macro_delta(pa_, pb_, split, n_boot, seed)
                           for pa_, pb_ in zip(paired["run_dir_a"], paired["run_dir_b"])]
                reps = np.mean([r[1] for r in results], axis=0) if n_boot > 0 else np.empty(0)
                lo, hi = (np.nanpercentile(reps, [tail, 100 - tail]) if reps.size and not np.isnan(reps).all()
                          else (np.nan, np.nan))
                row.update(delta_auc=float(np.mean([r[0] for r in results])), delta_ci_low=float(lo),
                           delta_ci_high=float(hi))
            rows.append(row)
    return pd.DataFrame(rows)


def long_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Finished runs as (backbone, arm, mean_auc, ci_low, ci_high, n_seeds) for grouped bar plots.

    With one seed per bar the interval is that run's 95% bootstrap CI; with several it is the range of the
    seeds' macro AUCs (a bar is their mean, and one seed's CI would sit around another value).
    ``attrs["interval"]`` says which, for the figure's title.
    """
    done = runs[runs["status"] == "finished"]
    table = (done.groupby(["backbone", "arm"], sort=False)
             .agg(mean_auc=("macro_auc", "mean"), ci_low=("ci_low", "first"), ci_high=("ci_high", "first"),
                  seed_min=("macro_auc", "min"), seed_max=("macro_auc", "max"), n_seeds=("macro_auc", "size"))
             .reset_index())
    several = table["n_seeds"] > 1
    table.loc[several, "ci_low"], table.loc[several, "ci_high"] = table["seed_min"], table["seed_max"]
    table.attrs["interval"] = ("range over seeds" if several.all() else "95% CI" if not several.any()
                               else "95% CI of one seed, range over several")
    return table.drop(columns=["seed_min", "seed_max"])
