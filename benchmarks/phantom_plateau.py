"""Where does validation AUC plateau on the phantom study's data? (issue 22 item 5, before any tuning)

The phantom study trained one epoch (~130 steps of 8 scans), a regime where neither adapter beat the linear
probe. Before a tuned comparison, the training length must be one at which validation AUC has levelled off.
This script builds the study's data (``notebooks/sweeps/phantom_study.yaml``'s 00_data settings: 2,300 scans,
seed 7, prevalence x 2.5, splits 0.45/0.1/0.45) once, then trains ``phantom_vit`` with the linear probe, LoRA r=8
and MoLRE 4 x r=2 (shared A, token router) for ``--epochs`` epochs at the study's learning rate and alpha = 2r,
validating after every epoch (cosine schedule over the whole run), and reports each arm's validation macro AUC
per epoch. Only the validation split is read. One run at a time, ``--threads`` torch threads each.
Writes ``benchmarks/results/phantom_plateau.json``.

    python benchmarks/phantom_plateau.py [--epochs 6] [--arms linear_probe lora molre] [--work /tmp/phantom_plateau]
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "phantom_plateau.json"
MOLRE = [sys.executable, "-c", "import sys; from molre_lib.cli import main; sys.exit(main())"]
ARMS = {  # the phantom study's arms (phantom_study.yaml overrides), alpha = 2r as there
    "linear_probe": ["--adapter", "linear_probe", "--rank", "8", "--n-experts", "1"],
    "lora": ["--adapter", "lora", "--rank", "8", "--n-experts", "1"],
    "molre": ["--adapter", "molre", "--rank", "2", "--n-experts", "4", "--router", "token", "--shared-a"],
}


def study_data(work: Path) -> Path:
    manifest = work / "data" / "manifest.csv"
    if not manifest.is_file():
        subprocess.run(MOLRE + ["synth", "--out", str(work / "data"), "--n-scans", "2300", "--shape", "64,64,16",
                                "--seed", "7", "--prevalence-scale", "2.5", "--splits", "0.45,0.1,0.45"],
                       check=True, cwd=ROOT)
    return manifest


def train(arm: str, manifest: Path, work: Path, epochs: int, lr: float, threads: int) -> dict:
    run_dir = work / f"{arm}_e{epochs}"
    if not (run_dir / "metrics.json").is_file():
        cmd = MOLRE + ["train", "--run-dir", str(run_dir), "--manifest", str(manifest), "--backbone", "phantom_vit",
                       "--test-split", "", "--volume-shape", "8", "64", "64", "--cache-dir", str(work / "cache"),
                       "--epochs", str(epochs), "--batch-size", "8", "--lr", str(lr), "--threads", str(threads),
                       "--eval-bootstrap", "0", "--seed", "0", *ARMS[arm]]
        if (run_dir / "config.json").is_file():
            cmd.append("--resume")
        start, cpu0 = time.time(), os.times()
        subprocess.run(cmd, check=True, cwd=ROOT)
        cpu1 = os.times()
        cost = {"wall_s": round(time.time() - start, 1),
                "cpu_s": round(cpu1.children_user + cpu1.children_system - cpu0.children_user - cpu0.children_system, 1)}
        (run_dir / "plateau_cost.json").write_text(json.dumps(cost))
    with open(run_dir / "train_log.csv", newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r.get("val_macro_auc") not in (None, "", "nan")]
    curve = [{"epoch": int(float(r["epoch"])), "step": int(r["step"]), "val_macro_auc": round(float(r["val_macro_auc"]), 4)}
             for r in rows]
    cost_file = run_dir / "plateau_cost.json"
    return {"curve": curve, **(json.loads(cost_file.read_text()) if cost_file.is_file() else {})}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--lr", type=float, default=0.005, help="the phantom study's learning rate")
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--work", type=Path, default=Path("/tmp/phantom_plateau"))
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    manifest = study_data(args.work)
    results = {"epochs": args.epochs, "lr": args.lr, "threads": args.threads, "load_start": os.getloadavg()[0],
               "data": "phantom_study.yaml 00_data: 2,300 scans, seed 7, prevalence x2.5, volume 8x64x64", "arms": {}}
    for arm in args.arms:
        results["arms"][arm] = train(arm, manifest, args.work, args.epochs, args.lr, args.threads)
        curve = results["arms"][arm]["curve"]
        print(f"{arm:13s} val macro AUC by epoch: " + " ".join(f"{p['val_macro_auc']:.3f}" for p in curve), flush=True)
    results["load_end"] = os.getloadavg()[0]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
