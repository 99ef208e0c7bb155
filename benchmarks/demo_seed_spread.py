"""How much does the demo's LoRA vs MoLRE result move with the training seed?

The demo (``make demo``) trains one seed of each arm on 280 phantom scans and tests on 60, so its two AUCs
and their difference are one draw. This script reruns exactly the demo's training configuration
(``notebooks/sweeps/demo.yaml``: 8 x 64 x 64 input, 8 epochs of 16-scan batches, lr 0.005, LoRA r=16 vs MoLRE
4 x r=4, token router, 2 pinned threads) through the engine for several seeds on the demo's data (00_data's
parameters of the demo sweep) and the cached demo backbone, one run at a time, and reports the test macro AUC
per seed, the per-seed difference MoLRE - LoRA, and their ranges. It also prints the backbone's sha256 and, where
``make demo`` has run (``--demo-dir runs/demo``), checks that seed 0 here gives the demo's own test AUCs (same data,
backbone, code and thread count: they should be bit-identical). Runs already in the result file for the same
backbone are kept, so the seed list can be extended in later calls. Writes ``benchmarks/results/demo_seed_spread.json``.

    flock /tmp/molre-heavy.lock python benchmarks/demo_seed_spread.py [--seeds 0 1 2] [--work /tmp/demo_seeds]
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "demo_seed_spread.json"


def demo_settings() -> tuple[dict, dict, dict]:
    """(00_data parameters, shared 01_train parameters, per-adapter overrides) of the demo sweep file."""
    sweep = yaml.safe_load((ROOT / "notebooks" / "sweeps" / "demo.yaml").read_text())
    return sweep["prepare"][0]["parameters"], sweep["parameters"], sweep["overrides"]["ADAPTER"]


def demo_data(work: Path) -> Path:
    """The demo's phantom set, generated as 00_data generates it (its parameter defaults + the sweep's values)."""
    from molre_lib.data.phantom import PhantomConfig
    from molre_lib.data.synth import synthesize

    manifest = work / "data" / "manifest.csv"
    if manifest.is_file():
        return manifest
    p = notebook_defaults(ROOT / "notebooks" / "00_data.ipynb")
    data, _, _ = demo_settings()
    p.update({k: v for k, v in data.items() if k in p and not str(v).startswith("{")})
    if p["MANIFEST"] or p["LABELS_FROM"] != "manifest":
        raise SystemExit("error: notebooks/sweeps/demo.yaml no longer generates a phantom set; update this script")
    return synthesize(work / "data", p["N_SCANS"], shape=tuple(p["SHAPE"]), seed=p["SEED"], label_noise=p["LABEL_NOISE"],
                      splits=tuple(p["SPLITS"]), cfg=PhantomConfig(prevalence_scale=p["PREVALENCE_SCALE"]))


def run_config(adapter: str, seed: int, manifest: Path, work: Path):
    """The TrainConfig 01_train builds for this demo run (its parameter defaults + the sweep's values)."""
    from molre_lib.workbook.params import check_parameters, train_config

    _, shared, overrides = demo_settings()
    params = notebook_defaults(ROOT / "notebooks" / "01_train.ipynb")
    params.update({k: v for k, v in shared.items() if k in params and not str(v).startswith("{")})
    params.update(overrides[adapter], ADAPTER=adapter, SEED=seed, MANIFEST=str(manifest),
                  CACHE_DIR=str(work / "cache"), EVAL_BOOTSTRAP=0, RUN_DIR=str(work / f"{adapter}_seed{seed}"))
    return train_config(check_parameters("01_train", params)), Path(params["RUN_DIR"])


def notebook_defaults(path: Path) -> dict:
    """The literal values of a notebook's ``parameters`` cell."""
    import ast

    cell = next(c for c in json.loads(path.read_text())["cells"] if "parameters" in c.get("metadata", {}).get("tags", []))
    return {n.targets[0].id: ast.literal_eval(n.value) for n in ast.parse("".join(cell["source"])).body}


def macro_auc(run_dir: Path, split: str = "test") -> float:
    summary = json.loads((run_dir / "metrics.json").read_text())[split]["summary"]
    return float(summary["macro_auc"]["value"])


def test_scans(manifest: Path) -> int:
    import pandas as pd

    return int((pd.read_csv(manifest)["split"] == "test").sum())


def demo_check(demo_dir: Path, runs: dict) -> dict:
    """Seed 0 here vs ``make demo``'s own runs (same data, backbone, code, threads: expected bit-identical)."""
    out = {}
    for adapter in ("lora", "molre"):
        metrics = demo_dir / f"phantom_vit_{adapter}_seed0" / "metrics.json"
        if metrics.is_file() and (adapter, 0) in runs:
            demo = macro_auc(metrics.parent)
            out[adapter] = {"demo_test_macro_auc": demo, "here": runs[(adapter, 0)]["test_macro_auc"],
                            "identical": demo == runs[(adapter, 0)]["test_macro_auc"]}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--work", type=Path, default=Path("/tmp/demo_seeds"))
    ap.add_argument("--demo-dir", type=Path, default=ROOT / "runs" / "demo", help="make demo's sweep folder")
    a = ap.parse_args()
    import torch

    from molre_lib.backbones import find_local_weights, get_spec
    from molre_lib.common.determinism import cpu_model
    from molre_lib.engine.train import train

    weights = find_local_weights(get_spec("phantom_vit"))
    if weights is None:
        raise SystemExit("error: no cached phantom_vit; run `molre pretrain-demo` or `make demo` first")
    digest = hashlib.sha256((weights / "model.safetensors").read_bytes()).hexdigest()
    print(f"phantom_vit sha256 {digest}", flush=True)
    manifest = demo_data(a.work)
    doc = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    runs = {(r["adapter"], r["seed"]): r for r in doc.get("runs", []) if doc.get("backbone_sha256") == digest}
    env = {"backbone_sha256": digest, "test_scans": test_scans(manifest), "torch": torch.__version__,
           "cpu_capability": torch.backends.cpu.get_cpu_capability(), "cpu_model": cpu_model(), "cores": os.cpu_count()}
    for seed in a.seeds:
        for adapter in ("lora", "molre"):
            if (adapter, seed) in runs:
                continue
            cfg, run_dir = run_config(adapter, seed, manifest, a.work)
            done = (run_dir / "metrics.json").is_file()
            load0, t0, c0 = os.getloadavg()[0], time.perf_counter(), time.process_time()
            if not done:
                train(cfg, run_dir, restart=run_dir.exists())
            runs[(adapter, seed)] = {"adapter": adapter, "seed": seed, "threads": cfg.threads,
                                     "test_macro_auc": macro_auc(run_dir), "val_macro_auc": macro_auc(run_dir, "val"),
                                     "cpu_s": None if done else round(time.process_time() - c0, 1),
                                     "wall_s": None if done else round(time.perf_counter() - t0, 1),
                                     "load_average_1min": [round(load0, 2), round(os.getloadavg()[0], 2)]}
            print(runs[(adapter, seed)], flush=True)
            write(env, runs, demo_check(a.demo_dir, runs))
    write(env, runs, demo_check(a.demo_dir, runs))
    print(json.dumps(json.loads(RESULTS.read_text())["spread"], indent=2))


def write(env: dict, runs: dict, check: dict) -> None:
    seeds = sorted({s for _, s in runs if ("lora", s) in runs and ("molre", s) in runs})
    delta = {s: runs[("molre", s)]["test_macro_auc"] - runs[("lora", s)]["test_macro_auc"] for s in seeds}
    spread = {}
    for adapter in ("lora", "molre"):
        v = [r["test_macro_auc"] for (ad, _), r in runs.items() if ad == adapter]
        if v:
            spread[adapter] = {"n": len(v), "min": min(v), "max": max(v), "mean": sum(v) / len(v)}
    if delta:
        spread["delta_molre_minus_lora"] = {"n": len(delta), "min": min(delta.values()), "max": max(delta.values()),
                                            "mean": sum(delta.values()) / len(delta),
                                            "per_seed": {str(s): d for s, d in delta.items()}}
    doc = {**env, "runs": sorted(runs.values(), key=lambda r: (r["seed"], r["adapter"])), "spread": spread,
           "seed0_vs_make_demo": check}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(doc, indent=2))


if __name__ == "__main__":
    main()
