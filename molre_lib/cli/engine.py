"""``molre train | evaluate | compare | predict``: thin wrappers over molre_lib.engine.train / molre_lib.engine.evaluate.

``molre train`` has one flag per TrainConfig field, generated from the dataclass (help text included);
flags override ``--config file.json|yaml``, which overrides the defaults.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import typing
from pathlib import Path
from typing import Any


def _flag_kwargs(tp: Any) -> dict[str, Any]:
    """argparse keyword arguments for a TrainConfig field type."""
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    base = args[0] if (typing.get_origin(tp) is typing.Union and args) else tp
    if base is bool:
        return {"action": argparse.BooleanOptionalAction}
    if typing.get_origin(base) is list:
        inner = typing.get_args(base)[0]
        if typing.get_origin(inner) is list:  # windows: [[level, width], ...] as JSON
            return {"type": json.loads, "metavar": "JSON"}
        if inner is str:  # names / KEY=VALUE pairs: a repeated flag adds to the list instead of replacing it
            return {"nargs": "+", "type": str, "action": "extend"}
        return {"nargs": "+", "type": inner}
    return {"type": base}


def _add_train_flags(p: argparse.ArgumentParser) -> None:
    from molre_lib.engine.config import TrainConfig

    hints = typing.get_type_hints(TrainConfig)
    group = p.add_argument_group("TrainConfig fields (override --config)")
    for f in dataclasses.fields(TrainConfig):
        default = f.default if f.default is not dataclasses.MISSING else None
        group.add_argument(f"--{f.name.replace('_', '-')}", dest=f.name, default=None,
                           help=f"{f.metadata.get('help', '')} [default: {default}]", **_flag_kwargs(hints[f.name]))


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("train", help="Train an adapter (LoRA / MoLRE / linear probe / full) into a run dir.")
    p.add_argument("--run-dir", required=True, help="Output run directory.")
    p.add_argument("--config", default=None, help="TrainConfig as JSON or YAML (a run's config.json works).")
    p.add_argument("--resume", action="store_true",
                   help="Continue the run in --run-dir from checkpoints/last.pt (prev.pt if last.pt is damaged).")
    p.add_argument("--restart", action="store_true",
                   help="Start the run in --run-dir over: its checkpoints, config, log and outputs are removed "
                   "(with no other flags it reuses the run's config.json).")
    _add_train_flags(p)
    p.set_defaults(func=_train)

    p = subparsers.add_parser("evaluate", help="Bootstrap AUROC CIs, ECE, operating points of a run's predictions.")
    p.add_argument("run", help="Run directory.")
    p.add_argument("--split", default="test")
    p.add_argument("--bootstrap", type=int, default=1000, help="Bootstrap replicates (0 = no CIs).")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_evaluate)

    p = subparsers.add_parser("compare", help="Per-finding paired DeLong comparison of RUN_B against RUN_A.")
    p.add_argument("run_a", help="Reference run (e.g. LoRA).")
    p.add_argument("run_b", help="Compared run (e.g. MoLRE); delta = B - A.")
    p.add_argument("--split", default="test")
    p.add_argument("--out", default=None, help="Output folder (default RUN_B/compare_<RUN_A name>).")
    p.add_argument("--band", type=float, nargs=2, default=(0.3, 0.7), metavar=("LOW", "HIGH"),
                   help="Borderline probability band of the confidence-regime analysis.")
    p.add_argument("--min-shared", type=float, default=0.9, metavar="FRACTION",
                   help="refuse when the runs share fewer than this fraction of the larger run's scans [default: 0.9]")
    p.set_defaults(func=_compare)

    p = subparsers.add_parser("predict", help="Probabilities of 75 findings for NIfTI / DICOM inputs.",
                              description="One row per input (per series for a folder holding several), with "
                              "status (ok|error), warning and error columns; a bad input gets a row with its reason "
                              "and the others are still predicted. Exit 0 when every row is ok, 2 otherwise.")
    p.add_argument("run", help="Run directory.")
    p.add_argument("inputs", nargs="+", help="NIfTI files, DICOM series folders or single DICOM files.")
    p.add_argument("--out", default=None, help="CSV path, checked before inference (default: print to stdout).")
    p.add_argument("--device", default="auto")
    _add_check_flags(p)
    from molre_lib.cli.data import _add_series_policy

    _add_series_policy(p)
    p.add_argument("--pseudonymize", action="store_true",
                   help="write input_id (input-0001, ...) instead of the path, which may carry patient names or MRNs")
    p.add_argument("--id-map", default=None,
                   help="with --pseudonymize: also write the input_id -> path table to this CSV (keep it private)")
    p.set_defaults(func=_predict)


def _add_check_flags(p: argparse.ArgumentParser) -> None:
    from molre_lib.engine.predict import PredictChecks

    for f in dataclasses.fields(PredictChecks):
        flag = f"--{f.name.replace('_', '-')}"
        if f.type in (bool, "bool"):
            p.add_argument(flag, dest=f.name, action="store_true", help=f.metadata["help"])
        else:
            kind = int if f.type in (int, "int") else float
            p.add_argument(flag, dest=f.name, type=kind, default=f.default,
                           help=f"{f.metadata['help']} [default: {f.default}]")


def _train_config(args: argparse.Namespace):
    from molre_lib.engine.config import TrainConfig

    names = [f.name for f in dataclasses.fields(TrainConfig)]
    given = {n: getattr(args, n) for n in names if getattr(args, n) is not None}
    if args.config:
        base = TrainConfig.load(args.config).to_dict()
    elif (args.resume or args.restart) and (Path(args.run_dir) / "config.json").exists():
        base = TrainConfig.load(Path(args.run_dir) / "config.json").to_dict()
    else:
        base = {}
    base.update(given)
    return TrainConfig.from_dict(base)


def _train(args: argparse.Namespace) -> int:
    """User errors (bad config, run-dir state, a locked run folder, a full disk) are one line with exit 2 through
    molre_lib.cli.main; a non-finite loss exits 3 after its checkpoint."""
    from molre_lib.engine.train import NonFiniteLossError, train

    if args.resume and args.restart:
        raise ValueError("--resume and --restart exclude each other")
    cfg = _train_config(args)
    try:
        run = train(cfg, args.run_dir, resume=args.resume, restart=args.restart)
    except NonFiniteLossError as err:
        print(f"molre train: {err}", file=sys.stderr)
        return 3
    print(f"run written to {run}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from molre_lib.engine.evaluate import evaluate_run

    doc = evaluate_run(args.run, args.split, args.bootstrap, args.seed)
    for name, s in doc["summary"].items():
        ci = "" if s["ci_low"] is None else f"  [{s['ci_low']:.3f}, {s['ci_high']:.3f}]"
        value = "nan" if s["value"] is None else f"{s['value']:.3f}"
        print(f"{name:28s} {value}{ci}  ({s['n_findings']} findings)")
    print(f"wrote per-finding AUCs and metrics.json to {args.run}")
    return 0


def _compare(args: argparse.Namespace) -> int:
    from molre_lib.engine.evaluate import compare_runs, format_comparison

    df = compare_runs(args.run_a, args.run_b, args.out, args.split, tuple(args.band), min_shared=args.min_shared)
    print(format_comparison(df, Path(args.run_a).name, Path(args.run_b).name))
    print(f"\nwrote {df.attrs['out_dir']}/compare_per_finding.csv and compare_categories.csv")
    return 0


def _predict(args: argparse.Namespace) -> int:
    from molre_lib.engine.predict import PredictChecks, check_output_path, predict

    for out in (args.out, args.id_map):
        if out:
            check_output_path(out)
    if args.id_map and not args.pseudonymize:
        raise ValueError("--id-map needs --pseudonymize")
    checks = PredictChecks(**{f.name: getattr(args, f.name) for f in dataclasses.fields(PredictChecks)})
    from molre_lib.cli.data import series_policy

    df = predict(args.run, args.inputs, device=args.device, checks=checks, pseudonymize=args.pseudonymize,
                 policy=series_policy(args.series_policy) if args.series_policy else None)
    if args.id_map:
        import pandas as pd

        pd.DataFrame(sorted(df.attrs["id_map"].items()), columns=["input_id", "path"]).to_csv(args.id_map, index=False)
    if args.out:
        df.to_csv(args.out, index=False)
        print(f"wrote {len(df)} rows to {args.out}")
    else:
        df.to_csv(sys.stdout, index=False)
    bad = df[df["status"] != "ok"]
    for error in bad["error"]:
        print(f"molre predict: error: {error}", file=sys.stderr)
    for name, warning in df.loc[(df["status"] == "ok") & (df["warning"] != ""), [df.columns[0], "warning"]].values:
        print(f"molre predict: warning: {name}: {warning}", file=sys.stderr)      # e.g. a gantry tilt corrected
    if len(bad):
        what = "input(s)" if len(df) == len(args.inputs) else f"row(s) (one per series of {len(args.inputs)} input(s))"
        print(f"molre predict: {len(bad)} of {len(df)} {what} failed; their rows have status=error", file=sys.stderr)
    return 2 if len(bad) else 0
