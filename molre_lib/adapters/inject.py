"""Put MoLRE / LoRA layers into a model, freeze it by structure, and account for parameters.

``inject`` replaces each matched module by its wrapper with ``setattr(parent, name, wrapper)``
(as PEFT does), so adapted layers show in ``repr``, ``state_dict`` and ``isinstance`` checks.
After injection only the adapters, routers and the named trainable modules (the head) train.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Iterable, Optional, Sequence, Union

import torch
from torch import nn

from .config import MoLREConfig
from .layer import ADAPTER_CLASSES, MoLRELayer


def matches(name: str, pattern: Union[str, Sequence[str], None]) -> bool:
    """PEFT semantics: a string is a full-match regex; a list matches exact names or '.'-suffixes."""
    if pattern is None:
        return False
    if isinstance(pattern, str):
        return re.fullmatch(pattern, name) is not None
    return any(name == p or name.endswith("." + p) for p in pattern)


def adapter_layers(model: nn.Module) -> list[MoLRELayer]:
    return [m for m in model.modules() if isinstance(m, MoLRELayer)]


def _is_adapter_param(name: str) -> tuple[bool, bool]:
    """(is adapter weight, is router weight) for a parameter name inside a model."""
    parts = name.split(".")
    return ("lora_A" in parts or "lora_B" in parts), ("router" in parts)


@dataclass
class ParamReport:
    """Parameter accounting; percentages are relative to the frozen backbone."""

    total: int
    backbone: int
    adapters: int
    routers: int
    head: int
    trainable: int

    @property
    def added(self) -> int:
        return self.adapters + self.routers

    @property
    def pct_added(self) -> float:
        """Adapters + routers as % of the backbone (the study's '< 0.5% extra parameters')."""
        return 100.0 * self.added / max(self.backbone, 1)

    @property
    def pct_trainable(self) -> float:
        return 100.0 * self.trainable / max(self.backbone, 1)

    def to_dict(self) -> dict[str, float]:
        return {
            "total": self.total, "backbone": self.backbone, "adapters": self.adapters, "routers": self.routers,
            "head": self.head, "trainable": self.trainable, "pct_added": self.pct_added,
            "pct_trainable": self.pct_trainable,
        }

    def __str__(self) -> str:
        return (
            f"backbone {self.backbone:,} | adapters {self.adapters:,} | routers {self.routers:,} | head {self.head:,} | "
            f"trainable {self.trainable:,} ({self.pct_trainable:.3f}% of backbone; adapters+routers {self.pct_added:.3f}%)"
        )


@dataclass
class InjectionReport:
    adapted: list[str]
    params: ParamReport
    config: Optional[MoLREConfig] = None
    trainable_modules: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        return f"adapted {len(self.adapted)} modules; {self.params}"


def parameter_report(model: nn.Module, head: Iterable[str] = ("head",)) -> ParamReport:
    head = list(head)
    total = adapters = routers = head_n = trainable = 0
    for name, p in model.named_parameters():
        n = p.numel()
        total += n
        trainable += n if p.requires_grad else 0
        is_adapter, is_router = _is_adapter_param(name)
        if is_router:
            routers += n
        elif is_adapter:
            adapters += n
        elif any(matches(mod, head) for mod in _prefixes(name)):
            head_n += n
    return ParamReport(total, total - adapters - routers - head_n, adapters, routers, head_n, trainable)


def _prefixes(param_name: str) -> list[str]:
    parts = param_name.split(".")[:-1]
    return [".".join(parts[: i + 1]) for i in range(len(parts))]


def mark_trainable(model: nn.Module, trainable: Sequence[str] = ("head",)) -> list[str]:
    """Freeze everything, then unfreeze adapters, routers and modules matching ``trainable``.

    Returns the names of the trainable modules that matched. Base layers inside adapters stay frozen.
    """
    for p in model.parameters():
        p.requires_grad_(False)
    for layer in adapter_layers(model):
        for mod in (layer.lora_A, layer.lora_B, layer.router):
            if mod is not None:
                mod.requires_grad_(True)
    found = []
    for name, module in model.named_modules():
        if name and matches(name, list(trainable)) and not any(name.startswith(f + ".") for f in found):
            module.requires_grad_(True)
            found.append(name)
    missing = [t for t in trainable if not any(matches(n, [t]) for n in found)]
    if missing:
        raise ValueError(f"trainable modules {missing} match no module of {type(model).__name__}")
    return found


def inject(model: nn.Module, cfg: MoLREConfig, trainable: Sequence[str] = ("head",)) -> InjectionReport:
    """Wrap every module matched by ``cfg.target_modules`` in place and freeze the rest of the model.

    Each matched ``nn.Linear`` / ``nn.Conv2d`` / ``nn.Conv3d`` is replaced by a MoLRE layer that keeps it as
    ``base_layer`` (frozen); B starts at zero, so the injected model computes exactly what it did before.

    Args:
        model: any PyTorch model, e.g. a :class:`~molre_lib.backbones.model.HeadCTModel` from ``create_model``.
        cfg: the adapter settings; ``cfg.target_modules`` is a regex matched against the *full* module name, or a
            list of exact names / name suffixes (as in PEFT); ``cfg.exclude_modules`` wins over it.
        trainable: names (or name prefixes) of modules that stay trainable beside the adapters, e.g. the head.

    Returns:
        The report: the adapted module names and the parameter counts of backbone, adapters, routers and head
        (``print(report)`` shows them).

    Raises:
        ValueError: the model already holds adapters, the targets match no module (the message lists some
            module names), or a target is a module type MoLRE cannot adapt.

    Example:
        ```python
        report = inject(model, MoLREConfig(r=4, n_experts=4, target_modules=["qkv", "proj"]))
        print(report)                     # adapted modules; backbone / adapters / routers / head counts
        ```
    """
    if adapter_layers(model):
        raise ValueError(f"{type(model).__name__} already holds MoLRE/LoRA layers; inject into a fresh model")
    names = []
    for name, module in model.named_modules():
        if not name or not matches(name, cfg.target_modules) or matches(name, cfg.exclude_modules):
            continue
        if any(name.startswith(t + ".") for t in names):
            continue
        names.append(name)
    if not names:
        raise ValueError(
            f"target_modules={cfg.target_modules!r} matched no module of {type(model).__name__}. "
            "A string is a regex that must match the FULL module name; a list matches exact names or "
            "suffixes after a '.'. Some module names: " + ", ".join(n for n, _ in list(model.named_modules())[1:12])
        )
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        base = getattr(parent, child)
        cls = ADAPTER_CLASSES.get(type(base))
        if cls is None:
            supported = ", ".join(t.__name__ for t in ADAPTER_CLASSES)
            raise ValueError(
                f"target module {name!r} is a {type(base).__name__}; MoLRE adapts only {supported}. "
                "Narrow target_modules or add it to exclude_modules."
            )
        if isinstance(parent, nn.MultiheadAttention):
            raise ValueError(f"{name!r} belongs to nn.MultiheadAttention, which reads its weights directly; "
                             "adapting it would have no effect")
        try:
            wrapper = cls(base, cfg)
        except ValueError as err:
            raise ValueError(f"cannot adapt {name!r}: {err}") from None
        wrapper.layer_name = name
        setattr(parent, child, wrapper)
    found = mark_trainable(model, trainable)
    return InjectionReport(names, parameter_report(model, trainable), cfg, found)


def merge(model: nn.Module) -> None:
    """Fold every LoRA update into its base weight, exactly (``unmerge`` restores it).

    Raises:
        ValueError: a MoLRE layer with E > 1, whose update depends on the input through its router.
    """
    for layer in adapter_layers(model):
        layer.merge()


def unmerge(model: nn.Module) -> None:
    for layer in adapter_layers(model):
        layer.unmerge()


def balance_loss(model: nn.Module) -> torch.Tensor:
    """Auxiliary load-balancing loss of all adapted layers, times ``balance_coef``.

    Each layer contributes the mean of its Switch loss over the forward calls since the previous
    call (a 2D backbone run slice-chunk by slice-chunk makes several); call once per step. Zero
    (a tensor) when balancing is disabled.
    """
    total: Optional[torch.Tensor] = None
    for layer in adapter_layers(model):
        term = layer.pop_balance_loss()
        if term is not None:
            term = term * layer.cfg.balance_coef
            total = term if total is None else total + term
    if total is None:
        p = next(model.parameters(), None)
        return torch.zeros((), device=p.device if p is not None else "cpu")
    return total
