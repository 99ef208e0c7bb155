"""``molre preprocess MANIFEST --cache-dir DIR``: fill the volume cache that training, evaluate, predict and the
notebooks read (molre_lib.data.preprocess)."""
from __future__ import annotations

import argparse
import os
import sys


def _ints(text: str, name: str) -> tuple[int, ...]:
    try:
        vals = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{name}: expected D,H,W integers, got {text!r}") from None
    if len(vals) != 3 or min(vals) < 1:
        raise argparse.ArgumentTypeError(f"{name}: expected three positive integers D,H,W, got {text!r}")
    return vals


def _spacing(text: str) -> tuple[float, ...]:
    try:
        vals = tuple(float(v) for v in text.split(","))
    except ValueError:
        vals = ()
    if len(vals) != 3 or min(vals) <= 0:
        raise argparse.ArgumentTypeError(f"--spacing: expected three positive numbers dz,dy,dx (mm), got {text!r}")
    return vals


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "preprocess", help="decode + fit every scan of a manifest once into a cache (parallel, resumable)",
        description="Decode, resample and fit every scan of MANIFEST into --cache-dir with N worker processes. "
                    "Re-running does only what is missing or stale (changed files); unreadable scans are skipped "
                    "and listed with their reason (also in DIR/preprocess_report.json; exit 2 only when every scan "
                    "failed), as are the corrections of the DICOM series check (a gantry tilt resampled, ...). "
                    "Point training (--cache-dir / CACHE_DIR) at the same folder with the same shape, spacing, fit "
                    "and --series-policy.")
    p.add_argument("manifest", help="manifest CSV (molre_lib.data.manifest format)")
    p.add_argument("--cache-dir", required=True, help="cache folder (shared by every run that uses these settings)")
    p.add_argument("--root", default=None, help="folder the manifest paths are relative to (default: its folder)")
    p.add_argument("--workers", type=int, default=None,
                   help="worker processes, one per core (default: all cores of this machine; 0 = in this process)")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--shape", type=lambda t: _ints(t, "--shape"), help="fitted volume D,H,W voxels")
    which.add_argument("--backbone", help="use this backbone's input (as training does: molre backbones list)")
    p.add_argument("--reduced", action="store_true", help="with --backbone: its reduced (test) input size")
    p.add_argument("--spacing", type=_spacing, default=None, help="resample to dz,dy,dx mm before fitting")
    p.add_argument("--fit", choices=("resize", "pad_crop"), default="resize", help="how to reach the shape")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    from molre_lib.cli.data import _add_series_policy

    _add_series_policy(p)                       # the run's TrainConfig.series_policy, so the cache keys match
    p.set_defaults(func=_preprocess)


def _config(args):
    from molre_lib.data.dataset import PreprocessConfig

    policy = tuple(args.series_policy) or None
    if args.backbone is None:
        return PreprocessConfig(shape=args.shape, spacing=args.spacing, fit=args.fit, cache_dir=args.cache_dir,
                                series_policy=policy)
    from molre_lib.backbones import get_spec
    from molre_lib.engine.config import TrainConfig
    from molre_lib.engine.loaders import preprocess_config

    # the exact settings training derives from this backbone, so its cache keys match
    train = TrainConfig(manifest=args.manifest, backbone=args.backbone, reduced=args.reduced, fit=args.fit,
                        spacing=list(args.spacing) if args.spacing else None, cache_dir=args.cache_dir,
                        series_policy=list(policy) if policy else None)
    return preprocess_config(train, get_spec(args.backbone))


def _preprocess(args) -> int:
    from molre_lib.data.manifest import ManifestError
    from molre_lib.data.preprocess import REPORT_NAME, preprocess_manifest

    try:
        cfg = _config(args)
    except KeyError as err:                                           # unknown backbone name
        print(f"error: --backbone: {err.args[0]}", file=sys.stderr)
        return 2
    workers = args.workers if args.workers is not None else len(os.sched_getaffinity(0))
    if workers < 0:
        print(f"error: --workers must be >= 0, got {workers}", file=sys.stderr)
        return 2
    try:
        report = preprocess_manifest(args.manifest, cfg, root=args.root, workers=workers, progress=not args.quiet)
    except ManifestError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        print(f"error: {err.filename or args.manifest}: {err.strerror or err}", file=sys.stderr)
        return 2
    for bad in report.failed:
        print(f"skipped {bad['scan_id']}: {bad['reason']}")
    for note in report.warnings:
        print(f"warning: {note['scan_id']}: {note['path']}: {note['warning']}")
    print(report.summary())
    if report.failed:
        print(f"{len(report.failed)} scan(s) skipped: listed above and in {report.cache_dir}/{REPORT_NAME}")
    if report.total and len(report.failed) == report.total:
        print(f"error: every scan of {args.manifest} failed; nothing was cached", file=sys.stderr)
        return 2                                    # (some failed: exit 0, the good ones are cached)
    return 0
