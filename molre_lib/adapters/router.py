"""The soft router of a MoLRE layer: ``g(x) = softmax(W_g x / T)``, per token or per sample.

Gates always put the expert axis last:
- Linear input ``(*lead, d)``: token gates ``(*lead, E)``; sample gates ``(N, E)`` from the mean
  over all lead axes but the first (for a ViT ``(N, T, d)`` that is the mean of the tokens).
- Conv input ``(N, C, *spatial)``: token gates ``(N, *out_spatial, E)`` (one per output voxel);
  sample gates ``(N, E)`` from the spatial mean.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .config import MoLREConfig


class Router(nn.Module):
    """Linear gate network over the layer input, with temperature and optional top-k."""

    def __init__(self, in_features: int, cfg: MoLREConfig) -> None:
        super().__init__()
        self.n_experts = cfg.n_experts
        self.mode = cfg.router
        self.temperature = float(cfg.temperature)
        self.top_k = cfg.top_k
        self.gate = nn.Linear(in_features, cfg.n_experts)
        # Small random init breaks expert symmetry while starting close to uniform routing.
        nn.init.normal_(self.gate.weight, std=0.02)
        nn.init.zeros_(self.gate.bias)

    def _normalise(self, logits: torch.Tensor) -> torch.Tensor:
        logits = logits / self.temperature
        if self.top_k is not None and self.top_k < self.n_experts:
            kth = logits.topk(self.top_k, dim=-1).values[..., -1:]  # (..., 1)
            logits = logits.masked_fill(logits < kth, float("-inf"))
        return logits.softmax(dim=-1)

    def forward_linear(self, x: torch.Tensor) -> torch.Tensor:
        """x: (*lead, d) -> token gates (*lead, E) or sample gates (N, E)."""
        return self.gates_from_logits(self.gate(x))

    def gates_from_logits(self, logits: torch.Tensor) -> torch.Tensor:
        """Per-token logits (*lead, E) -> gates. The sample router averages the logits over tokens,
        which equals routing the mean token because the gate is linear."""
        if self.mode == "sample" and logits.dim() > 2:
            logits = logits.flatten(1, -2).mean(dim=1)  # (N, E)
        return self._normalise(logits)

    def forward_conv(self, x: torch.Tensor, out_spatial: Sequence[int]) -> torch.Tensor:
        """x: (N, C, *spatial) -> token gates (N, *out_spatial, E) or sample gates (N, E)."""
        if self.mode == "sample":
            return self._normalise(self.gate(x.flatten(2).mean(dim=2)))  # (N, E)
        logits = torch.einsum("nc...,ec->ne...", x, self.gate.weight)  # (N, E, *spatial)
        logits = logits + self.gate.bias.view(1, -1, *([1] * (x.dim() - 2)))
        if tuple(logits.shape[2:]) != tuple(out_spatial):
            # Strided / padded convs change the grid: average the (linear) logits onto it.
            pool = F.adaptive_avg_pool2d if x.dim() == 4 else F.adaptive_avg_pool3d
            logits = pool(logits, tuple(out_spatial))
        return self._normalise(logits.movedim(1, -1))  # (N, *out_spatial, E)


def switch_balance_loss(gates: torch.Tensor) -> torch.Tensor:
    """Switch-Transformer load-balancing loss ``E * sum_e f_e * P_e`` (1.0 when perfectly balanced).

    ``f_e``: fraction of routing units whose largest gate is expert e; ``P_e``: mean gate of e.
    """
    flat = gates.reshape(-1, gates.shape[-1])  # (units, E)
    n_experts = flat.shape[-1]
    frac = F.one_hot(flat.argmax(dim=-1), n_experts).to(flat.dtype).mean(dim=0)  # (E,)
    prob = flat.mean(dim=0)  # (E,)
    return n_experts * (frac * prob).sum()


def gate_entropy(gates: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Entropy (nats) of each gate vector: (..., E) -> (...)."""
    return -(gates * (gates + eps).log()).sum(dim=-1)
