"""``molre sweep SWEEP.yaml [--gpus 0,1] [--dry-run]``: run a notebook sweep (see molre_lib.workbook.sweep)."""
from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "sweep",
        help="execute notebooks/01_train.ipynb per run of a sweep YAML, then the analysis notebooks",
        description="Backbones x adapters x seeds x settings from SWEEP.yaml -> one papermill-executed training "
        "notebook per run under runs/<sweep>/<run>/, then the analysis notebooks. Finished runs (metrics.json "
        "present) are skipped; failures are listed in runs/<sweep>/sweep_status.csv and the sweep goes on.",
    )
    parser.add_argument("sweep_file", help="sweep YAML, e.g. notebooks/sweeps/demo.yaml")
    parser.add_argument("--gpus", default=None,
                        help="comma-separated GPU ids, one notebook per GPU at a time (CUDA_VISIBLE_DEVICES); "
                        "default: sequentially on the default device")
    parser.add_argument("--dry-run", action="store_true", help="print the runs and parameters, execute nothing")
    parser.set_defaults(func=_handle)


def _handle(args: argparse.Namespace) -> int:
    from molre_lib.workbook.sweep import SweepConfig, run_sweep

    gpus = [g.strip() for g in args.gpus.split(",") if g.strip()] if args.gpus else None
    try:
        cfg = SweepConfig.from_yaml(args.sweep_file)
        rows = run_sweep(cfg, gpus=gpus, dry_run=args.dry_run)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}")
        return 2
    return 1 if any(r["status"] != "ok" for r in rows) else 0
