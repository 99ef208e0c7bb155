"""Where does validation AUC plateau on the phantom study's data? (issue 22 item 5, before any tuning)

The phantom study trained one epoch (~130 steps of 8 scans), a regime where neither adapter beat the linear
probe. Before a tuned comparison, the training length must be one at which validation AUC has levelled off.
This script builds the study's data (``notebooks/sweeps/phantom_study.yaml``'s 00_data settings: 2,300 scans,
seed 7, prevalence x 2.5, splits 0.45/0.1/0.45) once, then trains ``phantom_vit`` with the linear probe, LoRA r=8
and MoLRE 4 x r=2 (shared A, token router) for ``--epochs`` epochs at the study's learning rate and alpha = 2r,
validating after every epoch (cosine schedule over the whole run), and reports each arm's validation macro AUC
per epoch. Only the validation split is read. One run at a time, ``--threads`` torch threads each.
Writes ``benchmarks/results/phantom_plateau.json``.

``--tuned runs/phantom_tuned`` trains each arm instead with the learning rate and alpha that the tuned phantom study
chose for it on ``--backbone`` (one epoch per trial there), for ``--epochs`` epochs at seed 0: does the tuned
ranking hold where the curves have flattened? It writes ``benchmarks/results/phantom_plateau_tuned.json``.

A cheaper task (what the tuned study trains on since six epochs of the full one did not fit its budget):
``--volume-shape 4 64 64`` resamples each scan to 4 slices instead of 8, ``--train-scans 512`` keeps only the first
512 training scans (val unchanged), and ``--lengths 4 6 10`` trains one run per training length, each with its own
cosine schedule, and reports every arm's final validation AUC by length (does training longer still help?) next
to the per-epoch curve of the longest run. It writes ``benchmarks/results/phantom_plateau_lengths.json``.

    python benchmarks/phantom_plateau.py [--epochs 6] [--arms linear_probe lora molre] [--work /tmp/phantom_plateau]
    python benchmarks/phantom_plateau.py --tuned runs/phantom_tuned --arms linear_probe lora molre molre_separate
    python benchmarks/phantom_plateau.py --volume-shape 4 64 64 --train-scans 512 --lengths 4 6 10 --lr 0.003
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
    "molre_separate": ["--adapter", "molre", "--rank", "2", "--n-experts", "4", "--router", "token", "--no-shared-a"],
}
# the tuned study's arm of each ARMS key (tune/selected.json keys, after the backbone)
TUNED_ARMS = {"linear_probe": "linear_probe_shared_aFalse", "lora": "lora_shared_aFalse",
              "molre": "molre_shared_aTrue", "molre_separate": "molre_shared_aFalse"}


def study_data(work: Path) -> Path:
    manifest = work / "data" / "manifest.csv"
    if not manifest.is_file():
        subprocess.run(MOLRE + ["synth", "--out", str(work / "data"), "--n-scans", "2300", "--shape", "64,64,16",
                                "--seed", "7", "--prevalence-scale", "2.5", "--splits", "0.45,0.1,0.45"],
                       check=True, cwd=ROOT)
    return manifest


def subset_train(manifest: Path, n_train: int) -> Path:
    """The manifest with only the first ``n_train`` training scans (by patient order); val and test unchanged."""
    out = manifest.with_name(f"manifest_train{n_train}.csv")
    with open(manifest, newline="") as fh:
        reader = csv.DictReader(fh)
        fields, rows = reader.fieldnames, list(reader)
    train_rows = [r for r in rows if r["split"] == "train"]
    if n_train > len(train_rows):
        print(f"error: --train-scans {n_train}: {manifest} has {len(train_rows)} training scans", file=sys.stderr)
        sys.exit(2)
    keep = {r["scan_id"] for r in train_rows[:n_train]}
    with open(out, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        writer.writerows(r for r in rows if r["split"] != "train" or r["scan_id"] in keep)
    return out


def train(arm: str, manifest: Path, work: Path, epochs: int, lr: float, threads: int, alpha: float | None = None,
          backbone: str = "phantom_vit", tuned: bool = False, volume: tuple[int, int, int] = (8, 64, 64),
          suffix: str = "") -> dict:
    tag = f"_lr{lr:g}" + (f"_alpha{alpha:g}" if alpha is not None else "")
    plain = not tuned and backbone == "phantom_vit" and not suffix  # the first measurement's folders keep their names
    run_dir = work / (f"{arm}_e{epochs}" if plain else f"{backbone}_{arm}_e{epochs}{tag}{suffix}")
    extra = ["--lora-alpha", str(alpha)] if alpha is not None else []
    if not (run_dir / "metrics.json").is_file():
        cmd = MOLRE + ["train", "--run-dir", str(run_dir), "--manifest", str(manifest), "--backbone", backbone,
                       "--test-split", "", "--volume-shape", *map(str, volume), "--cache-dir", str(work / "cache"),
                       "--epochs", str(epochs), "--batch-size", "8", "--lr", str(lr), "--threads", str(threads),
                       "--eval-bootstrap", "0", "--seed", "0", *ARMS[arm], *extra]
        if (run_dir / "config.json").is_file():
            cmd.append("--resume")
        start, cpu0, load_before = time.time(), os.times(), os.getloadavg()[0]
        subprocess.run(cmd, check=True, cwd=ROOT)
        cpu1 = os.times()
        cost = {"wall_s": round(time.time() - start, 1),
                "cpu_s": round(cpu1.children_user + cpu1.children_system - cpu0.children_user - cpu0.children_system, 1),
                "load_before": round(load_before, 2)}
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
    parser.add_argument("--tuned", type=Path, default=None,
                        help="a tuned sweep folder (runs/phantom_tuned): each arm's chosen LR and alpha instead of --lr")
    parser.add_argument("--backbone", default="phantom_vit", help="the backbone (with --tuned: whose chosen values)")
    parser.add_argument("--volume-shape", type=int, nargs=3, default=[8, 64, 64], metavar=("D", "H", "W"),
                        help="the volume each scan is resampled to (the study's: 8 64 64)")
    parser.add_argument("--train-scans", type=int, default=None,
                        help="train on only the first N training scans (a cheaper task; val unchanged)")
    parser.add_argument("--lengths", type=int, nargs="+", default=None, metavar="EPOCHS",
                        help="train one run per training length (cosine over each) instead of one --epochs run, and "
                             "report each arm's final validation AUC by length")
    parser.add_argument("--out", type=Path, default=None, help="the JSON to write (default: by mode)")
    args = parser.parse_args()
    chosen = {}
    if args.tuned is not None:
        selected = args.tuned / "tune" / "selected.json"
        if not selected.is_file():
            print(f"error: {selected} not found: run the tuned study first (make phantom-study)", file=sys.stderr)
            sys.exit(2)
        picks = json.loads(selected.read_text())
        for arm in args.arms:
            key = f"{args.backbone}_{TUNED_ARMS[arm]}"
            if key not in picks:
                print(f"error: {selected} has no arm {key!r}; arms: {', '.join(picks)}", file=sys.stderr)
                sys.exit(2)
            chosen[arm] = picks[key]["parameters"]
    args.work.mkdir(parents=True, exist_ok=True)
    manifest = study_data(args.work)  # after the checks: building it takes minutes
    if args.train_scans is not None:
        manifest = subset_train(manifest, args.train_scans)
    volume = tuple(args.volume_shape)
    suffix = "" if volume == (8, 64, 64) and args.train_scans is None else \
        f"_v{'x'.join(map(str, volume))}" + (f"_n{args.train_scans}" if args.train_scans else "")
    results = {"epochs": args.lengths or args.epochs, "lr": args.lr if not chosen else None, "threads": args.threads,
               "backbone": args.backbone,  # each run's wall / CPU s and 1-min load before it: in its cost
               "data": "phantom_study.yaml 00_data: 2,300 scans, seed 7, prevalence x2.5",
               "volume_shape": list(volume), "train_scans": args.train_scans, "arms": {}}
    for arm in args.arms:
        lr, alpha = (chosen[arm]["LR"], chosen[arm].get("LORA_ALPHA")) if chosen else (args.lr, None)
        if args.lengths:
            runs = {e: train(arm, manifest, args.work, e, lr, args.threads, alpha, args.backbone, bool(chosen), volume,
                             suffix) for e in sorted(args.lengths)}
            by_length = [{"epochs": e, "final_val_auc": r["curve"][-1]["val_macro_auc"],
                          "best_val_auc": max(p["val_macro_auc"] for p in r["curve"]),
                          **{k: r[k] for k in ("wall_s", "cpu_s") if k in r}} for e, r in runs.items()]
            results["arms"][arm] = {"lr": lr, "alpha": alpha, "by_length": by_length,
                                    "curve_of_longest": runs[max(runs)]["curve"]}
            print(f"{arm:13s} final val macro AUC by training length: "
                  + "  ".join(f"{b['epochs']} ep {b['final_val_auc']:.3f}" for b in by_length), flush=True)
            continue
        results["arms"][arm] = {"lr": lr, "alpha": alpha, **train(arm, manifest, args.work, args.epochs, lr, args.threads,
                                                                  alpha, args.backbone, bool(chosen), volume, suffix)}
        curve = results["arms"][arm]["curve"]
        print(f"{arm:13s} val macro AUC by epoch: " + " ".join(f"{p['val_macro_auc']:.3f}" for p in curve), flush=True)
    out = args.out or (RESULTS.with_name("phantom_plateau_tuned.json") if chosen else
                       RESULTS.with_name("phantom_plateau_lengths.json") if args.lengths else RESULTS)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
