"""Configuration of MoLRE (Mixture of Low-Rank Experts) and LoRA adapters.

LoRA is the special case ``n_experts == 1``: one low-rank update, no router.

``shared_a=True`` gives the asymmetric layout (as in HydraLoRA): the experts share one
down-projection ``A`` (r x d_in) and keep their own up-projections ``B_e``, so the update is
``(alpha / r) * sum_e g_e(x) * B_e A x``. It costs ``r*d_in + E*r*d_out`` adapter parameters per
layer instead of ``E*r*(d_in + d_out)``; on ViT-B/16 (qkv + proj, E=4, r=2) that is 0.47% of the
backbone against 0.60% with separate ``A_e`` (``benchmarks/adapters.py``).

The scale ``s`` of the update is a named rule (``SCALING_RULES``): ``"lora"`` gives ``alpha / r`` (Hu et al.),
``"rslora"`` gives ``alpha / sqrt(r)`` (rank-stabilised LoRA, Kalajdzievski 2023; PEFT's ``use_rslora=True``).
``r`` is the rank of *one* expert. :func:`effective_step` turns a learning rate into the step one expert's
update takes (docs/explanation/scaling.md derives it).

Target matching follows PEFT: a **string** is a regular expression that must match the full
module name (``re.fullmatch``); a **list** matches a module whose name equals an item or ends
with ``"." + item``. ``exclude_modules`` uses the same rules and wins over ``target_modules``.
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Any, Optional, Union

from molre_lib.common.config_keys import check_known_keys

ROUTERS = ("token", "sample")
# scale of the low-rank update from (alpha, rank of one expert): the rule's name -> function
SCALING_RULES: dict[str, Any] = {
    "lora": lambda alpha, r: float(alpha) / r,          # Hu et al. 2021
    "rslora": lambda alpha, r: float(alpha) / math.sqrt(r),  # Kalajdzievski 2023; PEFT use_rslora=True
}


@dataclass
class MoLREConfig:
    """Hyper-parameters of every adapted layer; see the module docstring for target matching."""

    r: int = field(default=4, metadata={"help": "Rank of each low-rank expert."})
    n_experts: int = field(default=4, metadata={"help": "Number of experts E; 1 gives plain LoRA (no router)."})
    alpha: float = field(default=8.0, metadata={"help": "Scaling numerator: the update is s * sum_e g_e B_e A_e x with "
                                                        "s = alpha / r ('lora') or alpha / sqrt(r) ('rslora')."})
    scaling_rule: str = field(default="lora", metadata={"help": "How alpha and r give the scale s: 'lora' (alpha / r) or "
                                                                "'rslora' (alpha / sqrt(r)); r is one expert's rank."})
    dropout: float = field(default=0.0, metadata={"help": "Dropout on the adapter input (as in LoRA), in [0, 1)."})
    router: str = field(
        default="token",
        metadata={"help": "'token': a gate vector per token / voxel; 'sample': one per image or slice (mean of its tokens)."},
    )
    shared_a: bool = field(
        default=False,
        metadata={"help": "Experts share one down-projection A and keep their own B_e (fewer parameters); "
                          "False gives each expert its own A_e."},
    )
    temperature: float = field(default=1.0, metadata={"help": "Softmax temperature T of the router, > 0."})
    top_k: Optional[int] = field(
        default=None, metadata={"help": "Keep the k largest gates (renormalised) and zero the rest; None = dense soft routing."}
    )
    balance_coef: float = field(
        default=0.0, metadata={"help": "Weight of the auxiliary load-balancing loss (Switch-style); 0 disables it."}
    )
    target_modules: Union[str, list[str]] = field(
        default_factory=lambda: ["qkv", "proj"],
        metadata={"help": "Modules to adapt: a regex (full match) or a list of exact names / name suffixes."},
    )
    exclude_modules: Optional[Union[str, list[str]]] = field(
        default=None, metadata={"help": "Modules never adapted, same matching rules; wins over target_modules."}
    )

    def __post_init__(self) -> None:
        if isinstance(self.target_modules, tuple):
            self.target_modules = list(self.target_modules)
        if isinstance(self.exclude_modules, tuple):
            self.exclude_modules = list(self.exclude_modules)
        self.validate()

    # ------------------------------------------------------------------ validation
    def validate(self) -> None:
        def bad(name: str, why: str) -> ValueError:
            return ValueError(f"MoLREConfig.{name}={getattr(self, name)!r}: {why}")

        if not isinstance(self.r, int) or isinstance(self.r, bool) or self.r < 1:
            raise bad("r", "must be an integer >= 1")
        if not isinstance(self.n_experts, int) or isinstance(self.n_experts, bool) or self.n_experts < 1:
            raise bad("n_experts", "must be an integer >= 1")
        if not isinstance(self.alpha, (int, float)) or self.alpha <= 0:
            raise bad("alpha", "must be a number > 0")
        if self.scaling_rule not in SCALING_RULES:
            raise bad("scaling_rule", f"must be one of {tuple(SCALING_RULES)}")
        if not isinstance(self.dropout, (int, float)) or not 0.0 <= self.dropout < 1.0:
            raise bad("dropout", "must be in [0, 1)")
        if not isinstance(self.shared_a, bool):
            raise bad("shared_a", "must be True or False")
        if self.router not in ROUTERS:
            raise bad("router", f"must be one of {ROUTERS}")
        if not isinstance(self.temperature, (int, float)) or self.temperature <= 0:
            raise bad("temperature", "must be a number > 0")
        if self.top_k is not None:
            if not isinstance(self.top_k, int) or isinstance(self.top_k, bool) or not 1 <= self.top_k <= self.n_experts:
                raise bad("top_k", f"must be None or an integer in [1, n_experts={self.n_experts}]")
        if not isinstance(self.balance_coef, (int, float)) or self.balance_coef < 0:
            raise bad("balance_coef", "must be a number >= 0")
        for name in ("target_modules", "exclude_modules"):
            value = getattr(self, name)
            if value is None and name == "exclude_modules":
                continue
            if isinstance(value, str):
                if not value:
                    raise bad(name, "an empty pattern matches nothing")
            elif isinstance(value, list):
                if not value or not all(isinstance(v, str) and v for v in value):
                    raise bad(name, "must be a non-empty list of non-empty strings")
            else:
                raise bad(name, "must be a regex string or a list of names / suffixes")

    # ------------------------------------------------------------------ helpers
    @property
    def is_lora(self) -> bool:
        return self.n_experts == 1

    @property
    def a_rank(self) -> int:
        """Output width of the down-projection A: r when shared, E*r when each expert has its own."""
        return self.r if self.shared_a else self.n_experts * self.r

    @property
    def scaling(self) -> float:
        """The scale s of every expert's update: alpha / r ('lora') or alpha / sqrt(r) ('rslora')."""
        return SCALING_RULES[self.scaling_rule](self.alpha, self.r)

    def effective_step(self, lr: float) -> float:
        """``lr * s / E``: the step of one expert's update at the uniform gate 1/E; see :func:`effective_step`."""
        return effective_step(lr, self.alpha, self.r, self.n_experts, self.scaling_rule)

    @classmethod
    def lora(cls, r: int = 8, alpha: Optional[float] = None, **kwargs: Any) -> "MoLREConfig":
        """Plain LoRA: one expert and no router (alpha defaults to 2r)."""
        return cls(r=r, n_experts=1, alpha=float(alpha if alpha is not None else 2 * r), **kwargs)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "MoLREConfig":
        check_known_keys(cls, data)
        return cls(**data)


def effective_step(lr: float, alpha: float, r: int, n_experts: int = 1, rule: str = "lora") -> float:
    """How far one step moves the adapted layer's output, per unit of input, per expert: ``lr * s / E``.

    Adam moves every entry of ``B_e`` by about ``lr`` per step whatever the gradient's size, so one expert's
    term ``s * g_e * B_e A_e x`` changes by about ``lr * s * g_e``. The gates sum to 1, so at the uniform gate
    ``g_e = 1/E`` (the router's start, and its average over tokens) that is ``lr * s / E``; LoRA is ``E = 1``.
    Splitting a LoRA of rank R into E experts of rank R/E at the same ``alpha / r`` therefore takes steps E times
    smaller; ``alpha = E * 2r`` gives a MoLRE the step of LoRA at ``alpha = 2R`` (docs/explanation/scaling.md).

    Args:
        lr: peak learning rate. alpha: the scaling numerator. r: rank of one expert.
        n_experts: E (1 for LoRA). rule: a key of ``SCALING_RULES``.
    Raises:
        ValueError: an unknown rule.
    """
    if rule not in SCALING_RULES:
        raise ValueError(f"scaling rule {rule!r}: must be one of {tuple(SCALING_RULES)}")
    return float(lr) * SCALING_RULES[rule](alpha, r) / n_experts
