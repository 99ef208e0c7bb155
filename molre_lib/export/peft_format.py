"""``molre export RUN --format peft``: a LoRA run as a PEFT adapter folder that ``PeftModel.from_pretrained`` loads.

Files: ``adapter_config.json`` (a PEFT ``LoraConfig``: r, lora_alpha, use_rslora for the rslora scaling rule,
``target_modules`` a regex matching exactly the adapted layers, the trained head in ``modules_to_save``),
``adapter_model.safetensors`` (PEFT's key names: ``base_model.model.<module>.lora_A.weight`` ...; the head's tensors
as ``base_model.model.<module>.<tensor>``), ``molre_run.json`` (what :func:`peft_base_model` rebuilds the base model
from) and the model card ``README.md``.

The workbook's LoRA layer is PEFT's: ``y = W x + s * B A x`` with ``s = alpha / r`` (``alpha / sqrt(r)`` with
rslora), ``A`` (r, d_in) / ``B`` (d_out, r) for a Linear, and for a convolution ``A`` with the base kernel and ``B``
1x1. So the tensors are copied unchanged. A MoLRE run has no PEFT equivalent (PEFT has no mixture-of-experts LoRA
type; the router-weighted update is not one low-rank matrix) and is refused.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file

from .run_info import ExportError, RunInfo

PREFIX = "base_model.model."
RUN_FILE = "molre_run.json"


def target_regex(adapted: list[str]) -> str:
    """A regex PEFT full-matches against module names that selects exactly ``adapted`` (no suffix surprises:
    the list ``["qkv", "proj"]`` would also catch ``patch_embed.proj``)."""
    return "^(?:" + "|".join(re.escape(n) for n in adapted) + ")$"


def _refuse(info: RunInfo) -> None:
    if info.cfg.adapter == "molre" and (info.molre_config or {}).get("n_experts", 1) > 1:
        raise ExportError(f"{info.run_dir}: --format peft cannot hold a MoLRE run: PEFT has no mixture-of-low-rank-"
                          "experts adapter type and the router-weighted update is not one LoRA matrix; export it with "
                          "--format monai-bundle, or share the run folder's adapter.safetensors (molre_lib native)")
    if info.cfg.adapter != "lora" and info.cfg.adapter != "molre":
        raise ExportError(f"{info.run_dir}: --format peft needs a LoRA run; this run is {info.cfg.adapter!r} (no "
                          "low-rank adapters); export it with --format monai-bundle")


def adapter_config(info: RunInfo) -> dict[str, Any]:
    """PEFT LoraConfig fields for the run (PEFT fills every other field with its default)."""
    from molre_lib.backbones import get_spec

    mc = info.molre_config or {}
    return {
        "peft_type": "LORA", "task_type": None, "base_model_name_or_path": get_spec(info.cfg.backbone).hub_id,
        "r": int(mc["r"]), "lora_alpha": float(mc["alpha"]), "lora_dropout": float(mc.get("dropout", 0.0)),
        "use_rslora": mc.get("scaling_rule", "lora") == "rslora", "bias": "none", "fan_in_fan_out": False,
        "target_modules": target_regex(info.adapter_meta["adapted"]),
        "modules_to_save": list(info.adapter_meta["extra"]), "init_lora_weights": True, "inference_mode": True,
    }


def write_peft(info: RunInfo, out: Path, include_backbone: bool) -> dict[str, str]:
    """Write the PEFT adapter folder into ``out``; returns {file: what it is}."""
    from .model_card import model_card

    _refuse(info)
    if include_backbone:
        raise ExportError("--include-backbone applies to --format monai-bundle only: a PEFT adapter is loaded onto a "
                          "base model the receiver builds (peft_base_model)")
    state = load_file(str(info.run_dir / "adapter.safetensors"))
    out.mkdir(parents=True, exist_ok=True)
    save_file({PREFIX + k: v.contiguous() for k, v in state.items()}, str(out / "adapter_model.safetensors"),
              metadata={"format": "pt"})
    (out / "adapter_config.json").write_text(json.dumps(adapter_config(info), indent=2))
    (out / RUN_FILE).write_text(json.dumps({"config": info.config, "adapter": info.adapter_meta}, indent=2))
    files = {"adapter_config.json": "PEFT LoraConfig (target_modules: a regex of exactly the adapted layers)",
             "adapter_model.safetensors": f"LoRA A / B and the trained head ({len(state)} tensors, PEFT key names)",
             RUN_FILE: "the run's configuration: what peft_base_model rebuilds the base model from",
             "README.md": "this model card"}
    (out / "README.md").write_text(model_card(info, "peft", HOW_TO_USE, files))
    return files


HOW_TO_USE = """\
```python
from peft import PeftModel
from molre_lib.export import peft_base_model

base = peft_base_model("EXPORT_DIR")          # the frozen backbone + an untrained head, from the registry
model = PeftModel.from_pretrained(base, "EXPORT_DIR").eval()
logits = model(x)                             # x: (B, C, D, H, W) CT windows in [0, 1], as molre_lib's dataset gives
```

`peft_base_model` needs molre_lib and the backbone's weights where the run found them (or `weights=PATH`)."""


def peft_base_model(export_dir: str | Path, weights: str | None = None):
    """The base model a PEFT export loads onto: the run's backbone from the registry and an untrained head,
    without adapters (``PeftModel.from_pretrained(peft_base_model(d), d)``)."""
    from molre_lib.backbones import create_model
    from molre_lib.engine.build import seed_everything
    from molre_lib.engine.config import TrainConfig

    run = json.loads((Path(export_dir) / RUN_FILE).read_text())
    cfg = TrainConfig.from_dict(run["config"]["train"])
    seed_everything(cfg.seed)  # a random-init (pretrained=False) backbone is rebuilt as it was trained
    return create_model(cfg.backbone, num_classes=int(run["config"].get("n_classes", 75)),
                        weights=weights or cfg.weights, pretrained=cfg.pretrained, reduced=cfg.reduced).eval()
