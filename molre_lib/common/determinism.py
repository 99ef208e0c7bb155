"""Pin what makes two runs of the same seed differ: torch's thread count and nondeterministic kernels.

Measured on this workbook's CPU path (``benchmarks/determinism.py``): the same seed gives bit-identical weights
run after run at one thread count, but 1 and 2 threads give different weights, because backward passes (LayerNorm's
on every machine measured, the GEMMs of ``nn.Linear`` on some) split their reductions over the batch across
threads and float addition is not associative. So the thread count is part of a run's configuration: pinning it
makes the result independent of the machine's core count (not of its CPU model, instruction set or torch
version, which pick other kernels: docs/explanation/reproducibility.md). On CUDA, ``torch.use_deterministic_algorithms`` selects deterministic kernels where they exist
(cuBLAS needs ``CUBLAS_WORKSPACE_CONFIG``, set here before the first CUDA call); ops without one warn instead
of failing (``warn_only``), so no CUDA path breaks.
"""
from __future__ import annotations

import os
from typing import Any

import torch


def set_determinism(threads: int = 0, deterministic: bool = True) -> dict[str, Any]:
    """Pin torch's intra-op threads (``threads > 0``; 0 keeps torch's default, one per physical core) and,
    with ``deterministic``, ask for deterministic kernels. Returns what is now in effect, for a run's config.

    Raises:
        ValueError: ``threads`` < 0.
    """
    if threads < 0:
        raise ValueError(f"threads={threads}: must be >= 0 (0 = torch's default)")
    if threads:
        torch.set_num_threads(threads)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # read when cuBLAS starts: before any CUDA GEMM
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    return determinism_state()


def determinism_state() -> dict[str, Any]:
    """The settings that decide whether a rerun reproduces bit for bit (written into config.json)."""
    return {"torch_threads": torch.get_num_threads(),
            "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(), "cpu_model": cpu_model(),
            "torch": torch.__version__, "cublas_workspace_config": os.environ.get("CUBLAS_WORKSPACE_CONFIG")}


def cpu_model() -> str:
    """The CPU's model name: with the same instruction set, Intel and AMD CPUs can still take other BLAS paths."""
    import platform

    try:
        for line in open("/proc/cpuinfo", encoding="utf-8", errors="replace"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
