"""The tuning stage on SLURM: trials as job-array tasks sharing one Optuna journal (``tune/studies.journal``).

``molre sweep SWEEP.yaml --executor slurm`` with a ``tune:`` section queues, per arm, as many **tuning tasks**
as the arm still needs trials (``n_trials`` minus its complete trials minus its tasks still queued or running),
all in one job array after the prepare job (``afterok``), at most ``array_parallelism`` at once. The final
seeded runs of an arm form their own array that waits for that arm's tuning tasks (``afterany``) and reads the
arm's selection (``tune/selected.json``) when it starts; a run whose arm has no selection then fails with that
reason and the next submission resubmits it.

A task loops: it *claims* a trial of its arm, runs it (the ordinary ``01_train`` notebook in the trial's run
folder, with its lock), *tells* the result, and claims again until the arm needs no more trials. Claiming is
one critical section under ``tune/claim.lock`` (an ``O_CREAT|O_EXCL`` lock file as the journal's, safe on
NFS), so two tasks never ask beyond ``n_trials``. In order, a task takes:

1. a RUNNING trial that it owns itself (the owner is the SLURM task ``<array job>_<task>``): the task was
   requeued (preemption, time limit, ``scontrol requeue``) and **resumes** the trial from its checkpoint;
2. an orphan: a RUNNING trial whose owner task is no longer in ``squeue`` (cancelled, node lost) and whose run
   folder no live process holds: it resumes that trial under the same number (``tune_trials`` rules);
3. a new trial (an enqueued retry of a failed one first), while complete + running < ``n_trials``;
4. with ``tune.confirm_top``, once the arm's trials are all told: a confirmation run (its own, or one nobody
   holds, or one whose owner task is gone; :mod:`.tune_confirm`). A submission whose arm has only confirmation
   runs left queues one task for them.

A task stopped by the scheduler mid-trial tells nothing (the trial stays RUNNING, owned by the task, which
resumes it when requeued); a trial is told once, from its ``metrics.json``. So a trial is never lost and never
counted twice. ``molre sweep --status`` adds one ``[tune] <arm>`` row per arm with its progress.
"""
from __future__ import annotations

import os
import signal
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

from molre_lib.engine.preemption import preemptions

from .tune import Arm, arms, arm_name, selection, trial_run, tune_config, tune_dir
from .tune_confirm import claim_confirmation, confirmation_run, confirmations
from .tune_status import studies_of
from .tune_owner import owner_gone, owner_here
from .tune_tables import write_tables
from .tune_trials import _trial, ask, execute_trial, finish, make_sampler, open_study, storage_for

CLAIM_LOCK = "claim"   # tune/claim.lock
CLAIM_GRACE_S = 120    # a claim lock older than this (its holder was killed inside) is broken


def task_id() -> str:
    """This SLURM task as squeue -r names it: ``<array job>_<task>``, or the job id outside an array."""
    job, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    return f"{job}_{task}" if job and task else os.environ.get("SLURM_JOB_ID", "")


def live_jobs() -> set[str] | None:
    """The job ids squeue lists as live (array tasks one by one); None when squeue cannot be asked."""
    from .cluster_status import SchedulerError, squeue_entries

    try:
        return {job for job, entry in squeue_entries().items() if entry.live}
    except SchedulerError:
        return None  # owner_gone then never takes a SLURM task's trial


@contextmanager
def claim_lock(cfg: Any) -> Iterator[None]:
    """One task (or submission) at a time decides which trial runs next and rewrites the tables."""
    from optuna.storages.journal import JournalFileOpenLock

    tune_dir(cfg).mkdir(parents=True, exist_ok=True)
    lock = JournalFileOpenLock(str(tune_dir(cfg) / CLAIM_LOCK), grace_period=CLAIM_GRACE_S)
    lock.acquire()
    try:
        yield
    finally:
        lock.release()


def claim(cfg: Any, arm: Arm, study: Any, me: str, live: set[str] | None) -> tuple[int, dict[str, Any]] | None:
    """The trial task ``me`` runs next (module docstring: its own, an orphan, a new one); None: the arm is done.
    Call it under :func:`claim_lock`."""
    from .sweep_checks import in_use

    tcfg = tune_config(cfg)
    trials = study.get_trials(deepcopy=False)
    running = [t for t in trials if t.state.name == "RUNNING"]
    mine = next((t for t in running if (t.user_attrs.get("owner") or {}).get("job") == me), None)
    if mine is not None:
        return mine.number, dict(mine.params)
    states = [t.state.name for t in trials]
    if states.count("FAIL") >= (tcfg.max_failed or tcfg.n_trials):
        return None
    for t in running:
        if owner_gone(t.user_attrs.get("owner"), live) and in_use(trial_run(cfg, arm, t.number, t.params)) is None:
            _trial(study, t.number).set_user_attr("owner", owner_here(me))
            return t.number, dict(t.params)
    if states.count("COMPLETE") + len(running) >= tcfg.n_trials:
        return None
    study.sampler = make_sampler(cfg, arm, trials)
    return ask(study, cfg, arm, owner_here(me))


class TrialTask:
    """One task of the tuning array (pickled by submitit): runs trials of one arm until it needs none."""

    def __init__(self, cfg: Any, arm: str, cwd: str, wait_s: int, device: str | None = None) -> None:
        self.cfg, self.arm, self.cwd, self.wait_s, self.device = cfg, arm, cwd, wait_s, device
        self.run_dir: Path | None = None  # the trial running now (for checkpoint())
        self.terminated = False           # SIGTERM came (scancel, requeue, preemption): tell nothing more

    def _on_sigterm(self) -> None:
        previous = signal.getsignal(signal.SIGTERM)

        def handler(signum: int, frame: Any) -> None:
            self.terminated = True
            if callable(previous):
                previous(signum, frame)  # submitit's own handler
        signal.signal(signal.SIGTERM, handler)

    def __call__(self) -> str:
        from .slurm_task import execute_here

        os.chdir(self.cwd)  # the sweep's relative paths (runs_dir) are the submitter's
        cfg, me = self.cfg, task_id()
        arm = next(a for a in arms(cfg) if a.name == self.arm)
        storage = storage_for(cfg, "slurm")
        study = open_study(cfg, arm, storage)
        told, self.terminated = [], False  # (a requeued task starts from this object's pickle)
        failed: set[str] = set()           # confirmation runs that failed in this task: left for the next one
        self._on_sigterm()
        while not self.terminated:
            with claim_lock(cfg):
                live = live_jobs()
                claimed = claim(cfg, arm, study, me, live)
                confirm = None if claimed is not None else claim_confirmation(
                    cfg, arm, study.get_trials(deepcopy=False), owner_here(me), live, failed)
                write_tables(cfg, studies_of(cfg, storage))
            if confirm is not None:
                told.append(self._confirm(cfg, arm, confirm, failed, storage))
                continue
            if claimed is None:
                break
            number, tuned = claimed
            run_dir = self.run_dir = trial_run(cfg, arm, number, tuned).run_dir
            stops = len(preemptions(run_dir))
            error = execute_trial(cfg, arm, number, tuned, self._runner(execute_here))
            if error is not None and (self.terminated or len(preemptions(run_dir)) > stops):
                raise RuntimeError(f"tune {arm.name} trial {number}: stopped by the scheduler; the trial stays "
                                   "running, and the requeued task (or the next one) resumes it")
            with claim_lock(cfg):
                told.append(f"{number}:{finish(study, number, run_dir, error)}")
                write_tables(cfg, studies_of(cfg, storage))
            self.run_dir = None
        return f"tune {arm.name}: task {me} told trials {', '.join(told) or 'none'}"

    def _confirm(self, cfg: Any, arm: Arm, c: Any, failed: set[str], storage: Any) -> str:
        """One confirmation run (tune_confirm): a scheduler stop leaves it claimed by this task, which resumes it
        when requeued; a failure is left for the next task or submission."""
        from .slurm_task import execute_here

        run_dir = self.run_dir = confirmation_run(cfg, arm, c).run_dir
        stops = len(preemptions(run_dir))
        error = execute_trial(cfg, arm, c.trial, c.params, self._runner(execute_here), seed=c.seed)
        if error is not None and (self.terminated or len(preemptions(run_dir)) > stops):
            raise RuntimeError(f"tune {arm.name} {c.label}: stopped by the scheduler; the requeued task (or the next "
                               "one) resumes it")
        if error is not None:
            failed.add(c.label)
        with claim_lock(cfg):
            write_tables(cfg, studies_of(cfg, storage))
        self.run_dir = None
        return f"{c.label}:{'ok' if error is None else 'FAIL'}"

    def _runner(self, execute_here: Callable) -> Callable:
        def run(job: Any) -> str | None:
            if self.device and self.cfg.device_param:
                job.parameters.setdefault(self.cfg.device_param, self.device)
            return execute_here(job, self.cfg.kernel, self.cwd, self.cfg.execution_timeout)
        return run

    def checkpoint(self):  # submitit calls this on the time-limit signal
        """Let the trial's trainer checkpoint (as a training job does), then be requeued: the trial resumes."""
        import submitit

        from .slurm_task import stop_kernels

        if self.run_dir is not None:
            stop_kernels(self.run_dir, self.wait_s)
        return submitit.helpers.DelayedSubmission(self)


# ---------------------------------------------------------------------------------------------- submission


def submit_tuning(cfg: Any, scfg: Any, records: dict[str, Any], queue: dict[str, Any],
                  executor: Callable[..., Any], record: Callable[[Any, str], dict[str, Any]], prep_dep: list[str],
                  cwd: str, log=print) -> dict[str, list[str]]:
    """Queue the tuning tasks each arm still needs (module docstring); returns arm -> the ids of its tuning
    tasks queued or running, which its final runs wait for."""
    from .cluster_status import is_live
    from .sweep_checks import check_sweep
    from .tune_trials import planned_trials

    tcfg = tune_config(cfg)
    check_sweep(cfg.name, planned_trials(cfg), [])  # every arm's tuned names and types, before anything is queued
    if scfg.tasks > 1:
        raise ValueError(f"sweep {cfg.name}: a tuning trial runs as one process; with tune: set slurm "
                         f"tasks_per_run/gpus_per_run so that a run is one task (now {scfg.tasks})")
    storage = storage_for(cfg, "slurm")
    tasks = records.setdefault("tune", {})
    waits: dict[str, list[str]] = {}
    todo: list[Arm] = []
    with claim_lock(cfg):
        for arm in arms(cfg):
            trials = open_study(cfg, arm, storage).get_trials(deepcopy=False)
            states = [t.state.name for t in trials]
            live = [e for e in tasks.setdefault(arm.name, []) if is_live(e, queue)]  # ended ones kept for --status
            waits[arm.name] = [e["job_id"] for e in live]
            if states.count("FAIL") >= (tcfg.max_failed or tcfg.n_trials):
                log(f"tune {arm.name}: {states.count('FAIL')} failed trials, the arm stops (tune.max_failed)")
                continue
            need = max(0, tcfg.n_trials - states.count("COMPLETE") - len(live))
            confirm = [c for c in confirmations(cfg, arm, trials) if not confirmation_run(cfg, arm, c).finished]
            if confirm and not need and not live:  # trials done, confirmation runs left: one task runs them
                need = 1
                log(f"tune {arm.name}: {len(confirm)} confirmation run(s) left (tune.confirm_top)")
            todo += [arm] * need
            log(f"tune {arm.name}: {states.count('COMPLETE')}/{tcfg.n_trials} trials done, {len(live)} task(s) "
                f"queued or running, {need} to submit")
        write_tables(cfg, studies_of(cfg, storage))
    if todo:
        ex = executor("train", prep_dep)
        ex.update_parameters(job_name=f"molre-{cfg.name}-tune")
        device = "cuda" if scfg.gpus_per_run else None
        with ex.batch():
            jobs = [ex.submit(TrialTask(cfg, arm.name, cwd, max(5, scfg.signal_delay_s - 20), device)) for arm in todo]
        for arm, job in zip(todo, jobs):
            tasks[arm.name].append(record(job, f"tune {arm.name}"))
            waits[arm.name].append(job.job_id)
        log(f"tune: submitted {len(jobs)} trial task(s)" + (f" after prepare job {prep_dep[0]}" if prep_dep else ""))
    return waits


def arm_of(cfg: Any, run: Any) -> str:
    tcfg = tune_config(cfg)
    return arm_name({k: v for k, v in run.values.items() if k != tcfg.seed_key}, tcfg.seed_key)


def training_groups(cfg: Any, runs: list[Any], waits: dict[str, list[str]] | None,
                    log=print) -> list[tuple[list[Any], list[str]]]:
    """The final runs to submit, one group per arm with the tuning tasks it waits for (``afterany``); with
    ``waits`` None (``--skip-tune``) only the runs of arms tuned before, the others listed as blocked."""
    chosen = selection(cfg)
    groups: dict[str, list[Any]] = {}
    for run in runs:
        name = arm_of(cfg, run)
        if waits is None and name not in chosen:
            log(f"blocked {run.name}: arm {name} is not tuned yet (--skip-tune)")
            continue
        groups.setdefault(name, []).append(run)
    return [(members, (waits or {}).get(name, [])) for name, members in groups.items()]


def selected_parameters(cfg: Any, run_name: str) -> dict[str, Any]:
    """The chosen parameters of the arm of run ``run_name``, read when its job starts (after tuning)."""
    from .grid import expand_runs

    run = next(r for r in expand_runs(cfg) if r.name == run_name)
    chosen = selection(cfg).get(arm_of(cfg, run))
    if chosen is None:
        raise RuntimeError(f"arm {arm_of(cfg, run)} is not tuned yet (no entry in {tune_dir(cfg) / 'selected.json'}; "
                           "see the [tune] rows of molre sweep --status); the next --executor slurm resubmits this run")
    return chosen["parameters"]


# ---------------------------------------------------------------------------------------------- status
