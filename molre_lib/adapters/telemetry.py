"""Routing telemetry: record every routed layer's gates without the caller defining hooks.

    with routing_log(model) as log:
        model(images)
    gates = log.concat("encoder.blocks.3.attn.qkv")   # (N, T, E) for a ViT token router

``log.layout[name]`` says how to read the gates: ``"token"`` (*lead, E) for a Linear layer
(``(N, T, E)`` on a ViT, T including prefix tokens), ``"spatial"`` (N, *out_spatial, E) for a
conv layer, ``"sample"`` (N, E). A 2D backbone run over slices in chunks records one entry per
chunk; ``concat`` joins them along dim 0 in call order.
"""
from __future__ import annotations

from collections import defaultdict
from contextlib import contextmanager
from typing import Iterator, Optional, Sequence

import torch
from torch import nn

from .inject import adapter_layers, matches


class RoutingLog:
    """Gates per layer name, detached (and on the CPU in float32 unless ``to_cpu=False``)."""

    def __init__(self, to_cpu: bool = True) -> None:
        self.to_cpu = to_cpu
        self.gates: dict[str, list[torch.Tensor]] = defaultdict(list)
        self.layout: dict[str, str] = {}

    def record(self, name: str, gates: torch.Tensor, layout: str) -> None:
        g = gates.detach()
        if self.to_cpu:
            g = g.float().cpu()
        self.gates[name].append(g)
        self.layout[name] = layout

    @property
    def layers(self) -> list[str]:
        return list(self.gates)

    def concat(self, name: str) -> torch.Tensor:
        """The gates layer ``name`` recorded, concatenated over forward passes: ``(N, T, E)`` or ``(N, E)``.

        Raises:
            KeyError: nothing was recorded for ``name`` (the message lists the recorded layers).
        """
        if name not in self.gates:
            raise KeyError(f"no gates recorded for layer {name!r}; recorded: {self.layers}")
        return torch.cat(self.gates[name], dim=0)

    def clear(self) -> None:
        self.gates.clear()
        self.layout.clear()


class RoutingStats:
    """Running per-layer summaries of the gates instead of the gates themselves (constant memory).

    Per layer: the mean gate entropy (nats; ``log E`` is uniform routing, 0 is one expert per token) and the mean
    gate of each expert (its usage; the usages sum to 1), over every gate vector seen (tokens, voxels or samples).
    It is the ``record`` interface of :class:`RoutingLog`, so a training run can summarise routing over a whole
    validation pass (``routing_stats(model)``) without keeping (N, T, E) tensors.
    """

    def __init__(self) -> None:
        self._entropy: dict[str, torch.Tensor] = {}
        self._usage: dict[str, torch.Tensor] = {}
        self._count: dict[str, int] = defaultdict(int)

    def record(self, name: str, gates: torch.Tensor, layout: str) -> None:
        from .router import gate_entropy

        g = gates.detach().float().reshape(-1, gates.shape[-1])  # (vectors, E)
        ent, use = gate_entropy(g).sum(), g.sum(0)
        if name in self._usage:
            self._entropy[name] += ent
            self._usage[name] += use
        else:
            self._entropy[name], self._usage[name] = ent, use
        self._count[name] += g.shape[0]

    @property
    def layers(self) -> list[str]:
        return list(self._usage)

    def summary(self) -> dict[str, dict[str, object]]:
        """``{layer: {"gate_entropy": float, "expert_usage": [float] * E, "n": vectors seen}}``."""
        return {name: {"gate_entropy": float(self._entropy[name]) / self._count[name],
                       "expert_usage": (self._usage[name] / self._count[name]).cpu().tolist(),
                       "n": self._count[name]} for name in self._usage}


def _routed(model: nn.Module, layers: Optional[Sequence[str] | str], who: str) -> list:
    routed = [m for m in adapter_layers(model) if m.router is not None]
    if layers is not None:
        routed = [m for m in routed if matches(m.layer_name, layers)]
    if not routed:
        raise ValueError(
            f"{who}: the model has no routed MoLRE layers"
            + (f" matching {layers!r}" if layers is not None else " (LoRA layers have no router)")
        )
    return routed


@contextmanager
def _attached(routed: list, log) -> Iterator:
    for m in routed:
        m._routing_log = log
    try:
        yield log
    finally:
        for m in routed:
            m._routing_log = None


@contextmanager
def routing_log(
    model: nn.Module, to_cpu: bool = True, layers: Optional[Sequence[str] | str] = None
) -> Iterator[RoutingLog]:
    """Record the gates of the routed layers while the ``with`` block runs: telemetry without hooks in your code.

    Args:
        model: a model with MoLRE layers (``inject`` with ``n_experts > 1``).
        to_cpu: keep the gates detached on the CPU in float32 (else where they were computed).
        layers: only the routed layers matching this (a regex or a list of names / suffixes, as ``target_modules``).

    Yields:
        A :class:`RoutingLog`; ``log.concat(layer_name)`` gives that layer's gates of every forward pass in the
        block: ``(N, T, E)`` for a token router (N inputs, or slices for a 2D backbone; T tokens; E experts),
        ``(N, E)`` for a sample router.

    Raises:
        ValueError: the model has no routed layer (LoRA layers have no router), or none matches ``layers``.

    Example:
        ```python
        with routing_log(model) as log:
            model(x)                                         # x: (B, C, D, H, W)
        gates = log.concat("encoder.blocks.3.attn.qkv")      # (N, T, E)
        ```
    """
    with _attached(_routed(model, layers, "routing_log"), RoutingLog(to_cpu=to_cpu)) as log:
        yield log


@contextmanager
def routing_stats(model: nn.Module, layers: Optional[Sequence[str] | str] = None) -> Iterator[RoutingStats]:
    """Summarise the gates of the routed layers (entropy, expert usage) while the block runs; see
    :class:`RoutingStats`."""
    with _attached(_routed(model, layers, "routing_stats"), RoutingStats()) as stats:
        yield stats
