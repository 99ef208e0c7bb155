"""The ``molre`` command line.

Each module in this package that defines ``register(subparsers)`` adds its sub-commands; the
handler it sets with ``parser.set_defaults(func=...)`` receives the parsed ``argparse.Namespace``
and returns an exit code. New commands therefore need no edit here.
"""
from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="molre",
        description="MoLRE head-CT workbook: data, backbones, training, evaluation and notebook sweeps.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{__name__}.{info.name}")
        register = getattr(module, "register", None)
        if register is not None:
            register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
