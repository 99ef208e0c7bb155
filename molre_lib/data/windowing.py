"""CT windows: the named (level, width) presets and the one HU -> [0, 1] mapping.

Every place that turns Hounsfield units into pixel values uses this module: the dataset (model inputs), phantom
pretraining, the backbone specs' default channels, the gallery, ``plots.images`` and the viewer. So pretraining,
training and what a figure shows cannot drift apart.

The mapping of one window is ``clip(hu, lo, lo + width) - lo`` times ``1 / width`` in float32, with
``lo = level - width / 2``: air below the window is 0, bone above it is 1. Model inputs are bit-for-bit those of
the dataset's former ``window_channels`` (tests/data/test_windowing.py checks it on random HU).
"""
from __future__ import annotations

from typing import Sequence, Union

import numpy as np

Window = tuple[float, float]  # (level, width) in HU

# (level, width) in HU. The first three, in this order, are the default model input channels (HEAD_CT_WINDOWS).
WINDOW_PRESETS: dict[str, Window] = {
    "brain": (40.0, 80.0),
    "subdural": (80.0, 200.0),
    "bone": (600.0, 2800.0),
    "stroke": (40.0, 40.0),
}
# brain 40/80, subdural 80/200, bone 600/2800: the default 3-window stack of the 2D / 3D backbones and the dataset
HEAD_CT_WINDOWS: tuple[Window, ...] = tuple(WINDOW_PRESETS[k] for k in ("brain", "subdural", "bone"))

Array = Union[np.ndarray, "torch.Tensor"]  # noqa: F821 - torch is imported only when a tensor comes in


def preset(name_or_window: str | Sequence[float]) -> Window:
    """A named preset (``"brain"``, …) or an explicit (level, width) as a float pair."""
    if isinstance(name_or_window, str):
        if name_or_window not in WINDOW_PRESETS:
            raise KeyError(f"unknown window preset {name_or_window!r}; known: {sorted(WINDOW_PRESETS)}")
        return WINDOW_PRESETS[name_or_window]
    level, width = name_or_window
    if not float(width) > 0:
        raise ValueError(f"window width must be > 0, got {width}")
    return float(level), float(width)


def _is_torch(x) -> bool:
    return type(x).__module__.startswith("torch")


def window_channels(hu: Array, windows: Sequence[str | Sequence[float]] = HEAD_CT_WINDOWS) -> Array:
    """HU (...) -> (C, ...) float32, one channel per window (preset name or (level, width)), each in [0, 1].

    numpy in, numpy out; a torch tensor in, a tensor out on its device (same float32 arithmetic, same bits).
    """
    wins = [preset(w) for w in windows]
    if _is_torch(hu):
        import torch

        x = hu.float()
        out = torch.empty((len(wins),) + tuple(hu.shape), dtype=torch.float32, device=hu.device)
        for c, (level, width) in enumerate(wins):
            lo = level - width / 2.0
            torch.clamp(x, np.float32(lo).item(), np.float32(lo + width).item(), out=out[c])
            out[c] -= np.float32(lo).item()
            out[c] *= np.float32(1.0 / width).item()
        return out
    x = np.asarray(hu).astype(np.float32, copy=False)
    out = np.empty((len(wins),) + x.shape, np.float32)
    for c, (level, width) in enumerate(wins):
        lo = level - width / 2.0
        np.clip(x, lo, lo + width, out=out[c])                       # clip first: two cheap passes follow
        out[c] -= np.float32(lo)
        out[c] *= np.float32(1.0 / width)
    return out


def window(hu: Array, name_or_window: str | Sequence[float]) -> Array:
    """One window (preset name or (level, width)) of HU; same shape as ``hu``, float32 in [0, 1]."""
    return window_channels(hu, [name_or_window])[0]
