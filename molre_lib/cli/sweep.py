"""``molre sweep SWEEP.yaml [--gpus 0,1] [--dry-run] [--tune-only | --skip-tune] [--executor slurm ...] [--status]``: run a notebook sweep here
(molre_lib.workbook.sweep) or as SLURM jobs (molre_lib.workbook.slurm), or show where it stands."""
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
    tune = parser.add_mutually_exclusive_group()
    tune.add_argument("--tune-only", dest="tune", action="store_const", const="only", default="all",
                      help="with a tune: section, run the tuning trials (and the prepare notebooks) and stop; "
                      "writes runs/<sweep>/tune/trials.csv and selected.csv (with --executor slurm: queues only "
                      "the prepare job and the tuning tasks)")
    tune.add_argument("--skip-tune", dest="tune", action="store_const", const="skip",
                      help="run no tuning trial: train the final runs of the arms tuned before, list the others")
    parser.add_argument("--executor", choices=("local", "slurm"), default="local",
                        help="local: run the notebooks here; slurm: submit them as SLURM jobs with submitit and return")
    parser.add_argument("--status", action="store_true",
                        help="print every run's state (pending/running/requeued/done/failed, log, last error) from the "
                        "sweep folder and squeue; also written to runs/<sweep>/cluster_status.csv")
    parser.add_argument("--wait", action="store_true", help="with --executor slurm: block until every job has ended")
    slurm = parser.add_argument_group("SLURM job options (override the sweep file's slurm: section)")
    slurm.add_argument("--partition", default=None)
    slurm.add_argument("--gpus-per-run", type=int, default=None, help="GPUs per training run; > 1 runs DDP")
    slurm.add_argument("--tasks-per-run", type=int, default=None, help="DDP processes per run (default: one per GPU)")
    slurm.add_argument("--nodes", type=int, default=None, help="nodes per training run")
    slurm.add_argument("--cpus-per-gpu", type=int, default=None, help="CPUs per task (one task per GPU)")
    slurm.add_argument("--mem", default=None, help="memory per node, e.g. 64G")
    slurm.add_argument("--time", default=None, help="time limit per training job: minutes or [D-]HH:MM:SS")
    slurm.add_argument("--account", default=None)
    slurm.add_argument("--qos", default=None)
    slurm.add_argument("--array-parallelism", type=int, default=None, help="training runs (and tuning trials) running at once")
    slurm.add_argument("--signal-delay", dest="signal_delay_s", type=int, default=None,
                       help="seconds before the time limit the job checkpoints and is requeued")
    slurm.add_argument("--sbatch", action="append", default=None, metavar="KEY=VALUE",
                       help="extra #SBATCH option, repeatable, e.g. --sbatch constraint=a100")
    parser.set_defaults(func=_handle)


SLURM_FLAGS = ("partition", "gpus_per_run", "tasks_per_run", "nodes", "cpus_per_gpu", "mem", "time", "account", "qos",
               "array_parallelism", "signal_delay_s")


def _slurm_config(cfg, args: argparse.Namespace, where: str):
    from molre_lib.workbook.slurm import SlurmConfig

    flags = {name: getattr(args, name) for name in SLURM_FLAGS}
    if args.sbatch:
        bad = [item for item in args.sbatch if "=" not in item]
        if bad:
            raise ValueError(f"--sbatch {bad[0]!r}: expected KEY=VALUE, e.g. constraint=a100")
        flags["sbatch"] = dict(item.split("=", 1) for item in args.sbatch)
    return SlurmConfig.from_dict(cfg.slurm, f"{where}: slurm").merged(flags)


def _handle(args: argparse.Namespace) -> int:
    from molre_lib.workbook.sweep import SweepConfig, run_sweep

    gpus = [g.strip() for g in args.gpus.split(",") if g.strip()] if args.gpus else None
    try:
        cfg = SweepConfig.from_yaml(args.sweep_file)
        if args.tune != "all" and not cfg.tune:
            flag = {"only": "--tune-only", "skip": "--skip-tune"}[args.tune]
            raise ValueError(f"{args.sweep_file}: {flag} needs a tune: section in the sweep file")
        if args.status or args.executor == "slurm":
            return _cluster(cfg, args)
        rows = run_sweep(cfg, gpus=gpus, dry_run=args.dry_run, tune=args.tune)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}")
        return 2
    return 1 if any(r["status"] != "ok" for r in rows) else 0


def _cluster(cfg, args: argparse.Namespace) -> int:
    from molre_lib.workbook.cluster_status import SchedulerError, format_table, sweep_status, wait_for_jobs
    from submitit.core.utils import FailedJobError
    from molre_lib.workbook.slurm import submit_sweep

    try:
        if args.status:
            rows = sweep_status(cfg)
        else:
            scfg = _slurm_config(cfg, args, args.sweep_file)
            if args.dry_run:
                print(f"would submit with {scfg}")
                return 0
            submit_sweep(cfg, scfg, tune=args.tune)
            if not args.wait:
                print(f"queued; follow it with: molre sweep {args.sweep_file} --status")
                return 0
            rows = wait_for_jobs(cfg)
    except (SchedulerError, ValueError) as err:
        print(f"error: {err}")
        return 2
    except FailedJobError as err:  # sbatch refused the job: a wrong partition, account, qos or option
        lines = [ln for ln in str(err).splitlines() if ln.strip()]
        print(f"error: {args.sweep_file}: {lines[-1] if lines else err} (check the slurm: options and flags)")
        return 2
    print(format_table(rows))
    return 1 if any(r["state"] == "failed" for r in rows) else 0
