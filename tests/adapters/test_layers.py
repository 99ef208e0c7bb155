"""Adapter core: MoLRE / LoRA layers, injection, routing, checkpoints (CPU, seconds)."""
from __future__ import annotations

import dataclasses

import copy

import pytest
import torch
from torch import nn

from molre_lib.adapters import (
    MoLREConfig,
    MoLREConv,
    MoLRELinear,
    balance_loss,
    inject,
    load_adapter,
    merge,
    parameter_report,
    routing_log,
    save_adapter,
    unmerge,
)

peft = pytest.importorskip("peft")


class Net(nn.Module):
    """A tiny model with each supported layer type and a head."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(12, 16)
        self.conv2 = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.conv3 = nn.Conv3d(2, 6, 3, stride=1, padding=1)
        self.head = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.fc(x)))


def _randomise_b(model: nn.Module) -> None:
    """B starts at zero; give it values so adapted outputs differ from the base."""
    torch.manual_seed(1)
    for name, p in model.named_parameters():
        if "lora_B" in name:
            nn.init.normal_(p, std=0.1)


INPUTS = {
    "fc": lambda: torch.randn(4, 5, 12),
    "conv2": lambda: torch.randn(2, 3, 9, 11),
    "conv3": lambda: torch.randn(2, 2, 5, 6, 7),
}


@pytest.mark.parametrize("target", ["fc", "conv2", "conv3"])
def test_lora_equals_peft(target: str) -> None:
    torch.manual_seed(0)
    base = Net()
    ours = copy.deepcopy(base)
    inject(ours, MoLREConfig.lora(r=4, alpha=8, target_modules=[target]))
    ref = peft.get_peft_model(copy.deepcopy(base), peft.LoraConfig(r=4, lora_alpha=8, target_modules=[target]))
    _randomise_b(ours)
    layer = ours.get_submodule(target)
    ref_layer = ref.base_model.model.get_submodule(target)
    with torch.no_grad():
        ref_layer.lora_A["default"].weight.copy_(layer.lora_A.weight)
        ref_layer.lora_B["default"].weight.copy_(layer.lora_B.weight)
    x = INPUTS[target]()
    torch.testing.assert_close(layer(x), ref_layer(x), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("shared_a", [False, True])
@pytest.mark.parametrize("router", ["token", "sample"])
@pytest.mark.parametrize("target", ["fc", "conv2", "conv3"])
def test_identity_at_init_and_fused_equals_expert_loop(target: str, router: str, shared_a: bool) -> None:
    torch.manual_seed(0)
    model = Net()
    base = copy.deepcopy(model.get_submodule(target))
    cfg = MoLREConfig(r=3, n_experts=4, alpha=6, router=router, shared_a=shared_a, target_modules=[target])
    inject(model, cfg)
    layer = model.get_submodule(target)
    x = INPUTS[target]()
    torch.testing.assert_close(layer(x), base(x))  # B = 0: exact identity
    _randomise_b(model)
    # Reference: explicit per-expert sum with the same gates.
    with routing_log(model) as log:
        y = layer(x)
    gates = log.concat(target)
    delta = torch.zeros_like(y)
    r = cfg.r
    for e in range(cfg.n_experts):
        a_w = layer.lora_A.weight if shared_a else layer.lora_A.weight[e * r:(e + 1) * r]  # shared: one A for all
        b_w = layer.lora_B.weight[:, e * r:(e + 1) * r]
        if isinstance(layer, MoLRELinear):
            out = (x @ a_w.T) @ b_w.T  # (N, T, d_out)
            g = gates[..., e:e + 1] if router == "token" else gates[:, e].view(-1, 1, 1)
        else:
            conv = nn.functional.conv2d if x.dim() == 4 else nn.functional.conv3d
            h = conv(x, a_w, stride=layer.base_layer.stride, padding=layer.base_layer.padding)
            out = conv(h, b_w)
            g = gates[..., e].unsqueeze(1) if router == "token" else gates[:, e].view(-1, *([1] * (x.dim() - 1)))
        delta = delta + g * out
    torch.testing.assert_close(y, base(x) + cfg.scaling * delta, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("router,target,shape", [
    ("token", "fc", (4, 5, 4)), ("sample", "fc", (4, 4)),
    ("token", "conv2", (2, 5, 6, 4)), ("sample", "conv2", (2, 4)),
    ("token", "conv3", (2, 5, 6, 7, 4)), ("sample", "conv3", (2, 4)),
])
def test_gate_shapes_sum_to_one_and_depend_on_input(router: str, target: str, shape: tuple) -> None:
    torch.manual_seed(0)
    model = Net()
    inject(model, MoLREConfig(r=2, n_experts=4, router=router, target_modules=[target]))
    layer = model.get_submodule(target)
    x = INPUTS[target]()
    with routing_log(model) as log:
        layer(x)
        layer(x * 3 + 1)
    assert log.layout[target] == (router if router == "sample" or target == "fc" else "spatial")
    first, second = log.gates[target]
    assert tuple(first.shape) == shape
    torch.testing.assert_close(first.sum(-1), torch.ones(shape[:-1]))
    assert not torch.allclose(first, second)
    assert layer._routing_log is None  # the context manager detaches itself


def test_top_k_zeroes_all_but_k() -> None:
    model = Net()
    inject(model, MoLREConfig(r=2, n_experts=6, top_k=2, target_modules=["fc"]))
    with routing_log(model) as log:
        model(torch.randn(3, 7, 12))
    gates = log.concat("fc")
    assert ((gates > 0).sum(-1) == 2).all()
    torch.testing.assert_close(gates.sum(-1), torch.ones(gates.shape[:-1]))


def test_only_adapters_routers_and_head_get_gradients() -> None:
    torch.manual_seed(0)
    model = Net()
    report = inject(model, MoLREConfig(r=2, n_experts=3, target_modules=["fc"]))
    _randomise_b(model)
    model(torch.randn(2, 4, 12)).sum().backward()
    got = {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert got == {"fc.lora_A.weight", "fc.lora_B.weight", "fc.router.gate.weight", "fc.router.gate.bias",
                   "head.weight", "head.bias"}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == got
    assert report.adapted == ["fc"]
    p = report.params
    assert p.adapters == 2 * 3 * (12 + 16) and p.routers == 12 * 3 + 3 and p.head == 16 * 3 + 3
    assert p.backbone == sum(x.numel() for x in Net().parameters()) - p.head
    assert p.trainable == p.adapters + p.routers + p.head


def test_repr_state_dict_and_isinstance_show_adapters() -> None:
    model = Net()
    inject(model, MoLREConfig(r=2, n_experts=2, target_modules=r"conv\d"))
    assert isinstance(model.conv2, MoLREConv) and isinstance(model.conv3, MoLREConv)
    assert "MoLREConv" in repr(model)
    assert "conv2.base_layer.weight" in model.state_dict() and "conv3.lora_A.weight" in model.state_dict()
    assert model.conv2.weight is model.conv2.base_layer.weight


def test_save_load_round_trip_and_mismatch_errors(tmp_path) -> None:
    torch.manual_seed(0)
    cfg = MoLREConfig(r=2, n_experts=3, target_modules=["fc", "conv2"])
    model = Net()
    inject(model, cfg)
    _randomise_b(model)
    nn.init.normal_(model.head.weight)
    path = save_adapter(model, tmp_path / "adapter.safetensors")
    fresh = Net()
    fresh.load_state_dict({k: v for k, v in Net().state_dict().items()})  # other base init is fine: backbone not saved
    fresh.fc.load_state_dict(model.fc.base_layer.state_dict())
    fresh.conv2.load_state_dict(model.conv2.base_layer.state_dict())
    inject(fresh, cfg)
    loaded = load_adapter(fresh, path)
    assert "head.weight" in loaded and not any("base_layer" in k for k in loaded)
    x = torch.randn(2, 3, 12)
    torch.testing.assert_close(fresh(x), model(x))

    other = Net()
    inject(other, MoLREConfig(r=4, n_experts=3, target_modules=["fc", "conv2"]))
    with pytest.raises(ValueError, match=r"the checkpoint is MoLRE 3x2 alpha=8 \(token router\), the model is "
                                         r"MoLRE 3x4 alpha=8 \(token router\): r 2 vs 4; build the model"):
        load_adapter(other, path)
    separate = Net()
    inject(separate, MoLREConfig(r=2, n_experts=3, shared_a=True, target_modules=["fc", "conv2"]))
    with pytest.raises(ValueError, match=r"the model is MoLRE 3x2 alpha=8 \(shared A, token router\): shared_a False vs True"):
        load_adapter(separate, path)
    with pytest.raises(ValueError, match=r"shape mismatch for 'conv2.lora_A.weight': checkpoint \(6, 3, 3, 3\), model \(2, 3"):
        load_adapter(separate, path, strict_config=False)
    fewer = Net()
    inject(fewer, MoLREConfig(r=2, n_experts=3, target_modules=["fc"]))
    with pytest.raises(ValueError, match="target_modules"):
        load_adapter(fewer, path)
    with pytest.raises(ValueError, match="2 vs 1 adapted layers"):
        load_adapter(fewer, path, strict_config=False)
    missing = tmp_path / "nope.safetensors"
    with pytest.raises(FileNotFoundError, match="nope.safetensors"):
        load_adapter(fresh, missing)


def test_mismatch_names_adapter_type_rank_experts_and_backbone_of_both_sides(tmp_path) -> None:
    """The probe's case: a LoRA r=16 checkpoint of one backbone loaded into a MoLRE 4x4 model of another."""
    from molre_lib.backbones import create_model

    lora = create_model("phantom_vit", reduced=True, pretrained=False)
    inject(lora, MoLREConfig.lora(r=16, alpha=32, target_modules=r"encoder\.blocks\.\d+\.attn\.qkv"))
    path = save_adapter(lora, tmp_path / "adapter.safetensors", metadata={"backbone": "phantom_vit"})
    molre = create_model("phantom_vit", reduced=True, pretrained=False)
    molre.spec = dataclasses.replace(molre.spec, name="other_vit")
    inject(molre, MoLREConfig(r=4, n_experts=4, alpha=8, target_modules=r"encoder\.blocks\.\d+\.attn\.qkv"))
    with pytest.raises(ValueError) as info:
        load_adapter(molre, path)
    assert str(info.value) == (f"{path}: the checkpoint is LoRA r=16 alpha=32 on phantom_vit, the model is MoLRE 4x4 "
                               "alpha=8 (token router) on other_vit: backbone phantom_vit vs other_vit; build the model "
                               "with the checkpoint's settings (its run's config.json)")


def test_merge_unmerge_round_trip_and_molre_refuses() -> None:
    torch.manual_seed(0)
    for target in ("fc", "conv2", "conv3"):
        model = Net()
        inject(model, MoLREConfig.lora(r=4, target_modules=[target]))
        _randomise_b(model)
        layer = model.get_submodule(target)
        w0 = layer.base_layer.weight.clone()
        x = INPUTS[target]()
        y = layer(x)
        merge(model)
        torch.testing.assert_close(layer(x), y, rtol=1e-4, atol=1e-5)
        assert not torch.equal(layer.base_layer.weight, w0)
        unmerge(model)
        torch.testing.assert_close(layer.base_layer.weight, w0, rtol=0, atol=1e-6)
        torch.testing.assert_close(layer(x), y, rtol=1e-4, atol=1e-5)
    model = Net()
    inject(model, MoLREConfig(r=2, n_experts=2, target_modules=["fc"]))
    with pytest.raises(ValueError, match="routing|router"):
        merge(model)


def test_balance_loss_collected_in_one_call() -> None:
    model = Net()
    inject(model, MoLREConfig(r=2, n_experts=4, balance_coef=0.5, target_modules=["fc", "conv2"]))
    model.train()
    model(torch.randn(2, 3, 12))
    model.conv2(torch.randn(2, 3, 8, 8))
    aux = balance_loss(model)
    assert aux.requires_grad and 0 < aux.item() <= 0.5 * 4 * 2  # each layer term E * sum_e f_e P_e is in (0, E]
    assert balance_loss(model).item() == 0.0  # popped
    model.eval()
    model(torch.randn(2, 3, 12))
    assert balance_loss(model).item() == 0.0  # only recorded while training


@pytest.mark.parametrize("kwargs,field", [
    ({"r": 0}, "r"), ({"n_experts": 0}, "n_experts"), ({"router": "global"}, "router"),
    ({"temperature": 0}, "temperature"), ({"top_k": 5, "n_experts": 4}, "top_k"), ({"dropout": 1.0}, "dropout"),
    ({"target_modules": []}, "target_modules"), ({"balance_coef": -1}, "balance_coef"), ({"alpha": 0}, "alpha"),
    ({"shared_a": "yes"}, "shared_a"),
])
def test_bad_config_names_the_field(kwargs: dict, field: str) -> None:
    with pytest.raises(ValueError, match=f"MoLREConfig.{field}="):
        MoLREConfig(**kwargs)


def test_unknown_key_and_no_match_errors() -> None:
    with pytest.raises(ValueError, match="Unknown MoLREConfig key: 'rank'"):
        MoLREConfig.from_dict({"rank": 4})
    with pytest.raises(ValueError, match="matched no module"):
        inject(Net(), MoLREConfig(target_modules=["qkv"]))
    with pytest.raises(ValueError, match="FULL module name"):
        inject(Net(), MoLREConfig(target_modules="c"))  # a regex must match the whole name
    with pytest.raises(ValueError, match="is a ReLU"):
        inject(nn.Sequential(nn.Linear(2, 2), nn.ReLU()), MoLREConfig(target_modules=r"\d"), trainable=())
    with pytest.raises(ValueError, match="match no module"):
        inject(Net(), MoLREConfig(target_modules=["fc"]), trainable=("classifier",))
    model = Net()
    inject(model, MoLREConfig(target_modules=["fc"]))
    with pytest.raises(ValueError, match="already holds"):
        inject(model, MoLREConfig(target_modules=["fc"]))


def test_exclude_modules_and_regex_targets() -> None:
    model = Net()
    report = inject(model, MoLREConfig(target_modules=r"conv\d|fc", exclude_modules=["conv3"]))
    assert report.adapted == ["fc", "conv2"]


@pytest.mark.parametrize("target", ["fc", "conv2", "conv3"])
def test_shared_a_parameter_count_and_distinct_expert_gradients(target: str) -> None:
    sizes = {"fc": (12, 16, 1), "conv2": (3, 8, 9), "conv3": (2, 6, 27)}  # d_in, d_out, kernel volume
    d_in, d_out, k = sizes[target]
    e, r = 4, 2
    counts = {}
    for shared in (False, True):
        model = Net()
        report = inject(model, MoLREConfig(r=r, n_experts=e, shared_a=shared, target_modules=[target]))
        counts[shared] = report.params.adapters
        assert report.params.routers == e * d_in + e
    assert counts[False] == e * r * (d_in * k + d_out)
    assert counts[True] == r * d_in * k + e * r * d_out
    layer = model.get_submodule(target)
    assert tuple(layer.lora_A.weight.shape[:2]) == (r, d_in)
    assert "shared_a=True" in repr(layer)
    layer(INPUTS[target]()).sum().backward()
    grads = layer.lora_B.weight.grad.flatten(2).sum(-1) if layer.lora_B.weight.dim() > 2 else layer.lora_B.weight.grad
    per_expert = grads.unflatten(1, (e, r))  # (d_out, E, r): each expert's B_e gets its own gated gradient
    assert not torch.allclose(per_expert[:, 0], per_expert[:, 1])


def test_parameter_report_matches_manual_count() -> None:
    model = Net()
    before = parameter_report(model)
    assert before.adapters == 0 and before.routers == 0 and before.total == sum(p.numel() for p in model.parameters())


def test_dropout_path_equals_fused_path_in_eval() -> None:
    torch.manual_seed(0)
    plain, dropped = Net(), Net()
    dropped.load_state_dict(plain.state_dict())
    inject(plain, MoLREConfig(r=2, n_experts=3, target_modules=["fc"]))
    inject(dropped, MoLREConfig(r=2, n_experts=3, dropout=0.3, target_modules=["fc"]))
    _randomise_b(plain)
    dropped.load_state_dict(plain.state_dict())
    x = torch.randn(2, 5, 12)
    plain.eval(), dropped.eval()
    torch.testing.assert_close(dropped(x), plain(x))
    dropped.train()
    assert not torch.allclose(dropped(x), plain(x))


def test_balance_loss_with_gradient_checkpointing() -> None:
    from torch.utils.checkpoint import checkpoint

    torch.manual_seed(0)
    model = Net()
    inject(model, MoLREConfig(r=2, n_experts=4, balance_coef=0.1, target_modules=["fc"]))
    model.train()
    x = torch.randn(2, 3, 12)
    out = checkpoint(model.fc, x, use_reentrant=False)
    loss = out.sum() + balance_loss(model)
    loss.backward()  # recomputation must neither fail nor leave a stale term behind
    assert model.fc.lora_A.weight.grad is not None
    assert balance_loss(model).item() == 0.0
