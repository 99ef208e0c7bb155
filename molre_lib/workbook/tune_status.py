"""The ``[tune] <arm>`` rows of ``molre sweep --status``: each arm's trials (done, running, failed, orphaned)
read from the sweep's Optuna storage, and its SLURM tasks from the queue.

Read by :mod:`.cluster_status` (the status table) and used by :mod:`.tune_slurm` (which studies exist); it
imports neither, so status and submission stay one-way.
"""
from __future__ import annotations

from typing import Any

import optuna

from .tune import JOURNAL_FILE, SQLITE_FILE, arms, selection, tune_config, tune_dir
from .tune_confirm import confirmation_run, confirmations
from .tune_owner import owner_gone
from .tune_trials import storage_for


def studies_of(cfg: Any, storage: Any) -> dict[str, Any]:
    """Arm name -> its study, for the arms that have one in ``storage``."""
    names = set(optuna.study.get_all_study_names(storage))
    return {a.name: optuna.load_study(study_name=a.name, storage=storage) for a in arms(cfg) if a.name in names}


def tune_status_rows(cfg: Any, records: dict[str, Any], queue: dict[str, Any]) -> list[dict[str, Any]]:
    """One ``[tune] <arm>`` row per arm for ``--status``: tuned | tuning | pending | failed (its tasks left the
    queue before the arm was tuned: the next submission continues) | incomplete (trials without SLURM tasks: a
    local sweep stopped or still tuning) | not submitted, with the trials done / running / failed (and orphaned:
    their owner is gone; the next task or submission resumes them)."""
    tcfg = tune_config(cfg)
    folder = tune_dir(cfg)
    storage = None
    if (folder / JOURNAL_FILE).is_file() or (folder / SQLITE_FILE).is_file():
        storage = storage_for(cfg, "slurm" if (folder / JOURNAL_FILE).is_file() else "local")
    studies = studies_of(cfg, storage) if storage is not None else {}
    chosen, live = selection(cfg), {j for j, e in queue.items() if e.live}
    rows = []
    for arm in arms(cfg):
        trials = studies[arm.name].get_trials(deepcopy=False) if arm.name in studies else []
        states = [t.state.name for t in trials]
        orphans = sum(s == "RUNNING" and owner_gone(t.user_attrs.get("owner"), live) for s, t in zip(states, trials))
        tasks = (records.get("tune") or {}).get(arm.name, [])
        entries = [queue[e["job_id"]] for e in tasks if e["job_id"] in live]
        progress = (f"{states.count('COMPLETE')}/{tcfg.n_trials} trials done, {states.count('RUNNING') - orphans} "
                    f"running, {states.count('FAIL')} failed" + (f", {orphans} orphaned" if orphans else ""))
        if tcfg.confirm_top:
            todo = confirmations(cfg, arm, trials)
            progress += (f"; {sum(confirmation_run(cfg, arm, c).finished for c in todo)}/"
                         f"{tcfg.confirm_top * len(tcfg.confirm_seeds)} confirmation runs done")
        if arm.name in chosen:
            progress += f"; best trial {chosen[arm.name]['best_trial']} val AUC {chosen[arm.name]['best_val_auc']:.4f}"
        state = ("tuning" if any(e.label == "running" for e in entries) else "pending" if entries else
                 "tuned" if arm.name in chosen else "failed" if tasks else "incomplete" if trials else "not submitted")
        rows.append({"run": f"[tune] {arm.name}", "state": state,
                     "job_id": entries[0].job_id if entries else (tasks[-1]["job_id"] if tasks else ""),
                     "restarts": sum(e.restarts for e in entries) if entries else "", "preemptions": "",
                     "reason": progress, "log": tasks[-1]["log"] if tasks else "", "error": ""})
    return rows
