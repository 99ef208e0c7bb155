"""Trainer behaviour users rely on: resume after a kill equals an uninterrupted run, NaN stops with a
checkpoint, DDP over 2 gloo processes equals one process, loss and masks against references."""
from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torchvision.ops import sigmoid_focal_loss

from molre_lib.engine.checkpoint import load_checkpoint
from molre_lib.engine.losses import MaskedFocalLoss, pos_weights_from_labels

TESTS = Path(__file__).parents[1]
sys.path.insert(0, str(TESTS))
SCRIPT = TESTS / "engine_toys.py"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(TESTS.parent)}


def run_toy(run_dir: Path, *args: str, torchrun: int = 0) -> subprocess.CompletedProcess:
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={torchrun}"] \
        if torchrun else [sys.executable]
    return subprocess.run(launcher + [str(SCRIPT), str(run_dir), *args], env=ENV, capture_output=True, text=True,
                          timeout=240)


def outputs(run_dir: Path) -> tuple[dict, pd.DataFrame, list[float]]:
    metrics = json.loads((run_dir / "metrics.json").read_text())
    metrics.pop("train_seconds")
    preds = pd.read_parquet(run_dir / "predictions_test.parquet")
    with open(run_dir / "train_log.csv") as fh:
        losses = [float(r["loss"]) for r in csv.DictReader(fh)]
    return metrics, preds, losses


# ----------------------------------------------------------------------------------------------- loss
def test_focal_loss_matches_torchvision_and_monai():
    from monai.losses import FocalLoss

    g = torch.Generator().manual_seed(0)
    logits, labels = torch.randn(6, 7, generator=g), (torch.rand(6, 7, generator=g) < 0.3).float()
    ours = MaskedFocalLoss(alpha=0.25, gamma=2.0, reduction="none")(logits, labels)
    torch.testing.assert_close(ours, sigmoid_focal_loss(logits, labels, alpha=0.25, gamma=2.0))
    monai = FocalLoss(gamma=2.0, alpha=0.25, use_softmax=False, reduction="none")(logits, labels)
    torch.testing.assert_close(ours, monai)
    no_alpha = MaskedFocalLoss(alpha=-1, gamma=0.0, reduction="mean")(logits, labels)
    torch.testing.assert_close(no_alpha, torch.nn.functional.binary_cross_entropy_with_logits(logits, labels))


def test_unknown_labels_are_masked_and_pos_weights_apply():
    g = torch.Generator().manual_seed(1)
    logits, labels = torch.randn(5, 4, generator=g), (torch.rand(5, 4, generator=g) < 0.5).float()
    mask = torch.ones(5, 4)
    mask[0, 1] = mask[3, 2] = 0
    fn = MaskedFocalLoss(reduction="mean")
    full = sigmoid_focal_loss(logits, labels, reduction="none")
    assert fn(logits, labels, mask).item() == pytest.approx((full * mask).sum().item() / 18)
    flipped = labels.clone()
    flipped[0, 1] = 1 - flipped[0, 1]  # an unknown label's value must not matter
    assert fn(logits, flipped, mask).item() == pytest.approx(fn(logits, labels, mask).item())
    w = torch.tensor([1.0, 3.0, 1.0, 2.0])
    weighted = MaskedFocalLoss(pos_weight=w, reduction="none")(logits, labels)
    torch.testing.assert_close(weighted, full * torch.where(labels > 0, w, torch.ones(4)))
    pw = pos_weights_from_labels(np.array([[1, 0], [0, 0], [0, 0], [0, 1]]), np.array([[1, 1], [1, 0], [1, 0], [1, 1]]))
    np.testing.assert_allclose(pw, [3.0, 1.0])


# ----------------------------------------------------------------------------------------------- trainer
@pytest.mark.slow
@pytest.mark.parametrize("head_norm", [[], ["--head-norm"]], ids=["plain", "head_norm"])
def test_killed_and_resumed_run_equals_uninterrupted(tmp_path, head_norm):
    # with a head norm its running statistics (buffers, not parameters) must come back with the checkpoint
    full = run_toy(tmp_path / "full", *head_norm)
    assert full.returncode == 0, full.stderr[-3000:]
    killed = run_toy(tmp_path / "cut", "--kill-at", "7", *head_norm)  # step 7 of 12 is mid-epoch 1; last checkpoint: step 6
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert not (tmp_path / "cut" / "metrics.json").exists()
    ck = load_checkpoint(tmp_path / "cut" / "checkpoints" / "last.pt")
    assert (ck["state"]["step"], ck["state"]["epoch"], ck["state"]["step_in_epoch"]) == (6, 1, 2)
    resumed = run_toy(tmp_path / "cut", "--resume", *head_norm)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    m_full, p_full, l_full = outputs(tmp_path / "full")
    m_cut, p_cut, l_cut = outputs(tmp_path / "cut")
    assert m_cut == m_full
    pd.testing.assert_frame_equal(p_cut, p_full)
    assert l_cut == l_full and len(l_full) == 12  # the log has every step once


@pytest.mark.slow
def test_nan_loss_stops_naming_the_step_after_saving_last_good_state(tmp_path):
    # scan 5 of 32 is NaN; it lands in some step of epoch 0, whose number the message must name
    res = run_toy(tmp_path / "nan", "--nan-at", "5")
    assert res.returncode != 0
    msg = [ln for ln in res.stderr.splitlines() if "NonFiniteLossError" in ln][-1]
    bad_step = int(msg.split(" at step ")[1].split()[0])
    ck = load_checkpoint(tmp_path / "nan" / "checkpoints" / "last.pt")
    assert ck["state"]["step"] == bad_step - 1
    assert all(torch.isfinite(t).all() for t in ck["trainable"].values())
    perm = torch.randperm(32, generator=torch.Generator().manual_seed(0 * 1_000_003 + 0)).tolist()
    assert perm.index(5) // 8 + 1 == bad_step  # the step whose batch holds the NaN scan


@pytest.mark.slow
def test_ddp_two_gloo_processes_match_one_process(tmp_path):
    from engine_toys import ToyModel, toy_config, toy_datasets

    from molre_lib.engine.train import seed_everything, train

    two = run_toy(tmp_path / "two", "adapter_dropout=0.0", torchrun=2)
    assert two.returncode == 0, two.stderr[-3000:]
    for name, accum in (("one", 1), ("accum", 2)):  # one process: plain, and the same batch in 2 micro-batches
        seed_everything(0)
        train(toy_config(adapter_dropout=0.0, grad_accum=accum), tmp_path / name, model=ToyModel(), datasets=toy_datasets())
    cfg = json.loads((tmp_path / "two" / "config.json").read_text())
    assert cfg["world_size"] == 2
    m1, p1, l1 = outputs(tmp_path / "one")
    for other in ("two", "accum"):
        m2, p2, l2 = outputs(tmp_path / other)
        np.testing.assert_allclose(l2, l1, rtol=1e-4, atol=1e-6)
        assert p2["scan_id"].tolist() == p1["scan_id"].tolist()
        cols = [c for c in p1.columns if c.startswith("prob_")]
        np.testing.assert_allclose(p2[cols].to_numpy(), p1[cols].to_numpy(), atol=1e-4)
        assert m2["best_step"] == m1["best_step"]
        assert m2["test"]["summary"]["macro_auc"]["value"] == pytest.approx(m1["test"]["summary"]["macro_auc"]["value"],
                                                                          abs=1e-3)

@pytest.mark.slow
def test_ddp_head_norm_uses_global_batch_statistics(tmp_path):
    """HeadNorm under 2 gloo ranks normalises with the statistics of the whole batch: same losses, running
    statistics and predictions as one process (per-rank statistics would differ on both counts)."""
    from engine_toys import ToyModel, toy_config, toy_datasets

    from molre_lib.engine.train import seed_everything, train

    two = run_toy(tmp_path / "two", "adapter_dropout=0.0", "--head-norm", torchrun=2)
    assert two.returncode == 0, two.stderr[-3000:]
    seed_everything(0)
    train(toy_config(adapter_dropout=0.0), tmp_path / "one", model=ToyModel(head_norm=True), datasets=toy_datasets())
    m1, p1, l1 = outputs(tmp_path / "one")
    m2, p2, l2 = outputs(tmp_path / "two")
    np.testing.assert_allclose(l2, l1, rtol=1e-4, atol=1e-6)
    cols = [c for c in p1.columns if c.startswith("prob_")]
    np.testing.assert_allclose(p2[cols].to_numpy(), p1[cols].to_numpy(), atol=1e-4)
    from safetensors.torch import load_file

    s1, s2 = (load_file(tmp_path / run / "adapter.safetensors") for run in ("one", "two"))
    for key in ("head_norm.running_mean", "head_norm.running_var"):
        torch.testing.assert_close(s2[key], s1[key], rtol=1e-4, atol=1e-5)


def test_augmentation_depends_only_on_seed_epoch_and_index():
    from molre_lib.engine.loaders import SeededAugment

    class Base(torch.utils.data.Dataset):
        def __len__(self):
            return 6

        def __getitem__(self, i):
            g = torch.Generator().manual_seed(i)
            return {"image": torch.rand(3, 4, 16, 16, generator=g), "scan_id": f"s{i}"}

    a, b = SeededAugment(Base(), seed=0), SeededAugment(Base(), seed=0)
    first = [a[i]["image"] for i in range(6)]
    later = [b[i]["image"] for i in reversed(range(6))][::-1]  # another order, as after a resume
    for x, y in zip(first, later):
        torch.testing.assert_close(x, y)
    a.epoch = 1
    assert any(not torch.equal(a[i]["image"], first[i]) for i in range(6))  # a new epoch draws new augmentations
