"""Is the tuned phantom study at its plateau? Retrain its final runs for longer and compare, seed by seed.

The tuned study (``notebooks/sweeps/phantom_tuned.yaml``) trains every run for the ``EPOCHS`` its sweep file sets
(16; its six-epoch design: 6). This script takes the final runs of ``--backbone`` at ``--seeds`` (their
``config.json``: the arm's chosen learning rate and alpha, the seed, the data, the study's length), trains each
again for ``--epochs`` epochs (its own cosine schedule over the longer run) on the study's own train and validation
scans, and compares each seed's final validation macro AUC with the same seed's run in the study: Δ per seed and
arm, and the change of each arm's gap to LoRA. Tuning reads only validation, and so
does this: the longer runs get the trials' manifest view, without the test rows (``tune/manifest_no_test_*.csv``).
One run at a time, with the study's thread count. Writes ``benchmarks/results/phantom_tuned_length.json``.

``--image-size 48 48`` trains the longer runs on smaller slices (the encoder's input and the volume's H, W; the
study's slice count): a cheaper task, for choosing a design whose plateau fits the study's time.

    python benchmarks/phantom_tuned_length.py --sweep-dir runs/phantom_tuned [--backbone phantom_vit]
                                              [--seeds 0 1] [--epochs 10] [--arms lora molre_shared]
                                              [--image-size 48 48] [--work /tmp/phantom_tuned_length]
                                              [--out FILE.json]
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
RESULTS = ROOT / "benchmarks" / "results" / "phantom_tuned_length.json"
MOLRE = [sys.executable, "-c", "import sys; from molre_lib.cli import main; sys.exit(main())"]
ARM_NAMES = {("lora", False): "LoRA", ("molre", True): "MoLRE shared A", ("molre", False): "MoLRE separate A_e",
             ("linear_probe", False): "linear probe"}
ARM_KEYS = {"lora": ("lora", False), "molre_shared": ("molre", True), "molre_separate": ("molre", False),
            "linear_probe": ("linear_probe", False)}


def fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def final_runs(sweep_dir: Path, backbone: str, seeds: list[int]) -> list[dict]:
    """The sweep's finished final runs of ``backbone`` at ``seeds``, from its ``runs.csv``."""
    runs_csv = sweep_dir / "runs.csv"
    if not runs_csv.is_file():
        fail(f"{runs_csv} not found: run the tuned study first (make phantom-study)")
    with open(runs_csv, newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["BACKBONE"] == backbone and int(r["SEED"]) in seeds]
    if not rows:
        fail(f"{runs_csv}: no run of backbone {backbone!r} at seeds {seeds}")
    out = []
    for r in rows:
        run_dir = sweep_dir / r["run"]  # where the folder is now (runs.csv keeps the path it was written at)
        if not (run_dir / "metrics.json").is_file():
            fail(f"{run_dir}: no metrics.json; the study's final run {r['run']} has not finished")
        out.append({"run": r["run"], "run_dir": run_dir, "adapter": r["ADAPTER"],
                    "shared_a": r["SHARED_A"] == "True", "seed": int(r["SEED"])})
    return out


def val_manifest(sweep_dir: Path) -> Path:
    views = sorted((sweep_dir / "tune").glob("manifest_no_test_*.csv"))
    if not views:
        fail(f"{sweep_dir / 'tune'}: no manifest_no_test_*.csv (the trials' view without the test rows)")
    return views[0]


def final_val_auc(run_dir: Path) -> tuple[float, list[dict]]:
    value = json.loads((run_dir / "metrics.json").read_text())["val"]["summary"]["macro_auc"]["value"]
    with open(run_dir / "train_log.csv", newline="") as fh:
        curve = [{"epoch": int(float(r["epoch"])), "val_macro_auc": round(float(r["val_macro_auc"]), 4)}
                 for r in csv.DictReader(fh) if r.get("val_macro_auc") not in (None, "", "nan")]
    return value, curve


def train_longer(run: dict, study_cfg: dict, manifest: Path, work: Path, epochs: int,
                 image_size: list[int] | None = None) -> dict:
    run_dir = work / (f"{run['run']}_e{epochs}" + (f"_px{image_size[0]}x{image_size[1]}" if image_size else ""))
    size = []
    if image_size:
        depth = (study_cfg.get("volume_shape") or [None])[0]
        if depth is None:
            fail(f"{run['run_dir'] / 'config.json'}: no volume_shape; --image-size needs the study's slice count")
        size = ["--volume-shape", str(depth), *map(str, image_size), "--image-size", *map(str, image_size)]
    cost_file = run_dir / "length_cost.json"
    if not (run_dir / "metrics.json").is_file():
        study_manifest = Path(study_cfg["manifest"])
        # the view's paths are relative to the study's data folder, as the trials' are
        data_root = run["run_dir"].parent / "data" if not study_manifest.is_file() else study_manifest.parent
        cmd = MOLRE + ["train", "--run-dir", str(run_dir), "--config", str(run["run_dir"] / "config.json"),
                       "--manifest", str(manifest), "--data-root", str(data_root), "--test-split", "",
                       "--epochs", str(epochs), *size,
                       "--eval-bootstrap", "0", "--no-tensorboard"]
        if (run_dir / "config.json").is_file():
            cmd.append("--resume")
        start, cpu0, load_before = time.time(), os.times(), os.getloadavg()[0]
        subprocess.run(cmd, check=True, cwd=ROOT)
        cpu1 = os.times()
        cost_file.write_text(json.dumps({
            "wall_s": round(time.time() - start, 1), "load_before": round(load_before, 2),
            "cpu_s": round(cpu1.children_user + cpu1.children_system - cpu0.children_user - cpu0.children_system, 1)}))
    value, curve = final_val_auc(run_dir)
    return {"val_auc": value, "curve": curve, **(json.loads(cost_file.read_text()) if cost_file.is_file() else {})}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sweep-dir", type=Path, default=ROOT / "runs" / "phantom_tuned")
    parser.add_argument("--backbone", default="phantom_vit")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--epochs", type=int, default=10, help="the longer training length")
    parser.add_argument("--work", type=Path, default=Path("/tmp/phantom_tuned_length"))
    parser.add_argument("--arms", nargs="+", default=list(ARM_KEYS), choices=list(ARM_KEYS))
    parser.add_argument("--image-size", type=int, nargs=2, default=None, metavar=("H", "W"),
                        help="train the longer runs on H x W slices (encoder input and volume; default: the study's)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    wanted = {ARM_KEYS[a] for a in args.arms}
    runs = [r for r in final_runs(args.sweep_dir, args.backbone, args.seeds) if (r["adapter"], r["shared_a"]) in wanted]
    manifest = val_manifest(args.sweep_dir)
    args.work.mkdir(parents=True, exist_ok=True)
    arms: dict[str, dict] = {}
    for run in sorted(runs, key=lambda r: (list(ARM_NAMES).index((r["adapter"], r["shared_a"])), r["seed"])):
        name = ARM_NAMES[(run["adapter"], run["shared_a"])]
        cfg = json.loads((run["run_dir"] / "config.json").read_text())["train"]
        if cfg["test_split"] == "":
            fail(f"{run['run_dir']}: not a final run (it predicted no test split)")
        study_auc, study_curve = final_val_auc(run["run_dir"])
        longer = train_longer(run, cfg, manifest, args.work, args.epochs, args.image_size)
        arm = arms.setdefault(name, {"lr": cfg["lr"], "lora_alpha": cfg["lora_alpha"], "study_epochs": cfg["epochs"],
                                     "seeds": []})
        arm["seeds"].append({"seed": run["seed"], "study_val_auc": round(study_auc, 4),
                             "longer_val_auc": round(longer["val_auc"], 4),
                             "delta": round(longer["val_auc"] - study_auc, 4),
                             "study_curve": study_curve, "longer_curve": longer["curve"],
                             **{k: longer[k] for k in ("wall_s", "cpu_s", "load_before") if k in longer}})
        print(f"{name:20s} seed {run['seed']}: val AUC {study_auc:.3f} at {cfg['epochs']} epochs, "
              f"{longer['val_auc']:.3f} at {args.epochs} ({longer['val_auc'] - study_auc:+.3f})", flush=True)
    for name, arm in arms.items():
        deltas = [s["delta"] for s in arm["seeds"]]
        arm["mean_delta"] = round(sum(deltas) / len(deltas), 4)
        arm["min_delta"], arm["max_delta"] = min(deltas), max(deltas)
    gaps = {}  # each arm's gap to LoRA, per seed, at the study's length and at the longer one
    if "LoRA" in arms:
        ref = {s["seed"]: s for s in arms["LoRA"]["seeds"]}
        for name, arm in arms.items():
            if name == "LoRA":
                continue
            pairs = [(s["study_val_auc"] - ref[s["seed"]]["study_val_auc"],
                      s["longer_val_auc"] - ref[s["seed"]]["longer_val_auc"]) for s in arm["seeds"] if s["seed"] in ref]
            if pairs:
                gaps[name] = {"study_gap_mean": round(sum(p[0] for p in pairs) / len(pairs), 4),
                              "longer_gap_mean": round(sum(p[1] for p in pairs) / len(pairs), 4),
                              "n_seeds": len(pairs)}
    results = {"sweep_dir": str(args.sweep_dir), "backbone": args.backbone, "seeds": args.seeds,
               "study_epochs": sorted({a["study_epochs"] for a in arms.values()}), "longer_epochs": args.epochs,
               "longer_image_size": args.image_size or (cfg["volume_shape"] or [None, None, None])[1:],
               "split": "val (the trials' manifest view, no test rows)", "arms": arms, "gap_to_lora": gaps}
    for name, arm in arms.items():
        print(f"{name:20s} mean Δ val AUC {arm['mean_delta']:+.4f} (min {arm['min_delta']:+.4f}, "
              f"max {arm['max_delta']:+.4f}) over {len(arm['seeds'])} seed(s)")
    for name, gap in gaps.items():
        print(f"{name:20s} gap to LoRA: {gap['study_gap_mean']:+.4f} at the study's length, "
              f"{gap['longer_gap_mean']:+.4f} at {args.epochs} epochs")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
