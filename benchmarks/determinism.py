"""Does the demo backbone's pretraining give the same weights with another torch thread count?

Runs a shortened ``pretrain_phantom_vit`` (same code path, fewer scans and steps) with
``PretrainConfig.threads`` 1, then 2, then 2 again, and compares the resulting ``model.safetensors``: sha256 and
the largest absolute weight difference. Where two runs differ, each op of the pretraining step (patch-embedding
convolution, attention, MLP, LayerNorm, AdamW's step) is run forward and backward at both thread counts on
the same inputs, to name the op whose result depends on the thread count. Then, on an AVX-512 CPU, the
2-thread pretraining is run once more in a fresh process with the kernels capped at AVX2 (``ATEN_CPU_CAPABILITY``,
``ONEDNN_MAX_CPU_ISA``, ``MKL_ENABLE_INSTRUCTIONS``), which is what another CPU generation would pick: same code,
seed and thread count, other instruction set. Writes ``benchmarks/results/determinism.json``.

    flock /tmp/molre-heavy.lock python benchmarks/determinism.py [--steps 40 --subjects 24]
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results" / "determinism.json"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def pretrain(threads: int, steps: int, subjects: int, out: Path) -> dict:
    from molre_lib.backbones.phantom_pretrain import PretrainConfig, pretrain_phantom_vit

    t0, c0 = time.perf_counter(), time.process_time()
    pretrain_phantom_vit(PretrainConfig(steps=steps, n_subjects=subjects, workers=1, threads=threads), out_dir=out,
                         log=lambda m: None)
    return {"threads": threads, "sha256": sha256(out / "model.safetensors"),
            "wall_s": round(time.perf_counter() - t0, 1), "cpu_s": round(time.process_time() - c0, 1)}


AVX2 = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}


def pretrain_in_process(threads: int, steps: int, subjects: int, out: Path, env: dict[str, str]) -> dict:
    """``pretrain`` in a fresh interpreter with ``env`` added (kernel-dispatch variables are read at start-up)."""
    code = ("import json, sys; from pathlib import Path; sys.path.insert(0, sys.argv[1]); import determinism as d; "
            "r = d.pretrain(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), Path(sys.argv[5])); "
            "import torch; r['cpu_capability'] = torch.backends.cpu.get_cpu_capability(); print(json.dumps(r))")
    res = subprocess.run([sys.executable, "-c", code, str(Path(__file__).parent), str(threads), str(steps),
                          str(subjects), str(out)], env={**os.environ, **env}, capture_output=True, text=True,
                         check=True)
    return {**json.loads(res.stdout.strip().splitlines()[-1]), "env": env}


def max_weight_diff(a: Path, b: Path) -> float:
    from safetensors.torch import load_file

    wa, wb = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    return max(float((wa[k].double() - wb[k].double()).abs().max()) for k in wa)


def op_thread_dependence() -> dict[str, dict[str, bool]]:
    """{op: {"forward": differs, "backward": differs}} bitwise between 1 and 2 threads, on the pretraining's
    shapes (a batch of 64 slices, 1 + 64 tokens of width 192)."""
    from timm.models.vision_transformer import Attention, Mlp

    from molre_lib.backbones.phantom_vit import PHANTOM_VIT_ARCH, build_phantom_vit

    torch.manual_seed(0)
    vit = build_phantom_vit(PHANTOM_VIT_ARCH)
    d = vit.embed_dim
    img = torch.rand(64, vit.patch_embed.proj.in_channels, *vit.patch_embed.img_size)  # (B, C, H, W)
    tokens = torch.randn(64, 1 + vit.patch_embed.num_patches, d)  # (B, 1+L, D)
    ops = {
        "conv2d (patch embedding)": (vit.patch_embed, img),
        "linear": (torch.nn.Linear(d, 3 * d), tokens),
        "attention (qkv, sdpa, proj)": (Attention(d, num_heads=PHANTOM_VIT_ARCH["num_heads"]), tokens),
        "mlp (linear, gelu, linear)": (Mlp(d, 4 * d), tokens),
        "layernorm": (torch.nn.LayerNorm(d), tokens),
        "gelu": (torch.nn.GELU(), tokens),
    }
    out: dict[str, dict[str, bool]] = {}
    for name, (mod, x) in ops.items():
        fwd, bwd = [], []
        for threads in (1, 2):
            torch.set_num_threads(threads)
            mod.zero_grad(set_to_none=True)
            xi = x.clone().requires_grad_(True)
            y = mod(xi)
            y.backward(torch.ones_like(y) / y.numel())
            fwd.append(y.detach().clone())
            bwd.append([xi.grad.clone(), *(p.grad.clone() for p in mod.parameters() if p.grad is not None)])
        out[name] = {"forward": not torch.equal(*fwd),
                     "backward": not all(torch.equal(u, v) for u, v in zip(*bwd))}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--subjects", type=int, default=24)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        runs, dirs = [], []
        for i, threads in enumerate((1, 2, 2)):
            out = Path(tmp) / f"run{i}"
            runs.append(pretrain(threads, a.steps, a.subjects, out))
            dirs.append(out)
            print(f"threads {threads}: sha256 {runs[-1]['sha256'][:16]} ({runs[-1]['cpu_s']} CPU s)", flush=True)
        diff_1_vs_2 = max_weight_diff(dirs[0], dirs[1])
        diff_2_vs_2 = max_weight_diff(dirs[1], dirs[2])
        isa = None
        if torch.backends.cpu.get_cpu_capability() == "AVX512":
            # control: a fresh process without the cap must match the in-process 2-thread run, so that a
            # difference below is the instruction set's, not the process's
            control = pretrain_in_process(2, a.steps, a.subjects, Path(tmp) / "control", {})
            out = Path(tmp) / "avx2"
            run = pretrain_in_process(2, a.steps, a.subjects, out, AVX2)
            print(f"threads 2, AVX2 kernels: sha256 {run['sha256'][:16]} ({run['cpu_s']} CPU s)", flush=True)
            isa = {"control_fresh_process": control, "run": run,
                   "control_identical_to_2_threads": control["sha256"] == runs[1]["sha256"],
                   "identical_to_avx512_2_threads": run["sha256"] == runs[1]["sha256"],
                   "max_abs_weight_diff_vs_avx512_2_threads": max_weight_diff(dirs[1], out)}
    ops = op_thread_dependence()
    doc = {"steps": a.steps, "subjects": a.subjects, "runs": runs,
           "identical_1_vs_2_threads": runs[0]["sha256"] == runs[1]["sha256"],
           "identical_2_vs_2_threads": runs[1]["sha256"] == runs[2]["sha256"],
           "max_abs_weight_diff_1_vs_2": diff_1_vs_2, "max_abs_weight_diff_2_vs_2": diff_2_vs_2,
           "op_differs_between_1_and_2_threads": ops, "avx2_vs_avx512_same_threads": isa,
           "torch": torch.__version__, "mkldnn": torch.backends.mkldnn.is_available(),
           "cpu_capability": torch.backends.cpu.get_cpu_capability(), "load_average_1min": os.getloadavg()[0]}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(doc, indent=2))
    print(json.dumps({k: v for k, v in doc.items() if k != "runs"}, indent=2))


if __name__ == "__main__":
    main()
