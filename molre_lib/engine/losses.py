"""Training loss: multi-label sigmoid focal loss with an unknown-label mask.

The element-wise focal term is torchvision's ``sigmoid_focal_loss`` (Lin et al. 2017); this module
only adds what a head-CT label set needs: a mask for findings whose label is unknown in a scan
and optional per-finding positive weights (rare findings). The trainer adds the adapters' load-balancing term.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch
from torch import nn
from torchvision.ops import sigmoid_focal_loss

REDUCTIONS = ("mean", "sum", "none")


class MaskedFocalLoss(nn.Module):
    """Sigmoid focal loss over (B, F) logits where ``mask == 0`` marks unknown labels.

    ``alpha`` weights positives (``1 - alpha`` negatives; ``alpha < 0`` disables it, as in torchvision),
    ``gamma`` down-weights easy examples, ``pos_weight`` (F,) multiplies the positive terms per finding.
    ``reduction="mean"`` averages over known labels only; ``"sum"`` sums them (the trainer divides by
    the known-label count of the whole global batch so DDP and gradient accumulation give the same
    loss as one large batch).
    """

    def __init__(self, alpha: float = 0.25, gamma: float = 2.0, pos_weight: Optional[torch.Tensor] = None,
                 reduction: str = "mean") -> None:
        super().__init__()
        if gamma < 0:
            raise ValueError(f"focal gamma={gamma}: must be >= 0")
        if alpha > 1:
            raise ValueError(f"focal alpha={alpha}: must be <= 1 (negative disables alpha weighting)")
        if reduction not in REDUCTIONS:
            raise ValueError(f"reduction={reduction!r}: must be one of {REDUCTIONS}")
        self.alpha, self.gamma, self.reduction = float(alpha), float(gamma), reduction
        if pos_weight is not None:
            pos_weight = torch.as_tensor(pos_weight, dtype=torch.float32)
            if pos_weight.ndim != 1 or bool((pos_weight <= 0).any()):
                raise ValueError("pos_weight must be a 1-D tensor of positive weights, one per finding")
        self.register_buffer("pos_weight", pos_weight, persistent=False)

    def forward(self, logits: torch.Tensor, labels: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        if logits.shape != labels.shape:
            raise ValueError(f"logits {tuple(logits.shape)} and labels {tuple(labels.shape)} differ in shape")
        logits, labels = logits.float(), labels.float()  # loss in fp32 even under autocast
        loss = sigmoid_focal_loss(logits, labels, alpha=self.alpha, gamma=self.gamma, reduction="none")  # (B, F)
        if self.pos_weight is not None:
            if self.pos_weight.shape[0] != logits.shape[-1]:
                raise ValueError(f"pos_weight has {self.pos_weight.shape[0]} entries, logits {logits.shape[-1]} findings")
            loss = loss * (1.0 + labels * (self.pos_weight - 1.0))  # (B, F): positives x w_f, negatives x 1
        if mask is not None:
            loss = loss * mask.float()
        if self.reduction == "none":
            return loss
        if self.reduction == "sum":
            return loss.sum()
        count = mask.float().sum() if mask is not None else torch.tensor(float(loss.numel()), device=loss.device)
        return loss.sum() / count.clamp_min(1.0)


def pos_weights_from_labels(labels: np.ndarray, mask: np.ndarray, max_weight: float = 10.0) -> np.ndarray:
    """Per-finding positive weight ``n_neg / n_pos`` among known labels, clipped to [1, max_weight].

    A finding without known positives gets weight 1 (nothing to up-weight).
    """
    labels, mask = np.asarray(labels, dtype=np.float64), np.asarray(mask, dtype=np.float64)
    n_pos = (labels * mask).sum(0)  # (F,)
    n_neg = ((1 - labels) * mask).sum(0)
    with np.errstate(divide="ignore", invalid="ignore"):
        w = np.where(n_pos > 0, n_neg / np.maximum(n_pos, 1), 1.0)
    return np.clip(w, 1.0, max_weight).astype(np.float32)
