"""Atomic file writes: a reader sees the old file or the new one, never a torn one.

The content goes to a temporary file in the destination's folder (same file system, so the rename is atomic),
is flushed to disk (``fsync``), then ``os.replace``-d over the destination. On any failure the temporary file is
removed and the destination is left untouched. Used for checkpoints, run files, adapter weights and caches, so a
run killed mid-write (SIGKILL, preemption, a full disk) never leaves a half-written file behind.
"""
from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Callable, Union

Content = Union[str, bytes, Callable[[Path], object]]


def _temp_name(path: Path) -> Path:
    # Hidden, unique per process and call (DDP ranks / loader workers may write the same cache file at once), and
    # without the destination's suffix so globs such as "*.pt" or "*.parquet" never pick it up.
    return path.with_name(f".{path.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(folder: Path) -> None:
    """Make the rename itself durable; not every platform / file system lets a folder be opened and synced."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | Path, content: Content, encoding: str = "utf-8") -> Path:
    """Write ``content`` to ``path`` atomically and return ``path``.

    ``content`` is text (written with ``encoding``), bytes, or a callable that writes the file at the path it is
    given (``lambda p: torch.save(state, p)``, ``lambda p: frame.to_parquet(p)``); the callable must write to
    exactly that path. Missing parent folders are created.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_name(path)
    try:
        if isinstance(content, str):
            with open(tmp, "x", encoding=encoding) as fh:
                fh.write(content)
        elif isinstance(content, (bytes, bytearray, memoryview)):
            with open(tmp, "xb") as fh:
                fh.write(content)
        elif callable(content):
            content(tmp)
            if not tmp.is_file():
                raise RuntimeError(f"atomic_write: the writer for {path} did not create the file it was given ({tmp})")
        else:
            raise TypeError(f"atomic_write: content must be str, bytes or a callable, not {type(content).__name__}")
        _fsync_file(tmp)
        os.replace(tmp, path)
    except BaseException:                       # KeyboardInterrupt / SystemExit too: never leave the temp behind
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path
