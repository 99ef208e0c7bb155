"""Model construction from a TrainConfig: backbone from the registry, then the adapter.

Training, evaluation, ``predict`` and ``workbook.runs.open_run`` all build a run's model here, so opening a
finished run never imports the trainer, and a rebuilt model is the one that was trained (seeded).
"""
from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch
from torch import nn

from .config import TrainConfig


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def build_model(cfg: TrainConfig, num_classes: int = 75) -> nn.Module:
    """Backbone from the registry, then the adapter given by ``cfg.adapter`` (seeded: rebuilds are identical)."""
    from molre_lib.backbones import create_model, get_spec

    seed_everything(cfg.seed)
    spec = get_spec(cfg.backbone)
    extra: dict[str, Any] = {"checkpoint": True} if (cfg.grad_checkpointing and spec.dims == 2) else {}
    if cfg.image_size:
        extra["image_size"] = image_size(cfg, spec)
    model = create_model(cfg.backbone, num_classes=num_classes, weights=cfg.weights, pretrained=cfg.pretrained,
                         reduced=cfg.reduced, **extra)
    if cfg.grad_checkpointing and spec.dims == 3:
        setter = getattr(model.encoder, "set_grad_checkpointing", None)
        if setter is None:
            raise ValueError(f"backbone {cfg.backbone!r} does not support gradient checkpointing")
        setter(True)
    return apply_adapter(model, cfg, spec.target_modules)


def image_size(cfg: TrainConfig, spec: Any) -> tuple[int, int]:
    """``cfg.image_size`` checked against the backbone: 2D only, whole patches."""
    size = (int(cfg.image_size[0]), int(cfg.image_size[1]))  # type: ignore[index]
    if spec.dims != 2:
        raise ValueError(f"TrainConfig.image_size={list(size)}: {spec.name} is a 3D backbone; set volume_shape instead")
    patch = getattr(spec, "patch_size", None)
    if patch and any(s % p for s, p in zip(size, patch)):
        raise ValueError(f"TrainConfig.image_size={list(size)}: {spec.name} has {patch[0]} x {patch[1]} patches; use "
                         f"a multiple of {patch[0]} (e.g. {[max(p, s // p * p) for s, p in zip(size, patch)]})")
    return size


def apply_adapter(model: nn.Module, cfg: TrainConfig, default_targets: Any = None) -> nn.Module:
    """Inject LoRA / MoLRE, or set up a linear probe / full fine-tuning, per ``cfg.adapter``."""
    from molre_lib.adapters import MoLREConfig, inject, mark_trainable

    targets = cfg.target_modules if cfg.target_modules is not None else default_targets
    if cfg.adapter in ("lora", "molre"):
        if targets is None:
            raise ValueError("target_modules is not set and the model has no default adapter targets")
        common = dict(r=cfg.rank, alpha=cfg.alpha, scaling_rule=cfg.scaling, dropout=cfg.adapter_dropout,
                      target_modules=targets)
        acfg = (MoLREConfig(n_experts=1, **common) if cfg.adapter == "lora" else
                MoLREConfig(n_experts=cfg.n_experts, shared_a=cfg.shared_a, router=cfg.router, temperature=cfg.temperature,
                            top_k=cfg.top_k, balance_coef=cfg.balance_coef, **common))
        inject(model, acfg, trainable=new_modules(model))
    elif cfg.adapter == "linear_probe":
        mark_trainable(model, new_modules(model))
    else:  # full fine-tuning
        model.requires_grad_(True)
    return model


def new_modules(model: nn.Module) -> tuple[str, ...]:
    """Top-level modules trained from scratch (slice aggregator, head): trainable with any adapter."""
    return tuple(getattr(model, "trainable_modules", ("head",)))
