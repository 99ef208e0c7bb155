"""Training faults end to end on the toy trainer: two trainers of one run folder, a damaged last.pt, a kill
during the very first checkpoint write, a run with no usable checkpoint."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from molre_lib.cli import main
from molre_lib.engine.run_lock import RunLockedError, read_holder

TESTS = Path(__file__).parents[1]
sys.path.insert(0, str(TESTS))
from engine_toys import ToyModel, toy_config, toy_datasets  # noqa: E402

SCRIPT = TESTS / "engine_toys.py"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(TESTS.parent)}

# SIGKILL in the middle of the first checkpoint write: part of the temp file is on disk, config.json too
KILL_IN_FIRST_WRITE = """
import os, signal, sys
sys.path.insert(0, sys.argv[2])
import molre_lib.engine.checkpoint as C
def half_then_die(obj, fh, *a, **k):
    fh.write(b"PK\\x03\\x04" + b"\\0" * 4096); fh.flush()
    os.kill(os.getpid(), signal.SIGKILL)
C.torch.save = half_then_die
from engine_toys import main
main([sys.argv[1]])
"""


def _toy(run_dir: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), str(run_dir), *args], env=ENV, capture_output=True,
                          text=True, timeout=300)


def _train(run_dir: Path, **kw):
    from molre_lib.engine.train import seed_everything, train

    seed_everything(0)
    return train(toy_config(), run_dir, model=ToyModel(), datasets=toy_datasets(), **kw)


def _outputs(run_dir: Path):
    metrics = json.loads((run_dir / "metrics.json").read_text())
    metrics.pop("train_seconds")
    return metrics, pd.read_parquet(run_dir / "predictions_test.parquet")


def test_a_second_trainer_of_the_same_run_folder_is_refused_naming_the_first(tmp_path, capsys):
    run = tmp_path / "run"
    first = subprocess.Popen([sys.executable, str(SCRIPT), str(run), "epochs=400"], env=ENV,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        end = time.time() + 120
        while read_holder(run) is None:
            assert time.time() < end and first.poll() is None, "the first trainer never locked the folder"
            time.sleep(0.1)
        with pytest.raises(RunLockedError, match=f"in use by another training process \\(pid {first.pid} on "):
            _train(run, resume=True)
        assert main(["train", "--run-dir", str(run), "--resume"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(f"molre train: error: {run} is in use by another training process "
                                                   f"(pid {first.pid} on ")
        assert first.poll() is None                     # the first trainer goes on undisturbed
    finally:
        first.kill()
        first.wait()


def test_damaged_last_pt_resumes_from_prev_pt_and_ends_as_an_uninterrupted_run(tmp_path):
    assert _toy(tmp_path / "ref").returncode == 0
    killed = _toy(tmp_path / "cut", "--kill-at", "5")               # checkpoints at steps 2 and 4
    assert killed.returncode == -signal.SIGKILL
    last = tmp_path / "cut" / "checkpoints" / "last.pt"
    data = last.read_bytes()
    last.write_bytes(data[: len(data) // 3])                         # truncated
    resumed = _toy(tmp_path / "cut", "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert f"warning: {last} is truncated or damaged" in resumed.stderr
    assert f"resuming from {last.with_name('prev.pt')} (step 2)" in resumed.stderr
    (m_ref, p_ref), (m_cut, p_cut) = _outputs(tmp_path / "ref"), _outputs(tmp_path / "cut")
    assert m_cut == m_ref
    pd.testing.assert_frame_equal(p_cut, p_ref)


def test_kill_during_the_first_checkpoint_write_can_be_resumed(tmp_path, capsys):
    run = tmp_path / "run"
    died = subprocess.run([sys.executable, "-c", KILL_IN_FIRST_WRITE, str(run), str(TESTS)], env=ENV,
                          capture_output=True, text=True, timeout=300)
    assert died.returncode == -signal.SIGKILL
    assert (run / "config.json").is_file() and not (run / "checkpoints" / "last.pt").exists()
    with pytest.raises(FileExistsError, match=r"already holds a run; resume it \(--resume\), start it over \(--restart\)"):
        _train(run)
    _train(run, resume=True)                                         # nothing was trained: resume starts it over
    assert "stopped before its first checkpoint; nothing was trained, starting it over" in capsys.readouterr().err
    assert (run / "metrics.json").is_file()
    assert not list((run / "checkpoints").glob(".*tmp*"))            # the dead writer's temp file is gone


def test_no_usable_checkpoint_names_the_files_and_restart_starts_over(tmp_path):
    run = tmp_path / "run"
    _train(run)
    for name in ("last.pt", "prev.pt"):
        (run / "checkpoints" / name).write_bytes(b"garbage")
    (run / "metrics.json").unlink()
    with pytest.raises(ValueError) as info:
        _train(run, resume=True)
    assert str(info.value).startswith(f"no usable checkpoint in {run / 'checkpoints'} ({run / 'checkpoints' / 'last.pt'} "
                                      "is truncated or damaged")
    assert "weights_only" not in str(info.value)
    _train(run, restart=True)
    assert (run / "metrics.json").is_file()
