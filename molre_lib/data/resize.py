"""Volume resizing and centred pad/crop in plain torch, the arithmetic of MONAI's ``Resize`` and
``ResizeWithPadOrCrop`` (symmetric) without importing MONAI.

``import monai`` loads every MONAI submodule (5.8 CPU s here, most of a training process's start), and a
preprocessing process only needs these two operations; ``tests/data/test_resize.py`` checks them bit for bit
against MONAI, which stays the reference (and is still used for augmentation and the 3D backbones).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F


def resize(x: torch.Tensor, size: Sequence[int], mode: str) -> torch.Tensor:
    """(C, *spatial) -> (C, *size) float32 by ``F.interpolate`` (``mode``: 'area', 'trilinear', 'nearest-exact',
    ...), as ``monai.transforms.Resize(size, mode=mode)`` without anti-aliasing; unchanged when the size matches."""
    x = x.float()
    if list(x.shape[1:]) == list(size):
        return x
    return F.interpolate(x[None], size=tuple(int(s) for s in size), mode=mode)[0]


def pad_or_crop(x: torch.Tensor, shape: Sequence[int], value: float = 0.0) -> torch.Tensor:
    """(C, *spatial) -> (C, *shape): a centred crop where a side is too long, a constant pad (``value``) split
    evenly, the extra voxel after, where it is too short (MONAI ``ResizeWithPadOrCrop``, method 'symmetric')."""
    if len(shape) != x.dim() - 1:
        raise ValueError(f"shape {list(shape)} has {len(shape)} axes; the volume has {x.dim() - 1} spatial axes")
    index = [slice(None)]
    pads: list[tuple[int, int]] = []
    for n, target in zip(x.shape[1:], shape):
        start = max(n // 2 - target // 2, 0) if n > target else 0
        index.append(slice(start, start + target) if n > target else slice(None))
        diff = max(target - n, 0)
        pads.append((diff // 2, diff - diff // 2))
    x = x[tuple(index)]
    flat = [p for pair in reversed(pads) for p in pair]  # F.pad lists the last axis first
    return F.pad(x, flat, mode="constant", value=value) if any(flat) else x
