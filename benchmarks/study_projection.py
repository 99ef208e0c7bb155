"""Study projection: what the six-backbone study costs on an H200, and how many CPU cores keep it fed.

For every registry backbone at its real input (2D: ``--slices`` axial slices of its H x W, the study's 32 by
default; 3D: its volume), with the study's MoLRE adapter (4 experts x r=2, shared A, token router):

* parameters (encoder) and the adapter's added share;
* FLOPs per scan of one training step, forward + backward, counted by ``torch.utils.flop_counter`` on fake
  tensors (no memory, no weights; frozen weights get no weight gradients, so backward is about 1x forward);
* projected scans/s on one H200 at ``--mfu`` (40%) of its dense bf16 peak (989 TFLOP/s);
* loader scans/s needed (= that rate) against the measured loader rate per core from
  ``benchmarks/results/data_pipeline.json`` (cached int16 read + windows; cold JPEG 2000 decode + fit): the
  cores needed to keep the GPU fed, with and without ``molre preprocess``;
* hours per epoch of ``--scans`` (70,000) training scans, and GPU-hours of ``notebooks/sweeps/study.yaml`` as
  written (its epochs x adapters x seeds; validation passes not counted);
* ESTIMATED peak GPU memory at the study's batch size (no GPU measured it here): fp32 weights + the bytes of
  every tensor autograd saves for backward in a bf16 forward on fake tensors (deduplicated by storage), for
  the whole batch and, for 2D backbones with gradient checkpointing, for one chunk of slices, plus trainable
  weights' gradients and AdamW state. Transient workspace (attention matrices not saved, cuDNN) is not in it:
  treat the figure as a lower bound and check it with ``make gpu-check`` when a GPU is lent.

Writes benchmarks/results/study_projection.json and prints the markdown table of the README.

    python benchmarks/study_projection.py [--slices 32] [--mfu 0.4]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
H200_BF16_DENSE = 989e12          # FLOP/s, NVIDIA H200 SXM datasheet (dense, no sparsity)
GPU_MEMORY_GIB = 141 * 1e9 / 2**30  # H200: 141 GB HBM3e
STUDY_ADAPTER = dict(r=2, n_experts=4, alpha=4.0, shared_a=True, router="token")


def study() -> dict:
    import yaml

    return yaml.safe_load((ROOT / "notebooks" / "sweeps" / "study.yaml").read_text())


def build(name: str, dtype: torch.dtype, **overrides) -> nn.Module:
    """The full-size model with the study's MoLRE, on fake tensors: call inside ``fake()``."""
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)                             # parameters are created in dtype on meta
    try:
        model = build_meta(name, **overrides)
    finally:
        torch.set_default_dtype(default)
    with fake():
        return model.to_empty(device="cpu").train()


def build_meta(name: str, **overrides) -> nn.Module:
    from molre_lib.adapters import MoLREConfig, inject
    from molre_lib.backbones import create_model

    with torch.device("meta"):                                  # built without memory, then given fake storage
        model = create_model(name, **overrides)
        inject(model, MoLREConfig(target_modules=model.spec.target_modules, **STUDY_ADAPTER),
               trainable=model.trainable_modules)
    return model


def fake():
    """Tensors with shapes and devices but no memory: full-size models cost nothing here."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    return FakeTensorMode(allow_non_fake_inputs=True)


def input_shape(spec, slices: int) -> tuple[int, int, int, int]:
    """(C, D, H, W) of one scan as the study feeds it."""
    dhw = (slices, *spec.input_size) if spec.dims == 2 else tuple(spec.input_size)
    return (spec.in_chans, *dhw)  # type: ignore[return-value]


def flops_per_scan(name: str, shape) -> tuple[float, float]:
    """(forward, forward + backward) FLOPs of one scan, MoLRE in place, counted on fake tensors."""
    model = build(name, torch.float32)
    with fake():
        return _count(model, torch.zeros(1, *shape))


def _count(model: nn.Module, x: torch.Tensor) -> tuple[float, float]:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as fwd:
        logits = model(x)
    with FlopCounterMode(display=False) as both:
        logits = model(x)
        logits.float().sum().backward()
    return float(fwd.get_total_flops()), float(both.get_total_flops())


def saved_bytes(model: nn.Module, x: torch.Tensor) -> int:
    """Bytes of the distinct storages autograd saves for backward in one forward (fake tensors)."""
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor):
        s = t.untyped_storage()
        seen[s._cdata] = max(seen.get(s._cdata, 0), s.nbytes())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(x)
    return sum(seen.values())


def memory_estimate(name: str, shape, batch: int) -> dict:
    """Estimated peak GiB at ``batch`` scans per GPU step: weights + saved activations + trainable state."""
    model = build(name, torch.bfloat16)
    with fake():
        return _memory(model, shape, batch)


def _memory(model: nn.Module, shape, batch: int) -> dict:
    n_all = sum(p.numel() for p in model.parameters())
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    static = 4 * n_all + 4 * 3 * n_train                       # fp32 weights; grads + AdamW m, v of trainable ones
    act1 = saved_bytes(model, torch.zeros(1, *shape, dtype=torch.bfloat16))
    out = {"weights_and_state_gib": static / 2**30, "saved_activations_gib_per_scan": act1 / 2**30,
           "peak_gib_estimate": (static + batch * act1) / 2**30}
    if model.spec.dims == 2:                                   # gradient checkpointing: one chunk live at a time
        chunk = getattr(model, "chunk_size", 16)
        one_chunk = saved_bytes(model, torch.zeros(1, shape[0], chunk, *shape[2:], dtype=torch.bfloat16))
        kept = batch * shape[1] * 2 * shape[0] * shape[2] * shape[3]    # each chunk's bf16 input is kept
        out["chunk_size"] = chunk
        out["peak_gib_estimate_checkpointing"] = (static + one_chunk + kept) / 2**30
    return out


def loader_rates() -> dict:
    path = RESULTS / "data_pipeline.json"
    return json.loads(path.read_text()) if path.exists() else {}


def rate_for(rates: dict, shape, key: str) -> float | None:
    """Measured scans/s per core for this (D, H, W) input (``key``: 'cached' or 'cold_jpeg2000'): from CPU
    seconds when the CPU probe ran (shared, loaded cores inflate wall time), else from wall time."""
    dhw = "x".join(str(s) for s in shape[1:])
    probe = rates.get("cpu_probe", {}).get(dhw)
    if probe is not None:
        return probe.get(f"{key}_cpu_scans_per_s_per_core")
    per = rates.get("per_input", {}).get(dhw)
    return None if per is None else per.get(f"{key}_scans_per_s_per_core")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--slices", type=int, default=32, help="axial slices per scan for 2D backbones")
    parser.add_argument("--mfu", type=float, default=0.4, help="fraction of the bf16 dense peak reached")
    parser.add_argument("--scans", type=int, default=70_000, help="training scans per epoch")
    parser.add_argument("--backbones", default=None, help="comma-separated (default: every registry backbone)")
    parser.add_argument("--out", default=str(RESULTS / "study_projection.json"), help="result JSON")
    parser.add_argument("--rates-only", action="store_true",
                        help="keep the FLOPs / memory of the last study_projection.json, redo the loader columns from "
                             "the latest data_pipeline.json and print the table")
    args = parser.parse_args()
    if args.rates_only:
        return rates_only()

    from molre_lib.adapters import parameter_report
    from molre_lib.backbones import get_spec, list_backbones

    plan = study()
    grid, params = plan["grid"], plan["parameters"]
    runs_per_backbone = len(grid["ADAPTER"]) * len(grid["SEED"])
    batch_of = {b: (plan.get("overrides", {}).get("BACKBONE", {}).get(b, {}) or {}).get("BATCH_SIZE",
                                                                                         params["BATCH_SIZE"])
                for b in grid["BACKBONE"]}
    names = args.backbones.split(",") if args.backbones else [s.name for s in list_backbones()]
    rates = loader_rates()
    rows: list[dict] = []
    result = {"machine": {"python": sys.version.split()[0], "torch": torch.__version__,
                          "platform": platform.platform(), "cpus": len(os.sched_getaffinity(0)),
                          "load_avg_1m": os.getloadavg()[0]},
              "assumptions": {"gpu": "H200", "bf16_dense_flops": H200_BF16_DENSE, "mfu": args.mfu,
                              "slices_2d": args.slices, "scans_per_epoch": args.scans, "adapter": STUDY_ADAPTER,
                              "study_epochs": params["EPOCHS"], "study_runs_per_backbone": runs_per_backbone,
                              "memory": "ESTIMATE from saved activations on fake tensors (bf16 model), not measured",
                              "loader_rates_from": "benchmarks/results/data_pipeline.json" if rates else None},
              "backbones": rows}
    for name in names:
        spec = get_spec(name)
        shape = input_shape(spec, args.slices)
        fwd, step = flops_per_scan(name, shape)
        added = parameter_report(build_meta(name), head=("aggregator", "head_norm", "head")).pct_added
        gpu_rate = args.mfu * H200_BF16_DENSE / step
        row = {"backbone": name, "family": spec.family, "input_cdhw": list(shape), "params_m": spec.n_params / 1e6,
               "molre_added_pct": added, "gflop_forward_per_scan": fwd / 1e9, "tflop_step_per_scan": step / 1e12,
               "h200_scans_per_s": gpu_rate, "epoch_hours_70k": args.scans / gpu_rate / 3600}
        add_loader_columns(row, rates)
        if name in grid["BACKBONE"]:
            row["study_batch"] = batch_of[name]
            row["study_gpu_hours"] = runs_per_backbone * params["EPOCHS"] * row["epoch_hours_70k"]
            row["memory"] = memory_estimate(name, shape, batch_of[name])
        rows.append(row)
        result["study_gpu_hours_total"] = sum(r.get("study_gpu_hours", 0.0) for r in rows)
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")  # after every row: partial runs count
        print(f"{name}: {step / 1e12:.2f} TFLOP/scan step, {gpu_rate:.0f} scans/s", flush=True)
    print(markdown(rows, result))
    return 0


def add_loader_columns(row: dict, rates: dict) -> None:
    """Cores that keep the projected GPU rate fed, from the measured loader rates per core."""
    gpu_rate, shape = row["h200_scans_per_s"], row["input_cdhw"]
    cached, cold = rate_for(rates, shape, "cached"), rate_for(rates, shape, "cold_jpeg2000")
    row["loader_cached_scans_per_s_per_core"] = cached
    row["cores_to_feed_cached"] = None if not cached else gpu_rate / cached
    row["loader_cold_j2k_scans_per_s_per_core"] = cold
    row["cores_to_feed_cold_j2k"] = None if not cold else gpu_rate / cold


def rates_only() -> int:
    path = RESULTS / "study_projection.json"
    result = json.loads(path.read_text())
    rates = loader_rates()
    for row in result["backbones"]:
        add_loader_columns(row, rates)
    result["assumptions"]["loader_rates_from"] = "benchmarks/results/data_pipeline.json" if rates else None
    result["loader_load_avg_1m"] = rates.get("machine")
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(markdown(result["backbones"], result))
    return 0


def _f(v, fmt: str) -> str:
    return "–" if v is None else format(v, fmt)


def markdown(rows: list[dict], result: dict) -> str:
    lines = ["| backbone | input C×D×H×W | params | MoLRE added | TFLOP / scan (fwd+bwd) | H200 scans/s @40% | "
             "h / epoch (70k) | cores to feed: cached / cold J2K | study batch | est. peak GiB (ckpt) | "
             "study GPU-h |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        mem = r.get("memory")
        peak = "–" if mem is None else (f"{mem['peak_gib_estimate']:.0f}" + (
            f" ({mem['peak_gib_estimate_checkpointing']:.0f})" if "peak_gib_estimate_checkpointing" in mem else ""))
        lines.append(
            f"| {r['backbone']} | {'×'.join(map(str, r['input_cdhw']))} | {r['params_m']:.0f}M | "
            f"{r['molre_added_pct']:.2f}% | {r['tflop_step_per_scan']:.2f} | {r['h200_scans_per_s']:.0f} | "
            f"{r['epoch_hours_70k']:.2f} | {_f(r['cores_to_feed_cached'], '.1f')} / "
            f"{_f(r['cores_to_feed_cold_j2k'], '.0f')} | {r.get('study_batch', '–')} | {peak} | "
            f"{_f(r.get('study_gpu_hours'), '.0f')} |")
    lines.append(f"\nStudy total: {result['study_gpu_hours_total']:.0f} H200 GPU-hours (training only).")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
