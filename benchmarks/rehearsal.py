"""Full-size rehearsal on the CPU: every study backbone at its real input size through the real code paths.

For each backbone of ``notebooks/sweeps/study.yaml`` (random init, full-size architecture, the study's MoLRE
setting: 4 experts x r=2, shared A, token router), in its own process so peak memory is its own:

1. ``molre preprocess`` equivalent: phantom scans fitted once into the cache at the backbone's input
   (2D backbones: ``--slices`` axial slices of the real H x W, fewer than the study's 32 to fit a CPU;
   3D backbones: the real volume);
2. ``engine.train.train``: one MoLRE optimizer step with the trainer, then its test-split prediction;
3. ``engine.evaluate.evaluate_run`` on that prediction;
4. ``engine.predict.predict`` on one scan file, as ``molre predict`` does;
5. Grad-CAM of one finding (``analysis.explain.gradcam``) on the run reopened by ``workbook.runs.open_run``;
6. a routing log (``analysis.routing.collect_routing``) of one scan.

Time per stage and peak RSS per backbone go to benchmarks/results/rehearsal.json (``make rehearsal``).
Heavy: MedSigLIP-448 takes minutes and ~9 GB. Run it ``nice`` on a quiet machine, one backbone at a time.

    python benchmarks/rehearsal.py [--backbones a,b] [--slices 2]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "rehearsal.json"


def study_backbones() -> list[str]:
    import yaml

    return list(yaml.safe_load((ROOT / "notebooks" / "sweeps" / "study.yaml").read_text())["grid"]["BACKBONE"])


def rehearse(name: str, work: Path, slices: int) -> dict:
    """All stages for one backbone in this process; returns timings, shapes and peak RSS."""
    import numpy as np
    import torch

    from molre_lib.analysis.explain import gradcam
    from molre_lib.analysis.routing import collect_routing
    from molre_lib.backbones import get_spec
    from molre_lib.data.preprocess import preprocess_manifest
    from molre_lib.engine.config import TrainConfig
    from molre_lib.engine.evaluate import evaluate_run
    from molre_lib.engine.loaders import preprocess_config
    from molre_lib.engine.predict import predict
    from molre_lib.engine.train import train
    from molre_lib.workbook.runs import open_run

    torch.manual_seed(0)
    spec = get_spec(name)
    manifest = work / "data" / "manifest.csv"
    shape = [slices, *spec.input_size] if spec.dims == 2 else list(spec.input_size)
    cfg = TrainConfig(manifest=str(manifest), backbone=name, pretrained=False, adapter="molre", n_experts=4, rank=2,
                      shared_a=True, router="token", batch_size=1, max_steps=1, val_split="", test_split="test",
                      volume_shape=shape, cache_dir=str(work / "cache"), device="cpu", amp="none",
                      eval_bootstrap=0, lr=1e-3)
    out: dict = {"backbone": name, "dims": spec.dims, "input_dhw": shape, "n_params": spec.n_params, "stages_s": {}}
    t = out["stages_s"]

    def stage(key, fn):
        t0 = time.perf_counter()
        value = fn()
        t[key] = round(time.perf_counter() - t0, 2)
        print(f"  {name}: {key} {t[key]:.1f} s", flush=True)
        return value

    rep = stage("preprocess", lambda: preprocess_manifest(manifest, preprocess_config(cfg, spec), workers=0,
                                                          progress=False))
    if rep.failed:
        raise RuntimeError(f"preprocess failed: {rep.failed}")
    run_dir = work / "runs" / name
    stage("train_1_step_and_predict_test", lambda: train(cfg, run_dir))
    metrics = json.loads((run_dir / "metrics.json").read_text())
    out["steps"] = metrics.get("steps")
    stage("evaluate", lambda: evaluate_run(run_dir, "test", bootstrap=0))
    scan = sorted((work / "data" / "scans").iterdir())[0]
    pred = stage("predict_1_scan", lambda: predict(run_dir, [scan], device="cpu"))
    if list(pred["status"]) != ["ok"]:
        raise RuntimeError(f"predict: {pred[['status', 'error']].to_dict('records')}")
    run = stage("open_run", lambda: open_run(run_dir, device="cpu"))
    image = run.dataset("test")[0]["image"]                                  # (C, D, H, W)
    cam = stage("gradcam_1_finding", lambda: gradcam(run.model, image, 0))
    if cam.shape != tuple(image.shape[1:]) or not np.isfinite(cam).all():
        raise RuntimeError(f"Grad-CAM shape {cam.shape} for image {tuple(image.shape)} or not finite")
    routing = stage("routing_log_1_scan", lambda: collect_routing(run.model, run.loader("test", max_scans=1,
                                                                                        batch_size=1)))
    if not routing.layers:
        raise RuntimeError("routing log recorded no layer")
    out.update(cam_shape=list(cam.shape), routing_layers=len(routing.layers),
               routing_grid=[list(g) if g else None for g in list(routing.grids.values())[:1]],
               total_s=round(sum(t.values()), 2),
               peak_rss_gib=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbones", default=None, help="comma-separated (default: the study's six)")
    parser.add_argument("--slices", type=int, default=2, help="axial slices per scan for 2D backbones (study: 32)")
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)     # child: one backbone
    parser.add_argument("--work", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--timeout", type=float, default=3600, help="seconds per backbone")
    args = parser.parse_args()
    if args.one:
        print(json.dumps(rehearse(args.one, Path(args.work), args.slices)), flush=True)
        return 0

    from molre_lib.data.synth import synthesize

    names = args.backbones.split(",") if args.backbones else study_backbones()
    previous = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    result = {"machine": {"python": sys.version.split()[0], "platform": platform.platform(),
                          "cpus": len(os.sched_getaffinity(0)), "load_avg_1m_start": os.getloadavg()[0]},
              "slices_2d": args.slices, "adapter": "molre E=4 r=2 shared A, token router; random init; fp32 CPU",
              "backbones": dict(previous.get("backbones", {}))}
    with tempfile.TemporaryDirectory(prefix="molre-rehearsal-") as tmp:
        work = Path(tmp)
        # 3 phantom scans (2 train, 1 test), fitted to each backbone's real input by the cache
        synthesize(work / "data", 3, shape=(24, 128, 128), seed=11, workers=1, splits=(0.67, 0.0, 0.33),
                   followup_fraction=0.0)
        failed = []
        for name in names:
            print(f"rehearsal {name} ...", flush=True)
            load = os.getloadavg()[0]
            try:
                proc = subprocess.run([sys.executable, __file__, "--one", name, "--work", str(work),
                                       "--slices", str(args.slices)], capture_output=True, text=True,
                                      timeout=args.timeout, cwd=ROOT)
                ok, tail = proc.returncode == 0, (proc.stderr or proc.stdout)[-3000:]
            except subprocess.TimeoutExpired:
                ok, tail, proc = False, f"timed out after {args.timeout:.0f} s", None
            if ok:
                row = json.loads(proc.stdout.strip().splitlines()[-1])
                row.update(status="passed", load_avg_1m_start=load, load_avg_1m_end=os.getloadavg()[0])
                print(f"  passed in {row['total_s']:.0f} s, peak RSS {row['peak_rss_gib']:.1f} GiB", flush=True)
            else:
                row = {"backbone": name, "status": "failed", "error_tail": tail, "load_avg_1m_start": load}
                failed.append(name)
                print(f"  FAILED:\n{tail}", flush=True)
            result["backbones"][name] = row
            RESULTS.parent.mkdir(parents=True, exist_ok=True)
            RESULTS.write_text(json.dumps(result, indent=2) + "\n")         # after every backbone: partial runs count
    print(f"wrote {RESULTS}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
