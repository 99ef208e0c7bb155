"""Running the tuning trials: one at a time here (SQLite), or as SLURM array tasks sharing one Optuna journal.

Bookkeeping, so that a trial is never lost and never counted twice:

* A trial is *asked* (Optuna state RUNNING) before its notebook starts; its number names its run folder and the
  process that runs it is stored with it (``owner``: host, pid, SLURM job).
* It is *told* once, from its ``metrics.json``: COMPLETE with the validation macro AUC, or FAIL.
* A RUNNING trial whose owner is gone (``kill -9``, a lost node) is **resumed** under the same number: its
  run folder has a checkpoint and ``01_train`` continues from it (or, when ``metrics.json`` was already
  written, the trial is only told). A trial whose folder a live process still holds is left alone.
* A FAILED trial does not count towards ``n_trials``; its parameters are enqueued once more (``retry_of``), and
  the arm stops after ``max_failed`` failures.
* Rerunning a sweep loads its studies (``load_if_exists``) and only runs what is missing.

Storage (Optuna FAQ: SQLite is not safe for concurrent writers, above all on network file systems): a local
sweep runs its trials one after another on ``tune/studies.db``; a SLURM sweep's tasks share
``tune/studies.journal`` through ``JournalFileBackend`` with ``JournalFileOpenLock`` (an ``open(O_CREAT|O_EXCL)``
lock file, which works on NFS where symlink or ``flock`` locks may not).
"""
from __future__ import annotations

import math
import os
import time
import warnings
from pathlib import Path
from typing import Any, Sequence

import optuna

from .tune import (JOURNAL_FILE, SQLITE_FILE, Arm, arms, read_objective, trial_run, tune_config, tune_dir,
                   without_test)
from .tune_owner import owner_gone, owner_here
from .tune_tables import write_tables

STUDY_DIRECTION = "maximize"  # validation macro AUC


def storage_for(cfg: Any, executor: str = "local") -> Any:
    """The sweep's Optuna storage: ``tune.storage``, or for ``auto`` SQLite locally and the journal on SLURM
    (an existing file of the other kind is continued rather than forked)."""
    from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

    tcfg = tune_config(cfg)
    folder = tune_dir(cfg)
    folder.mkdir(parents=True, exist_ok=True)
    kind = tcfg.storage
    if kind == "auto":
        kind = "journal" if executor == "slurm" or (folder / JOURNAL_FILE).is_file() else "sqlite"
        if executor == "slurm" and (folder / SQLITE_FILE).is_file() and not (folder / JOURNAL_FILE).is_file():
            raise ValueError(f"{folder / SQLITE_FILE}: this sweep was tuned locally (SQLite, one writer); SLURM "
                             "tasks write at once and need the journal: set tune.storage: sqlite to continue it "
                             "with one task at a time (slurm.array_parallelism: 1) or move the file away")
    if kind == "journal":
        path = str(folder / JOURNAL_FILE)
        return optuna.storages.JournalStorage(JournalFileBackend(path, lock_obj=JournalFileOpenLock(path)))
    return optuna.storages.RDBStorage(f"sqlite:///{folder / SQLITE_FILE}",
                                      engine_kwargs={"connect_args": {"timeout": 60}})


def open_study(cfg: Any, arm: Arm, storage: Any) -> Any:
    """The arm's study, created or continued, with a sampler seeded by ``sampler_seed`` + the trials it holds
    (a restarted sweep does not replay the first random suggestions; a grid keeps ``sampler_seed``)."""

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name=arm.name, storage=storage, direction=STUDY_DIRECTION, load_if_exists=True)
    study.sampler = make_sampler(cfg, arm, study.get_trials(deepcopy=False))
    return study


def make_sampler(cfg: Any, arm: Arm, trials: Sequence[Any] = ()) -> Any:
    """The arm's sampler, given the trials its study holds (``tune.sampler``; ``auto``: a grid when every
    parameter has ``choices`` and the grid fits ``n_trials``, or when the study was walked as a grid before)."""
    tcfg = tune_config(cfg)
    seed = tcfg.sampler_seed + len(trials)
    grid = {n: p.choices for n, p in arm.space.items()} if all(p.choices for p in arm.space.values()) else None
    kind = tcfg.sampler
    if kind == "auto":
        # A grid stays a grid: choices added without raising n_trials to the new grid's size used to switch the
        # study to TPE, which then met the grid's stored parameters and stopped with Optuna's message.
        was_grid = any("grid_id" in t.system_attrs for t in trials)
        kind = "grid" if grid and (size_of(grid) <= tcfg.n_trials or was_grid) else "tpe"
    if kind == "grid":
        if grid is None:
            raise ValueError(f"sweep {cfg.name}: tune.sampler grid needs choices for every parameter of arm {arm.name}")
        if size_of(grid) < tcfg.n_trials:
            raise ValueError(f"sweep {cfg.name}: tune.n_trials {tcfg.n_trials} is more than the {size_of(grid)} points "
                             f"of arm {arm.name}'s grid; lower n_trials or add choices")
        # The grid's order is shuffled by the seed, and trial k takes the k-th point: the seed must stay the same
        # every time the study is opened, or a continued study repeats points (it did: trials 0 and 1 of a
        # 4-point grid got the same values). The grid's progress lives in the storage, not in the seed.
        return AskTellGridSampler(grid, seed=tcfg.sampler_seed)
    if kind == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    startup = tcfg.n_startup_trials if tcfg.n_startup_trials is not None else max(2, tcfg.n_trials // 3)
    # constant_liar: trials still running (other SLURM tasks) count as poor, so parallel asks spread out
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup, constant_liar=True)


def size_of(grid: dict[str, list[Any]]) -> int:
    return math.prod(len(v) for v in grid.values())


class AskTellGridSampler(optuna.samplers.GridSampler):
    """Optuna's GridSampler, for a sweep that asks and tells, and whose grid may grow between reruns.

    - No ``study.stop()`` once the grid is covered: that call only works inside ``optimize()`` and, under
      ask/tell, raises before the last trial's state is stored. The sweep bounds the trials itself (``n_trials``).
    - A point counts as visited when a trial holds its *values*, not only when the trial was drawn from this very
      grid. Optuna matches trials to a grid by its whole search space, so a grid extended with a new choice (and a
      larger ``n_trials``) saw none of its trials as visited and re-ran points it already had.
    - Trial k of a fresh study takes the k-th point of the seeded shuffle (as Optuna does); a trial whose point is
      taken takes the (k mod n)-th unvisited point, so concurrent asks (SLURM tasks) spread over the grid.
    """

    def after_trial(self, study: Any, trial: Any, state: Any, values: Any) -> None:
        return None

    def _points_of(self, params: dict[str, Any]) -> set[int]:
        if not all(name in params for name in self._param_names):
            return set()
        return {i for i, point in enumerate(self._all_grids)
                if all(self._grid_value_equal(params[name], v) for name, v in zip(self._param_names, point))}

    def _get_unvisited_grid_ids(self, study: Any) -> list[int]:
        visited, running = set(), set()
        for t in study._storage.get_all_trials(study._study_id, deepcopy=False):
            points = self._points_of(t.params)
            if "grid_id" in t.system_attrs and self._same_search_space(t.system_attrs["search_space"]):
                points.add(t.system_attrs["grid_id"])
            if t.state.is_finished():
                visited |= points
            elif t.state == optuna.trial.TrialState.RUNNING:
                running |= points
        unvisited = set(range(self._n_min_trials)) - visited - running
        return sorted(unvisited or set(range(self._n_min_trials)) - visited)

    def before_trial(self, study: Any, trial: Any) -> None:
        if "grid_id" in trial.system_attrs or "fixed_params" in trial.system_attrs:
            return  # a retry (enqueued with its values) keeps them
        unvisited = self._get_unvisited_grid_ids(study) or list(range(self._n_min_trials))
        grid_id = trial.number if trial.number in unvisited else unvisited[trial.number % len(unvisited)]
        study._storage.set_trial_system_attr(trial._trial_id, "search_space", self._search_space)
        study._storage.set_trial_system_attr(trial._trial_id, "grid_id", grid_id)


# ---------------------------------------------------------------------------------------------- one trial


def ask(study: Any, cfg: Any, arm: Arm, owner: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """A new trial (an enqueued retry first, Optuna's rule): (number, its search-space values)."""
    from .tune import suggested_parameters

    trial = study.ask()
    tuned = suggested_parameters(arm, trial)
    trial.set_user_attr("owner", owner)
    trial.set_user_attr("run_dir", str(trial_run(cfg, arm, trial.number, tuned).run_dir))
    return trial.number, tuned


def finish(study: Any, number: int, run_dir: Path, error: str | None) -> str:
    """Tell the study trial ``number``'s outcome from its run folder (once); returns the state told."""

    value, facts = (None, {}) if error else read_objective(run_dir)
    trial = _trial(study, number)
    for key, item in facts.items():
        trial.set_user_attr(key, item)
    if value is None:
        trial.set_user_attr("error", (error or f"no validation macro AUC in {run_dir}/metrics.json")[:300])
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
        if "retry_of" not in study.trials[number].user_attrs:  # a failed retry is not retried again
            study.enqueue_trial(study.trials[number].params, user_attrs={"retry_of": number}, skip_if_exists=False)
        return "FAIL"
    study.tell(trial, value)
    return "COMPLETE"


def _trial(study: Any, number: int) -> Any:
    """A live ``optuna.Trial`` handle on trial ``number`` of ``study`` (also one asked by another process)."""

    trial_id = study._storage.get_trial_id_from_study_id_trial_number(study._study_id, number)  # no public lookup
    return optuna.trial.Trial(study, trial_id)


def execute_trial(cfg: Any, arm: Arm, number: int, tuned: dict[str, Any], run_fn: Any, log=print,
                  seed: int | None = None) -> str | None:
    """Run trial ``number``'s notebook (with ``seed``: its confirmation run at that seed) through
    ``run_fn(job) -> error | None``; None on success."""
    from .runner import Job

    run = trial_run(cfg, arm, number, tuned, seed=seed)
    without_test(cfg, run)
    if run.finished:  # killed after its notebook finished but before the trial was told
        return None
    nb = Path(cfg.notebooks_dir) / cfg.train_notebook
    job = Job(nb.stem, run.name, nb, run.run_dir / nb.name, run.parameters, [run.name])
    start = time.time()
    what = f"tune {arm.name} trial {number}" + ("" if seed is None else f" confirmation at seed {seed}")
    log(f"run  {what} {tuned}")
    error = run_fn(job)
    if error is None and not run.finished:
        error = f"notebook finished but wrote no metrics.json in {run.run_dir}"
    log(f"{'ok  ' if error is None else 'FAIL'} {what} ({time.time() - start:.0f} s)" + (f": {error}" if error else ""))
    return error


# ---------------------------------------------------------------------------------------------- local


def planned_trials(cfg: Any, log=None) -> list[Any]:
    """One representative trial job per arm (its space's lower ends), so the sweep's parameter check covers the
    tuned names and types before anything runs; with ``log``, the tuning plan is printed (the dry run)."""
    from .runner import Job

    tcfg = tune_config(cfg)
    nb = Path(cfg.notebooks_dir) / cfg.train_notebook
    jobs = []
    for arm in arms(cfg):
        example = {n: p.choices[0] if p.choices else p.low for n, p in arm.space.items()}
        run = trial_run(cfg, arm, 0, example)
        jobs.append(Job(nb.stem, run.name, nb, run.run_dir / nb.name, run.parameters, [run.name]))
        if log is not None:
            space = {n: p.choices or [p.low, p.high] + (["log"] if p.log else []) for n, p in arm.space.items()}
            confirm = (f", then the best {tcfg.confirm_top} again at seeds {tcfg.confirm_seeds} (best mean wins)"
                       if tcfg.confirm_top else "")
            log(f"[tune] {arm.name}: {tcfg.n_trials} trials at seed {tcfg.trial_seed} over {space}{confirm} -> "
                f"{tune_dir(cfg) / arm.name}/trialNNN (val only)")
    return jobs


def tune_stage(cfg: Any, book: Any, runs: list[Any], train_jobs: list[Any], tune: str, gpus: list[str] | None,
               log) -> bool:
    """Tune the arms (unless ``tune == "skip"``), then give each run its arm's chosen parameters; a run of an
    arm without a selection is recorded as blocked and not trained. False: stop here (``tune == "only"``)."""
    from .tune import apply_selection, check_not_stale

    if tune != "skip":
        run_tuning(cfg, gpus[0] if gpus else None, log)
    if tune == "only":
        return False
    check_not_stale(cfg, runs)
    blocked = apply_selection(cfg, runs)
    for job, run in zip(train_jobs, runs):
        job.parameters.update(run.parameters)
        if run.name in blocked:
            book.record(job, "blocked", "not run", blocked[run.name])
    return True



def run_tuning(cfg: Any, gpu: str | None = None, log=print, execute: Any = None) -> dict[str, Any]:
    """Every arm's missing trials here, one at a time (SQLite); writes the tables; returns arm -> study.

    ``execute(job) -> error | None`` runs one trial's notebook job; default papermill in a subprocess (tests
    may train in-process)."""
    from .runner import execute_notebook
    from .sweep_checks import in_use

    tcfg = tune_config(cfg)
    storage = storage_for(cfg, "local")
    env = dict(os.environ)
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = gpu
    # every study opened first: the tables written after each trial list every arm, not the arms reached so far
    # (a rerun that adds nothing then rewrites nothing, and 05 is not redone for a table that only looked new)
    studies = {arm.name: open_study(cfg, arm, storage) for arm in arms(cfg)}
    run_fn = execute or (lambda job: execute_notebook(job, cfg.kernel, cfg.cwd, env, cfg.execution_timeout))
    for arm in arms(cfg):
        study = studies[arm.name]
        while True:
            trials = study.get_trials(deepcopy=False)
            states = [t.state.name for t in trials]
            if states.count("FAIL") >= (tcfg.max_failed or tcfg.n_trials):
                log(f"tune {arm.name}: {states.count('FAIL')} failed trials, the arm stops (tune.max_failed)")
                break
            orphan = next((t for t in trials if t.state.name == "RUNNING" and owner_gone(t.user_attrs.get("owner"))), None)
            if orphan is not None:
                number, tuned = orphan.number, dict(orphan.params)
                run = trial_run(cfg, arm, number, tuned)
                if (holder := in_use(run)) is not None:
                    raise ValueError(f"sweep {cfg.name}: tune trial {number} of {arm.name}: {holder}; wait for it "
                                     "or stop it")
                log(f"tune {arm.name}: resuming trial {number} (its process is gone)")
            elif states.count("COMPLETE") + states.count("RUNNING") >= tcfg.n_trials:
                break
            else:
                study.sampler = make_sampler(cfg, arm, trials)
                number, tuned = ask(study, cfg, arm, owner_here())
            error = execute_trial(cfg, arm, number, tuned, run_fn, log)
            finish(study, number, trial_run(cfg, arm, number, tuned).run_dir, error)
            write_tables(cfg, studies)
        running = [t.number for t in study.get_trials(deepcopy=False) if t.state.name == "RUNNING"]
        if running:
            log(f"tune {arm.name}: trials {running} are held by another process; the arm is selected once they end")
        confirm_locally(cfg, arm, study, run_fn, log)
        write_tables(cfg, studies)
    write_tables(cfg, studies)
    return studies


def confirm_locally(cfg: Any, arm: Arm, study: Any, run_fn: Any, log=print) -> None:
    """The arm's confirmation runs (``tune.confirm_top``), one at a time here; a failed one is logged and left
    for the next sweep (the arm stays unselected until every one finished)."""
    from .tune_confirm import claim_confirmation

    me, failed = owner_here(), set()
    while True:
        c = claim_confirmation(cfg, arm, study.get_trials(deepcopy=False), me, exclude=failed)
        if c is None:
            break
        if execute_trial(cfg, arm, c.trial, c.params, run_fn, log, seed=c.seed) is not None:
            failed.add(c.label)
    if failed:
        log(f"tune {arm.name}: {len(failed)} confirmation run(s) failed ({', '.join(sorted(failed))}); the arm is "
            "selected once they finish: rerun the sweep (a run folder resumes from its checkpoint)")
