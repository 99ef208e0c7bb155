"""The one-shot GPU check, for a session that is lent a GPU machine: run it once, read gpu.json.

    python benchmarks/gpu.py            # on the GPU machine: a few minutes on an H100
    python benchmarks/gpu.py --smoke    # tiny reduced models on this machine's device, to check the script runs

1. ``tests/test_devices.py``: adapters, registry models, training steps and Grad-CAM under bf16 autocast, on
   the CPU and on CUDA (pass / fail counts and the summary line are recorded).
2. bf16 training steps (forward + backward + AdamW) of real-size backbones with random weights:
   ViT-B/16 at 224 (``dinov3_vitb16``, batch 32) and MedSigLIP-448 (``medsiglip_448``, batch 8), each with
   LoRA r=16, MoLRE E=4 r=4 (separate and shared A) and a linear probe: median step time, peak memory, and
   the MoLRE / LoRA step ratio measured side by side (round-robin).
3. The slice encoder on one 64-slice volume (``dinov3_vitb16``, 256 px, MoLRE): forward + backward time and
   peak memory for chunks of 16 and 64 slices, with and without gradient checkpointing.
4. The fused-vs-loop layer speedup of ``benchmarks/adapters.py`` on the device.

Writes benchmarks/results/gpu.json (``--smoke``: gpu_smoke.json) and prints a table.
"""
from __future__ import annotations

import argparse
import json
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch import nn

from adapters import fused_vs_loop, timeit  # benchmarks/adapters.py (this folder is on sys.path)
from molre_lib.adapters import MoLREConfig, inject, mark_trainable, parameter_report
from molre_lib.backbones import create_model

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"

SETUPS = {
    "lora_r16": dict(r=16, n_experts=1, alpha=32.0),
    "molre_e4_r4": dict(r=4, n_experts=4, alpha=8.0),
    "molre_e4_r4_shared_a": dict(r=4, n_experts=4, alpha=8.0, shared_a=True),
    "linear_probe": None,
}


def _peak_reset(device: torch.device) -> int:
    """Start a peak-memory window; returns what is allocated already (other setups' models)."""
    if device.type != "cuda":
        return 0
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    return torch.cuda.memory_allocated(device)


def _peak_gib(device: torch.device, base: int) -> float | None:
    """Peak memory of this setup alone (weights, optimizer state, activations), GiB; None on the CPU."""
    return (torch.cuda.max_memory_allocated(device) - base) / 2**30 if device.type == "cuda" else None


def run_device_tests() -> dict:
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_devices.py"],
                          cwd=ROOT, capture_output=True, text=True, timeout=900)
    lines = proc.stdout.strip().splitlines()
    summary = lines[-1] if lines else proc.stderr[-500:]
    counts = {k: int(v) for v, k in re.findall(r"(\d+) (passed|failed|skipped|error)", summary)}
    return {"returncode": proc.returncode, "summary": summary, **counts,
            "failures": [ln for ln in lines if ln.startswith(("FAILED", "ERROR"))]}


def _model(name: str, device: torch.device, smoke: bool, adapter: dict | None, **overrides):
    torch.manual_seed(0)
    with torch.device(device):  # parameters are created on the device: no CPU init of 400M weights
        model = create_model(name, reduced=smoke, **overrides)
    if adapter is None:
        mark_trainable(model, model.trainable_modules)
    else:
        inject(model, MoLREConfig(target_modules=model.spec.target_modules, **adapter),
               trainable=model.trainable_modules)
    return model.to(device).train()


def train_steps(name: str, batch: int, device: torch.device, repeats: int, smoke: bool, **overrides) -> dict:
    """Median bf16 step time and peak memory of each setup on one backbone, timed side by side."""
    dtype = torch.bfloat16
    steps, params, peaks = {}, {}, {}
    for setup, adapter in SETUPS.items():
        base = _peak_reset(device)
        model = _model(name, device, smoke, adapter, **overrides)
        size = model.spec.reduced_input_size if smoke else (overrides.get("image_size") or model.spec.input_size)
        x = torch.rand(batch, model.in_chans, 1, *size, device=device)  # one slice per scan: B slices per step
        y = (torch.rand(batch, 75, device=device) < 0.1).float()
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)

        def step(model=model, opt=opt, x=x, y=y):
            opt.zero_grad(set_to_none=True)
            with torch.autocast(device.type, dtype=dtype):
                logits = model(x)
            nn.functional.binary_cross_entropy_with_logits(logits.float(), y).backward()
            opt.step()

        step()  # also the warm-up of this setup
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        peaks[setup] = _peak_gib(device, base)
        params[setup] = parameter_report(model, head=model.trainable_modules).pct_added
        steps[setup] = step
    times = timeit(steps, device, repeats, warmup=1)
    out = {"backbone": name, "batch": batch, "image": list(size), "dtype": "bf16"}
    for setup in SETUPS:
        out[setup] = {"step_s": times[setup], "peak_gib": peaks[setup], "added_params_pct": params[setup]}
    out["molre_vs_lora_step_ratio"] = times["molre_e4_r4"] / times["lora_r16"]
    out["molre_shared_a_vs_lora_step_ratio"] = times["molre_e4_r4_shared_a"] / times["lora_r16"]
    return out


def slice_encoder(device: torch.device, smoke: bool, slices: int = 64) -> dict:
    """One 64-slice volume through the 2D backbone's slice encoder with MoLRE: time and memory per setting."""
    rows = {}
    for chunk in ((4, 16) if smoke else (16, 64)):
        for ckpt in (False, True):
            base = _peak_reset(device)
            model = _model("dinov3_vitb16", device, smoke, SETUPS["molre_e4_r4"], chunk_size=chunk, checkpoint=ckpt)
            size = model.spec.reduced_input_size if smoke else model.spec.input_size
            x = torch.rand(1, model.in_chans, slices, *size, device=device)

            def fwd_bwd(model=model, x=x):
                with torch.autocast(device.type, dtype=torch.bfloat16):
                    logits = model(x)
                logits.float().sum().backward()
                model.zero_grad(set_to_none=True)

            fwd_bwd()
            peak = _peak_gib(device, base)
            t = timeit({"run": fwd_bwd}, device, repeats=1 if smoke else 5, warmup=1)["run"]
            rows[f"chunk{chunk}_{'checkpoint' if ckpt else 'plain'}"] = {"fwd_bwd_s": t, "peak_gib": peak,
                                                                         "slices_per_s": slices / t}
            del model
    return {"backbone": "dinov3_vitb16", "slices": slices, "image": list(size), "dtype": "bf16", **rows}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="reduced models, tiny batches: checks the script runs")
    parser.add_argument("--skip-tests", action="store_true", help="do not run tests/test_devices.py")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type != "cuda" and not args.smoke:
        print("no CUDA device: run with --smoke to check the script, or on the GPU machine", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    res: dict = {"torch": torch.__version__, "python": platform.python_version(), "device": device.type,
                 "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor(),
                 "cuda": torch.version.cuda, "smoke": args.smoke}
    if not args.skip_tests:
        res["device_tests"] = run_device_tests()
    repeats = 1 if args.smoke else 7  # smoke: one timed step checks the script runs (CI time)
    res["train_step_vit_b16_224"] = train_steps("dinov3_vitb16", 2 if args.smoke else 32, device, repeats, args.smoke,
                                                **({} if args.smoke else {"image_size": (224, 224)}))
    res["train_step_medsiglip_448"] = train_steps("medsiglip_448", 2 if args.smoke else 8, device, repeats, args.smoke)
    res["slice_encoder_64"] = slice_encoder(device, args.smoke)
    if not args.smoke:
        res["fused_vs_loop"] = fused_vs_loop(device, repeats, torch.bfloat16)
    res["wall_s"] = time.perf_counter() - t0

    out = RESULTS / ("gpu_smoke.json" if args.smoke else "gpu.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2))
    if "device_tests" in res:
        print(f"device tests: {res['device_tests']['summary']}")
    for key in ("train_step_vit_b16_224", "train_step_medsiglip_448"):
        r = res[key]
        print(f"{key} (batch {r['batch']}, {r['dtype']}): MoLRE/LoRA step {r['molre_vs_lora_step_ratio']:.3f}, "
              f"shared A/LoRA {r['molre_shared_a_vs_lora_step_ratio']:.3f}")
        for setup in SETUPS:
            s = r[setup]
            mem = f"{s['peak_gib']:.2f} GiB" if s["peak_gib"] is not None else "-"
            print(f"  {setup:<24}{s['step_s'] * 1000:>9.1f} ms  {mem:>10}  added {s['added_params_pct']:.3f}%")
    print("slice encoder, 64 slices:")
    for k, v in res["slice_encoder_64"].items():
        if isinstance(v, dict):
            mem = f"{v['peak_gib']:.2f} GiB" if v["peak_gib"] is not None else "-"
            print(f"  {k:<24}{v['fwd_bwd_s'] * 1000:>9.1f} ms  {mem:>10}  {v['slices_per_s']:.1f} slices/s")
    if "fused_vs_loop" in res:
        print(f"fused_vs_loop_speedup: {res['fused_vs_loop']['fused_vs_loop_speedup']:.2f}")
    print(f"wrote {out} ({res['wall_s']:.0f} s)")
    failed = res.get("device_tests", {}).get("returncode", 0)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
