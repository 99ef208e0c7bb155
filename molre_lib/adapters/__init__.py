"""MoLRE (Mixture of Low-Rank Experts) and LoRA adapters for frozen foundation models.

Where things happen: ``config.py`` (hyper-parameters, target matching), ``router.py`` (gates),
``layer.py`` (the fused expert computation), ``inject.py`` (wrapping, freezing, accounting),
``telemetry.py`` (routing logs), ``io.py`` (adapter-only checkpoints).
"""
from .config import SCALING_RULES, MoLREConfig, effective_step
from .inject import (
    InjectionReport,
    ParamReport,
    adapter_layers,
    balance_loss,
    inject,
    mark_trainable,
    matches,
    merge,
    parameter_report,
    unmerge,
)
from .io import adapter_state_dict, load_adapter, read_adapter_metadata, save_adapter
from .layer import MoLREConv, MoLRELayer, MoLRELinear
from .router import Router, gate_entropy, switch_balance_loss
from .telemetry import RoutingLog, routing_log

__all__ = [
    "MoLREConfig", "SCALING_RULES", "effective_step", "InjectionReport", "ParamReport", "adapter_layers", "balance_loss", "inject", "mark_trainable",
    "matches", "merge", "parameter_report", "unmerge", "adapter_state_dict", "load_adapter", "read_adapter_metadata",
    "save_adapter", "MoLREConv", "MoLRELayer", "MoLRELinear", "Router", "gate_entropy", "switch_balance_loss",
    "RoutingLog", "routing_log",
]
