"""The run-folder lock on its own: one holder, the holder named, a dead holder's lock recovered."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from molre_lib.engine.run_lock import RunLock, RunLockedError, lock_path, read_holder

HOLD = """
import sys, time
from molre_lib.engine.run_lock import RunLock
RunLock(sys.argv[1]).acquire()
print("locked", flush=True)
time.sleep(120)
"""


def _holder(run_dir):
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(run_dir)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_second_locker_is_refused_naming_the_holder_and_a_killed_holder_frees_it(tmp_path):
    run = tmp_path / "run"
    proc = _holder(run)
    try:
        with pytest.raises(RunLockedError) as info:
            RunLock(run).acquire()
        msg = str(info.value)
        assert f"pid {proc.pid} on {socket.gethostname()}" in msg and str(run) in msg
        assert read_holder(run).startswith(f"pid {proc.pid} ")
        os.kill(proc.pid, signal.SIGKILL)          # dies without releasing: the lock file stays behind
        proc.wait()
        assert lock_path(run).read_text().startswith(f"pid={proc.pid} ")
        assert read_holder(run) is None             # ... but the kernel dropped the lock with the process
        with RunLock(run) as lock:                   # stale lock recovered
            assert lock.held and read_holder(run).startswith(f"pid {os.getpid()} ")
        assert read_holder(run) is None
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_same_process_cannot_lock_twice_and_release_lets_the_next_in(tmp_path):
    first = RunLock(tmp_path).acquire()
    with pytest.raises(RunLockedError):
        RunLock(tmp_path).acquire()
    first.release()
    RunLock(tmp_path).acquire().release()
    assert read_holder(tmp_path / "never") is None


def test_waiting_subprocess_gets_the_lock_after_release(tmp_path):
    lock = RunLock(tmp_path).acquire()
    probe = [sys.executable, "-c", "import sys; from molre_lib.engine.run_lock import RunLock, RunLockedError\n"
             "try:\n RunLock(sys.argv[1]).acquire(); print('got')\nexcept RunLockedError as e: print('refused', e)",
             str(tmp_path)]
    out = subprocess.run(probe, capture_output=True, text=True, timeout=60).stdout
    assert out.startswith("refused") and f"pid {os.getpid()}" in out
    lock.release()
    time.sleep(0.05)
    assert subprocess.run(probe, capture_output=True, text=True, timeout=60).stdout.strip() == "got"
