"""Adapter benchmark: fused experts vs a per-expert loop, MoLRE vs LoRA training step, parameter overhead.

Every ratio is measured side by side in this one run (CPU; also CUDA with bf16 autocast when a GPU
is present). Prints a table and writes benchmarks/results/adapters.json.

    python benchmarks/adapters.py [--quick]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

from molre_lib.adapters import MoLREConfig, inject, mark_trainable, parameter_report
from molre_lib.adapters.layer import MoLRELinear

RESULTS = Path(__file__).resolve().parent / "results" / "adapters.json"
VIT_TARGETS = r"blocks\.\d+\.attn\.(qkv|proj)"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timeit(fns: dict, device: torch.device, repeats: int, warmup: int = 2) -> dict[str, float]:
    """Median seconds of each ``fns[name]()``, run round-robin so load on the machine hits all alike."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    _sync(device)
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            _sync(device)
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(t) for name, t in times.items()}


class LoopMoLRE(nn.Module):
    """Reference: the same MoLRE update computed expert by expert (what the fused layer avoids)."""

    def __init__(self, fused: MoLRELinear) -> None:
        super().__init__()
        self.base_layer, self.router, self.scaling, r = fused.base_layer, fused.router, fused.scaling, fused.r
        e = fused.n_experts
        self.A = nn.ModuleList(nn.Linear(fused.lora_A.in_features, r, bias=False) for _ in range(e))
        self.B = nn.ModuleList(nn.Linear(r, fused.lora_B.out_features, bias=False) for _ in range(e))
        with torch.no_grad():
            for i in range(e):
                self.A[i].weight.copy_(fused.lora_A.weight[i * r:(i + 1) * r])
                self.B[i].weight.copy_(fused.lora_B.weight[:, i * r:(i + 1) * r])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gates = self.router.forward_linear(x)  # (N, T, E)
        out = self.base_layer(x)
        for i, (a, b) in enumerate(zip(self.A, self.B)):
            out = out + self.scaling * gates[..., i:i + 1] * b(a(x))
        return out


def fused_vs_loop(device: torch.device, repeats: int, dtype=None) -> dict:
    torch.manual_seed(0)
    d, tokens, e, r = 768, 4096, 8, 4
    fused = MoLRELinear(nn.Linear(d, d), MoLREConfig(r=r, n_experts=e, target_modules=["x"])).to(device)
    nn.init.normal_(fused.lora_B.weight, std=0.02)
    loop = LoopMoLRE(fused).to(device)
    x = torch.randn(1, tokens, d, device=device)
    with torch.no_grad():
        torch.testing.assert_close(fused(x), loop(x), rtol=1e-3, atol=1e-4)

    def step(module):
        def run():
            with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                y = module(x)
            y.float().sum().backward()
        return run

    t = timeit({"fused": step(fused), "loop": step(loop)}, device, repeats)
    t_fused, t_loop = t["fused"], t["loop"]
    return {"fused_s": t_fused, "loop_s": t_loop, "fused_vs_loop_speedup": t_loop / t_fused,
            "shape": {"d": d, "tokens": tokens, "n_experts": e, "r": r}}


def _vit(name: str, device: torch.device, num_classes: int = 75):
    import timm

    return timm.create_model(name, pretrained=False, num_classes=num_classes).to(device)


def step_ratio(device: torch.device, repeats: int, batch: int, dtype=None, model_name="vit_small_patch16_224") -> dict:
    x = torch.randn(batch, 3, 224, 224, device=device)
    y = torch.randint(0, 2, (batch, 75), device=device).float()
    setups = {
        "lora_r16": MoLREConfig.lora(r=16, target_modules=VIT_TARGETS),
        "molre_e4_r4": MoLREConfig(r=4, n_experts=4, alpha=8, target_modules=VIT_TARGETS),
        "molre_e4_r4_shared_a": MoLREConfig(r=4, n_experts=4, alpha=8, shared_a=True, target_modules=VIT_TARGETS),
        "linear_probe": None,
    }
    def make_step(cfg):
        torch.manual_seed(0)
        model = _vit(model_name, device)
        if cfg is None:
            mark_trainable(model, ("head",))
        else:
            inject(model, cfg, trainable=("head",))
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)

        def train_step():
            opt.zero_grad(set_to_none=True)
            with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                logits = model(x)
            loss = nn.functional.binary_cross_entropy_with_logits(logits.float(), y)
            loss.backward()
            opt.step()

        return train_step

    times = timeit({name: make_step(cfg) for name, cfg in setups.items()}, device, repeats, warmup=1)
    out = {f"{name}_step_s": t for name, t in times.items()}
    out["molre_vs_lora_step_ratio"] = out["molre_e4_r4_step_s"] / out["lora_r16_step_s"]
    out["molre_shared_a_vs_lora_step_ratio"] = out["molre_e4_r4_shared_a_step_s"] / out["lora_r16_step_s"]
    out["linear_probe_vs_lora_step_ratio"] = out["linear_probe_step_s"] / out["lora_r16_step_s"]
    out["setup"] = {"model": model_name, "img": 224, "batch": batch, "targets": "qkv + proj"}
    return out


def added_params() -> dict:
    import timm

    rows = {}
    for name, cfg in {
        "lora_r8": MoLREConfig.lora(r=8, target_modules=VIT_TARGETS),
        "molre_e4_r2": MoLREConfig(r=2, n_experts=4, target_modules=VIT_TARGETS),
        "molre_e8_r2": MoLREConfig(r=2, n_experts=8, target_modules=VIT_TARGETS),
        # Experts sharing one A (r x d_in) and keeping their own B_e: r*d_in + E*r*d_out per layer.
        "molre_e4_r2_shared_a": MoLREConfig(r=2, n_experts=4, shared_a=True, target_modules=VIT_TARGETS),
        "molre_e8_r2_shared_a": MoLREConfig(r=2, n_experts=8, shared_a=True, target_modules=VIT_TARGETS),
        # For reference: the same E=4, r=2 on the fused qkv projection only.
        "molre_e4_r2_qkv_only": MoLREConfig(r=2, n_experts=4, target_modules=r"blocks\.\d+\.attn\.qkv"),
    }.items():
        with torch.device("meta"):
            model = timm.create_model("vit_base_patch16_224", pretrained=False, num_classes=0)
        inject(model, cfg, trainable=())
        rep = parameter_report(model, head=())
        rows[name] = {"backbone": rep.backbone, "adapters": rep.adapters, "routers": rep.routers,
                      "added_params_pct": rep.pct_added}
    return rows


def added_params_registry() -> dict:
    """Added parameters (% of the encoder) for every registry backbone at its default adapter targets."""
    from molre_lib.backbones import list_backbones
    from molre_lib.backbones.factory import build_encoder

    rows = {}
    for spec in list_backbones():
        rows[spec.name] = {}
        for name, kwargs in {"lora_r8": dict(r=8, n_experts=1, alpha=16),
                             "molre_e4_r2": dict(r=2, n_experts=4),
                             "molre_e4_r2_shared_a": dict(r=2, n_experts=4, shared_a=True)}.items():
            holder = nn.Module()  # module names as in HeadCTModel ("encoder.*"), which the targets are anchored at
            with torch.device("meta"):
                holder.encoder = build_encoder(spec.name, None, False).module
            inject(holder, MoLREConfig(target_modules=spec.target_modules, **kwargs), trainable=())
            rows[spec.name][name] = parameter_report(holder, head=()).pct_added
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer repeats (smoke run)")
    args = parser.parse_args()
    repeats = 3 if args.quick else 7
    results: dict = {
        "torch": torch.__version__, "python": platform.python_version(), "machine": platform.machine(),
        "threads": torch.get_num_threads(), "load_average_1min": os.getloadavg()[0], "devices": {},
    }
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    for device in devices:
        dtype = torch.bfloat16 if device.type == "cuda" else None
        res = {"fused_vs_loop": fused_vs_loop(device, repeats, dtype)}
        res["train_step_vit_s16"] = step_ratio(device, repeats, batch=8, dtype=dtype)
        if device.type == "cuda":
            res["device_name"] = torch.cuda.get_device_name(device)
            res["train_step_vit_b16"] = step_ratio(device, repeats, batch=32, dtype=dtype,
                                                   model_name="vit_base_patch16_224")
        results["devices"][device.type] = res
    results["added_params_vit_b16"] = added_params()
    results["added_params_pct_registry"] = added_params_registry()

    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2))
    print(f"{'metric':<48}{'device':<8}{'value':>10}")
    for dev, res in results["devices"].items():
        print(f"{'fused_vs_loop_speedup (E=8,r=4,d=768,4096 tok)':<48}{dev:<8}{res['fused_vs_loop']['fused_vs_loop_speedup']:>10.2f}")
        ts = res["train_step_vit_s16"]
        print(f"{'molre_vs_lora_step_ratio (ViT-S/16, b=8)':<48}{dev:<8}{ts['molre_vs_lora_step_ratio']:>10.3f}")
        print(f"{'molre_shared_a_vs_lora_step_ratio':<48}{dev:<8}{ts['molre_shared_a_vs_lora_step_ratio']:>10.3f}")
        print(f"{'linear_probe_vs_lora_step_ratio':<48}{dev:<8}{ts['linear_probe_vs_lora_step_ratio']:>10.3f}")
        print(f"{'  LoRA r=16 step (s)':<48}{dev:<8}{ts['lora_r16_step_s']:>10.3f}")
    for name, row in results["added_params_vit_b16"].items():
        print(f"{'added_params_pct ViT-B/16 ' + name:<48}{'meta':<8}{row['added_params_pct']:>10.3f}")
    print(f"\n{'added % of encoder, default targets':<36}{'LoRA r8':>10}{'E4 r2':>10}{'E4 r2 shared A':>16}")
    for name, row in results["added_params_pct_registry"].items():
        print(f"{name:<36}{row['lora_r8']:>10.3f}{row['molre_e4_r2']:>10.3f}{row['molre_e4_r2_shared_a']:>16.3f}")
    print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
