"""A scheduler signal during training (SLURM's time-limit warning, preemption, requeue): the trainer finishes
its step, checkpoints, records the stop and raises Preempted; resuming ends exactly where an uninterrupted
run ends. The same under SLURM is tested in tests/workbook/test_slurm.py."""
from __future__ import annotations

import json
import os
import signal
import sys
import threading
from pathlib import Path

import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).parents[1]))

from molre_lib.engine.preemption import Preempted, PreemptionGuard, preemptions  # noqa: E402


def _model():
    from engine_toys import ToyModel

    from molre_lib.engine.train import seed_everything

    seed_everything(0)  # the same frozen weights every time, as a rebuilt backbone has
    return ToyModel()


def _config():
    from engine_toys import toy_config

    return toy_config(checkpoint_every=0)  # checkpoints only at evaluations: the signal's step is not one of them


@pytest.fixture(scope="module")
def whole(tmp_path_factory) -> Path:
    from engine_toys import toy_datasets

    from molre_lib.engine.train import train

    return train(_config(), tmp_path_factory.mktemp("whole") / "run", model=_model(), datasets=toy_datasets())


@pytest.mark.parametrize("sig", [signal.SIGUSR2, signal.SIGTERM])  # SLURM's time-limit warning (submitit), preemption
def test_signal_checkpoints_stops_and_resume_matches_uninterrupted(tmp_path, whole, sig):
    from engine_toys import toy_datasets

    from molre_lib.engine.train import train

    handler = signal.getsignal(sig)
    cfg = _config()

    def signal_at_step_4(row: dict) -> None:
        if row["step"] == 4:
            os.kill(os.getpid(), sig)

    with pytest.raises(Preempted, match=f"stopped by {sig.name} after step 4"):
        train(cfg, tmp_path / "cut", model=_model(), datasets=toy_datasets(), callbacks=[signal_at_step_4])
    assert not (tmp_path / "cut" / "metrics.json").exists()
    stops = preemptions(tmp_path / "cut")
    assert [(s["signal"], s["step"]) for s in stops] == [(sig.name, 4)]
    assert signal.getsignal(sig) == handler  # the guard put the handler back
    train(cfg, tmp_path / "cut", resume=True, model=_model(), datasets=toy_datasets())

    m_whole, m_cut = (json.loads((d / "metrics.json").read_text()) for d in (whole, tmp_path / "cut"))
    assert m_cut["test"] == m_whole["test"] and m_cut["val"] == m_whole["val"]
    assert m_cut["steps"] == m_whole["steps"] and m_cut["best_step"] == m_whole["best_step"]
    for split in ("val", "test"):
        pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "cut" / f"predictions_{split}.parquet"),
                                      pd.read_parquet(whole / f"predictions_{split}.parquet"))
    log = pd.read_csv(tmp_path / "cut" / "train_log.csv")
    assert log["step"].tolist() == list(range(1, m_whole["steps"] + 1))  # step 4 once, nothing lost or repeated


def test_guard_restores_handlers_and_signal_mask():
    before = {s: signal.getsignal(s) for s in (signal.SIGUSR1, signal.SIGUSR2, signal.SIGTERM)}
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR2})  # as a kernel started by the SLURM executor
    try:
        signal.pthread_kill(threading.get_ident(), signal.SIGUSR2)  # before training: stays pending, kills nothing
        with PreemptionGuard() as guard:
            assert guard.received == signal.SIGUSR2  # delivered as soon as the guard unblocks it
        assert signal.SIGUSR2 in signal.pthread_sigmask(signal.SIG_BLOCK, [])
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGUSR2})
    assert {s: signal.getsignal(s) for s in before} == before
