"""Executing one notebook with papermill in a subprocess, and the sweep's status book.

Kept apart from :mod:`molre_lib.workbook.sweep` (what to run) so the mechanics of running — a subprocess per
notebook (its own kernel and ``CUDA_VISIBLE_DEVICES``), error extraction, one worker per GPU — read alone.
"""
from __future__ import annotations

import csv
import json
import os
import queue
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

STATUS_COLUMNS = ["step", "key", "notebook", "output", "status", "action", "error", "gpu", "seconds", "finished_at"]


@dataclass
class Job:
    """One notebook execution: a step (notebook stem) for a key (run, group or 'sweep')."""

    step: str
    key: str
    notebook: Path
    output: Path
    parameters: dict[str, Any]
    inputs: list[str]  # run names this job depends on


def execute_notebook(job: Job, kernel: str, cwd: str, env: dict[str, str], timeout: int | None = None) -> str | None:
    """Run papermill in a subprocess; returns None on success or a one-line error.

    The executed notebook (with the traceback, on failure) is written to ``job.output``; papermill's own
    log goes next to it as ``<stem>.log``, the injected parameters as ``<stem>.params.yaml``.
    """
    job.output.parent.mkdir(parents=True, exist_ok=True)
    params_file = job.output.with_suffix(".params.yaml")
    params_file.write_text(yaml.safe_dump(job.parameters, sort_keys=False))
    # child_guard: papermill (and so its kernel) dies with this process, even on kill -9 of the sweep
    cmd = [sys.executable, "-m", "molre_lib.workbook.child_guard", str(os.getpid()), "papermill", str(job.notebook),
           str(job.output), "-f", str(params_file),
           "-k", kernel, "--cwd", str(cwd), "--no-progress-bar", "--log-level", "WARNING"]
    if timeout:
        cmd += ["--execution-timeout", str(timeout)]
    log = job.output.with_suffix(".log")
    with open(log, "w") as fh:
        proc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env)
    if proc.returncode == 0:
        return None
    return notebook_error(job.output) or _log_tail(log) or f"papermill exited with {proc.returncode}"


def notebook_error(path: Path) -> str | None:
    """'ExcName: message' of the first error output in an executed notebook, if any."""
    try:
        nb = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    for cell in nb.get("cells", []):
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error":
                return f"{out.get('ename', 'Error')}: {out.get('evalue', '')}"[:300]
    return None


def _log_tail(path: Path) -> str | None:
    lines = [ln.strip() for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    return lines[-1][:300] if lines else None


class StatusBook:
    """sweep_status.csv: one row per (step, key), rewritten after every job so a crash leaves a record."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.rows: dict[tuple[str, str], dict[str, Any]] = {}
        self.previous: dict[tuple[str, str], dict[str, Any]] = {}
        if path.is_file():
            with open(path, newline="") as fh:
                self.previous = {(r["step"], r["key"]): r for r in csv.DictReader(fh)}
        self._lock = threading.Lock()

    def succeeded_before(self, job: Job) -> bool:
        row = self.previous.get((job.step, job.key))
        return row is not None and row["status"] == "ok" and job.output.is_file()

    def record(self, job: Job, status: str, action: str, error: str = "", gpu: str = "", seconds: float = 0.0) -> None:
        with self._lock:
            self.rows[(job.step, job.key)] = {
                "step": job.step, "key": job.key, "notebook": str(job.notebook), "output": str(job.output),
                "status": status, "action": action, "error": error, "gpu": gpu, "seconds": round(seconds, 1),
                "finished_at": time.strftime("%Y-%m-%d %H:%M:%S")}
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "w", newline="") as fh:
                writer = csv.DictWriter(fh, STATUS_COLUMNS)
                writer.writeheader()
                writer.writerows(self.rows.values())


def run_pool(tasks: list[tuple], gpus: list[str] | None) -> None:
    """Run tasks (fn, *args) one per GPU at a time, or sequentially without GPUs."""
    if not gpus:
        for fn, *args in tasks:
            fn(*args, None)
        return
    free: queue.Queue[str] = queue.Queue()
    for g in gpus:
        free.put(g)

    def on_gpu(fn, *args) -> None:
        gpu = free.get()
        try:
            fn(*args, gpu)
        finally:
            free.put(gpu)

    with ThreadPoolExecutor(max_workers=len(gpus)) as pool:
        for future in [pool.submit(on_gpu, *task) for task in tasks]:
            future.result()
