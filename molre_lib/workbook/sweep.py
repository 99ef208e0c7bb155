"""Notebook sweeps: backbones × adapters × seeds × settings, one papermill-executed notebook per run.

A sweep YAML (see ``notebooks/sweeps/demo.yaml``) expands into training runs; each executes the training
notebook with its parameters injected into ``runs/<sweep>/<run>/``. Then the analysis notebooks run on the
results: once per finished run, once per group of runs (e.g. LoRA vs MoLRE of one backbone and seed), or once
for the whole sweep. With ``gpus`` each worker owns one GPU (``CUDA_VISIBLE_DEVICES``) and runs one notebook at
a time; without, notebooks run one after another on the default device.

A failed notebook keeps its executed copy with the traceback; the sweep goes on and ``sweep_status.csv``
lists it. A run whose directory holds ``metrics.json`` is finished and skipped on the next invocation;
analysis steps are skipped when they succeeded before and none of their input runs was retrained.
"""
from __future__ import annotations

import csv
import itertools
import json
import os
import re
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from molre_lib.analysis.summary import RUNS_FILE, STATUS_FILE

from .grid import _NAME_OK, DONE_MARKER, Run, _fill, expand_runs, make_run, run_parameters  # noqa: F401
from .sweep_checks import check_sweep, in_use
from .runner import Job, StatusBook, execute_notebook, notebook_error, run_pool



@dataclass
class AnalysisStep:
    """One analysis notebook and the runs it is executed on."""

    notebook: str = field(metadata={"help": "notebook file name inside notebooks_dir, e.g. 02_routing.ipynb"})
    per: str = field(default="run", metadata={"help": "run (each finished run) | group (runs sharing group_by) | sweep (once)"})
    when: dict[str, Any] = field(default_factory=dict, metadata={"help": "only runs whose grid values match, e.g. {ADAPTER: molre}"})
    group_by: list[str] = field(default_factory=list, metadata={"help": "grid keys that define a group (per: group)"})
    parameters: dict[str, Any] = field(default_factory=dict, metadata={
        "help": "parameters; strings may use {run}, {run_dir}, {sweep}, {sweep_dir}, {figures_dir}, {group}, grid keys; "
                "the exact string '{run_dirs}' becomes the list of input run directories"})

    def __post_init__(self) -> None:
        if self.per not in ("run", "group", "sweep"):
            raise ValueError(f"analysis {self.notebook}: per must be run, group or sweep, got {self.per!r}")
        if self.per == "group" and not self.group_by:
            raise ValueError(f"analysis {self.notebook}: per: group needs group_by")

    @property
    def step(self) -> str:
        return Path(self.notebook).stem


@dataclass
class SweepConfig:
    """A sweep file. Relative paths are relative to the directory ``molre sweep`` is run from."""

    name: str = field(metadata={"help": "sweep name: outputs go to <runs_dir>/<name>/ and <figures_dir>/<name>/"})
    grid: dict[str, list[Any]] = field(metadata={"help": "parameter -> values; the runs are their product, e.g. BACKBONE, ADAPTER, SEED"})
    parameters: dict[str, Any] = field(default_factory=dict, metadata={
        "help": "parameters shared by every training run; strings may use {sweep_dir}, {figures_dir}, {run}, {run_dir} "
                "and grid keys (write {{ }} for a literal brace)"})
    settings: list[dict[str, Any]] = field(default_factory=list, metadata={
        "help": "extra named parameter sets crossed with the grid: [{name: r8, RANK: 8}, ...]"})
    overrides: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict, metadata={
        "help": "grid key -> value -> parameters applied when a run has that value, e.g. ADAPTER: {lora: {N_EXPERTS: 1}}"})
    exclude: list[dict[str, Any]] = field(default_factory=list, metadata={"help": "grid combinations to leave out"})
    run_name: str | None = field(default=None, metadata={
        "help": "format string over grid keys and {setting}; default joins the values (numbers as key+value)"})
    notebooks_dir: str = field(default="notebooks", metadata={"help": "where the source notebooks are"})
    train_notebook: str = field(default="01_train.ipynb", metadata={"help": "notebook executed once per run"})
    prepare: list[AnalysisStep] = field(default_factory=list, metadata={
        "help": "notebooks run once before training (e.g. 00_data building the manifest); a failure stops the sweep"})
    analysis: list[AnalysisStep] = field(default_factory=list, metadata={"help": "analysis notebooks (see AnalysisStep)"})
    kernel: str = field(default="molre", metadata={"help": "Jupyter kernel name papermill starts"})
    runs_dir: str = field(default="runs", metadata={"help": "parent of <name>/<run>/"})
    figures_dir: str = field(default="figures", metadata={"help": "parent of <name>/ for analysis figures"})
    cwd: str = field(default=".", metadata={"help": "working directory of the notebooks"})
    run_dir_param: str | None = field(default="RUN_DIR", metadata={"help": "training parameter receiving the run directory"})
    device_param: str | None = field(default="DEVICE", metadata={"help": "parameter set to 'cuda' when --gpus is given"})
    execution_timeout: int | None = field(default=None, metadata={"help": "seconds per cell before papermill gives up"})
    slurm: dict[str, Any] = field(default_factory=dict, metadata={
        "help": "job options for --executor slurm: partition, gpus_per_run, time, ... (molre_lib.workbook.slurm.SlurmConfig)"})
    tune: dict[str, Any] = field(default_factory=dict, metadata={
        "help": "tune every arm on the validation split first, then train the grid's seeds with each arm's best "
                "trial (molre_lib.workbook.tune.TuneConfig; docs/how-to/tune-and-compare.md)"})

    @classmethod
    def from_yaml(cls, path: str | Path) -> "SweepConfig":
        path = Path(path)
        try:
            raw = yaml.safe_load(path.read_text())
        except yaml.YAMLError as err:
            raise ValueError(f"{path}: not valid YAML: {err}") from None
        if not isinstance(raw, dict):
            raise ValueError(f"{path}: a sweep file must be a mapping, got {type(raw).__name__}")
        return cls.from_dict(raw, where=str(path))

    @classmethod
    def from_dict(cls, raw: dict[str, Any], where: str = "sweep") -> "SweepConfig":
        _check_keys(raw, cls, where)
        for key in ("name", "grid"):
            if key not in raw:
                raise ValueError(f"{where}: missing required key {key!r}")
        if raw.get("tune"):
            from .tune import prepare_grid

            raw = prepare_grid(raw, where)  # the seed key joins the grid; tuning and final seeds kept apart
        steps: dict[str, list[AnalysisStep]] = {"prepare": [], "analysis": []}
        for part in steps:
            for i, step in enumerate(raw.get(part) or []):
                if not isinstance(step, dict) or "notebook" not in step:
                    raise ValueError(f"{where}: {part}[{i}] must be a mapping with a 'notebook' key")
                _check_keys(step, AnalysisStep, f"{where}: {part}[{i}]")
                steps[part].append(AnalysisStep(**{"per": "sweep", **step} if part == "prepare" else step))
                if part == "prepare" and steps[part][-1].per != "sweep":
                    raise ValueError(f"{where}: prepare[{i}] runs once per sweep; per must be 'sweep'")
        cfg = cls(**{**raw, **steps})
        cfg.validate(where)
        return cfg

    def validate(self, where: str = "sweep") -> None:
        if not _NAME_OK.match(str(self.name)):
            raise ValueError(f"{where}: name {self.name!r} may only use letters, digits and ._=+-")
        if not isinstance(self.grid, dict) or not self.grid:
            raise ValueError(f"{where}: grid must map parameter names to lists of values")
        for key, values in self.grid.items():
            if not isinstance(values, list) or not values:
                raise ValueError(f"{where}: grid.{key} must be a non-empty list, got {values!r}")
        for i, s in enumerate(self.settings):
            if not isinstance(s, dict) or "name" not in s:
                raise ValueError(f"{where}: settings[{i}] must be a mapping with a 'name'")
        for key in self.overrides:
            if key not in self.grid:
                raise ValueError(f"{where}: overrides.{key} is not a grid key ({list(self.grid)})")
        for step in self.analysis:
            for key in list(step.when) + step.group_by:
                if key not in self.grid and key != "setting":
                    raise ValueError(f"{where}: analysis {step.notebook} refers to {key!r}, not a grid key")


def _check_keys(raw: dict[str, Any], cls: type, where: str) -> None:
    known = {f.name for f in fields(cls)}
    for key in raw:
        if key not in known:
            raise ValueError(f"{where}: unknown key {key!r}; known keys: {sorted(known)}")


def plan_analysis(cfg: SweepConfig, runs: list[Run], steps: list[AnalysisStep] | None = None) -> list[Job]:
    """Analysis jobs over ``runs`` (the caller passes the runs that finished); ``steps`` default cfg.analysis."""
    sweep_dir = (Path(cfg.runs_dir) / cfg.name).resolve()
    figures = (Path(cfg.figures_dir) / cfg.name).resolve()
    nb_dir = Path(cfg.notebooks_dir)
    jobs = []
    for step in cfg.analysis if steps is None else steps:
        chosen = [r for r in runs if all(r.values.get(k) == v for k, v in step.when.items())]
        if step.per == "run":
            groups = [(r.name, [r]) for r in chosen]
        elif step.per == "group":
            grouped: dict[str, list[Run]] = {}
            for r in chosen:
                grouped.setdefault("_".join(str(r.values[k]) for k in step.group_by), []).append(r)
            groups = list(grouped.items())
        else:
            groups = [("sweep", chosen)] if chosen else []
        for key, members in groups:
            context = {"sweep": cfg.name, "sweep_dir": str(sweep_dir), "figures_dir": str(figures), "group": key,
                       "run": key, "run_dir": str(members[0].run_dir) if step.per == "run" else str(sweep_dir),
                       **(members[0].values if step.per == "run" else {})}
            params = {k: _fill(v, context, [str(r.run_dir) for r in members]) for k, v in step.parameters.items()}
            out_dir = members[0].run_dir if step.per == "run" else sweep_dir / "analysis" / key
            jobs.append(Job(step.step, key, nb_dir / step.notebook, out_dir / step.notebook, params, [r.name for r in members]))
    return jobs


def missing_notebooks(cfg: SweepConfig) -> list[str]:
    """One message per notebook the sweep names (training, prepare, analysis) that is not on disk."""
    nb_dir = Path(cfg.notebooks_dir)
    return [f"sweep {cfg.name}: notebook {nb} not found (notebooks_dir={cfg.notebooks_dir!r})"
            for nb in [nb_dir / cfg.train_notebook] + [nb_dir / s.notebook for s in cfg.prepare + cfg.analysis]
            if not nb.is_file()]


def run_sweep(cfg: SweepConfig, gpus: list[str] | None = None, dry_run: bool = False, log=print,
              train_missing: bool = True, only_prepare: bool = False, tune: str = "all") -> list[dict[str, Any]]:
    """Execute (or with ``dry_run`` only print) the sweep; returns the status rows.

    Training runs first (skipping finished ones), then every analysis step over the runs that finished.
    ``train_missing=False`` trains nothing and lists unfinished runs as failed (the SLURM analysis job: the
    runs trained in their own jobs); ``only_prepare`` stops after the prepare notebooks (the SLURM prepare job).
    With a ``tune:`` section the trials run after the prepare notebooks (``tune="only"``: and nothing else;
    ``"skip"``: none) and each run trains with its arm's chosen parameters (tune.py).
    """
    runs = expand_runs(cfg)
    sweep_dir = (Path(cfg.runs_dir) / cfg.name).resolve()
    nb_dir = Path(cfg.notebooks_dir)
    train_nb = nb_dir / cfg.train_notebook
    for message in missing_notebooks(cfg):
        if not dry_run:
            raise FileNotFoundError(message)
        log(f"warning: {message}")
    train_jobs = []
    for run in runs:
        params = dict(run.parameters)
        if gpus and cfg.device_param:
            params.setdefault(cfg.device_param, "cuda")
        train_jobs.append(Job(train_nb.stem, run.name, train_nb, run.run_dir / train_nb.name, params, [run.name]))
    prepare_jobs = plan_analysis(cfg, runs, cfg.prepare)
    for job in prepare_jobs:
        job.output = sweep_dir / "prepare" / job.notebook.name
    # every notebook's parameters and every run folder's lock, before anything runs (sweep_checks.py)
    from .tune_trials import planned_trials, tune_stage

    trials = planned_trials(cfg, log if dry_run else None) if cfg.tune else []
    check_sweep(cfg.name, [*prepare_jobs, *trials, *train_jobs, *plan_analysis(cfg, runs)],
                runs if train_missing else [], dry_run)
    if dry_run:
        _log_plan(cfg, runs, prepare_jobs, train_jobs, log)
        return []

    book = StatusBook(sweep_dir / STATUS_FILE)
    _write_runs_table(sweep_dir / RUNS_FILE, runs)
    retrained: set[str] = set()
    if not _prepare(cfg, book, prepare_jobs, gpus, log) or only_prepare or (
            cfg.tune and not tune_stage(cfg, book, runs, train_jobs, tune if train_missing else "skip", gpus, log)):
        rows = list(book.rows.values())
        _log_summary(rows, book.path, log)
        return rows

    def train(job: Job, run: Run, gpu: str | None) -> None:
        if run.finished:
            book.record(job, "ok", "skipped")
            log(f"skip {run.name}: {DONE_MARKER} present")
            return
        if not train_missing:
            book.record(job, "failed", "not run", notebook_error(job.output) or f"no {DONE_MARKER}: training did not finish")
            return
        if (holder := in_use(run)) is not None:        # locked since the sweep started: never a second writer
            book.record(job, "failed", "not run", holder)
            return
        error, seconds = _timed(job, cfg, gpu, log)
        if error is None and not run.finished:
            error = f"notebook finished but wrote no {DONE_MARKER} in {run.run_dir}"
        retrained.add(run.name)
        book.record(job, "ok" if error is None else "failed", "ran", error or "", gpu or "", seconds)

    blocked = {k for k, row in book.rows.items() if row["status"] == "blocked"}  # arms not tuned yet
    run_pool([(train, job, run) for job, run in zip(train_jobs, runs) if (job.step, job.key) not in blocked], gpus)
    _analyse(cfg, book, runs, retrained, gpus, log)
    rows = list(book.rows.values())
    _log_summary(rows, book.path, log)
    return rows


def _analyse(cfg: SweepConfig, book: StatusBook, runs: list[Run], retrained: set[str], gpus: list[str] | None,
             log) -> None:
    """Every analysis step over the runs that finished, step by step; a step redone when one of its runs was
    retrained; a run/group step whose runs failed is recorded as blocked rather than run on a subset."""
    finished = [r for r in runs if r.finished]
    failed_runs = {r.name for r in runs} - {r.name for r in finished}

    from .tune import TRIALS_FILE, tune_dir

    trials_csv = tune_dir(cfg) / TRIALS_FILE if cfg.tune else None
    sweep_level = {step.notebook for step in cfg.analysis if step.per == "sweep"}

    def tuned_since(job: Job) -> bool:
        """A sweep-level step (05) also reads the tuning tables: new trials (a larger budget, a wider grid) make
        its output stale even when no final run was retrained. (The tables are rewritten only when they change.)"""
        out = Path(job.output)
        return (job.notebook.name in sweep_level and trials_csv is not None and trials_csv.is_file()
                and out.is_file() and trials_csv.stat().st_mtime > out.stat().st_mtime)

    def analyse(job: Job, gpu: str | None) -> None:
        if book.succeeded_before(job) and not (set(job.inputs) & retrained) and not tuned_since(job):
            book.record(job, "ok", "skipped")
            log(f"skip {job.step} for {job.key}: done before")
            return
        error, seconds = _timed(job, cfg, gpu, log)
        book.record(job, "ok" if error is None else "failed", "ran", error or "", gpu or "", seconds)

    for step in cfg.analysis:  # steps in order: a later step (e.g. the summary) may read an earlier one's files
        jobs = [j for j in plan_analysis(cfg, finished) if j.notebook.name == step.notebook]
        if step.per == "sweep" and not jobs:
            for planned in [j for j in plan_analysis(cfg, runs) if j.notebook.name == step.notebook]:
                book.record(planned, "blocked", "not run", "no training run finished")
        if step.per != "sweep":  # a run/group analysis needs all its runs; the sweep summary lists failures itself
            for planned in [j for j in plan_analysis(cfg, runs) if j.notebook.name == step.notebook]:
                lost = sorted(set(planned.inputs) & failed_runs)
                if lost:
                    book.record(planned, "blocked", "not run", f"training failed for {lost}")
                    jobs = [j for j in jobs if j.key != planned.key]
        run_pool([(analyse, job) for job in jobs], gpus)


def _log_plan(cfg: SweepConfig, runs: list[Run], prepare_jobs: list[Job], train_jobs: list[Job], log) -> None:
    """The dry run: every notebook the sweep would execute, in order, with its parameters."""
    for job in prepare_jobs:
        log(f"[first] {job.step} -> {job.output}  {json.dumps(job.parameters, default=str)}")
    for run, job in zip(runs, train_jobs):
        log(f"[{'done' if run.finished else 'todo'}] {run.name}: {job.notebook} -> {job.output}")
        log(f"        {json.dumps(job.parameters, default=str)}")
    for job in plan_analysis(cfg, runs):
        log(f"[after] {job.step} for {job.key} -> {job.output}  {json.dumps(job.parameters, default=str)}")


def _prepare(cfg: SweepConfig, book: StatusBook, jobs: list[Job], gpus: list[str] | None, log) -> bool:
    """Run the prepare notebooks not done before, in order; False (nothing else may start) when one fails."""
    for job in jobs:
        if book.succeeded_before(job):
            book.record(job, "ok", "skipped")
            continue
        error, seconds = _timed(job, cfg, gpus[0] if gpus else None, log)
        book.record(job, "ok" if error is None else "failed", "ran", error or "", "", seconds)
        if error is not None:
            log(f"sweep {cfg.name}: preparation {job.step} failed; no run was started")
            return False
    return True


def _timed(job: Job, cfg: SweepConfig, gpu: str | None, log) -> tuple[str | None, float]:
    env = dict(os.environ)
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = gpu
    log(f"run  {job.step} for {job.key}" + (f" on GPU {gpu}" if gpu is not None else ""))
    start = time.time()
    error = execute_notebook(job, cfg.kernel, cfg.cwd, env, cfg.execution_timeout)
    seconds = time.time() - start
    log(f"{'ok  ' if error is None else 'FAIL'} {job.step} for {job.key} ({seconds:.0f} s){': ' + error if error else ''}")
    return error, seconds


def _write_runs_table(path: Path, runs: list[Run]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    keys = list(dict.fromkeys(k for r in runs for k in r.values))
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["run", "run_dir", *keys])
        for r in runs:
            writer.writerow([r.name, str(r.run_dir), *(r.values.get(k, "") for k in keys)])


def _log_summary(rows: list[dict[str, Any]], path: Path, log) -> None:
    bad = [r for r in rows if r["status"] != "ok"]
    ran = sum(r["action"] == "ran" for r in rows)
    skipped = sum(r["action"] == "skipped" for r in rows)
    log(f"sweep: {len(rows)} notebooks, {ran} executed, {skipped} skipped as done, {len(bad)} failed or blocked")
    for r in bad:
        log(f"  {r['status'].upper():8s} {r['step']} for {r['key']}: {r['error']}  ({r['output']})")
    log(f"status: {path}")
