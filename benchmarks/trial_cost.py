"""What one phantom-study training run (a tuning trial) costs, by phase, and what the cuts save.

Phases, each timed as CPU seconds (``time.process_time`` / child rusage: comparable under load) and wall:

- **import**: a fresh interpreter importing what a 01_train kernel imports before its first step, once as
  before (``import monai.transforms`` too: every process that fitted a volume loaded all of MONAI) and once as
  now (``molre_lib.data.resize`` fits volumes without MONAI);
- **data**: fitting every scan into the disk cache (the sweep's first run), then loading them from it
  (every later run);
- **train steps**: optimizer steps of the study's configuration (phantom_vit, LoRA r=8 on qkv+proj, 8-scan
  batches of 8 x 64 x 64) with 1 and with 2 torch threads;
- **val predict** / **test predict**: per scan.

The per-phase rates are then scaled to ``notebooks/sweeps/phantom_study.yaml``'s sizes (~1,035 train scans =
129 steps, 230 val, 1,035 test) for a run as the study ran it (val at the epoch's end and again at the end,
test predicted) and a tuning trial (``TEST_SPLIT: ""``: no test). CPU seconds are the numbers to compare across
machines and loads; wall seconds are inflated whenever the load average (recorded) exceeds the cores. Writes
``benchmarks/results/trial_cost.json``.

    flock /tmp/molre-heavy.lock python benchmarks/trial_cost.py [--scans 120 --steps 8]   # random init: cost, not AUC
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "trial_cost.json"
KERNEL_IMPORTS = ("from molre_lib import plots; from molre_lib.backbones import get_spec, create_model; "
                  "from molre_lib.workbook.params import check_parameters, train_config; "
                  "from molre_lib.engine.train import train; from molre_lib.data.dataset import HeadCTDataset; "
                  "create_model('phantom_vit', num_classes=75, pretrained=False)")
STUDY = {"train_scans": 1035, "batch": 8, "val_scans": 230, "test_scans": 1035}


class Clock:
    """CPU and wall seconds of a block."""

    def __enter__(self) -> "Clock":
        self.c, self.w = time.process_time(), time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.cpu, self.wall = time.process_time() - self.c, time.perf_counter() - self.w


def import_cost(extra: str) -> dict:
    code = f"import torch; torch.set_num_threads(1); {extra}{KERNEL_IMPORTS}"
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"})
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"cpu_s": round(cpu, 2), "wall_s": round(time.perf_counter() - t0, 2)}


def study_config(manifest: Path, cache: Path, threads: int, steps: int):
    from molre_lib.engine.config import TrainConfig

    return TrainConfig(manifest=str(manifest), cache_dir=str(cache), volume_shape=[8, 64, 64], backbone="phantom_vit",
                       pretrained=False, adapter="lora", rank=8, n_experts=1, batch_size=STUDY["batch"], lr=0.005,
                       max_steps=steps, val_split="", test_split="", threads=threads, tensorboard=False, device="cpu")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scans", type=int, default=120, help="phantom scans (45/10/45% train/val/test)")
    ap.add_argument("--steps", type=int, default=8, help="timed optimizer steps per thread count (after 1 warm-up)")
    a = ap.parse_args()
    from molre_lib.backbones import get_spec
    from molre_lib.data.phantom import PhantomConfig
    from molre_lib.data.synth import synthesize
    from molre_lib.engine import distributed as D
    from molre_lib.engine.build import build_model
    from molre_lib.engine.loaders import build_datasets, predict_dataset
    from molre_lib.engine.train import train

    doc: dict = {"load_average_1min_start": os.getloadavg()[0], "torch": torch.__version__}
    doc["import"] = {"before (with monai)": import_cost("import monai.transforms; "), "now": import_cost("")}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        manifest = synthesize(tmp / "data", a.scans, shape=(16, 64, 64), seed=7, splits=(0.45, 0.1, 0.45), workers=1,
                              cfg=PhantomConfig(prevalence_scale=2.5))
        cfg = study_config(manifest, tmp / "cache", 1, a.steps + 1)
        torch.set_num_threads(1)
        spec = get_spec(cfg.backbone)
        phases = {}
        for label in ("fit into disk cache (first run)", "load from disk cache (later runs)"):
            with Clock() as c:
                ds = build_datasets(cfg, spec, ["train", "val", "test"])
                n = sum(len(d) for d in ds.values())
                for d in ds.values():
                    for i in range(len(d)):
                        d[i]
            phases[label] = {"scans": n, "cpu_s_per_scan": round(c.cpu / n, 4), "wall_s_per_scan": round(c.wall / n, 4)}
        doc["data"] = phases
        steps = {}
        for threads in (1, 2):
            stamps: list[tuple[float, float]] = []
            cfg = study_config(manifest, tmp / "cache", threads, a.steps + 1)
            train(cfg, tmp / f"run{threads}", datasets={"train": ds["train"]},
                  callbacks=[lambda _: stamps.append((time.process_time(), time.perf_counter()))])
            (c0, w0), (c1, w1) = stamps[0], stamps[-1]  # the first step (warm-up) is left out
            steps[f"{threads} thread(s)"] = {"cpu_s_per_step": round((c1 - c0) / a.steps, 3),
                                             "wall_s_per_step": round((w1 - w0) / a.steps, 3)}
        doc["train_step"] = steps
        torch.set_num_threads(1)
        model = build_model(study_config(manifest, tmp / "cache", 1, 1), 75)
        info = D.setup("cpu")
        for split in ("val", "test"):
            with Clock() as c:
                predict_dataset(model, ds[split], info, STUDY["batch"])
            n = len(ds[split])
            doc[f"{split}_predict"] = {"scans": n, "cpu_s_per_scan": round(c.cpu / n, 4),
                                       "wall_s_per_scan": round(c.wall / n, 4)}
    doc["per_run_at_study_size"] = project(doc)
    doc["load_average_1min_end"] = os.getloadavg()[0]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(doc, indent=2))
    print(json.dumps(doc, indent=2))


def project(doc: dict) -> dict:
    """CPU (and wall) seconds of one run at the study's sizes, as the study ran it and as a tuning trial now.

    Both rows count the training steps at 1 thread, so they differ only in what was cut (MONAI's import, the test
    split's loading and prediction); the study ran with torch's default thread count (2 on 2 cores), whose cost
    is in ``train_steps_by_threads``."""
    n_steps = STUDY["train_scans"] // STUDY["batch"]
    scans = STUDY["train_scans"] + STUDY["val_scans"]
    out = {}
    for clock in ("cpu", "wall"):
        step = doc["train_step"]["1 thread(s)"][f"{clock}_s_per_step"]
        val, test = doc["val_predict"][f"{clock}_s_per_scan"], doc["test_predict"][f"{clock}_s_per_scan"]
        load = doc["data"]["load from disk cache (later runs)"][f"{clock}_s_per_scan"]
        before = {"import": doc["import"]["before (with monai)"][f"{clock}_s"],
                  "data": load * (scans + STUDY["test_scans"]), "train_steps": step * n_steps,
                  "val_predict (epoch end + final)": 2 * val * STUDY["val_scans"],
                  "test_predict": test * STUDY["test_scans"]}
        trial = {"import": doc["import"]["now"][f"{clock}_s"], "data": load * scans, "train_steps": step * n_steps,
                 "val_predict (epoch end + final)": 2 * val * STUDY["val_scans"], "test_predict": 0.0}
        for name, phases in (("study run before (test predicted, monai imported)", before),
                             ("tuning trial now (TEST_SPLIT '', no monai)", trial)):
            row = out.setdefault(name, {})
            if clock == "cpu":
                row.update({k: round(v, 1) for k, v in phases.items()})
            row[f"total_{clock}_s"] = round(sum(phases.values()), 1)
    out["train_steps_by_threads"] = {
        t: {"cpu_s": round(v["cpu_s_per_step"] * n_steps, 1), "wall_s": round(v["wall_s_per_step"] * n_steps, 1)}
        for t, v in doc["train_step"].items()}
    return out


if __name__ == "__main__":
    main()
