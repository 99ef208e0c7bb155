"""What a sweep checks before it executes anything.

1. Every planned notebook's injected parameters against the notebook itself: a name its ``parameters`` cell does
   not define (a misspelt grid key) or a value of another type than the cell's literal (``EPOCHS: '2'``); for the
   workbook's own notebooks also the schema of :mod:`molre_lib.workbook.params` (allowed values and ranges, e.g.
   a backbone that is not in the registry). All problems of all runs are listed at once,
   a problem shared by several runs once with the runs named, instead of each run failing at its notebook's
   check cell after the data preparation and the valid runs have trained.
2. No run folder is locked by a live training process (:mod:`molre_lib.engine.run_lock`): a sweep killed with
   ``kill -9`` may leave a kernel that is still writing; the rerun names it and starts nothing.
"""
from __future__ import annotations

import ast
import functools
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

from molre_lib.engine.run_lock import read_holder

from .params import SCHEMAS, did_you_mean, given_parameter_problems

if TYPE_CHECKING:
    from .runner import Job
    from .sweep import Run


class SweepCheckError(ValueError):
    """The sweep cannot start; the message lists every problem."""


@functools.lru_cache(maxsize=64)
def declared_parameters(notebook: Path) -> dict[str, Any]:
    """Name -> literal default of the notebook's ``parameters`` cell ({} when it has none)."""
    import nbformat

    nb = nbformat.read(str(notebook), as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code" and "parameters" in cell.get("metadata", {}).get("tags", []):
            out = {}
            for node in ast.parse(cell.source).body:
                if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
                    try:
                        out[node.targets[0].id] = ast.literal_eval(node.value)
                    except ValueError:
                        out[node.targets[0].id] = None
            return out
    return {}


def _type_problem(name: str, default: Any, value: Any) -> str | None:
    if default is None or value is None:
        return None
    numbers = (int, float)
    same = (isinstance(value, bool) == isinstance(default, bool)) and (
        isinstance(value, type(default)) or (isinstance(default, numbers) and isinstance(value, numbers)
                                             and not isinstance(default, int))
        or (isinstance(default, (list, tuple)) and isinstance(value, (list, tuple))))
    return None if same else f"{name}={value!r}: expected {type(default).__name__} like the notebook's {default!r}, " \
                             f"got {type(value).__name__}"


def notebook_problems(notebook: Path, values: dict[str, Any]) -> list[str]:
    """Why the notebook would refuse these injected parameters (unknown names, wrong types, bad values)."""
    if not Path(notebook).is_file():
        return []
    declared = declared_parameters(Path(notebook))
    stem = Path(notebook).stem
    if stem in SCHEMAS and set(SCHEMAS[stem]) == set(declared):   # the workbook's own notebook: full schema
        return given_parameter_problems(stem, values)
    out = [f"unknown parameter {name}={value!r}{did_you_mean(name, list(declared))}"
           for name, value in values.items() if name not in declared]
    return out + [p for name, value in values.items() if name in declared
                  and (p := _type_problem(name, declared[name], value))]


def parameter_problems(jobs: Iterable["Job"]) -> list[str]:
    """'<notebook> for <run>[, <run> ...]: <problem>' for every job whose parameters its notebook would refuse."""
    where: dict[tuple[str, str], list[str]] = {}
    for job in jobs:
        for problem in notebook_problems(Path(job.notebook), job.parameters):
            where.setdefault((job.notebook.name, problem), []).append(job.key)
    out = []
    for (notebook, problem), keys in where.items():
        shown = ", ".join(keys[:4]) + (f" and {len(keys) - 4} more" if len(keys) > 4 else "")
        out.append(f"{notebook} for {shown}: {problem}")
    return out


def locked_runs(runs: Iterable["Run"]) -> list[str]:
    """'<run>: <run_dir> is in use by pid N on HOST since T' for each unfinished run whose folder is locked."""
    return [f"{run.name}: {why}" for run in runs if not run.finished and (why := in_use(run)) is not None]


def in_use(run: "Run") -> str | None:
    """'<run_dir> is in use by pid N on HOST since T' when a live process holds the run folder's lock."""
    holder = read_holder(run.run_dir)
    return None if holder is None else f"{run.run_dir} is in use by {holder}"


def check_sweep(name: str, jobs: Iterable["Job"], runs: Iterable["Run"], dry_run: bool = False) -> None:
    """Raise :class:`SweepCheckError` listing every parameter problem and every locked run folder."""
    problems = parameter_problems(jobs)
    if problems:
        raise SweepCheckError(f"sweep {name}: {len(problems)} parameter problem(s), nothing was run:\n  - "
                              + "\n  - ".join(problems))
    if not dry_run and (locked := locked_runs(runs)):
        raise SweepCheckError(f"sweep {name}: {len(locked)} run folder(s) are being written by another process "
                              "(an earlier sweep's notebook still training?); wait for it or stop it, nothing was "
                              "run:\n  - " + "\n  - ".join(locked))
