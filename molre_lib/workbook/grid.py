"""A sweep's grid as training runs: the product of the grid values (x settings, minus exclusions), each run's
name, folder and parameters with their placeholders filled.

Below :mod:`molre_lib.workbook.sweep` (which re-exports these names) so the tuning stage
(:mod:`molre_lib.workbook.tune`) builds its trial runs the same way without importing the sweep runner.
``cfg`` is a :class:`~molre_lib.workbook.sweep.SweepConfig`.
"""
from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DONE_MARKER = "metrics.json"
_NAME_OK = re.compile(r"^[A-Za-z0-9._=+-]+$")


@dataclass
class Run:
    """One training run of a sweep."""

    name: str
    values: dict[str, Any]  # grid values (+ 'setting' when settings are used)
    parameters: dict[str, Any]  # everything injected into the training notebook
    run_dir: Path

    @property
    def finished(self) -> bool:
        return (self.run_dir / DONE_MARKER).is_file()


def expand_runs(cfg: Any) -> list[Run]:
    """The sweep's training runs in grid order (first grid key varies slowest)."""
    sweep_dir = Path(cfg.runs_dir) / cfg.name
    keys = list(cfg.grid)
    settings = cfg.settings or [None]
    runs, seen = [], {}
    for combo in itertools.product(*(cfg.grid[k] for k in keys)):
        values = dict(zip(keys, combo))
        if any(all(values.get(k) == v for k, v in ex.items()) for ex in cfg.exclude):
            continue
        for setting in settings:
            full = dict(values) if setting is None else {**values, "setting": setting["name"]}
            name = _run_name(cfg, full)
            if name in seen:
                raise ValueError(f"sweep {cfg.name}: runs {seen[name]} and {full} both get the name {name!r}; set run_name")
            seen[name] = full
            runs.append(make_run(cfg, name, full, run_parameters(cfg, full), (sweep_dir / name).resolve()))
    if not runs:
        raise ValueError(f"sweep {cfg.name}: the grid minus exclusions is empty")
    return runs


def run_parameters(cfg: Any, values: dict[str, Any]) -> dict[str, Any]:
    """Shared parameters, then the overrides of each grid value, the grid values and the setting's parameters."""
    params = dict(cfg.parameters)
    grid_values = {k: v for k, v in values.items() if k != "setting"}
    for key, value in grid_values.items():
        params.update(cfg.overrides.get(key, {}).get(value, {}) or {})
    params.update(grid_values)
    if "setting" in values:
        setting = next(s for s in cfg.settings if s["name"] == values["setting"])
        params.update({k: v for k, v in setting.items() if k != "name"})
    return params


def make_run(cfg: Any, name: str, values: dict[str, Any], params: dict[str, Any], run_dir: Path) -> Run:
    """A run named ``name`` in ``run_dir`` with its placeholders filled (also the tuning trials, tune.py)."""
    sweep_dir = Path(cfg.runs_dir) / cfg.name
    context = {"sweep": cfg.name, "sweep_dir": str(sweep_dir.resolve()), "run": name, "run_dir": str(run_dir),
               "figures_dir": str((Path(cfg.figures_dir) / cfg.name).resolve()), **values}
    params = {k: _fill(v, context, []) for k, v in params.items()}
    if cfg.run_dir_param:
        params[cfg.run_dir_param] = str(run_dir)
    return Run(name, values, params, run_dir)


def _run_name(cfg: Any, values: dict[str, Any]) -> str:
    if cfg.run_name:
        try:
            name = cfg.run_name.format(**values)
        except KeyError as err:
            raise ValueError(f"sweep {cfg.name}: run_name uses {err}, not a grid key") from None
    else:
        name = "_".join(str(v) if isinstance(v, str) else f"{k.lower()}{v}" for k, v in values.items())
    if not _NAME_OK.match(name):
        raise ValueError(f"sweep {cfg.name}: run name {name!r} has characters other than letters, digits and ._=+-")
    return name


def _fill(value: Any, context: dict[str, Any], run_dirs: list[str]) -> Any:
    if value == "{run_dirs}":
        return run_dirs
    if isinstance(value, str):
        try:
            return value.format(**context)
        except KeyError as err:
            raise ValueError(f"analysis parameter {value!r} uses unknown placeholder {err}") from None
    return value
