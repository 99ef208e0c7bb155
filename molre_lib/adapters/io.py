"""Adapter-only checkpoints: adapters, routers and head in safetensors, config as JSON metadata.

The backbone is never re-saved: a checkpoint is loaded into a model built from the same
backbone and injected with the same config, and loading checks both before touching a tensor.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional, Sequence

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from molre_lib.common.files import atomic_write
from .config import MoLREConfig
from .inject import _is_adapter_param, _prefixes, adapter_layers, matches

FORMAT = "molre-adapter/1"


def _config_of(model: nn.Module) -> Optional[MoLREConfig]:
    layers = adapter_layers(model)
    return layers[0].cfg if layers else None


def adapter_state_dict(model: nn.Module, extra: Sequence[str] = ("head",)) -> dict[str, torch.Tensor]:
    """Adapter and router weights plus every parameter and buffer (e.g. BatchNorm statistics) under a
    module matching ``extra``."""
    state = {}
    for name, p in model.named_parameters():
        is_adapter, is_router = _is_adapter_param(name)
        if is_adapter or is_router or any(matches(m, list(extra)) for m in _prefixes(name)):
            state[name] = p.detach()
    for name, b in model.named_buffers():
        if any(matches(m, list(extra)) for m in _prefixes(name)):
            state[name] = b.detach()
    return state


def save_adapter(model: nn.Module, path: str | Path, extra: Sequence[str] = ("head",),
                 metadata: Optional[dict[str, str]] = None) -> Path:
    """Write adapters + routers + ``extra`` modules to ``path`` (safetensors); the frozen backbone is left out.

    Args:
        model: an injected model.
        path: the ``.safetensors`` file to write (its folder is made).
        extra: modules saved beside the adapters, by name prefix (the classifier head by default).
        metadata: extra string key / values stored in the file's metadata beside the adapter config.

    Returns:
        ``path``, as a ``Path`` (written atomically).

    Raises:
        ValueError: the model has no adapters and no module matching ``extra``: nothing to save.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    cfg = _config_of(model)
    state = {k: v.contiguous().cpu() for k, v in adapter_state_dict(model, extra).items()}
    if not state:
        raise ValueError(f"nothing to save: {type(model).__name__} has no adapters and no module matching {list(extra)}")
    meta = {
        "format": FORMAT,
        "molre_config": cfg.to_json() if cfg is not None else "null",
        "adapted": json.dumps([m.layer_name for m in adapter_layers(model)]),
        "extra": json.dumps(list(extra)),
    }
    meta.update(metadata or {})
    return atomic_write(path, lambda tmp: save_file(state, str(tmp), metadata=meta))


def describe_adapter(cfg: Optional[dict], backbone: Optional[str] = None) -> str:
    """'LoRA r=16 on phantom_vit', 'MoLRE 4x4 (shared A, token router) on ...', 'no adapters on ...'."""
    if cfg is None:
        text = "without adapters"
    elif int(cfg.get("n_experts", 1)) == 1:
        text = f"LoRA r={cfg.get('r')} alpha={float(cfg.get('alpha', 0)):g}"
    else:
        extras = ["shared A"] if cfg.get("shared_a") else []
        extras.append(f"{cfg.get('router', 'token')} router")
        text = f"MoLRE {cfg['n_experts']}x{cfg.get('r')} alpha={float(cfg.get('alpha', 0)):g} ({', '.join(extras)})"
    return text + (f" on {backbone}" if backbone else "")


def read_adapter_metadata(path: str | Path) -> dict[str, str]:
    with safe_open(str(path), framework="pt") as f:
        return dict(f.metadata() or {})


def load_adapter(model: nn.Module, path: str | Path, strict_config: bool = True) -> list[str]:
    """Load an adapter checkpoint written by :func:`save_adapter` into an injected model.

    Args:
        model: a model injected with the same config (same targets, rank, experts, shared A or not).
        path: the ``.safetensors`` file.
        strict_config: refuse a checkpoint whose stored config differs from the model's.

    Returns:
        The names of the loaded tensors.

    Raises:
        ValueError: naming the first difference: config field, adapted layer, missing or unexpected tensor,
            or shape.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"adapter checkpoint not found: {path}")
    meta = read_adapter_metadata(path)
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path}: not a MoLRE adapter checkpoint (format={meta.get('format')!r}, expected {FORMAT!r})")
    saved_cfg = json.loads(meta["molre_config"])
    cfg = _config_of(model)
    model_cfg = cfg.to_dict() if cfg is not None else None
    saved_backbone, model_backbone = meta.get("backbone"), getattr(getattr(model, "spec", None), "name", None)

    def mismatch(what: str) -> ValueError:
        return ValueError(f"{path}: the checkpoint is {describe_adapter(saved_cfg, saved_backbone)}, the model is "
                          f"{describe_adapter(model_cfg, model_backbone)}: {what}; build the model with the "
                          "checkpoint's settings (its run's config.json)")

    if strict_config:
        if saved_backbone and model_backbone and saved_backbone != model_backbone:
            raise mismatch(f"backbone {saved_backbone} vs {model_backbone}")
        if (saved_cfg is None) != (cfg is None):
            raise mismatch("one has adapters, the other not")
        if cfg is not None:
            for key, value in saved_cfg.items():
                if key in model_cfg and model_cfg[key] != value and key not in ("dropout",):
                    raise mismatch(f"{key} {value!r} vs {model_cfg[key]!r}")
    saved_layers = json.loads(meta["adapted"])
    model_layers = [m.layer_name for m in adapter_layers(model)]
    for a, b in zip(saved_layers, model_layers):
        if a != b:
            raise mismatch(f"adapted layer {a!r} vs {b!r}")
    if len(saved_layers) != len(model_layers):
        raise mismatch(f"{len(saved_layers)} vs {len(model_layers)} adapted layers")
    expected = adapter_state_dict(model, json.loads(meta.get("extra", '["head"]')))
    params = {**dict(model.named_parameters()), **dict(model.named_buffers())}
    with safe_open(str(path), framework="pt") as f:
        keys = list(f.keys())
        for key in sorted(set(expected) - set(keys)):
            raise ValueError(f"{path}: missing tensor {key!r} that the model expects")
        for key in keys:
            if key not in params:
                raise ValueError(f"{path}: unexpected tensor {key!r}: the model has no such parameter")
            tensor = f.get_tensor(key)
            if tuple(tensor.shape) != tuple(params[key].shape):
                raise ValueError(f"{path}: shape mismatch for {key!r}: checkpoint {tuple(tensor.shape)}, "
                                 f"model {tuple(params[key].shape)}")
        with torch.no_grad():
            for key in keys:
                params[key].copy_(f.get_tensor(key))
    return keys
