"""Training throughput of the engine (scans/s and slices/s) through ``molre_lib.engine.train.train``.

Backbones: the tiny reduced ``phantom_vit`` (what tests use), the demo ``phantom_vit`` and a ViT-S
(``dinov3_vits16``, random init: throughput does not depend on the weights), each with a MoLRE adapter
(r=8, 4 experts) on in-memory random volumes, so the number is the model + trainer cost, not I/O.
CPU always; on a GPU also bf16. The first ``--warmup`` steps are excluded (timings from train_log.csv).
The 1-minute load average is recorded: on a shared machine CPU numbers are only comparable at equal load.
Writes benchmarks/results/train.json.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import tempfile
from pathlib import Path

import torch
from torch.utils.data import Dataset

from molre_lib.engine.train import train
from molre_lib.engine.config import TrainConfig

CASES = [  # name, backbone, reduced, volume (D, H, W), batch
    ("tiny (phantom_vit reduced)", "phantom_vit", True, (8, 32, 32), 4),
    ("phantom_vit (demo)", "phantom_vit", False, (16, 64, 64), 4),
    ("ViT-S/16 (dinov3_vits16)", "dinov3_vits16", False, (8, 256, 256), 2),
]


class RandomVolumes(Dataset):
    def __init__(self, n: int, shape: tuple[int, int, int], n_classes: int = 75) -> None:
        g = torch.Generator().manual_seed(0)
        self.x = torch.rand((n, 3) + tuple(shape), generator=g)  # (N, C, D, H, W)
        self.y = (torch.rand(n, n_classes, generator=g) < 0.1).float()

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict:
        return {"image": self.x[i], "labels": self.y[i], "label_mask": torch.ones_like(self.y[i]), "scan_id": f"s{i}"}


def bench(backbone: str, reduced: bool, shape: tuple[int, int, int], batch: int, steps: int, warmup: int,
          device: str, amp: str) -> dict:
    cfg = TrainConfig(backbone=backbone, reduced=reduced, pretrained=False, adapter="molre", rank=8, n_experts=4,
                      batch_size=batch, max_steps=steps + warmup, val_split="", test_split="", device=device, amp=amp,
                      volume_shape=list(shape))
    ds = RandomVolumes(batch * (steps + warmup), shape)
    with tempfile.TemporaryDirectory() as tmp:
        train(cfg, Path(tmp) / "run", datasets={"train": ds})
        with open(Path(tmp) / "run" / "train_log.csv") as fh:
            t = [float(r["elapsed_s"]) for r in csv.DictReader(fh)]
    sec = (t[-1] - t[warmup - 1]) / steps
    return {"backbone": backbone, "reduced": reduced, "volume": list(shape), "batch": batch, "device": device, "amp": amp,
            "s_per_step": round(sec, 4), "scans_per_s": round(batch / sec, 2), "slices_per_s": round(batch * shape[0] / sec, 1)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--skip-vits", action="store_true", help="leave out the ViT-S case (slow on CPU)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "train.json"))
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    load_before = os.getloadavg()
    runs = []
    targets = [("cpu", "none")] + ([("cuda", "bf16")] if torch.cuda.is_available() else [])
    for device, amp in targets:
        for name, backbone, reduced, shape, batch in CASES:
            if a.skip_vits and backbone == "dinov3_vits16":
                continue
            steps = a.steps if (device == "cuda" or backbone == "phantom_vit") else max(2, a.steps // 2)
            r = bench(backbone, reduced, shape, batch, steps, a.warmup, device, amp)
            r["case"] = name
            runs.append(r)
            print(f"{name:30s} {device:4s} {amp:4s} vol {shape} batch {batch}: {r['scans_per_s']:8.2f} scans/s "
                  f"{r['slices_per_s']:9.1f} slices/s ({r['s_per_step']:.3f} s/step)")
    doc = {"runs": runs, "torch": torch.__version__, "threads": torch.get_num_threads(),
           "load_average_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
           "cpu_count": os.cpu_count(),
           "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
           "machine": platform.processor() or platform.machine()}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(doc, indent=2))
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
