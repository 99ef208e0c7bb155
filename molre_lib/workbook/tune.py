"""The ``tune:`` section of a sweep: every arm tuned on the validation split with the same trial budget (Optuna).

An **arm** is one combination of the grid values other than the seed key (e.g. BACKBONE x ADAPTER x SHARED_A,
and the setting); each arm gets its own Optuna study (one per backbone x method). A **trial** is an ordinary
``01_train`` run (papermill, the run-folder layout and lock of every run) under
``<sweep>/tune/<arm>/trial<NNN>/``, with the search space's values injected; its objective is the validation
macro AUC in its ``metrics.json``. Trials never see the test split: they get a manifest *view* without the test
rows and ``TEST_SPLIT=""`` (so they also skip predicting it). When an arm has its ``n_trials``, its best trial's
parameters are applied to the sweep's own runs (the grid's seeds, never the tuning seed): those are the final
runs, predicting val and test, in ``runs.csv`` like any run.

Files under the sweep folder::

    tune/studies.db         Optuna storage (SQLite) of a local sweep: trials one at a time
    tune/studies.journal    Optuna journal file of a SLURM sweep: several trials at once (one open-lock)
    tune/trials.csv         one row per trial (arm keys, number, state, val AUC, every parameter, steps, run dir)
    tune/selected.csv       per arm: trials used, best trial, best val AUC, chosen parameters, effective step, steps
    tune/selected.json      the same, typed: what the final runs receive (read by :func:`read_selected`)

This module holds the configuration, the arms and trials' parameters; the tables are written by
:mod:`molre_lib.workbook.tune_tables`, and running the trials (here or as SLURM array tasks) is
:mod:`molre_lib.workbook.tune_trials`.
"""
from __future__ import annotations

import csv
import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from molre_lib.common.config_keys import check_known_keys

TUNE_DIR = "tune"
SQLITE_FILE, JOURNAL_FILE = "studies.db", "studies.journal"
TRIALS_FILE, SELECTED_FILE, SELECTED_JSON = "trials.csv", "selected.csv", "selected.json"
STALE_FILE = "stale_runs.txt"  # finished runs trained with another choice than their arm's selection
SAMPLERS = ("auto", "tpe", "grid", "random")
STORAGES = ("auto", "sqlite", "journal")
# a search-space name that is not a notebook parameter but sets one from the arm's parameters
DERIVED: dict[str, tuple[str, Callable[[float, dict[str, Any]], float]]] = {
    "LORA_ALPHA_PER_RANK": ("LORA_ALPHA", lambda v, p: float(v) * int(p["RANK"])),
}


@dataclass
class SearchParam:
    """One dimension of the search space: ``{low, high, log}`` (float, or int when both ends are ints) or
    ``{choices: [...]}``."""

    low: float | int | None = field(default=None, metadata={"help": "lower end (inclusive)"})
    high: float | int | None = field(default=None, metadata={"help": "upper end (inclusive)"})
    log: bool = field(default=False, metadata={"help": "sample log-uniformly (learning rates, alpha)"})
    choices: list[Any] | None = field(default=None, metadata={"help": "categorical values instead of a range"})

    @classmethod
    def from_dict(cls, raw: Any, where: str) -> "SearchParam":
        if not isinstance(raw, dict):
            raise ValueError(f"{where}: expected {{low, high, log}} or {{choices: [...]}}, got {raw!r}")
        check_known_keys(cls, raw, where)
        p = cls(**{k: _number(v) if k in ("low", "high") else v for k, v in raw.items()})
        if p.choices is not None:
            if not isinstance(p.choices, list) or not p.choices or p.low is not None or p.high is not None:
                raise ValueError(f"{where}: choices must be a non-empty list, without low/high")
        elif not (isinstance(p.low, (int, float)) and isinstance(p.high, (int, float)) and p.low < p.high):
            raise ValueError(f"{where}: needs numbers low < high, got low={p.low!r} high={p.high!r}")
        elif p.log and p.low <= 0:
            raise ValueError(f"{where}: log: true needs low > 0, got {p.low!r}")
        return p

    def suggest(self, trial: Any, name: str) -> Any:
        if self.choices is not None:
            if _grid_sampled(trial) and all(isinstance(c, (int, float)) and not isinstance(c, bool)
                                            for c in self.choices):
                # A grid's numbers are stored as a range over its choices (the grid sampler returns the exact
                # point): Optuna refuses a categorical whose choices change within a study, so a grid stored as
                # categorical could never be extended on rerun (a learning rate added past the best corner).
                low, high = min(self.choices), max(self.choices)
                if all(isinstance(c, int) for c in self.choices):
                    return trial.suggest_int(name, low, high)
                return trial.suggest_float(name, float(low), float(high), log=low > 0)
            return trial.suggest_categorical(name, self.choices)
        if isinstance(self.low, int) and isinstance(self.high, int):
            return trial.suggest_int(name, self.low, self.high, log=self.log)
        return trial.suggest_float(name, float(self.low), float(self.high), log=self.log)


def _grid_sampled(trial: Any) -> bool:
    import optuna

    study = getattr(trial, "study", None)
    return isinstance(getattr(study, "sampler", None), optuna.samplers.GridSampler)


def _number(value: Any) -> Any:
    """YAML 1.1 reads ``1e-4`` as a string: take it as the number it is."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


@dataclass
class TuneConfig:
    """The sweep file's ``tune:`` section (docs/how-to/tune-and-compare.md)."""

    n_trials: int = field(default=8, metadata={"help": "trials per arm, the same for every arm (the tuning budget)"})
    space: dict[str, Any] = field(default_factory=dict, metadata={
        "help": "01_train parameter -> {low, high, log} or {choices}; LORA_ALPHA_PER_RANK sets LORA_ALPHA = v x RANK"})
    space_overrides: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict, metadata={
        "help": "grid key -> value -> {parameter: range, or null to leave it out}, e.g. a probe without alpha"})
    sampler: str = field(default="auto", metadata={
        "help": "auto (grid when every dimension has choices and the grid has <= n_trials points, else tpe) | tpe | "
                "grid | random"})
    sampler_seed: int = field(default=0, metadata={"help": "seed of the sampler (plus the trials already in the study)"})
    n_startup_trials: int | None = field(default=None, metadata={
        "help": "TPE's random trials before it models the objective; default max(2, n_trials // 3)"})
    trial_seed: int = field(default=1000, metadata={"help": "the seed of every tuning trial (not one of the final seeds)"})
    confirm_top: int = field(default=0, metadata={
        "help": "re-run this many best trials of each arm at confirm_seeds and choose by the mean val AUC over "
                "all their seeds (0: the best single trial is chosen)"})
    confirm_seeds: list[int] = field(default_factory=list, metadata={
        "help": "the extra seeds of the confirmation runs (val only; neither trial_seed nor a final seed)"})
    final_seeds: int = field(default=6, metadata={
        "help": "seeds of the final runs when the grid has no seed key (0..K-1); the grid's values win when it has one"})
    seed_key: str = field(default="SEED", metadata={"help": "the grid key that is the seed (not part of an arm)"})
    storage: str = field(default="auto", metadata={
        "help": "auto (sqlite locally, journal on SLURM) | sqlite | journal: the Optuna storage under <sweep>/tune/"})
    max_failed: int | None = field(default=None, metadata={
        "help": "failed trials per arm after which the arm stops (default n_trials); a failed trial does not count"})
    manifest_param: str = field(default="MANIFEST", metadata={"help": "training parameter naming the manifest"})
    data_root_param: str = field(default="DATA_ROOT", metadata={"help": "training parameter naming the data root"})
    test_split_param: str = field(default="TEST_SPLIT", metadata={"help": "training parameter set to '' in trials"})

    @classmethod
    def from_dict(cls, raw: dict[str, Any] | None, where: str = "tune") -> "TuneConfig":
        raw = dict(raw or {})
        check_known_keys(cls, raw, where)
        cfg = cls(**raw)
        if not isinstance(cfg.n_trials, int) or cfg.n_trials < 1:
            raise ValueError(f"{where}.n_trials: expected a positive integer, got {cfg.n_trials!r}")
        if not isinstance(cfg.space, dict) or not cfg.space:
            raise ValueError(f"{where}.space: name at least one training parameter to tune, e.g. LR: {{low: 1e-4, "
                             "high: 1e-1, log: true}")
        for name, choices in (("sampler", SAMPLERS), ("storage", STORAGES)):
            if getattr(cfg, name) not in choices:
                raise ValueError(f"{where}.{name}: {getattr(cfg, name)!r} is not one of {', '.join(choices)}")
        if not isinstance(cfg.final_seeds, int) or cfg.final_seeds < 1:
            raise ValueError(f"{where}.final_seeds: expected a positive integer, got {cfg.final_seeds!r}")
        seeds = cfg.confirm_seeds
        if not isinstance(seeds, list) or not all(isinstance(x, int) and not isinstance(x, bool) for x in seeds) \
                or len(set(seeds)) != len(seeds):
            raise ValueError(f"{where}.confirm_seeds: expected a list of distinct integer seeds, got {seeds!r}")
        if cfg.trial_seed in seeds:
            raise ValueError(f"{where}.confirm_seeds: {cfg.trial_seed} is the trial_seed; confirmation needs other seeds")
        if not isinstance(cfg.confirm_top, int) or isinstance(cfg.confirm_top, bool) \
                or not 0 <= cfg.confirm_top <= cfg.n_trials:
            raise ValueError(f"{where}.confirm_top: expected an integer from 0 to n_trials ({cfg.n_trials}), got "
                             f"{cfg.confirm_top!r}")
        if bool(cfg.confirm_top) != bool(seeds):
            raise ValueError(f"{where}: confirm_top and confirm_seeds go together (top {cfg.confirm_top} trials, seeds "
                             f"{seeds}): set both, e.g. confirm_top: 2 and confirm_seeds: [1001, 1002], or neither")
        for name, raw_p in cfg.space.items():
            SearchParam.from_dict(raw_p, f"{where}.space.{name}")
        for key, by_value in cfg.space_overrides.items():
            for value, part in (by_value or {}).items():
                for name, raw_p in (part or {}).items():
                    if raw_p is not None:
                        SearchParam.from_dict(raw_p, f"{where}.space_overrides.{key}.{value}.{name}")
        return cfg

    def arm_space(self, values: dict[str, Any]) -> dict[str, SearchParam]:
        """The search space of an arm with grid ``values`` (space, then each matching override)."""
        raw = dict(self.space)
        for key, by_value in self.space_overrides.items():
            if key in values:
                for name, p in ((by_value or {}).get(values[key]) or {}).items():
                    raw[name] = p
        return {name: SearchParam.from_dict(p, f"tune.space.{name}") for name, p in raw.items() if p is not None}


def prepare_grid(raw: dict[str, Any], where: str) -> dict[str, Any]:
    """The sweep file with a ``tune:`` section: its seed key added to the grid (0..final_seeds-1) when absent;
    the tuning seed may not be one of the final seeds."""
    tcfg = TuneConfig.from_dict(raw.get("tune"), f"{where}: tune")
    grid = dict(raw.get("grid") or {})
    if tcfg.seed_key not in grid:
        grid[tcfg.seed_key] = list(range(tcfg.final_seeds))
    if tcfg.trial_seed in (grid[tcfg.seed_key] or []):
        raise ValueError(f"{where}: tune.trial_seed {tcfg.trial_seed} is also a final seed in grid.{tcfg.seed_key}; "
                         "the final runs must use seeds not seen while tuning")
    if shared := sorted(set(tcfg.confirm_seeds) & set(grid[tcfg.seed_key] or [])):
        raise ValueError(f"{where}: tune.confirm_seeds {shared} are also final seeds in grid.{tcfg.seed_key}; "
                         "the final runs must use seeds not seen while tuning")
    return {**raw, "grid": grid}


# ---------------------------------------------------------------------------------------------- arms, trials


@dataclass
class Arm:
    """One tuned configuration family: the grid values without the seed, and its study."""

    name: str
    values: dict[str, Any]
    space: dict[str, SearchParam]


def tune_config(cfg: Any) -> TuneConfig:
    return TuneConfig.from_dict(cfg.tune, f"sweep {cfg.name}: tune")


def tune_dir(cfg: Any) -> Path:
    return (Path(cfg.runs_dir) / cfg.name).resolve() / TUNE_DIR


def arm_name(values: dict[str, Any], seed_key: str) -> str:
    parts = [str(v) if isinstance(v, str) else f"{k.lower()}{v}" for k, v in values.items() if k != seed_key]
    return "_".join(parts) or "all"


def arms(cfg: Any) -> list[Arm]:
    """The sweep's arms in grid order."""
    from .grid import expand_runs

    tcfg = tune_config(cfg)
    out: dict[str, Arm] = {}
    for run in expand_runs(cfg):
        values = {k: v for k, v in run.values.items() if k != tcfg.seed_key}
        name = arm_name(values, tcfg.seed_key)
        if name not in out:
            out[name] = Arm(name, values, tcfg.arm_space(values))
    return list(out.values())


def suggested_parameters(arm: Arm, trial: Any) -> dict[str, Any]:
    """The search-space values of a trial (Optuna's names: what trials.csv and selected.csv show)."""
    return {name: p.suggest(trial, name) for name, p in arm.space.items()}


def notebook_values(tuned: dict[str, Any], base: dict[str, Any]) -> dict[str, Any]:
    """Search-space values as training parameters (a derived name such as LORA_ALPHA_PER_RANK becomes its target)."""
    out = {}
    for name, value in tuned.items():
        target, rule = DERIVED.get(name, (name, None))
        out[target] = rule(value, {**base, **out}) if rule else value
    return out


def trial_run(cfg: Any, arm: Arm, number: int, tuned: dict[str, Any], seed: int | None = None) -> Any:
    """The 01_train run of trial ``number``: the arm's parameters at the tuning seed plus the tuned values, on
    the manifest view without test rows and with no test split. With ``seed``: the same trial's confirmation
    run at that seed (``trial<NNN>_seed<S>/``, :mod:`.tune_confirm`)."""
    from .grid import make_run, run_parameters

    tcfg = tune_config(cfg)
    values = {**arm.values, tcfg.seed_key: tcfg.trial_seed if seed is None else seed}
    params = run_parameters(cfg, values)
    params.update(notebook_values(tuned, params))
    folder = f"trial{number:03d}" + ("" if seed is None else f"_seed{seed}")
    run = make_run(cfg, f"{arm.name}_{folder}", values, params, tune_dir(cfg) / arm.name / folder)
    if tcfg.test_split_param:
        run.parameters[tcfg.test_split_param] = ""
    return run


def without_test(cfg: Any, run: Any) -> None:
    """Point ``run`` at a copy of its manifest without test rows (written once per source manifest); its data
    root stays the source's folder so the relative paths still resolve. Called just before a trial executes:
    the manifest usually comes from a prepare notebook."""
    from .paths import resolve_path, workbook_root

    tcfg = tune_config(cfg)
    source = run.parameters.get(tcfg.manifest_param)
    if not source:
        raise ValueError(f"sweep {cfg.name}: tune needs the training parameter {tcfg.manifest_param} (the manifest "
                         "a trial reads) to hand trials a view without the test split")
    root = workbook_root(cfg.cwd)
    source = Path(resolve_path(source, root))
    view = tune_dir(cfg) / f"manifest_no_test_{hashlib.sha1(str(source).encode()).hexdigest()[:8]}.csv"
    if not view.is_file() or view.stat().st_mtime < source.stat().st_mtime:
        write_view(source, view)
    run.parameters[tcfg.manifest_param] = str(view)
    if not run.parameters.get(tcfg.data_root_param):
        run.parameters[tcfg.data_root_param] = str(source.parent)
    else:
        run.parameters[tcfg.data_root_param] = resolve_path(run.parameters[tcfg.data_root_param], root)


def write_view(source: Path, view: Path) -> None:
    """``source`` without its test rows (every column kept), written atomically."""
    import os

    with open(source, newline="") as fh:
        reader = csv.DictReader(fh)
        if reader.fieldnames is None or "split" not in reader.fieldnames:
            raise ValueError(f"{source}: no 'split' column, so the test rows cannot be held out of tuning")
        rows = [r for r in reader if (r.get("split") or "").strip() != "test"]
        header = reader.fieldnames
    view.parent.mkdir(parents=True, exist_ok=True)
    tmp = view.with_suffix(f".tmp{os.getpid()}")
    with open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, header)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, view)


def read_objective(run_dir: Path) -> tuple[float | None, dict[str, Any]]:
    """(validation macro AUC, facts) of a finished trial from its metrics.json / config.json; None when absent."""
    metrics_path = Path(run_dir) / "metrics.json"
    if not metrics_path.is_file():
        return None, {}
    metrics = json.loads(metrics_path.read_text())
    if "test" in metrics:  # a trial must never have predicted the test split
        raise RuntimeError(f"{metrics_path}: a tuning trial has test metrics; tuning must not read the test split")
    try:
        value = float(metrics["val"]["summary"]["macro_auc"]["value"])
    except (KeyError, TypeError, ValueError):
        value = math.nan
    facts = {"steps": metrics.get("steps"), "train_seconds": metrics.get("train_seconds")}
    config_path = Path(run_dir) / "config.json"
    if config_path.is_file():
        facts["effective_step"] = (json.loads(config_path.read_text()).get("scaling") or {}).get("effective_step")
    return (None if math.isnan(value) else value), facts


def read_trials(sweep_dir: str | Path) -> "pd.DataFrame":
    """``<sweep>/tune/trials.csv`` as a table (one row per trial)."""
    import pandas as pd

    path = Path(sweep_dir) / TUNE_DIR / TRIALS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: was the sweep run with a tune: section (molre sweep FILE)?")
    return pd.read_csv(path)


def read_selected(sweep_dir: str | Path) -> "pd.DataFrame":
    """``<sweep>/tune/selected.csv`` as a table (one row per tuned arm: trials, best trial, chosen parameters)."""
    import pandas as pd

    path = Path(sweep_dir) / TUNE_DIR / SELECTED_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: was the sweep run with a tune: section (molre sweep FILE)?")
    return pd.read_csv(path)


def selection(cfg: Any) -> dict[str, dict[str, Any]]:
    """Arm name -> its selection (selected.json), {} before any arm finished tuning."""
    path = tune_dir(cfg) / SELECTED_JSON
    return json.loads(path.read_text()) if path.is_file() else {}


def apply_selection(cfg: Any, runs: list[Any]) -> dict[str, str]:
    """Inject each run's arm's chosen parameters into ``run.parameters``; returns run name -> why it cannot
    train yet, for the runs whose arm is not tuned."""
    tcfg = tune_config(cfg)
    chosen = selection(cfg)
    blocked = {}
    for run in runs:
        name = arm_name({k: v for k, v in run.values.items() if k != tcfg.seed_key}, tcfg.seed_key)
        if name in chosen:
            run.parameters.update(chosen[name]["parameters"])
        else:
            blocked[run.name] = (f"arm {name} is not tuned yet (no entry in {tune_dir(cfg) / SELECTED_JSON}): "
                                 "run the sweep without --skip-tune")
    return blocked


def stale_runs(cfg: Any, runs: list[Any]) -> list[str]:
    """'<run_dir>: LR=0.009 (selected now: 0.003)' for each finished run trained with other values than its arm's
    current selection (the tuning changed: a larger budget, confirmation seeds): kept, it would mix two
    configurations in one arm's seeds. Read from the ``<train notebook>.params.yaml`` the runner writes."""
    import yaml

    tcfg, chosen = tune_config(cfg), selection(cfg)
    stale = []
    for run in runs:
        name = arm_name({k: v for k, v in run.values.items() if k != tcfg.seed_key}, tcfg.seed_key)
        used_file = run.run_dir / f"{Path(cfg.train_notebook).stem}.params.yaml"
        if not run.finished or name not in chosen or not used_file.is_file():
            continue
        used = yaml.safe_load(used_file.read_text()) or {}
        diffs = [f"{k}={used[k]!r} (selected now: {v!r})" for k, v in chosen[name]["parameters"].items()
                 if k in used and not _same_value(used[k], v)]
        if diffs:
            stale.append(f"{run.run_dir}: {', '.join(diffs)}")
    return stale


def check_not_stale(cfg: Any, runs: list[Any]) -> None:
    """Raise ``ValueError`` listing the finished runs whose arm's selection changed since they trained."""
    if stale := stale_runs(cfg, runs):
        listing = tune_dir(cfg) / STALE_FILE  # the whole list, also when the terminal shows only its start
        listing.write_text("".join(line.split(": ", 1)[0] + "\n" for line in stale))
        raise ValueError(f"sweep {cfg.name}: {len(stale)} finished run(s) were trained with other values than their "
                         f"arm's selection in {tune_dir(cfg) / SELECTED_JSON}; kept, their arm would mix two "
                         f"configurations. Move these run folders (listed in {listing}) aside, or delete them, and "
                         "rerun the sweep:\n  - " + "\n  - ".join(stale))


def _same_value(a: Any, b: Any) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return math.isclose(float(a), float(b), rel_tol=1e-9)
    return a == b
