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
        if name not in self.gates:
            raise KeyError(f"no gates recorded for layer {name!r}; recorded: {self.layers}")
        return torch.cat(self.gates[name], dim=0)

    def clear(self) -> None:
        self.gates.clear()
        self.layout.clear()


@contextmanager
def routing_log(
    model: nn.Module, to_cpu: bool = True, layers: Optional[Sequence[str] | str] = None
) -> Iterator[RoutingLog]:
    """Record gates of the routed layers (all, or those matching ``layers``) while the block runs."""
    routed = [m for m in adapter_layers(model) if m.router is not None]
    if layers is not None:
        routed = [m for m in routed if matches(m.layer_name, layers)]
    if not routed:
        raise ValueError(
            "routing_log: the model has no routed MoLRE layers"
            + (f" matching {layers!r}" if layers is not None else " (LoRA layers have no router)")
        )
    log = RoutingLog(to_cpu=to_cpu)
    for m in routed:
        m._routing_log = log
    try:
        yield log
    finally:
        for m in routed:
            m._routing_log = None
