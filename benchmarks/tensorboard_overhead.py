"""What TensorBoard logging costs a training step: the same run with ``tensorboard`` on and off, in one process.

Each case trains a MoLRE adapter (r=8, 4 experts: the arm with the most scalars, routing included) through
``molre_lib.engine.train.train`` on in-memory random volumes with a validation split, so the loop holds every
logging call: ``train/loss``, ``train/lr``, ``train/grad_norm`` each step, validation AUCs and the routing
statistics at each evaluation. The on / off runs alternate (off, on, off, on, ...) ``--repeats`` times so that
drift of a shared machine's load hits both; a run's seconds per step are taken from its ``train_log.csv``
(``elapsed_s`` from the end of the warm-up steps to the last step, evaluations included). Also timed alone: one
``TrainingBoard.step`` call (the per-step logging) and one ``TrainingBoard.validation`` call.

Cases: the tiny reduced ``phantom_vit`` (what tests use; the fastest step, so the largest relative cost) and the
demo ``phantom_vit``. The 1-minute load average is recorded before and after: with load above the core count
both timings are inflated. Writes benchmarks/results/tensorboard_overhead.json and prints the on / off ratio.

    flock /tmp/molre-heavy.lock .venv/bin/python benchmarks/tensorboard_overhead.py
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from molre_lib.engine.config import TrainConfig
from molre_lib.engine.train import seed_everything, train

CASES = [  # name, reduced, volume (D, H, W), batch, steps (after warm-up), eval_every
    ("tiny (phantom_vit reduced)", True, (8, 32, 32), 4, 60, 20),
    ("phantom_vit (demo)", False, (16, 64, 64), 4, 16, 8),
]


class RandomVolumes(Dataset):
    """(N, 3, D, H, W) random volumes with 10 % positive labels over the 75 findings."""

    def __init__(self, n: int, shape: tuple[int, int, int], seed: int, n_classes: int = 75) -> None:
        g = torch.Generator().manual_seed(seed)
        self.x = torch.rand((n, 3) + tuple(shape), generator=g)
        self.y = (torch.rand(n, n_classes, generator=g) < 0.1).float()

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict:
        return {"image": self.x[i], "labels": self.y[i], "label_mask": torch.ones_like(self.y[i]), "scan_id": f"s{i}"}


def one_run(reduced: bool, shape: tuple[int, int, int], batch: int, steps: int, warmup: int, eval_every: int,
            tensorboard: bool, tmp: Path) -> dict:
    cfg = TrainConfig(backbone="phantom_vit", reduced=reduced, pretrained=False, adapter="molre", rank=8,
                      n_experts=4, batch_size=batch, max_steps=steps + warmup, eval_every=eval_every,
                      checkpoint_every=0, test_split="", device="cpu", amp="none", volume_shape=list(shape),
                      tensorboard=tensorboard)
    datasets = {"train": RandomVolumes(batch * (steps + warmup), shape, 0), "val": RandomVolumes(16, shape, 1)}
    run_dir = tmp / f"run_{'on' if tensorboard else 'off'}_{time.monotonic_ns()}"
    seed_everything(0)
    t0 = time.perf_counter()
    train(cfg, run_dir, datasets=datasets)
    wall = time.perf_counter() - t0
    with open(run_dir / "train_log.csv") as fh:
        t = [float(r["elapsed_s"]) for r in csv.DictReader(fh)]
    assert (run_dir / "tensorboard").is_dir() == tensorboard
    return {"s_per_step": (t[-1] - t[warmup - 1]) / steps, "wall_s": wall}


def call_cost(n: int = 2000) -> dict:
    """Seconds per ``TrainingBoard.step`` and per ``TrainingBoard.validation`` (75 AUCs, 8 routed layers)."""
    from molre_lib.engine.run_files import finding_keys
    from molre_lib.engine.tensorboard import TrainingBoard

    with tempfile.TemporaryDirectory() as tmp:
        tb = TrainingBoard(tmp, TrainConfig(), enabled=True)
        tb.open()
        grad_norm = torch.tensor(1.5)
        t0 = time.perf_counter()
        for s in range(1, n + 1):
            tb.step(s, 0.1, 1e-3, grad_norm)
        step_s = (time.perf_counter() - t0) / n
        keys = finding_keys(75)
        auc = np.random.default_rng(0).uniform(0.4, 0.9, 75)
        routing = {f"encoder.blocks.{b}.attn.{m}": {"gate_entropy": 1.2, "expert_usage": [0.25] * 4, "n": 100}
                   for b in range(4) for m in ("qkv", "proj")}
        m = 50
        t0 = time.perf_counter()
        for s in range(m):
            tb.validation(n + s, auc, keys, routing)
        val_s = (time.perf_counter() - t0) / m
        tb.close(n + m, 0.7)
    return {"step_call_us": round(step_s * 1e6, 1), "validation_call_ms": round(val_s * 1e3, 2),
            "step_calls_timed": n, "validation_calls_timed": m}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--repeats", type=int, default=3, help="on / off pairs per case")
    p.add_argument("--warmup", type=int, default=3, help="first steps left out of the timing")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--skip-demo", action="store_true", help="the tiny case only")
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "tensorboard_overhead.json"))
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    load_before = os.getloadavg()
    cases = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, reduced, shape, batch, steps, eval_every in CASES:
            if a.skip_demo and not reduced:
                continue
            runs: dict[str, list[dict]] = {"off": [], "on": []}
            for _ in range(a.repeats):
                for mode in ("off", "on"):
                    runs[mode].append(one_run(reduced, shape, batch, steps, a.warmup, eval_every, mode == "on",
                                              Path(tmp)))
            off = statistics.median(r["s_per_step"] for r in runs["off"])
            on = statistics.median(r["s_per_step"] for r in runs["on"])
            case = {"case": name, "reduced": reduced, "volume": list(shape), "batch": batch, "steps_timed": steps,
                    "eval_every": eval_every, "adapter": "molre r=8 E=4",
                    "s_per_step_off": [round(r["s_per_step"], 5) for r in runs["off"]],
                    "s_per_step_on": [round(r["s_per_step"], 5) for r in runs["on"]],
                    "median_s_per_step_off": round(off, 5), "median_s_per_step_on": round(on, 5),
                    "ratio_on_off": round(on / off, 4), "overhead_ms_per_step": round((on - off) * 1e3, 3)}
            cases.append(case)
            print(f"{name}: {off * 1e3:.1f} ms/step off, {on * 1e3:.1f} ms/step on, ratio {on / off:.3f} "
                  f"({(on - off) * 1e3:+.2f} ms/step; runs off {case['s_per_step_off']}, on {case['s_per_step_on']})")
    calls = call_cost()
    print(f"TrainingBoard.step: {calls['step_call_us']} us per call; TrainingBoard.validation: "
          f"{calls['validation_call_ms']} ms per call (75 AUCs + 8 routed layers)")
    load_after = os.getloadavg()
    result = {"cases": cases, "calls": calls, "threads": a.threads, "repeats": a.repeats, "warmup": a.warmup,
              "loadavg_1min_before": round(load_before[0], 2), "loadavg_1min_after": round(load_after[0], 2),
              "cpu_count": os.cpu_count(), "torch": torch.__version__, "python": platform.python_version(),
              "note": "timings are inflated and noisier when the load average exceeds the core count"}
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"load average (1 min) {load_before[0]:.2f} before, {load_after[0]:.2f} after; wrote {out}")


if __name__ == "__main__":
    main()
