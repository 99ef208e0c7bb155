"""``molre demo``: the whole workbook on the embedded synthetic head-CT phantom.

phantom data (00) -> demo backbone ``phantom_vit`` (pretrained label-free once, then cached) -> LoRA and
MoLRE runs (01) -> routing (02), per-finding AUC (03), Grad-CAM (04) and summary (05), all executed by
papermill through the demo sweep. Re-running skips what is finished.
"""
from __future__ import annotations

import argparse
import importlib
from pathlib import Path

DEFAULT_SWEEP = "notebooks/sweeps/demo.yaml"
# Demo backbones built on this machine the first time a sweep needs them: (module, pretraining function).
DEMO_PRETRAINING = {"phantom_vit": ("molre_lib.backbones.phantom_pretrain", "pretrain_phantom_vit"),
                    "natural_vit": ("molre_lib.backbones.natural_vit", "pretrain_natural_vit")}
# sha256 of model.safetensors as pretrained where the documented demo numbers were measured (2 pinned threads);
# another instruction set or torch version gives other weights (docs/explanation/reproducibility.md)
REFERENCE_CHECKSUMS: dict[str, tuple[str, str]] = {
    "phantom_vit": ("2d3aafca384b42044de3a3d8e35cb484b589caf4fa4df418f1dcdb486067c8e3",
                    "2026-12-04, x86-64 AVX-512, torch 2.14.1, 2 threads, 600 steps"),
    # the backbone of the tuned phantom study's documented numbers (docs/explanation/phantom-study.md)
    "natural_vit": ("936891a90264aa091326870dd123464f4dbbd001752b8005502293573c0332eb",
                    "2026-12-05, x86-64 AVX-512, torch 2.14.1, 2 threads, 600 steps"),
}


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("demo", help="run the notebook series on the phantom (what `make demo` does)")
    p.add_argument("--sweep", default=DEFAULT_SWEEP, help=f"sweep file to run (default {DEFAULT_SWEEP})")
    p.add_argument("--gpus", default=None, help="comma-separated GPU ids, one notebook per GPU at a time")
    p.set_defaults(func=run_demo)


def run_demo(args: argparse.Namespace) -> int:
    import time

    import pandas as pd

    from molre_lib.workbook.sweep import SweepConfig, run_sweep

    t0 = time.perf_counter()
    cfg = SweepConfig.from_yaml(args.sweep)
    for name in cfg.grid.get("BACKBONE", ["phantom_vit"]):
        ensure_demo_backbone(name)
    rows = run_sweep(cfg, gpus=args.gpus.split(",") if args.gpus else None)
    sweep_dir = Path(cfg.runs_dir) / cfg.name
    failed = [r for r in rows if r.get("status") == "failed"]
    print(f"\n[demo] finished in {time.perf_counter() - t0:.0f} s")
    print(f"[demo] executed notebooks and runs: {sweep_dir.resolve()}/")
    print(f"[demo] figures (PDF, SVG, PNG):     {(Path(cfg.figures_dir) / cfg.name).resolve()}/")
    table, paper = sweep_dir / "summary_table.csv", sweep_dir / "paper_table.tex"
    if table.is_file():
        print(f"[demo] every number:               {table.resolve()}")
        if paper.is_file():
            print(f"[demo] paper table (LaTeX):        {paper.resolve()}")
        print()
        print(pd.read_csv(table).round(3).to_string(index=False))
    print_explanations(sweep_dir)
    print_report_labeller_agreement(sweep_dir)
    if failed:
        print(f"\n[demo] {len(failed)} notebook(s) failed; see {sweep_dir / 'sweep_status.csv'}:")
        for r in failed:
            print(f"  - {r.get('step')} {r.get('key')}: {str(r.get('error', ''))[:200]}")
        return 1
    return 0


def print_report_labeller_agreement(sweep_dir: Path, n: int = 600) -> None:
    """The report labeller (molre label-reports) on ``n`` synthetic reports vs the phantom's truth: per-finding F1
    and kappa written to ``report_labeller_agreement.csv``, pooled rows printed."""
    from molre_lib.reports.phantom_check import phantom_report_agreement, summary_lines

    out = Path(sweep_dir) / "report_labeller_agreement.csv"
    table = phantom_report_agreement(n, out=out)
    print(f"\n[demo] report labeller vs the phantom's truth on {n} synthetic reports (per finding: {out}):")
    print("\n".join(summary_lines(table)))


def ensure_demo_backbone(name: str) -> None:
    """Pretrain a demo backbone (phantom_vit, natural_vit) once and cache it; other backbones are left alone."""
    from molre_lib.backbones import find_local_weights, get_spec

    if name not in DEMO_PRETRAINING:
        return
    folder = find_local_weights(get_spec(name))
    if folder is not None:
        print(f"[demo] demo backbone {name} found in the cache", flush=True)
    else:
        print(f"[demo] pretraining the demo backbone {name} (label-free, cached for next time) ...", flush=True)
        module, function = DEMO_PRETRAINING[name]
        folder = getattr(importlib.import_module(module), function)()
    print(checksum_line(name, Path(folder) / "model.safetensors"), flush=True)


def checksum_line(name: str, weights: Path) -> str:
    """The sha256 of a demo backbone's weights, and whether it is the one the documented numbers came from."""
    import hashlib

    digest = hashlib.sha256(weights.read_bytes()).hexdigest()
    ref = REFERENCE_CHECKSUMS.get(name)
    if ref is None:
        verdict = "no reference checksum recorded"
    elif digest == ref[0]:
        verdict = f"the reference backbone of docs/explanation/reproducibility.md ({ref[1]})"
    else:
        verdict = (f"differs from the reference ({ref[1]}: {ref[0][:12]}...): another CPU instruction set, torch "
                   "version or device gives other weights, and AUCs that move within the seed spread stated in "
                   "docs/explanation/reproducibility.md")
    return f"[demo] {name} sha256 {digest}: {verdict}"


def print_explanations(sweep_dir: Path) -> None:
    """The localisation summary (04: localisation.json) and routing specialisation (02) of every run that has them."""
    import json

    import pandas as pd

    from molre_lib.workbook.localise import OVERVIEW, overview_lines

    for path in sorted(Path(sweep_dir).glob(f"*/{OVERVIEW}")):
        print(f"\n[demo] Grad-CAM / occlusion vs lesion masks, {path.parent.name} ({path}):")
        print("\n".join(overview_lines(json.loads(path.read_text()))))
    for path in sorted(Path(sweep_dir).glob("*/routing_specialisation_tests.csv")):
        t = pd.read_csv(path)
        print(f"\n[demo] expert specialisation, {path.parent.name} ({path}): Cramér's V of the dominant expert vs "
              "tissue / lesion per layer, toroidal-shift permutation p")
        for target, g in t.groupby("target", sort=False):
            cells = ", ".join(f"L{int(r.layer_index)} {r.v:.2f} (null95 {r.v_null_95:.2f}, p={r.p:.3g})" for r in g.itertuples())
            print(f"  {target:<7} {int((g['p'] <= 0.05).sum())}/{len(g)} layers p<=0.05: {cells}")

