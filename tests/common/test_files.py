"""atomic_write: the destination holds the old or the new content, never a torn file or a left-over temp."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from molre_lib.common.files import atomic_write


def test_text_bytes_and_callback(tmp_path):
    atomic_write(tmp_path / "a.json", '{"x": 1}')
    atomic_write(tmp_path / "b.bin", b"\x00\x01")
    frame = pd.DataFrame({"x": [1, 2]})
    atomic_write(tmp_path / "sub" / "c.parquet", lambda p: frame.to_parquet(p, index=False))
    atomic_write(tmp_path / "d.pt", lambda p: torch.save({"w": torch.ones(2)}, p))
    assert (tmp_path / "a.json").read_text() == '{"x": 1}'
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01"
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "sub" / "c.parquet"), frame)
    assert torch.equal(torch.load(tmp_path / "d.pt", weights_only=True)["w"], torch.ones(2))
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["a.json", "b.bin", "c.parquet", "d.pt"]


def test_overwrite_keeps_permissions_of_a_normal_file(tmp_path):
    (tmp_path / "ref").write_text("x")
    atomic_write(tmp_path / "f", "old")
    atomic_write(tmp_path / "f", "new")
    assert (tmp_path / "f").read_text() == "new"
    assert (tmp_path / "f").stat().st_mode == (tmp_path / "ref").stat().st_mode


@pytest.mark.parametrize("fail_at", ["writer", "interrupt", "no_file"])
def test_failure_keeps_old_file_and_removes_temp(tmp_path, fail_at):
    dest = tmp_path / "last.pt"
    dest.write_bytes(b"old")

    def writer(p):
        if fail_at == "no_file":
            return
        p.write_bytes(b"half")
        if fail_at == "writer":
            raise OSError("disk full")
        raise KeyboardInterrupt

    with pytest.raises((OSError, KeyboardInterrupt, RuntimeError)):
        atomic_write(dest, writer)
    assert dest.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_numpy_cache_name_is_kept(tmp_path):
    """The temp name has no suffix of its own, so a writer given a file object writes exactly there."""
    def save(p):
        with open(p, "wb") as fh:
            np.save(fh, np.arange(3))

    atomic_write(tmp_path / "k.npy", save)
    assert np.array_equal(np.load(tmp_path / "k.npy"), np.arange(3))
    assert [p.name for p in tmp_path.iterdir()] == ["k.npy"]


def test_bad_content_type(tmp_path):
    with pytest.raises(TypeError, match="str, bytes or a callable"):
        atomic_write(tmp_path / "x", 3)
    assert list(tmp_path.iterdir()) == []
