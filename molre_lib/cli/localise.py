"""``molre localise RUN_DIR [RUN_DIR ...] --out DIR``: score where finished runs' attribution maps point against
the phantom's lesion masks (molre_lib.workbook.localise); the first run is the reference of the paired rows."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    from molre_lib.workbook.localise import LocalisationSettings as S

    d = S()
    p = subparsers.add_parser(
        "localise", help="Grad-CAM / occlusion localisation scores of runs against the phantom's lesion masks",
        description="Pointing game (within --margin-mm of the mask), CAM energy inside the mask (vs the mask's share "
        "of the head) and voxel AUROC inside the head, for every positive finding with a mask in the first "
        "--max-scans scans of --split; the same scans for every run. Writes localisation_*.csv and "
        "localisation.json to --out. Needs phantom data (phantom.json beside the manifest).")
    p.add_argument("run_dirs", nargs="+", help="finished 01_train runs; the first is the reference (e.g. LoRA)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--split", default=d.split, choices=("train", "val", "test"))
    p.add_argument("--max-scans", type=int, default=d.max_scans)
    p.add_argument("--methods", nargs="+", default=list(d.methods), choices=("gradcam", "occlusion"))
    p.add_argument("--margin-mm", type=float, default=d.margin_mm)
    p.add_argument("--findings", nargs="+", default=None, help="taxonomy keys (default: every finding with a mask)")
    p.add_argument("--bootstrap", type=int, default=d.bootstrap)
    p.add_argument("--device", default="auto")
    p.set_defaults(func=run_localise)


def run_localise(args: argparse.Namespace) -> int:
    from molre_lib.workbook.localise import (OVERVIEW, LocalisationSettings, localise, overview_lines,
                                             write_localisation)
    from molre_lib.workbook.runs import open_run

    if args.max_scans < 1:
        print(f"error: --max-scans must be positive, got {args.max_scans}", file=sys.stderr)
        return 2
    try:
        runs = [open_run(r, args.device) for r in args.run_dirs]
        settings = LocalisationSettings(split=args.split, max_scans=args.max_scans, methods=tuple(args.methods),
                                        margin_mm=args.margin_mm, bootstrap=args.bootstrap,
                                        findings=tuple(args.findings) if args.findings else None)
        result = localise(runs, settings)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    out = write_localisation(result, args.out)
    print("\n".join(overview_lines(json.loads((Path(out) / OVERVIEW).read_text()))))
    print(f"written: {out}/localisation_*.csv, {OVERVIEW}")
    return 0
