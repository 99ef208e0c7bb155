"""Scaling rules (lora: alpha / r, rslora: alpha / sqrt(r)) and the effective step logged with every run."""
from __future__ import annotations

import copy
import json
import math

import pytest
import torch
from torch import nn

from molre_lib.adapters import MoLREConfig, adapter_layers, effective_step, inject
from molre_lib.engine.build import apply_adapter
from molre_lib.engine.config import TrainConfig
from molre_lib.engine.run_files import scaling_summary

peft = pytest.importorskip("peft")


class Blocks(nn.Module):
    """Three blocks of (qkv, proj) and a head: the layers a ViT adapter targets."""

    def __init__(self) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(nn.ModuleDict({"qkv": nn.Linear(12, 36), "proj": nn.Linear(12, 12)})
                                    for _ in range(3))
        self.head = nn.Linear(12, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, T, 12) -> (N, 2)
        for b in self.blocks:
            x = x + b["proj"](b["qkv"](x)[..., :12])
        return self.head(x.mean(1))


def test_rslora_matches_peft_use_rslora_on_the_same_weights() -> None:
    torch.manual_seed(0)
    base = Blocks()
    ours = copy.deepcopy(base)
    inject(ours, MoLREConfig.lora(r=8, alpha=4, scaling_rule="rslora", target_modules=["qkv", "proj"]))
    ref = peft.get_peft_model(copy.deepcopy(base), peft.LoraConfig(r=8, lora_alpha=4, use_rslora=True,
                                                                   target_modules=["qkv", "proj"]))
    ref_modules = dict(ref.base_model.model.named_modules())
    torch.manual_seed(1)
    for layer in adapter_layers(ours):
        nn.init.normal_(layer.lora_B.weight, std=0.1)  # B = 0 at init would hide any scale
        peft_layer = ref_modules[layer.layer_name]
        assert peft_layer.scaling["default"] == pytest.approx(layer.scaling) == pytest.approx(4 / math.sqrt(8))
        with torch.no_grad():
            peft_layer.lora_A["default"].weight.copy_(layer.lora_A.weight)
            peft_layer.lora_B["default"].weight.copy_(layer.lora_B.weight)
    x = torch.randn(2, 5, 12)
    torch.testing.assert_close(ours(x), ref(x), rtol=1e-5, atol=1e-6)
    # and the 'lora' rule is a different model on the same weights (the rule is not ignored)
    plain = copy.deepcopy(ours)
    for layer in adapter_layers(plain):
        layer.scaling = MoLREConfig.lora(r=8, alpha=4).scaling
    assert not torch.allclose(plain(x), ref(x))


@pytest.mark.parametrize("adapter", ["lora", "molre"])
def test_rslora_reaches_every_adapted_layer_from_the_train_config(adapter: str) -> None:
    cfg = TrainConfig(manifest="m.csv", adapter=adapter, rank=4, n_experts=4, lora_alpha=6.0, scaling="rslora",
                      target_modules=["qkv", "proj"])
    model = apply_adapter(Blocks(), cfg)
    layers = adapter_layers(model)
    assert len(layers) == 6  # 3 blocks x (qkv, proj)
    assert {(layer.cfg.scaling_rule, layer.scaling) for layer in layers} == {("rslora", 6.0 / 2.0)}
    assert "(rslora)" in repr(model)


def test_effective_step_arithmetic() -> None:
    # LoRA r=8 at alpha = 2r: s = 2; MoLRE 4 x r=2 at alpha = 2r: s = 2 but each expert's gate is 1/4 on average
    assert effective_step(1e-3, 16, 8) == pytest.approx(2e-3)
    assert effective_step(1e-3, 4, 2, n_experts=4) == pytest.approx(5e-4)
    assert effective_step(1e-3, 16, 2, n_experts=4) == pytest.approx(2e-3)  # alpha = E x 2r: LoRA's step again
    assert effective_step(1e-3, 4, 8, rule="rslora") == pytest.approx(1e-3 * 4 / math.sqrt(8))
    with pytest.raises(ValueError, match="rslora"):
        effective_step(1e-3, 4, 8, rule="rs")


def test_run_config_records_the_scale_and_effective_step() -> None:
    molre = TrainConfig(manifest="m.csv", adapter="molre", rank=2, n_experts=4, lr=0.005, scaling="rslora")
    doc = json.loads(json.dumps(scaling_summary(molre)))  # what config.json holds
    assert doc["rule"] == "rslora" and doc["alpha"] == 4.0 and doc["n_experts"] == 4
    assert doc["scale"] == pytest.approx(4.0 / math.sqrt(2))
    assert doc["effective_step"] == pytest.approx(0.005 * 4.0 / math.sqrt(2) / 4)
    lora = scaling_summary(TrainConfig(manifest="m.csv", adapter="lora", rank=8, n_experts=4, lr=0.005))
    assert lora["n_experts"] == 1 and lora["effective_step"] == pytest.approx(0.01)  # n_experts ignored by LoRA
    probe = scaling_summary(TrainConfig(manifest="m.csv", adapter="linear_probe", lr=0.005))
    assert probe["effective_step"] is None and probe["lr"] == 0.005


def test_unknown_scaling_rule_is_refused_naming_the_choices() -> None:
    with pytest.raises(ValueError, match="scaling.*'lora' or 'rslora'"):
        TrainConfig(manifest="m.csv", scaling="rs_lora")
    with pytest.raises(ValueError, match="scaling_rule"):
        MoLREConfig(scaling_rule="sqrt")


def test_01_train_scaling_parameter_reaches_the_phantom_vit_layers() -> None:
    from molre_lib.engine.build import build_model
    from molre_lib.workbook.params import ParameterError, check_parameters, train_config
    from tests.workbook.test_notebooks import NOTEBOOKS, _parameters_cell

    params = {**_parameters_cell(NOTEBOOKS / "01_train.ipynb"), "REDUCED": True, "PRETRAINED": False, "RANK": 4}
    model = build_model(train_config(check_parameters("01_train", {**params, "SCALING": "rslora", "LORA_ALPHA": 6.0})))
    assert {layer.scaling for layer in adapter_layers(model)} == {3.0}  # 6 / sqrt(4)
    with pytest.raises(ParameterError, match="SCALING='rs_lora'.*did you mean 'rslora'"):
        check_parameters("01_train", {**params, "SCALING": "rs_lora"})
