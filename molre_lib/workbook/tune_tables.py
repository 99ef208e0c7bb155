"""The tuning stage's tables: ``tune/trials.csv`` (every trial), ``tune/selected.csv`` and ``tune/selected.json``
(per arm its choice: the best trial, or with ``confirm_top`` the best mean over seeds), rewritten from the Optuna
studies (and the confirmation runs' folders) after every trial.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from .tune import SELECTED_FILE, SELECTED_JSON, TRIALS_FILE, arms, notebook_values, trial_run, tune_config, tune_dir
from .tune_confirm import choose, confirmed_results, mean_of, trials_over


TRIAL_COLUMNS = ["arm", "trial", "state", "val_auc", "steps", "effective_step", "train_seconds", "retry_of",
                 "error", "run_dir"]


def write_tables(cfg: Any, studies: dict[str, Any]) -> tuple[Path, Path]:
    """trials.csv (every trial of every arm) and selected.csv / selected.json (per arm with all its trials done:
    the best by validation AUC, ties to the earlier trial; with ``confirm_top``, once its confirmation runs
    finished: the best mean over seeds, :mod:`.tune_confirm`) from the studies (arm name -> optuna Study)."""
    tcfg = tune_config(cfg)
    out = tune_dir(cfg)
    out.mkdir(parents=True, exist_ok=True)
    keys = list(dict.fromkeys(k for arm in arms(cfg) for k in arm.values))

    trial_rows, selected = [], {}
    for arm in arms(cfg):
        study = studies.get(arm.name)
        trials = study.get_trials(deepcopy=False) if study is not None else []
        names = list(arm.space)
        for t in trials:
            trial_rows.append({**arm.values, "arm": arm.name, "trial": t.number, "state": t.state.name,
                               "val_auc": t.value if t.state.name == "COMPLETE" else "",
                               **{f"param_{n}": t.params.get(n, "") for n in names},
                               **{c: t.user_attrs.get(c, "") for c in TRIAL_COLUMNS[4:]}})
        done = [t for t in trials if t.state.name == "COMPLETE"]
        failed = sum(t.state.name == "FAIL" for t in trials)
        results = confirmed_results(cfg, arm, trials) if tcfg.confirm_top else {}
        confirmed = choose(tcfg, trials, results) if tcfg.confirm_top else None
        for row in trial_rows[len(trial_rows) - len(trials):]:  # this arm's rows: a candidate's other seeds
            if row["trial"] in results:
                extra = {seed: v for seed, (v, _) in results[row["trial"]].items()}
                seeds = {tcfg.trial_seed: row["val_auc"], **extra}
                row.update(confirm_val_aucs=" ".join(f"{seed}:{v:.4f}" for seed, v in extra.items()),
                           mean_val_auc=mean_of(seeds) if len(seeds) == 1 + len(tcfg.confirm_seeds) else "")
        if trials_over(tcfg, trials) and (not tcfg.confirm_top or confirmed is not None):
            best = confirmed[0] if confirmed else max(done, key=lambda t: (t.value, -t.number))
            base = trial_run(cfg, arm, best.number, best.params).parameters
            steps = [t.user_attrs.get("steps") for t in done if isinstance(t.user_attrs.get("steps"), int)]
            steps += [n for by_seed in results.values() for _, n in by_seed.values() if n is not None]
            seeds = confirmed[1][best.number] if confirmed else {tcfg.trial_seed: best.value}
            selected[arm.name] = {
                "values": arm.values, "n_trials": len(done), "n_failed": failed, "best_trial": best.number,
                "best_val_auc": best.value, "params": dict(best.params),
                "parameters": notebook_values(dict(best.params), base),
                "effective_step": best.user_attrs.get("effective_step"),
                "selected_by": (f"best mean val AUC over seeds {', '.join(map(str, seeds))} of the top "
                                f"{tcfg.confirm_top} trials" if confirmed else "best val AUC of one trial"),
                "selection_seeds": len(seeds), "mean_val_auc": mean_of(seeds), "min_val_auc": min(seeds.values()),
                "steps_per_trial": max(steps) if steps else None, "total_steps": sum(steps) if steps else None,
                "run_dir": best.user_attrs.get("run_dir", "")}
    param_cols = list(dict.fromkeys(f"param_{n}" for arm in arms(cfg) for n in arm.space))
    confirm_cols = ["confirm_val_aucs", "mean_val_auc"] if tcfg.confirm_top else []
    _write_csv(out / TRIALS_FILE, keys + ["arm", "trial", "state", "val_auc"] + confirm_cols + param_cols
               + TRIAL_COLUMNS[4:], trial_rows)
    rows = [{**s["values"], "arm": name, **{k: v for k, v in s.items() if k not in ("values", "params", "parameters")},
             **{f"param_{k}": v for k, v in s["params"].items()}} for name, s in selected.items()]
    _write_csv(out / SELECTED_FILE, keys + ["arm", "n_trials", "n_failed", "best_trial", "best_val_auc"]
               + ["selected_by", "selection_seeds", "mean_val_auc", "min_val_auc"] + param_cols
               + ["effective_step", "steps_per_trial", "total_steps", "run_dir"], rows)
    tmp = out / (SELECTED_JSON + ".tmp")
    tmp.write_text(json.dumps(selected, indent=1, default=str))
    tmp.replace(out / SELECTED_JSON)
    return out / TRIALS_FILE, out / SELECTED_FILE


def _write_csv(path: Path, columns: list[str], rows: list[dict[str, Any]]) -> None:
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    if path.is_file() and path.read_bytes() == tmp.read_bytes():
        tmp.unlink()  # unchanged: keep its time, which tells the sweep's summary whether the tuning moved on
        return
    tmp.replace(path)
