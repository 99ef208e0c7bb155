"""``molre sweep SWEEP.yaml --status``: where every run of a sweep stands, from the sweep folder and squeue.

A run is **done** when its folder holds ``metrics.json``. Otherwise its recorded job (``slurm/jobs.json``) is
looked up in ``squeue``: **pending**, **running**, or **requeued** (pending again after a preemption, a
time-limit requeue or ``scontrol requeue``). A run whose job has left the queue without ``metrics.json`` is
**failed**, with the last error line (the notebook's exception, else the job log's last error line).
A run never submitted is **not submitted**. The prepare and analysis jobs get a row each.

The table is also written to ``<sweep>/cluster_status.csv`` (columns ``STATUS_COLUMNS``) for 05_summary.
SLURM without accounting (no ``sacct``) forgets a job ``MinJobAge`` seconds after it ended; the files in
the sweep folder (``metrics.json``, submitit's result pickle, the logs) are what decides done and failed.
A sweep with a ``tune:`` section adds one ``[tune] <arm>`` row per arm (trials done / running / failed).
"""
from __future__ import annotations

import csv
import getpass
import json
import pickle
import re
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from molre_lib.engine.preemption import preemptions

from .runner import notebook_error

STATUS_FILE = "cluster_status.csv"
RECORDS = "slurm/jobs.json"  # the sweep's job records, written by workbook.slurm
STATUS_COLUMNS = ["run", "state", "job_id", "restarts", "preemptions", "reason", "log", "error"]
LIVE = {"PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESIZING",
        "SUSPENDED", "STAGE_OUT", "SIGNALING", "RESV_DEL_HOLD"}
_ERROR_LINE = re.compile(r"error|exception|killed|cancelled|time limit|oom", re.IGNORECASE)


def read_records(sweep_dir: Path) -> dict[str, Any]:
    """The sweep's job records (``slurm/jobs.json``): runs, steps, history; empty when none were written."""
    path = sweep_dir / RECORDS
    records = json.loads(path.read_text()) if path.is_file() else {}
    for key in ("runs", "steps", "tune"):  # tune: arm -> its tuning tasks (workbook.tune_slurm)
        records.setdefault(key, {})
    records.setdefault("history", [])
    return records


class SchedulerError(RuntimeError):
    """squeue could not be asked (SLURM not reachable from here)."""


@dataclass
class QueueEntry:
    job_id: str
    state: str
    restarts: int
    reason: str

    @property
    def live(self) -> bool:
        return self.state in LIVE

    @property
    def label(self) -> str:
        if self.state in ("RUNNING", "CONFIGURING", "COMPLETING", "STAGE_OUT", "SIGNALING"):
            return "running"
        if self.state.startswith("REQUEUE") or (self.state == "PENDING" and self.restarts > 0):
            return "requeued"
        return "suspended" if self.state == "SUSPENDED" else "pending"


def squeue_entries() -> dict[str, QueueEntry]:
    """This user's jobs in the queue, one entry per array task, keyed by job id (``123`` or ``123_4``)."""
    cmd = ["squeue", "-h", "-r", "-u", getpass.getuser(), "-O", "JobArrayID:40,State:24,RestartCnt:8,Reason:80"]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise SchedulerError(f"squeue could not run ({err}); is SLURM installed here and SLURM_CONF set?") from None
    if proc.returncode != 0:
        message = (proc.stderr.strip().splitlines() or ["no message"])[-1]
        raise SchedulerError(f"squeue failed: {message}; is the SLURM controller reachable (SLURM_CONF)?")
    entries = {}
    for line in proc.stdout.splitlines():
        parts = line.split(None, 3)
        if len(parts) >= 3:
            entries[parts[0]] = QueueEntry(parts[0], parts[1], int(parts[2]) if parts[2].isdigit() else 0,
                                           parts[3].strip() if len(parts) > 3 else "")
    return entries


def is_live(record: dict[str, Any] | None, queue: dict[str, QueueEntry]) -> bool:
    return bool(record) and record["job_id"] in queue and queue[record["job_id"]].live


def job_outcome(record: dict[str, Any]) -> tuple[str, str] | None:
    """('success' | 'error', message) from submitit's result pickle of a finished job, if it wrote one."""
    path = Path(record["log"]).parent / f"{record['job_id']}_0_result.pkl"
    try:
        with open(path, "rb") as fh:
            outcome, value = pickle.load(fh)
    except (OSError, EOFError, ValueError, pickle.UnpicklingError, AttributeError, ImportError):
        return None
    lines = [ln for ln in str(value).strip().splitlines() if ln.strip()]
    return outcome, (lines[-1].strip() if lines else "")


def last_error_line(path: str | Path) -> str:
    try:
        lines = [ln.strip() for ln in Path(path).read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    errors = [ln for ln in lines if _ERROR_LINE.search(ln)]
    return (errors or lines or [""])[-1][:300]


def status_rows(sweep_dir: Path, runs: list[Any], train_notebook: str, records: dict[str, Any],
                queue: dict[str, QueueEntry]) -> list[dict[str, Any]]:
    """One row per run (in grid order), then the prepare and analysis jobs."""
    rows = []
    for run in runs:
        record = records["runs"].get(run.name)
        entry = queue.get(record["job_id"]) if record else None
        stops = preemptions(run.run_dir)
        row = {"run": run.name, "job_id": record["job_id"] if record else "", "log": record["log"] if record else "",
               "restarts": entry.restarts if entry else "", "preemptions": len(stops),
               "reason": entry.reason if entry and entry.live else "", "error": ""}
        if run.finished:
            row["state"] = "done"
        elif entry is not None and entry.live:
            row["state"] = entry.label
            if stops and row["state"] != "running":
                last = stops[-1]
                row["error"] = f"stopped by {last['signal']} at step {last['step']}; resumes from its checkpoint"
        elif record:
            row["state"] = "failed"
            outcome = job_outcome(record)
            row["error"] = (notebook_error(run.run_dir / train_notebook) or (outcome[1] if outcome else "")
                            or last_error_line(record["log"]) or "the job left the queue without metrics.json")
        elif (run.run_dir / train_notebook).is_file():  # run by a local sweep
            row["state"] = "failed"
            row["error"] = notebook_error(run.run_dir / train_notebook) or "stopped without metrics.json"
            row["log"] = str(run.run_dir / train_notebook)
        else:
            row["state"] = "not submitted"
        rows.append(row)
    for part in ("prepare", "analysis"):
        record = records["steps"].get(part)
        if not record:
            continue
        entry = queue.get(record["job_id"])
        row = {"run": f"[{part}]", "job_id": record["job_id"], "log": record["log"], "restarts": entry.restarts if entry else "",
               "preemptions": "", "reason": entry.reason if entry and entry.live else "", "error": ""}
        if entry is not None and entry.live:
            row["state"] = entry.label
        else:
            outcome = job_outcome(record)
            row["state"] = "done" if outcome and outcome[0] == "success" else "failed"
            if row["state"] == "failed":
                row["error"] = (outcome[1] if outcome else "") or last_error_line(record["log"]) or "no result"
        rows.append(row)
    return rows


def write_status(path: Path, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, STATUS_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


def format_table(rows: list[dict[str, Any]]) -> str:
    """Aligned text table: run, state, job, restarts, then the log and the error on their own when present."""
    width = max([len(r["run"]) for r in rows] + [3])
    lines = [f"{'run':{width}s}  {'state':13s} {'job':12s} {'restarts':8s} log / last error"]
    for r in rows:
        extra = r["log"] if r["state"] in ("failed", "running", "requeued") else ""
        lines.append(f"{r['run']:{width}s}  {r['state']:13s} {str(r['job_id']):12s} {str(r['restarts']):8s} {extra}")
        if r["error"]:
            lines.append(f"{'':{width}s}  {r['error']}")
        elif r["reason"] and r["reason"] != "None":  # a [tune] row's reason is its progress
            lines.append(f"{'':{width}s}  {'' if r['run'].startswith('[tune]') else 'waiting: '}{r['reason']}")
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["state"]] = counts.get(r["state"], 0) + 1
    lines.append("; ".join(f"{n} {s}" for s, n in counts.items()))
    return "\n".join(lines)


def sweep_status(cfg: Any) -> list[dict[str, Any]]:
    """The ``--status`` rows of a sweep (this module's docstring), also written to cluster_status.csv."""
    from .sweep import expand_runs

    sweep_dir = (Path(cfg.runs_dir) / cfg.name).resolve()
    records = read_records(sweep_dir)
    try:
        queue = squeue_entries()
    except SchedulerError:
        if records["runs"] or records["steps"] or records["tune"]:
            raise
        queue = {}  # a local sweep: the states come from the folder alone
    rows = status_rows(sweep_dir, expand_runs(cfg), cfg.train_notebook, records, queue)
    if getattr(cfg, "tune", None):
        from .tune_status import tune_status_rows

        rows += tune_status_rows(cfg, records, queue)
    write_status(sweep_dir / STATUS_FILE, rows)
    return rows


def wait_for_jobs(cfg: Any, poll_s: float = 5.0, timeout_s: float | None = None, log=print) -> list[dict[str, Any]]:
    """Block until none of the sweep's recorded jobs is queued or running; returns the final status rows."""

    sweep_dir = (Path(cfg.runs_dir) / cfg.name).resolve()
    start, last = time.time(), None
    while True:
        records = read_records(sweep_dir)
        queue = squeue_entries()
        tasks = [e for entries in records["tune"].values() for e in entries]
        live = [r["job_id"] for r in [*records["runs"].values(), *records["steps"].values(), *tasks] if is_live(r, queue)]
        if not live:
            return sweep_status(cfg)
        summary = ", ".join(f"{j} {queue[j].label}" for j in live)
        if summary != last:
            log(f"waiting: {summary}")
            last = summary
        if timeout_s is not None and time.time() - start > timeout_s:
            raise TimeoutError(f"sweep {cfg.name}: jobs still live after {timeout_s:.0f} s: {summary}")
        time.sleep(poll_s)
