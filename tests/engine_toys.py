"""Small stand-ins for the engine tests: a model with HeadCTModel's layout and an in-memory dataset.

Used by tests and by the subprocess scripts they launch (resume-after-kill, DDP), so the trainer's own
logic is tested in seconds; the CLI end-to-end test uses the real phantom data and backbone registry.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from molre_lib.backbones.model import HeadNorm


class ToyEncoder(nn.Module):
    def __init__(self, in_ch: int = 2, dim: int = 16) -> None:
        super().__init__()
        self.stem = nn.Conv3d(in_ch, dim, 3, stride=2, padding=1)
        self.qkv = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, D, H, W) -> (B, dim)
        t = self.stem(x).flatten(2).transpose(1, 2)  # (B, T, dim)
        t = t + self.proj(torch.relu(self.qkv(t)))
        return t.mean(1)


class ToyModel(nn.Module):
    """``.encoder`` + ``.head``, logits (B, F)."""

    def __init__(self, n_classes: int = 5, in_ch: int = 2, dim: int = 16, head_norm: bool = False) -> None:
        super().__init__()
        self.encoder = ToyEncoder(in_ch, dim)
        self.head_norm = HeadNorm(dim) if head_norm else nn.Identity()  # as the registry's models have
        self.head = nn.Linear(dim, n_classes)
        self.num_classes = n_classes
        self.trainable_modules = ("head_norm", "head")

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.head(self.head_norm(self.encoder(image)))


class ToyDataset(Dataset):
    """Volumes whose mean intensity in channel 0 encodes finding 0, etc.; some labels unknown."""

    def __init__(self, n: int, n_classes: int = 5, seed: int = 0, shape=(4, 8, 8), nan_at: int | None = None) -> None:
        rng = np.random.default_rng(seed)
        self.labels = (rng.random((n, n_classes)) < 0.35).astype(np.float32)
        self.label_mask = (rng.random((n, n_classes)) < 0.9).astype(np.float32)
        self.labels *= self.label_mask
        self.images = rng.normal(0, 1, (n, 2) + tuple(shape)).astype(np.float32)
        code = np.random.default_rng(123).normal(0, 1.5, (n_classes, 2)).astype(np.float32)  # same in every split
        signal = self.labels @ code  # (n, 2)
        self.images += signal[:, :, None, None, None]
        if nan_at is not None:
            self.images[nan_at] = np.nan
        self.ids = [f"scan{i:03d}" for i in range(n)]

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict:
        return {"image": torch.from_numpy(self.images[i]), "labels": torch.from_numpy(self.labels[i]),
                "label_mask": torch.from_numpy(self.label_mask[i]), "scan_id": self.ids[i]}


def toy_datasets(n_train: int = 32, n_val: int = 15, n_test: int = 13, nan_at: int | None = None) -> dict:
    """Odd val/test sizes: DDP evaluation shards them unevenly across ranks."""
    return {"train": ToyDataset(n_train, seed=1, nan_at=nan_at), "val": ToyDataset(n_val, seed=2),
            "test": ToyDataset(n_test, seed=3)}


def toy_config(**overrides):
    from molre_lib.engine.config import TrainConfig

    base = dict(adapter="molre", rank=2, n_experts=3, adapter_dropout=0.1, epochs=3, batch_size=8, eval_every=3,
                checkpoint_every=2, lr=1e-2, pretrained=False, target_modules=["qkv", "proj"], device="cpu")
    base.update(overrides)
    return TrainConfig(**base)


def main(argv=None) -> None:
    """python tests/engine_toys.py RUN_DIR [--resume] [--kill-at STEP] [--nan-at SCAN] [key=value ...]"""
    import argparse
    import json
    import os
    import signal

    from molre_lib.engine.train import seed_everything, train

    torch.set_num_threads(1)
    p = argparse.ArgumentParser()
    p.add_argument("run_dir")
    p.add_argument("--resume", action="store_true")
    p.add_argument("--kill-at", type=int, default=None)
    p.add_argument("--nan-at", type=int, default=None)
    p.add_argument("--head-norm", action="store_true", help="a HeadNorm before the head, as the real models")
    p.add_argument("overrides", nargs="*")
    a = p.parse_args(argv)
    cfg = toy_config(**{k: json.loads(v) for k, v in (o.split("=", 1) for o in a.overrides)})

    def kill(state: dict) -> None:
        if a.kill_at is not None and state["step"] == a.kill_at:
            os.kill(os.getpid(), signal.SIGKILL)  # as abrupt as a pre-empted node: no cleanup runs

    seed_everything(cfg.seed)
    train(cfg, a.run_dir, resume=a.resume, model=ToyModel(head_norm=a.head_norm), datasets=toy_datasets(nan_at=a.nan_at), callbacks=[kill])


if __name__ == "__main__":
    main()
