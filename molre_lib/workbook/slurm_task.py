"""What runs inside a SLURM task of a sweep: one notebook through papermill in this process, and stopping its
kernel on the scheduler's warning so the trainer checkpoints first.

Shared by the training jobs (:mod:`.slurm`) and the tuning tasks (:mod:`.tune_slurm`), which both submit
from the login node but execute here; kept apart from the submission code so the two do not import each other.
"""
from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import yaml

from molre_lib.engine.preemption import LOG_FILE as PREEMPTION_LOG

from .runner import notebook_error
from .sweep import DONE_MARKER, Job

KERNEL_START_S = 300  # papermill's 60 s fails kernels that start on a busy node (seen with two trials at once)


def execute_here(job: Job, kernel: str, cwd: str, timeout: int | None) -> str | None:
    """papermill in this process (its kernel is our child, so signals reach it); None or a one-line error.

    The kernel starts with SIGUSR1/SIGUSR2 blocked: a time-limit warning that arrives while it imports stays
    pending until the trainer's :class:`~molre_lib.engine.preemption.PreemptionGuard` unblocks it, instead
    of killing the kernel (their default action)."""
    import papermill
    from jupyter_client.manager import AsyncKernelManager

    class KernelManager(AsyncKernelManager):
        async def _async_launch_kernel(self, kernel_cmd: list[str], **kw: Any) -> None:
            mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1, signal.SIGUSR2})
            try:
                await super()._async_launch_kernel(kernel_cmd, **kw)
            finally:
                signal.pthread_sigmask(signal.SIG_SETMASK, mask)

    job.output.parent.mkdir(parents=True, exist_ok=True)
    job.output.with_suffix(".params.yaml").write_text(yaml.safe_dump(job.parameters, sort_keys=False))
    try:
        papermill.execute_notebook(str(job.notebook), str(job.output), parameters=job.parameters, kernel_name=kernel,
                                   cwd=cwd, progress_bar=False, execution_timeout=timeout, kernel_manager_class=KernelManager,
                                   start_timeout=KERNEL_START_S)
    except papermill.PapermillExecutionError as err:
        return notebook_error(job.output) or f"{err.ename}: {err.evalue}"[:300]
    except Exception as err:  # the kernel died (killed, out of memory) or a cell timed out
        return f"{type(err).__name__}: {err}".splitlines()[0][:300]
    return None


def _count_lines(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.is_file() else 0


def _children(pid: int) -> list[int]:
    """Direct child processes of ``pid`` (Linux /proc)."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields_ = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields_[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def stop_kernels(run_dir: Path, wait_s: int) -> None:
    """Signal this process's notebook kernels (SIGUSR2) and wait up to ``wait_s`` until the trainer in
    ``run_dir`` checkpointed (a new preemptions.jsonl line), finished, or died."""
    before = _count_lines(run_dir / PREEMPTION_LOG)
    kernels = _children(os.getpid())
    for pid in kernels:  # SLURM signals every process of the step; forwarding covers setups where it does not
        try:
            os.kill(pid, signal.SIGUSR2)
        except ProcessLookupError:
            pass
    deadline = time.time() + wait_s
    while time.time() < deadline:
        if _count_lines(run_dir / PREEMPTION_LOG) > before or (run_dir / DONE_MARKER).is_file():
            break
        if kernels and not any(Path(f"/proc/{pid}").exists() for pid in kernels):
            break  # the kernel died: resume from the last periodic checkpoint
        time.sleep(0.5)
