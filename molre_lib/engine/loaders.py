"""Data side of the engine: resumable, rank-sharded batch order; an in-memory cache of preprocessed
volumes; datasets from the run config; and distributed prediction gathered once.

The batch order depends only on (seed, epoch): a step's global batch is the same whatever the number
of processes or accumulation micro-batches, and a resumed run restarts at the exact micro-batch.
"""
from __future__ import annotations

from contextlib import nullcontext
from typing import Any, Iterator, Optional, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from .distributed import DistInfo, all_gather_objects


class StepBatchSampler(Sampler[list[int]]):
    """Micro-batches of this rank for one epoch, starting at optimizer step ``start_step``.

    A step's global batch is ``perm[step*G:(step+1)*G]`` with ``G = micro * world * accum``; it is split into
    ``accum`` micro-batches, each split across ranks. The last incomplete global batch is dropped.
    """

    def __init__(self, n: int, global_batch: int, accum: int, info: DistInfo, seed: int, epoch: int,
                 start_step: int = 0, shuffle: bool = True) -> None:
        if global_batch % (accum * info.world_size):
            raise ValueError(f"batch_size={global_batch} must be divisible by grad_accum x world size = "
                             f"{accum} x {info.world_size}")
        self.n, self.global_batch, self.accum, self.info = n, global_batch, accum, info
        self.seed, self.epoch, self.start_step, self.shuffle = seed, epoch, start_step, shuffle
        self.micro = global_batch // (accum * info.world_size)

    @property
    def steps_per_epoch(self) -> int:
        return self.n // self.global_batch

    def __len__(self) -> int:
        return max(self.steps_per_epoch - self.start_step, 0) * self.accum

    def __iter__(self) -> Iterator[list[int]]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            perm = torch.randperm(self.n, generator=g).tolist()
        else:
            perm = list(range(self.n))
        w, r = self.info.world_size, self.info.rank
        for step in range(self.start_step, self.steps_per_epoch):
            batch = perm[step * self.global_batch:(step + 1) * self.global_batch]
            for a in range(self.accum):
                part = batch[a * self.micro * w:(a + 1) * self.micro * w]
                yield part[r * self.micro:(r + 1) * self.micro]


class MemoryCache(Dataset):
    """Keeps items after their first load, up to ``max_bytes`` of images (deterministic preprocessing only;
    each DataLoader worker holds its own copy, so use it with num_workers=0 or rely on the disk cache)."""

    def __init__(self, base: Dataset, max_bytes: float = 2e9) -> None:
        self.base, self.max_bytes, self._items, self._bytes = base, max_bytes, {}, 0

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, i: int) -> dict[str, Any]:
        item = self._items.get(i)
        if item is None:
            item = self.base[i]
            size = item["image"].numel() * item["image"].element_size()
            if self._bytes + size <= self.max_bytes:
                self._items[i] = item
                self._bytes += size
        return item

    def __getattr__(self, name: str) -> Any:  # expose .labels, .mask, .skipped of the wrapped dataset
        if name.startswith("_") or name in ("base", "max_bytes"):
            raise AttributeError(name)
        return getattr(self.base, name)


class SeededAugment(Dataset):
    """Training augmentation whose randomness depends only on (seed, epoch, index), so a resumed run
    augments each scan exactly as the uninterrupted run would, with or without workers."""

    def __init__(self, base: Dataset, seed: int) -> None:
        from molre_lib.data.dataset import augmenter

        self.base, self.seed, self.epoch = base, seed, 0
        self.aug = augmenter(seed)

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, i: int) -> dict[str, Any]:
        item = dict(self.base[i])
        self.aug.set_random_state(seed=(self.seed * 1_000_003 + self.epoch * 100_003 + i) % 2**32)
        item["image"] = torch.as_tensor(self.aug(item["image"])).float().clamp_(0, 1)  # (C, D, H, W)
        return item

    def __getattr__(self, name: str) -> Any:
        if name in ("base", "seed", "epoch", "aug"):
            raise AttributeError(name)
        return getattr(self.base, name)


def make_loader(ds: Dataset, sampler: Sampler, num_workers: int, seed: int, epoch: int, pin: bool) -> DataLoader:
    # A dedicated generator: creating workers must not consume the global RNG (resume would diverge).
    g = torch.Generator().manual_seed(seed + 7919 * epoch)
    return DataLoader(ds, batch_sampler=sampler, num_workers=num_workers, generator=g, pin_memory=pin,
                      persistent_workers=False)


def build_datasets(cfg: Any, spec: Any, splits: Sequence[str]) -> dict[str, Dataset]:
    """HeadCTDataset per non-empty split name, preprocessed as the backbone expects."""
    from molre_lib.data.dataset import HeadCTDataset

    pre = preprocess_config(cfg, spec)
    out: dict[str, Dataset] = {}
    for split in splits:
        if not split or split in out:
            continue
        ds = HeadCTDataset(cfg.manifest, cfg.data_root, split, pre, training=False)  # augmentation: SeededAugment
        if len(ds) == 0:
            raise ValueError(f"{cfg.manifest}: split {split!r} has no scans")
        cached = MemoryCache(ds, cfg.memory_cache_gb * 1e9)
        out[split] = SeededAugment(cached, cfg.seed) if (cfg.augment and split == cfg.train_split) else cached
    return out


def series_warnings(datasets: dict[str, Dataset]) -> list[str]:
    """The manifest's per-scan warnings (``column 'path'``: a gantry tilt corrected, an oblique series resampled,
    a bone kernel read with ``bone_kernel=warn``, a missing slice interpolated), once each, for training to print
    before its first step: what the loaders change or tolerate is said, never done silently."""
    from molre_lib.data.dataset import unwrap_dataset

    seen: dict[str, None] = {}
    for ds in datasets.values():
        try:
            base = unwrap_dataset(ds, ("df",))
        except TypeError:                                              # a notebook's own dataset
            continue
        for w in base.df.attrs.get("warnings", []):
            if "column 'path'" in w:
                seen.setdefault(w)
    return list(seen)


def preprocess_config(cfg: Any, spec: Any) -> Any:
    """PreprocessConfig from a TrainConfig: shape and windows default to the backbone's input."""
    from molre_lib.data.dataset import PreprocessConfig

    shape = tuple(cfg.volume_shape) if cfg.volume_shape else _default_shape(cfg, spec, PreprocessConfig().shape[0])
    windows = tuple(tuple(w) for w in cfg.windows) if cfg.windows else tuple(tuple(w) for w in spec.windows)
    return PreprocessConfig(shape=shape, spacing=tuple(cfg.spacing) if cfg.spacing else None, fit=cfg.fit,
                            windows=windows, cache_dir=cfg.cache_dir,
                            series_policy=tuple(cfg.series_policy) if getattr(cfg, "series_policy", None) else None)


def _default_shape(cfg: Any, spec: Any, default_depth: int) -> tuple[int, int, int]:
    """The backbone's input: the volume for 3D, (default depth, slice H, W) for 2D (``image_size`` if set)."""
    size = tuple(spec.reduced_input_size if cfg.reduced else spec.input_size)
    if getattr(cfg, "image_size", None) and len(size) == 2:
        size = tuple(int(v) for v in cfg.image_size)
    return size if len(size) == 3 else (default_depth, *size)  # type: ignore[return-value]


def autocast(device: torch.device, amp: str):
    if amp in ("bf16", "fp16"):
        return torch.autocast(device.type, dtype=torch.bfloat16 if amp == "bf16" else torch.float16)
    return nullcontext()


@torch.no_grad()
def predict_dataset(model: torch.nn.Module, ds: Dataset, info: DistInfo, batch_size: int, amp: str = "none",
                    num_workers: int = 0, progress: Optional[str] = None) -> dict[str, Any]:
    """Sigmoid probabilities for every item of ``ds``; ranks take strided shares, gathered once.

    Returns {"scan_id": list[str], "probs": (N, F), "labels": (N, F), "mask": (N, F)} in dataset order on
    every rank.
    """
    from tqdm.auto import tqdm

    was_training = model.training
    model.eval()
    idx = list(range(info.rank, len(ds), info.world_size))  # type: ignore[arg-type]
    batches = [idx[i:i + batch_size] for i in range(0, len(idx), batch_size)]
    # own generator: evaluation must not advance the global RNG (resumed runs would diverge)
    loader = DataLoader(ds, batch_sampler=batches, num_workers=num_workers, generator=torch.Generator().manual_seed(0))
    probs, labels, mask, ids = [], [], [], []
    for batch in tqdm(loader, desc=progress, disable=progress is None or not info.is_main, leave=False):
        with autocast(info.device, amp):
            logits = model(batch["image"].to(info.device, non_blocking=True))  # (b, F)
        probs.append(torch.sigmoid(logits.float()).cpu().numpy())
        labels.append(batch["labels"].numpy())
        mask.append(batch["label_mask"].numpy())
        ids.extend(batch["scan_id"])
    model.train(was_training)
    f = getattr(model, "num_classes", None) or (probs[0].shape[1] if probs else 0)
    cat = (lambda xs: np.concatenate(xs) if xs else np.zeros((0, f), np.float32))  # noqa: E731
    mine = (idx, ids, cat(probs), cat(labels), cat(mask))
    parts = all_gather_objects(mine, info)  # the one gather of this evaluation
    order = np.argsort(np.concatenate([np.asarray(p[0], dtype=np.int64) for p in parts]), kind="stable")
    all_ids = [s for p in parts for s in p[1]]
    return {
        "scan_id": [all_ids[i] for i in order],
        "probs": np.concatenate([p[2] for p in parts])[order],
        "labels": np.concatenate([p[3] for p in parts])[order],
        "mask": np.concatenate([p[4] for p in parts])[order],
    }
