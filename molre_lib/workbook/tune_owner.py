"""Who holds a tuning trial or confirmation run: the process (host and pid) or SLURM task that took it, and
whether that holder can still be running it (when not, the next process or task resumes the run).
"""
from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any


def owner_here(job: str = "") -> dict[str, Any]:
    return {"host": socket.gethostname(), "pid": os.getpid(), "job": job}


def owner_gone(owner: dict[str, Any] | None, live_jobs: set[str] | None = None) -> bool:
    """True when the process that asked a RUNNING trial cannot be running it any more."""
    if not owner:
        return True
    if owner.get("job"):  # a SLURM task ("<array job>_<task>"): alive while squeue -r lists it
        return live_jobs is not None and owner["job"] not in live_jobs
    if owner.get("host") != socket.gethostname():
        return False  # another machine's process: we cannot tell, so never take its trial
    return not Path(f"/proc/{owner.get('pid')}").exists()
