"""One rule for paths in notebook parameters, wherever the notebook runs.

JupyterLab starts a notebook's kernel in ``notebooks/``; papermill and ``molre sweep`` usually run from the
repository root. So that ``RUN_DIR = "runs/demo/..."`` means the same folder in both, every notebook's
validation cell passes its path parameters through :func:`resolve_paths`:

- an absolute path (or ``~/...``) is used as it is;
- a relative path is taken relative to the **workbook root**: ``$MOLRE_ROOT`` when set, else the nearest
  folder at or above the working directory that holds the marker file ``.molre-root`` (the repository root);
  outside any workbook, the working directory itself;
- an empty string stays empty (it means "the default" in every notebook).

The notebooks work on the resolved, absolute paths, so nothing is ever written under ``notebooks/`` and
an error about a missing run names the absolute path that was tried.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Optional

MARKER = ".molre-root"
ROOT_ENV = "MOLRE_ROOT"


def workbook_root(start: Optional[str | Path] = None) -> Path:
    """The folder relative parameter paths are taken from (see the module docstring)."""
    if os.environ.get(ROOT_ENV):
        return Path(os.environ[ROOT_ENV]).expanduser().resolve()
    here = Path(start if start is not None else os.getcwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / MARKER).is_file():
            return folder
    return here


def resolve_path(path: str | Path, root: Optional[Path] = None) -> str:
    """``path`` as an absolute path string by the workbook rule; "" stays "" (a notebook's "default")."""
    if path == "" or path is None:
        return ""
    p = Path(path).expanduser()
    if not p.is_absolute():
        p = (root or workbook_root()) / p
    return str(Path(os.path.normpath(p)))


def resolve_paths(*paths: str | Path | Iterable[str | Path]) -> tuple:
    """Resolve several parameters at once; a list parameter (e.g. ``RUN_DIRS``) comes back as a list.

    ``RUN_DIR, FIGURES_DIR = resolve_paths(RUN_DIR, FIGURES_DIR)`` in a validation cell.
    """
    root = workbook_root()
    out = []
    for p in paths:
        if isinstance(p, (list, tuple)):
            out.append([resolve_path(q, root) for q in p])
        else:
            out.append(resolve_path(p, root))
    return tuple(out)
