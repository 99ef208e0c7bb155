"""Stopping a training run cleanly when the scheduler asks: checkpoint, then exit so the job can be requeued.

SLURM sends SIGUSR1/SIGUSR2 shortly before a job's time limit (``sbatch --signal``; submitit uses SIGUSR2)
and SIGTERM when it preempts, requeues (``scontrol requeue``) or cancels a job; ``torchrun`` forwards
SIGTERM as well. :class:`PreemptionGuard` turns those signals into a flag. The trainer asks
:meth:`PreemptionGuard.should_stop` between optimizer steps (under DDP every rank agrees through one
all-reduce, so all stop after the same step), writes its checkpoint, appends a line to
``<run_dir>/preemptions.jsonl`` and raises :class:`Preempted`. The next start with ``resume=True`` (the 01_train
notebook resumes by itself) continues from that checkpoint to the same final weights and metrics.

While active the guard also unblocks its signals: a launcher may start the process with them blocked
(``molre sweep --executor slurm`` starts notebook kernels so), so that a warning arriving during start-up
waits, pending, until training begins instead of killing the process. Only the main thread can install
signal handlers; elsewhere (a thread pool, a non-main notebook thread) the guard is inert.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any, Optional

import torch

from . import distributed as D

SIGNALS = ("SIGUSR1", "SIGUSR2", "SIGTERM")
LOG_FILE = "preemptions.jsonl"


class Preempted(RuntimeError):
    """Training stopped on a scheduler signal after writing its checkpoint; resume continues from it."""


class PreemptionGuard:
    """Context manager: while active, the signals in ``SIGNALS`` set a flag instead of killing the process."""

    def __init__(self, signals: tuple[str, ...] = SIGNALS) -> None:
        self.signals = [getattr(signal, name) for name in signals if hasattr(signal, name)]
        self.received: Optional[int] = None
        self._previous: dict[int, Any] = {}
        self._mask: Optional[set] = None

    def __enter__(self) -> "PreemptionGuard":
        if threading.current_thread() is threading.main_thread():
            for sig in self.signals:
                self._previous[sig] = signal.signal(sig, self._on_signal)
            self._mask = signal.pthread_sigmask(signal.SIG_UNBLOCK, self.signals)  # pending ones arrive now
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._mask is not None:
            signal.pthread_sigmask(signal.SIG_SETMASK, self._mask)
            self._mask = None
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _on_signal(self, signum: int, frame: Optional[FrameType]) -> None:
        self.received = signum

    def should_stop(self, info: D.DistInfo) -> bool:
        """True when any rank received a signal (one all-reduce per call under DDP)."""
        local = self.received is not None
        if not info.enabled:
            return local
        flag = torch.tensor(float(local), device=info.device)
        return bool(D.all_reduce_sum(flag, info).item() > 0)

    @property
    def signal_name(self) -> str:
        return signal.Signals(self.received).name if self.received is not None else "a signal on another rank"

    def record(self, run_dir: Path, step: int) -> dict[str, Any]:
        """Append what happened to ``run_dir/preemptions.jsonl`` (the sweep status and the job read it)."""
        entry = {"time": time.strftime("%Y-%m-%dT%H:%M:%S"), "signal": self.signal_name, "step": step,
                 "host": socket.gethostname(), "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
                 "slurm_restart_count": int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0)}
        with open(Path(run_dir) / LOG_FILE, "a") as fh:
            fh.write(json.dumps(entry) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        return entry


def preemptions(run_dir: str | Path) -> list[dict[str, Any]]:
    """Every recorded stop of a run, oldest first (empty when it never was preempted)."""
    path = Path(run_dir) / LOG_FILE
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
