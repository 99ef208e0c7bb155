"""Training checkpoints that lose nothing: trainable weights, optimizer, scheduler, grad scaler, every
rank's RNG states, the data-loader position and the early-stopping state.

Written atomically (temporary file, fsync, ``os.replace``) after checking the free space, and the one before
is kept: ``checkpoints/last.pt`` is the newest, ``checkpoints/prev.pt`` the one before it. A full disk or a
read-only folder is one line naming the file and the bytes needed, and the temporary file never stays
behind. Every checkpoint carries a checksum of its content, so a truncated or bit-flipped file is named as
damaged instead of resuming with wrong numbers; :func:`load_latest` then falls back to ``prev.pt`` with a
warning. Read with ``torch.load(weights_only=True)``: the file holds only tensors, numbers, strings, lists,
tuples and dicts, never pickled code.
"""
from __future__ import annotations

import errno
import hashlib
import os
import random
import re
import shutil
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch
from torch import nn

from molre_lib.common.files import atomic_write

FORMAT = "molre-train-checkpoint/1"


def rng_state() -> dict[str, Any]:
    """Python, NumPy (legacy global) and torch CPU/CUDA generator states, in weights-only-safe types."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(_as_tuple(state["python"]))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_tuple(x: Any) -> Any:
    return tuple(_as_tuple(v) for v in x) if isinstance(x, (list, tuple)) else x


class CheckpointError(ValueError):
    """A checkpoint cannot be written or read; the one-line message names the file and what to do."""


class CheckpointCorruptError(CheckpointError):
    """The file exists but is truncated, damaged or not a training checkpoint."""


class NoValidCheckpointError(CheckpointError, FileNotFoundError):
    """A run folder has no checkpoint that can be resumed from."""


class StorageError(CheckpointError, OSError):
    """The disk is full, read-only or not writable; nothing half-written is left behind."""


PREVIOUS = "prev.pt"
_OS_REASONS = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is exceeded",
               errno.EROFS: "the file system is read-only", errno.EACCES: "permission denied",
               errno.EPERM: "permission denied"}


def _mb(n: float) -> str:
    return f"{n / 1e6:.1f} MB"


def _tensors_nbytes(obj: Any) -> int:
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(_tensors_nbytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(_tensors_nbytes(v) for v in obj)
    return 0


def _digest(obj: Any, h: "hashlib._Hash") -> None:
    """Feed a checkpoint's content (structure, numbers, strings, tensor bytes) into ``h`` in a fixed order."""
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous().reshape(-1)
        h.update(f"T{t.dtype}{tuple(obj.shape)}".encode())
        h.update(memoryview(t.view(torch.uint8).numpy()))
    elif isinstance(obj, dict):
        h.update(f"D{len(obj)}".encode())
        for k, v in obj.items():
            h.update(repr(k).encode())
            _digest(v, h)
    elif isinstance(obj, (list, tuple)):
        h.update(f"L{len(obj)}".encode())
        for v in obj:
            _digest(v, h)
    else:
        h.update(repr(obj).encode())


def checksum(state: dict[str, Any]) -> str:
    h = hashlib.sha256()
    _digest({k: v for k, v in state.items() if k != "checksum"}, h)
    return h.hexdigest()


def storage_error(path: Path, err: BaseException, needed: Optional[int] = None) -> Optional[StorageError]:
    """A one-line :class:`StorageError` for a write that failed for lack of space or permission, else None.

    torch.save reports ENOSPC as ``RuntimeError: [enforce fail at inline_container.cc] unexpected pos``, so
    free space is measured again after any failure."""
    code = getattr(err, "errno", None)
    free = _free_bytes(path.parent)
    if code not in _OS_REASONS and needed is not None and free is not None and free < needed:
        code = errno.ENOSPC
    if code not in _OS_REASONS:
        return None
    why = _OS_REASONS[code]
    if code in (errno.ENOSPC, errno.EDQUOT) and needed is not None:
        why += f" (needs about {_mb(needed)}, {_mb(free or 0)} free)"
    return StorageError(f"cannot write {path}: {why}; free space or choose another --run-dir, then resume with "
                        "--resume (the previous checkpoint is kept)")


def _free_bytes(folder: Path) -> Optional[int]:
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


def _remove_stale_temps(path: Path) -> None:
    """Temporary files of earlier writers that died mid-write (their pid is gone)."""
    for tmp in path.parent.glob(f".{path.name}.tmp-*"):
        found = re.search(r"\.tmp-(\d+)", tmp.name)
        if found and int(found.group(1)) != os.getpid():
            try:
                os.kill(int(found.group(1)), 0)
                continue                              # still alive: not ours to remove
            except ProcessLookupError:
                pass
            except PermissionError:
                continue
        tmp.unlink(missing_ok=True)


def _keep_previous(path: Path) -> None:
    """Make prev.pt the current last.pt before it is replaced (a hard link: no copy, never a moment without)."""
    if not path.is_file():
        return
    prev = path.with_name(PREVIOUS)
    try:
        link = path.with_name(f".{PREVIOUS}.link-{os.getpid()}")
        link.unlink(missing_ok=True)
        os.link(path, link)
        os.replace(link, prev)
    except OSError:                                   # no hard links on this file system: copy it
        atomic_write(prev, lambda p: shutil.copyfile(path, p))


def _torch_save(doc: dict[str, Any], path: Path) -> None:
    with open(path, "wb") as fh:                      # closed on failure too: a full disk gets its space back
        torch.save(doc, fh)


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    """Write ``state`` atomically to ``path`` (with its checksum), keeping the previous file as prev.pt."""
    path = Path(path)
    doc = {"format": FORMAT, **state}
    doc["checksum"] = checksum(doc)
    needed = _tensors_nbytes(doc) + (64 << 10)          # tensor bytes + the pickled structure
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_temps(path)
        free = _free_bytes(path.parent)
        if free is not None and free < needed:
            raise OSError(errno.ENOSPC, "no space left on device")
        _keep_previous(path)
        atomic_write(path, lambda p: _torch_save(doc, p))
    except Exception as err:  # noqa: BLE001 - torch hides ENOSPC in a RuntimeError; storage_error re-checks
        clean = storage_error(path, err, needed)
        if clean is None:
            raise
        raise clean from None
    return path


def _short_reason(err: BaseException) -> str:
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    if "weights_only" in text or "Unpickl" in type(err).__name__:
        return "its pickled content cannot be read"
    text = text.replace("PytorchStreamReader failed reading zip archive: ", "").split(". This is")[0]
    return text[:120]


def load_checkpoint(path: str | Path, map_location: Optional[str | torch.device] = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` (weights-only unpickler), checksum verified."""
    path = Path(path)
    if not path.is_file():
        raise NoValidCheckpointError(f"no checkpoint at {path}")
    size = path.stat().st_size
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # noqa: BLE001 - zip, pickle and decode errors all mean a damaged file
        raise CheckpointCorruptError(f"{path} is truncated or damaged ({_mb(size)} on disk; "
                                     f"{_short_reason(err)})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise CheckpointCorruptError(f"{path}: not a MoLRE training checkpoint (format {found!r})")
    if "checksum" in state and checksum(state) != state["checksum"]:
        raise CheckpointCorruptError(f"{path} is damaged: its content no longer matches the checksum written "
                                     "with it (bit rot or an incomplete copy)")
    return state


def load_latest(folder: str | Path, map_location: Optional[str | torch.device] = "cpu",
                warn: Callable[[str], None] = print) -> tuple[dict[str, Any], Path]:
    """The newest readable checkpoint in ``folder`` (``last.pt``, else ``prev.pt`` with a warning).

    Raises :class:`NoValidCheckpointError` listing why each file was refused."""
    folder = Path(folder)
    problems = []
    for name in ("last.pt", PREVIOUS):
        path = folder / name
        if not path.exists():
            problems.append(f"{name}: missing")
            continue
        try:
            state = load_checkpoint(path, map_location)
        except CheckpointCorruptError as err:
            problems.append(str(err))
            continue
        if problems:
            warn(f"warning: {'; '.join(problems)}; resuming from {path} (step {state.get('state', {}).get('step', '?')})")
        return state, path
    raise NoValidCheckpointError(f"no usable checkpoint in {folder} ({'; '.join(problems)}); start the run over "
                                 "with --restart")


def frozen_fingerprint(model: torch.nn.Module) -> float:
    """Sum of |w| over frozen parameters: resuming checks the rebuilt backbone is the one trained against."""
    with torch.no_grad():
        total = torch.zeros((), dtype=torch.float64)
        for p in model.parameters():
            if not p.requires_grad:
                total += p.detach().double().abs().sum().cpu()
    return float(total)


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """What training changes: the trainable parameters and every buffer (the head norm's running statistics;
    BatchNorm statistics under full fine-tuning). Buffers are small, and without them a resumed run or the
    restored best step would predict with the running statistics of another step."""
    state = {n: p.detach().cpu().clone() for n, p in model.named_parameters() if p.requires_grad}
    state.update({n: b.detach().cpu().clone() for n, b in model.named_buffers()})
    return state


def load_trainable(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    tensors = {**dict(model.named_parameters()), **dict(model.named_buffers())}
    with torch.no_grad():
        for n, t in state.items():
            tensors[n].copy_(t)
