"""The Jupyter kernel ``molre``: IPython with a language_info that does not change with the Python patch release.

Why: when JupyterLab connects a kernel it writes the kernel's ``language_info`` into the notebook's metadata;
if that differs from what the file holds, the notebook is marked modified before the user touched it.
ipykernel reports ``version: "3.11.7"`` (the patch release), so committed notebooks could only stay clean on
one exact Python build. The molre kernel reports ``major.minor`` ("3.11"), and the committed notebooks carry
exactly :data:`LANGUAGE_INFO` (``tests/workbook/test_notebooks.py`` checks it), so opening a notebook leaves it
unmodified on any 3.11.x.

Register it with ``python -m molre_lib.workbook.kernel --sys-prefix`` (``make`` does), or ``--user``.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ipykernel.ipkernel import IPythonKernel

KERNEL_NAME = "molre"
DISPLAY_NAME = "Python (molre)"
LANGUAGE_INFO = {**IPythonKernel.language_info, "version": f"{sys.version_info.major}.{sys.version_info.minor}"}


class MolreKernel(IPythonKernel):
    """IPython kernel whose language_info names the Python version as major.minor."""

    language_info = LANGUAGE_INFO


def install(user: bool = False, prefix: str | None = None) -> Path:
    """Register the ``molre`` kernelspec for this interpreter; returns its folder."""
    from ipykernel.kernelspec import install as install_ipykernel

    dest = Path(install_ipykernel(user=user, prefix=prefix, kernel_name=KERNEL_NAME, display_name=DISPLAY_NAME))
    spec_file = dest / "kernel.json"
    spec = json.loads(spec_file.read_text())
    option = "--IPKernelApp.kernel_class=molre_lib.workbook.kernel.MolreKernel"
    spec["argv"] = [a for a in spec["argv"] if not a.startswith("--IPKernelApp.kernel_class=")] + [option]
    spec_file.write_text(json.dumps(spec, indent=1) + "\n")
    return dest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m molre_lib.workbook.kernel", description=__doc__.splitlines()[0])
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--user", action="store_true", help="install for the current user")
    where.add_argument("--sys-prefix", action="store_true", help="install into this environment (default)")
    where.add_argument("--prefix", help="install under this prefix")
    args = parser.parse_args(argv)
    prefix = args.prefix or (None if args.user else sys.prefix)
    dest = install(user=args.user, prefix=prefix)
    print(f"Installed kernelspec {KERNEL_NAME} in {dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
