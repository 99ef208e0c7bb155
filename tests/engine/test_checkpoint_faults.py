"""Checkpoint storage faults: a full or read-only disk is one line and leaves no temp file; a truncated or
bit-flipped last.pt is named and resuming falls back to prev.pt."""
from __future__ import annotations

import errno
import os
import subprocess
import uuid
from pathlib import Path

import pytest
import torch

from molre_lib.engine import checkpoint as C


def _state(step: int, n: int = 64) -> dict:
    g = torch.Generator().manual_seed(step)
    return {"trainable": {"w": torch.randn(n, 1024, generator=g)}, "state": {"step": step, "best_auc": 0.5}}


def _mount_tmpfs(folder: Path, size: str, ro: bool = False) -> bool:
    folder.mkdir(parents=True, exist_ok=True)
    opts = f"size={size}" + (",ro" if ro else "")
    return subprocess.run(["mount", "-t", "tmpfs", "-o", opts, f"molre-test-{uuid.uuid4().hex[:6]}", str(folder)],
                          capture_output=True).returncode == 0


@pytest.fixture
def small_disk(tmp_path):
    """A 1 MB tmpfs when this machine lets us mount one (root), else None (ENOSPC is then simulated)."""
    folder = tmp_path / "disk"
    mounted = _mount_tmpfs(folder, "1m")
    yield folder if mounted else None
    if mounted:
        subprocess.run(["umount", str(folder)], check=True)      # fails if a file there is still open


def _temps(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob(".*tmp*"))


def test_full_disk_is_one_line_naming_file_and_bytes_and_leaves_no_temp(small_disk, tmp_path, monkeypatch):
    if small_disk is None:   # no tmpfs here: the free-space probe reports 1 MB
        small_disk = tmp_path / "disk"
        monkeypatch.setattr(C, "_free_bytes", lambda folder: 1_000_000)
    ckpt = small_disk / "checkpoints" / "last.pt"
    small = C.save_checkpoint(ckpt, _state(1, n=16))                  # 64 kB fits
    with pytest.raises(C.StorageError) as info:
        C.save_checkpoint(ckpt, _state(2, n=512))                     # 2 MB does not
    msg = str(info.value)
    assert "\n" not in msg and str(ckpt) in msg and "disk is full" in msg and "needs about 2.2 MB" in msg
    assert _temps(small_disk) == []
    assert C.load_checkpoint(small)["state"]["step"] == 1             # the previous checkpoint is untouched


def test_enospc_inside_torch_save_is_translated_and_temp_removed(small_disk, tmp_path, monkeypatch):
    """torch.save reports ENOSPC as 'RuntimeError: [enforce fail at inline_container.cc] unexpected pos'."""
    real_free = C._free_bytes
    calls = {"n": 0}

    def free_first_call_lies(folder):                 # the pre-check passes, the write itself runs out of space
        calls["n"] += 1
        return None if calls["n"] == 1 else real_free(folder)

    monkeypatch.setattr(C, "_free_bytes", free_first_call_lies)
    if small_disk is None:
        small_disk = tmp_path / "disk"
        monkeypatch.setattr(C, "_free_bytes", lambda folder: None)

        def enospc(obj, f, *a, **k):
            f.write(b"x" * 1000)
            raise OSError(errno.ENOSPC, "No space left on device")
        monkeypatch.setattr(C.torch, "save", enospc)
    ckpt = small_disk / "checkpoints" / "last.pt"
    with pytest.raises(C.StorageError) as info:
        C.save_checkpoint(ckpt, _state(2, n=512))
    assert "\n" not in str(info.value) and str(ckpt) in str(info.value) and "disk is full" in str(info.value)
    assert "enforce fail" not in str(info.value)
    assert _temps(small_disk) == [] and not ckpt.exists()


def test_read_only_run_dir_is_one_line(tmp_path, monkeypatch):
    folder = tmp_path / "ro"
    if not _mount_tmpfs(folder, "1m", ro=True):
        folder.mkdir(exist_ok=True)
        if os.geteuid() != 0:                          # not root: a folder without write permission
            folder.chmod(0o555)
        else:                                          # root ignores permissions: simulate the mount's EROFS
            def erofs(self, *a, **k):
                raise OSError(errno.EROFS, "Read-only file system", str(self))
            monkeypatch.setattr(Path, "mkdir", erofs)
    try:
        with pytest.raises(C.StorageError) as info:
            C.save_checkpoint(folder / "checkpoints" / "last.pt", _state(1, n=4))
        assert str(folder / "checkpoints") in str(info.value)
        assert ("read-only" in str(info.value)) or ("permission denied" in str(info.value))
    finally:
        subprocess.run(["umount", str(folder)], capture_output=True)
        folder.chmod(0o755)


def test_stale_temp_of_a_dead_writer_is_removed_on_the_next_save(tmp_path):
    ckpt = tmp_path / "last.pt"
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = tmp_path / f".last.pt.tmp-{dead.pid}-abcd1234"
    stale.write_bytes(b"\0" * 4096)
    C.save_checkpoint(ckpt, _state(1, n=4))
    assert not stale.exists()


def test_truncated_last_falls_back_to_prev_with_a_warning_naming_the_file(tmp_path):
    folder = tmp_path / "checkpoints"
    C.save_checkpoint(folder / "last.pt", _state(1))
    C.save_checkpoint(folder / "last.pt", _state(2))
    data = (folder / "last.pt").read_bytes()
    (folder / "last.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(C.CheckpointCorruptError) as info:
        C.load_checkpoint(folder / "last.pt")
    assert str(folder / "last.pt") in str(info.value) and "truncated or damaged" in str(info.value)
    assert "weights_only" not in str(info.value)
    warnings = []
    state, path = C.load_latest(folder, warn=warnings.append)
    assert path == folder / "prev.pt" and state["state"]["step"] == 1
    assert len(warnings) == 1 and str(folder / "last.pt") in warnings[0] and "resuming from" in warnings[0]


def test_bit_flip_in_tensor_data_is_caught_by_the_checksum(tmp_path):
    folder = tmp_path / "checkpoints"
    C.save_checkpoint(folder / "last.pt", _state(1))
    C.save_checkpoint(folder / "last.pt", _state(2))
    data = bytearray((folder / "last.pt").read_bytes())
    data[len(data) // 2] ^= 0xFF                       # inside the tensor bytes: torch.load alone accepts it
    (folder / "last.pt").write_bytes(bytes(data))
    assert torch.load(folder / "last.pt", weights_only=True)["state"]["step"] == 2
    with pytest.raises(C.CheckpointCorruptError, match="checksum"):
        C.load_checkpoint(folder / "last.pt")
    state, path = C.load_latest(folder, warn=lambda m: None)
    assert path.name == "prev.pt" and state["state"]["step"] == 1


def test_no_valid_checkpoint_lists_every_file(tmp_path):
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    (folder / "last.pt").write_bytes(b"garbage")
    with pytest.raises(C.NoValidCheckpointError) as info:
        C.load_latest(folder)
    assert "last.pt is truncated or damaged" in str(info.value) and "prev.pt: missing" in str(info.value)
    assert isinstance(info.value, FileNotFoundError)
