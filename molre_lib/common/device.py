"""One rule for turning a device setting ("auto", "cpu", "cuda", "cuda:1", "mps") into a ``torch.device``.

Used by training (per DDP rank), evaluation / prediction, opening a finished run and phantom pretraining, so
"auto" means the same everywhere and a device that is not there fails at once with one line that says what to use,
not deep inside the first ``.to()``.
"""
from __future__ import annotations

from typing import Optional

import torch

CHOICES = "'auto' (a CUDA GPU when there is one, else the CPU), 'cpu', 'cuda', 'cuda:N' or 'mps'"


def resolve_device(device: str | torch.device = "auto", local_rank: Optional[int] = None) -> torch.device:
    """The ``torch.device`` for a setting.

    ``"auto"`` is a CUDA GPU when one is available, else the CPU. Under DDP pass ``local_rank``: "auto" and an
    unnumbered "cuda" then mean this rank's GPU ``cuda:<local_rank>``. Raises ``ValueError`` for a setting torch does
    not read or a device this machine does not have.
    """
    if isinstance(device, torch.device):
        dev = device
    else:
        spec = str(device).strip().lower()
        if spec == "auto":
            spec = "cuda" if torch.cuda.is_available() else "cpu"
        try:
            dev = torch.device(spec)
        except RuntimeError:
            raise ValueError(f"device {device!r} not understood: use {CHOICES}") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {str(device)!r}: CUDA is not available on this machine "
                             f"(torch {torch.__version__}); use 'cpu' or 'auto'")
        if dev.index is None and local_rank is not None:
            dev = torch.device("cuda", local_rank)
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"device {str(device)!r}: this machine has {torch.cuda.device_count()} CUDA device(s) "
                             f"(cuda:0 … cuda:{torch.cuda.device_count() - 1})")
    elif dev.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise ValueError(f"device {str(device)!r}: MPS is not available on this machine; use 'cpu' or 'auto'")
    elif dev.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"device {str(device)!r} not supported: use {CHOICES}")
    return dev
