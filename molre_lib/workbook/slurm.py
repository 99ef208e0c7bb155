"""``molre sweep SWEEP.yaml --executor slurm``: the sweep's notebooks as SLURM jobs, submitted with submitit.

One submission queues up to three kinds of job, chained by SLURM dependencies:

* **prepare** — the ``prepare`` notebooks (00_data), unless they succeeded before;
* **training** — one job array, one task per training run (01_train) that is neither finished
  (``metrics.json``) nor already queued or running; ``afterok`` on prepare; at most ``array_parallelism`` at once.
  A run with several GPUs (or ``tasks_per_run`` > 1) starts one task per GPU; each task runs the notebook
  with ``MASTER_ADDR``/``MASTER_PORT``/``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` exported from SLURM's
  variables (submitit's ``TorchDistributedEnvironment``), so the trainer joins one DDP process group;
* **analysis** — one job, ``afterany`` on every training job, that runs the analysis notebooks (02–05) over
  the runs that finished, exactly as the local sweep does (the choice: one dependent job, not one per
  notebook, so grouping, skipping and ``sweep_status.csv`` stay in one place). It trains nothing: a run that
  failed on the cluster is listed as failed, and the next ``molre sweep --executor slurm`` resubmits it.

Preemption and time limits: SLURM signals the job (SIGUSR2 ``signal_delay_s`` before the limit; SIGTERM on
preemption or ``scontrol requeue``); the trainer checkpoints and stops (:mod:`molre_lib.engine.preemption`),
submitit requeues the job, and the requeued 01_train resumes from ``checkpoints/last.pt``.

Files, all under the sweep folder ``<runs_dir>/<name>/`` (on storage the nodes share)::

    slurm/jobs.json       the job of every run and of the prepare / analysis steps (what is live is asked of squeue)
    slurm/logs/           submitit's pickles and each job's stdout/stderr: <jobid>_<task>_log.{out,err}
    cluster_status.csv    the table ``molre sweep --status`` prints (05_summary can read it)
"""
from __future__ import annotations

import fcntl
import json
import os
import re
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Iterator

from molre_lib.common.config_keys import check_known_keys

from .cluster_status import RECORDS, read_records
from .slurm_task import execute_here, stop_kernels
from .sweep import DONE_MARKER, Job, SweepConfig, expand_runs, plan_analysis

LOGS = "slurm/logs"


@dataclass
class SlurmConfig:
    """Job options; the sweep file's ``slurm:`` section, overridden by ``molre sweep`` flags."""

    partition: str | None = field(default=None, metadata={"help": "SLURM partition (sbatch --partition)"})
    gpus_per_run: int = field(default=0, metadata={"help": "GPUs per training run; > 1 runs DDP, one task per GPU"})
    tasks_per_run: int | None = field(default=None, metadata={"help": "processes (DDP ranks) per run; default one per GPU, else 1"})
    nodes: int = field(default=1, metadata={"help": "nodes per training run (tasks are split evenly)"})
    cpus_per_gpu: int = field(default=4, metadata={"help": "CPUs per task (one task per GPU)"})
    mem: str | None = field(default=None, metadata={"help": "memory per node, e.g. 64G (sbatch --mem)"})
    time: int | str = field(default=240, metadata={"help": "time limit per job: minutes or [D-]HH:MM[:SS]"})
    account: str | None = field(default=None, metadata={"help": "sbatch --account"})
    qos: str | None = field(default=None, metadata={"help": "sbatch --qos"})
    array_parallelism: int = field(default=32, metadata={"help": "training runs (and tuning trials) running at once, per job array"})
    signal_delay_s: int = field(default=120, metadata={"help": "seconds before the time limit the job is told to checkpoint"})
    max_requeues: int = field(default=20, metadata={"help": "time-limit requeues per run before it counts as failed"})
    sbatch: dict[str, Any] = field(default_factory=dict, metadata={"help": "extra #SBATCH options, e.g. {constraint: a100}"})
    setup: list[str] = field(default_factory=list, metadata={"help": "shell lines run before the job, e.g. module load"})
    analysis_gpus: int | None = field(default=None, metadata={"help": "GPUs of the analysis job; default 1 if runs use GPUs"})
    analysis_time: int | str = field(default=120, metadata={"help": "time limit of the analysis job"})

    @classmethod
    def from_dict(cls, raw: dict[str, Any] | None, where: str = "slurm") -> "SlurmConfig":
        raw = dict(raw or {})
        check_known_keys(cls, raw, where)
        cfg = cls(**raw)
        for name in ("time", "analysis_time"):
            minutes(getattr(cfg, name), f"{where}.{name}")
        for name in ("gpus_per_run", "nodes", "cpus_per_gpu", "array_parallelism", "signal_delay_s"):
            if not isinstance(getattr(cfg, name), int) or getattr(cfg, name) < (0 if name == "gpus_per_run" else 1):
                raise ValueError(f"{where}.{name}: expected a positive integer, got {getattr(cfg, name)!r}")
        if cfg.tasks % cfg.nodes:
            raise ValueError(f"{where}: {cfg.tasks} tasks per run do not split evenly over {cfg.nodes} nodes")
        return cfg

    def merged(self, overrides: dict[str, Any], where: str = "command line") -> "SlurmConfig":
        given = {k: v for k, v in overrides.items() if v is not None}
        if "sbatch" in given:
            given["sbatch"] = {**self.sbatch, **given["sbatch"]}
        return SlurmConfig.from_dict({**asdict(self), **given}, where)

    @property
    def tasks(self) -> int:
        return self.tasks_per_run or max(1, self.gpus_per_run)

    def executor_parameters(self, kind: str) -> dict[str, Any]:
        """submitit ``SlurmExecutor.update_parameters`` keywords for the ``train`` or ``analysis`` jobs."""
        gpus = self.gpus_per_run if kind == "train" else (
            self.analysis_gpus if self.analysis_gpus is not None else min(1, self.gpus_per_run))
        nodes = self.nodes if kind == "train" else 1
        tasks = self.tasks // nodes if kind == "train" else 1
        params: dict[str, Any] = {
            "nodes": nodes, "ntasks_per_node": tasks, "cpus_per_task": self.cpus_per_gpu,
            "time": minutes(self.time if kind == "train" else self.analysis_time),
            "signal_delay_s": self.signal_delay_s, "array_parallelism": self.array_parallelism,
            "additional_parameters": dict(self.sbatch), "setup": list(self.setup), "stderr_to_stdout": False}
        if gpus:
            params["gpus_per_node"] = gpus // nodes if kind == "train" else gpus
        for key in ("partition", "mem", "account", "qos"):
            if getattr(self, key) is not None:
                params[key] = getattr(self, key)
        return params


def minutes(value: int | str, where: str = "time") -> int:
    """A SLURM time limit in whole minutes (seconds round up), read as sbatch reads it: minutes, MM:SS,
    HH:MM:SS, D-HH, D-HH:MM or D-HH:MM:SS."""
    text = str(value).strip()
    match = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", text)
    if isinstance(value, bool) or not match:
        raise ValueError(f"{where}: {value!r} is not a time limit (minutes, HH:MM:SS or D-HH:MM:SS)")
    days, a, b, c = match.groups()
    parts = [int(x) for x in (a, b, c) if x is not None]
    if days is None:  # M | M:S | H:M:S
        seconds = {1: lambda: parts[0] * 60, 2: lambda: parts[0] * 60 + parts[1],
                   3: lambda: parts[0] * 3600 + parts[1] * 60 + parts[2]}[len(parts)]()
    else:  # D-H | D-H:M | D-H:M:S
        parts += [0] * (3 - len(parts))
        seconds = int(days) * 86400 + parts[0] * 3600 + parts[1] * 60 + parts[2]
    if seconds <= 0:
        raise ValueError(f"{where}: {value!r} must be at least one minute")
    return -(-seconds // 60)


# ---------------------------------------------------------------------------------------------- job records


@contextmanager
def locked_records(sweep_dir: Path) -> Iterator[dict[str, Any]]:
    """The sweep's job records, under an exclusive lock (two submissions never queue the same run twice)."""
    path = sweep_dir / RECORDS
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        records = read_records(sweep_dir)
        yield records
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(records, indent=1))
        os.replace(tmp, path)


# ---------------------------------------------------------------------------------------------- the jobs


class TrainingJob:
    """01_train for one run inside its SLURM job (pickled by submitit; one instance per DDP task)."""

    def __init__(self, job: Job, kernel: str, cwd: str, timeout: int | None, wait_s: int,
                 tuned: SweepConfig | None = None) -> None:
        self.job, self.kernel, self.cwd, self.timeout, self.wait_s = job, kernel, cwd, timeout, wait_s
        self.tuned = tuned  # a tuned sweep: the arm's chosen parameters are read when the job starts

    @property
    def run_dir(self) -> Path:
        return self.job.output.parent

    def __call__(self) -> str:
        import submitit

        if (self.run_dir / DONE_MARKER).is_file():
            return f"{self.run_dir.name}: finished before this start"
        env = submitit.JobEnvironment()
        job = self.job
        if self.tuned is not None:  # tuning ended (afterany) before this job started: its selection is on disk
            from .tune_slurm import selected_parameters

            os.chdir(self.cwd)  # the sweep's relative paths (runs_dir) are the submitter's
            job = replace(job, parameters={**job.parameters, **selected_parameters(self.tuned, job.key)})
        if env.num_tasks > 1:  # DDP through the job's tasks: torch's env:// variables from SLURM's
            submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False, overwrite=True)
            if env.global_rank:
                job = replace(job, output=self.run_dir / f"{job.notebook.stem}.rank{env.global_rank}.ipynb")
        error = execute_here(job, self.kernel, self.cwd, self.timeout)
        if error is None and env.global_rank == 0 and not (self.run_dir / DONE_MARKER).is_file():
            error = f"notebook finished but wrote no {DONE_MARKER} in {self.run_dir}"
        if error is not None:
            raise RuntimeError(f"{self.run_dir.name}: {error}")
        return f"{self.run_dir.name}: finished"

    def checkpoint(self):  # submitit calls this on its signal (time limit / preemption), in rank 0 only
        """Ask the trainer in the notebook's kernel to checkpoint, wait until it did, then be requeued."""
        import submitit

        stop_kernels(self.run_dir, self.wait_s)
        if (self.run_dir / DONE_MARKER).is_file():
            return None  # training finished meanwhile: nothing to requeue
        return submitit.helpers.DelayedSubmission(self)


class SweepStepJob:
    """The prepare notebooks or the analysis notebooks of a sweep, inside one SLURM job."""

    def __init__(self, cfg: SweepConfig, part: str, cwd: str) -> None:
        self.cfg, self.part, self.cwd = cfg, part, cwd

    def __call__(self) -> str:
        from .sweep import run_sweep

        os.chdir(self.cwd)
        gpus = os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")[:1] if os.environ.get("CUDA_VISIBLE_DEVICES") else None
        rows = run_sweep(self.cfg, gpus=gpus, train_missing=False, only_prepare=self.part == "prepare")
        train_step = Path(self.cfg.train_notebook).stem  # its failures are the runs' own rows in --status
        bad = [r for r in rows if r["status"] == "failed" and r["step"] != train_step]
        if bad:
            raise RuntimeError(f"{len(bad)} notebook(s) failed: " + "; ".join(f"{r['step']} {r['key']}: {r['error']}" for r in bad))
        return f"{self.part}: {len(rows)} notebooks ok"

    def checkpoint(self):
        import submitit

        return submitit.helpers.DelayedSubmission(self)  # a requeued analysis re-runs; finished notebooks are skipped


# ---------------------------------------------------------------------------------------------- submit, status


def submit_sweep(cfg: SweepConfig, scfg: SlurmConfig, log=print, tune: str = "all") -> dict[str, Any]:
    """Queue the sweep's prepare, training and analysis jobs that are needed; returns the updated records.

    Finished runs are skipped, runs whose job is still queued or running keep it (never a second live job for
    a run), every other run — never submitted, failed, cancelled — is (re)submitted. With a ``tune:`` section
    the tuning tasks come between prepare and training (:mod:`.tune_slurm`); ``tune="only"`` queues nothing
    after them, ``"skip"`` queues none and trains only the arms tuned before.
    """
    # One function, read top to bottom, on purpose (longer than the ~60-line rule): everything from reading the
    # queue to writing the job records is one transaction under the records lock, and each phase's job ids are
    # the next phase's dependencies (prepare -> training -> analysis); split into helpers it would pass the
    # lock, the queue snapshot and three id lists around.
    import submitit

    from molre_lib.analysis.summary import RUNS_FILE

    from .cluster_status import is_live, squeue_entries
    from .sweep import _write_runs_table, missing_notebooks

    runs = expand_runs(cfg)
    sweep_dir = (Path(cfg.runs_dir) / cfg.name).resolve()
    nb_dir = Path(cfg.notebooks_dir)
    train_nb = nb_dir / cfg.train_notebook
    missing = missing_notebooks(cfg)
    if missing:
        raise FileNotFoundError(missing[0])
    cwd = os.getcwd()
    queue = squeue_entries()
    now = time.strftime("%Y-%m-%dT%H:%M:%S")
    invalid_dep = {"kill-on-invalid-dep": "yes"}

    def executor(kind: str, dependency: list[str], after_any: list[str] = ()) -> Any:
        ex = submitit.SlurmExecutor(folder=sweep_dir / LOGS, max_num_timeout=scfg.max_requeues)
        params = scfg.executor_parameters(kind)
        params["additional_parameters"] = {**invalid_dep, **params["additional_parameters"]}
        ex.update_parameters(job_name=f"molre-{cfg.name}-{kind}", **params)
        after = [("afterok:" if kind == "train" else "afterany:") + ":".join(dependency)] if dependency else []
        if after_any:  # the final runs of a tuned arm: after its tuning tasks, however they ended
            after.append("afterany:" + ":".join(after_any))
        if after:
            ex.update_parameters(dependency=",".join(after))
        return ex

    def record(job: Any, what: str) -> dict[str, Any]:
        entry = {"job_id": job.job_id, "log": str(job.paths.stderr), "out": str(job.paths.stdout), "submitted_at": now}
        records["history"].append({"what": what, **entry})
        return entry

    with locked_records(sweep_dir) as records:
        _write_runs_table(sweep_dir / RUNS_FILE, runs)
        prep_dep: list[str] = []
        prepare = records["steps"].get("prepare")
        if cfg.prepare:
            if is_live(prepare, queue):
                prep_dep = [prepare["job_id"]]
                log(f"prepare: job {prepare['job_id']} is still queued or running")
            elif not _prepare_done(cfg, sweep_dir):
                job = executor("analysis", []).submit(SweepStepJob(cfg, "prepare", cwd))
                records["steps"]["prepare"] = record(job, "prepare")
                prep_dep = [job.job_id]
                log(f"prepare: submitted job {job.job_id}")
        tune_waits: dict[str, list[str]] | None = {}
        if cfg.tune and tune != "skip":
            from .tune_slurm import submit_tuning

            tune_waits = submit_tuning(cfg, scfg, records, queue, executor, record, prep_dep, cwd, log)
        if cfg.tune and tune == "only":
            return records
        if cfg.tune:
            from .tune import check_not_stale

            check_not_stale(cfg, runs)
        todo, live_ids = [], []
        for run in runs:
            previous = records["runs"].get(run.name)
            if run.finished:
                log(f"skip {run.name}: {DONE_MARKER} present")
            elif is_live(previous, queue):
                live_ids.append(previous["job_id"])
                log(f"skip {run.name}: job {previous['job_id']} is {queue[previous['job_id']].label}")
            else:
                todo.append(run)
        if cfg.tune:  # one array per arm, after that arm's tuning tasks
            from .tune_slurm import training_groups

            groups = training_groups(cfg, todo, None if tune == "skip" else tune_waits, log)
            todo = [run for members, _ in groups for run in members]
        else:
            groups = [(todo, [])] if todo else []
        for members, after_tuning in groups:
            ex = executor("train", prep_dep, after_tuning)
            with ex.batch():
                jobs = [ex.submit(TrainingJob(_train_job(cfg, scfg, run, train_nb), cfg.kernel, cwd,
                                              cfg.execution_timeout, max(5, scfg.signal_delay_s - 20),
                                              cfg if cfg.tune else None)) for run in members]
            for run, job in zip(members, jobs):
                records["runs"][run.name] = record(job, run.name)
                log(f"submitted {run.name}: job {job.job_id}" + (" (resubmitted)" if run.run_dir.exists() else ""))
        if cfg.analysis:
            analysis = records["steps"].get("analysis")
            waits = live_ids + [records["runs"][r.name]["job_id"] for r in todo]
            if is_live(analysis, queue):
                if todo and queue[analysis["job_id"]].state == "PENDING":  # it would start before the new runs end
                    subprocess_run(["scancel", analysis["job_id"]])
                    log(f"analysis: cancelled pending job {analysis['job_id']}; a new one waits for the new runs")
                elif todo:
                    waits.append(analysis["job_id"])
                else:
                    log(f"analysis: job {analysis['job_id']} is still {queue[analysis['job_id']].label}")
                    return records
            job = executor("analysis", waits + prep_dep).submit(SweepStepJob(cfg, "analysis", cwd))
            records["steps"]["analysis"] = record(job, "analysis")
            log(f"analysis: submitted job {job.job_id}" + (f", after {len(waits)} training job(s)" if waits else ""))
    return records


def _train_job(cfg: SweepConfig, scfg: SlurmConfig, run: Any, train_nb: Path) -> Job:
    params = dict(run.parameters)
    if scfg.gpus_per_run and cfg.device_param:
        params.setdefault(cfg.device_param, "cuda")
    return Job(train_nb.stem, run.name, train_nb, run.run_dir / train_nb.name, params, [run.name])


def _prepare_done(cfg: SweepConfig, sweep_dir: Path) -> bool:
    from molre_lib.analysis.summary import STATUS_FILE

    from .runner import StatusBook

    book = StatusBook(sweep_dir / STATUS_FILE)
    jobs = plan_analysis(cfg, expand_runs(cfg), cfg.prepare)
    for job in jobs:
        job.output = sweep_dir / "prepare" / job.notebook.name
    return all(book.succeeded_before(job) for job in jobs)


def subprocess_run(cmd: list[str]) -> None:
    import subprocess

    subprocess.run(cmd, capture_output=True, text=True, timeout=60)
