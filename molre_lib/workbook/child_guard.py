"""Run a Python module as a child process that dies with the process that started it.

``python -m molre_lib.workbook.child_guard PARENT_PID MODULE ARGS...`` asks Linux to SIGKILL this process when its
parent dies (``prctl(PR_SET_PDEATHSIG)``), checks the parent is still ``PARENT_PID`` (it may have died before),
then runs ``MODULE`` as ``python -m MODULE ARGS...`` would. The sweep starts papermill this way: a ``kill -9`` of
``molre sweep`` (which no handler can catch) then kills papermill, and papermill's kernel exits by itself once
its parent is gone (ipykernel's parent poller, ``JPY_PARENT_PID``), which releases the run folder's lock. Where
``prctl`` is missing (not Linux) the module just runs; the run-folder lock still refuses a second writer.
"""
from __future__ import annotations

import ctypes
import os
import runpy
import signal
import sys

PR_SET_PDEATHSIG = 1


def die_with_parent(parent_pid: int) -> bool:
    """Arrange SIGKILL on the parent's death; False where the platform cannot. Exits if the parent is gone."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        armed = libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0
    except (OSError, AttributeError):
        armed = False
    if os.getppid() != parent_pid:                    # the parent died before prctl took effect
        os._exit(1)
    return armed


def main(argv: list[str]) -> None:
    parent, module, *args = argv
    die_with_parent(int(parent))
    sys.argv = [module, *args]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main(sys.argv[1:])
