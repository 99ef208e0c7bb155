"""One writer per run folder: an OS file lock on ``<run_dir>/.lock`` held while a process trains into it.

``fcntl.flock`` on an open file is released by the kernel when the holding process dies, however it dies
(SIGKILL included), so a lock file left behind by a dead process is never mistaken for a live holder: the
next ``RunLock`` acquires it and overwrites the holder line. The file records ``pid host time command`` of
the holder, which the refusal message names. Locks are advisory: they bind every ``molre`` writer (train,
resume, the sweep), not other programs. NFS honours ``flock`` only with ``local_lock=none``; put run folders on
a local or lock-aware file system.
"""
from __future__ import annotations

import errno
import fcntl
import os
import socket
import sys
import time
from pathlib import Path
from typing import Optional

LOCK_NAME = ".lock"


class RunLockedError(RuntimeError):
    """Another live process holds the run folder's lock; the message names it."""

    def __init__(self, run_dir: Path, holder: str) -> None:
        self.run_dir, self.holder = run_dir, holder
        super().__init__(f"{run_dir} is in use by another training process ({holder}); wait for it to finish "
                         f"or stop it, then retry")


def lock_path(run_dir: str | Path) -> Path:
    return Path(run_dir) / LOCK_NAME


def _describe(text: str) -> str:
    """'pid 123 on host since 2026-..' from the lock file's line, or a generic phrase."""
    fields = dict(part.split("=", 1) for part in text.split() if "=" in part)
    if "pid" not in fields:
        return "holder unknown"
    out = f"pid {fields['pid']} on {fields.get('host', '?')}"
    if "since" in fields:
        out += f" since {fields['since']}"
    return out


def read_holder(run_dir: str | Path) -> Optional[str]:
    """Who holds ``run_dir``'s lock now ('pid N on HOST since T'), or None when nobody does."""
    path = lock_path(run_dir)
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError as err:
            if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                return _describe(path.read_text(errors="replace"))
            raise
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None                                   # a file left by a dead holder: not locked
    finally:
        os.close(fd)


class RunLock:
    """Exclusive lock of a run folder for the life of this object (a context manager).

    ``RunLock(run_dir).acquire()`` raises :class:`RunLockedError` naming the holder when a live process has
    it. Re-acquiring in the process that holds it is an error too (two trainers in one process would also
    be two writers).
    """

    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)
        self.path = lock_path(run_dir)
        self._fd: Optional[int] = None

    def acquire(self) -> "RunLock":
        self.run_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            os.close(fd)
            if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise RunLockedError(self.run_dir, _describe(self.path.read_text(errors="replace"))) from None
            raise
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
        command = " ".join(Path(a).name if i == 0 else a for i, a in enumerate(sys.argv[:3])).replace("=", ":")
        line = f"pid={os.getpid()} host={socket.gethostname()} since={stamp} cmd={command.replace(' ', '_')}\n"
        os.ftruncate(fd, 0)
        os.pwrite(fd, line.encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            os.ftruncate(self._fd, 0)               # the file stays (removing it races a waiting acquirer)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            os.close(self._fd)
            self._fd = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> "RunLock":
        return self.acquire() if self._fd is None else self

    def __exit__(self, *exc) -> None:
        self.release()
