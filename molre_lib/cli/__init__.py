"""The ``molre`` command line.

Each module in this package that defines ``register(subparsers)`` adds its sub-commands; the
handler it sets with ``parser.set_defaults(func=...)`` receives the parsed ``argparse.Namespace``
and returns an exit code. New commands therefore need no edit here.

Errors: a user error (a bad file, value, folder or a full disk: ``ValueError`` / ``OSError`` and their kin)
is printed as ``molre COMMAND: error: ...`` and exits 2; ``--debug`` shows the traceback instead. Anything
else is a bug and keeps its traceback.
"""
from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

MAX_ERROR_LINES = 20


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="molre",
        description="MoLRE head-CT workbook: data, backbones, training, evaluation and notebook sweeps.",
    )
    parser.add_argument("--debug", action="store_true",
                        help="show the Python traceback of an error instead of one line (molre --debug COMMAND ...)")
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
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print(f"molre {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # noqa: BLE001 - sorted into user errors (one line) and bugs (traceback)
        if args.debug or not is_user_error(err):
            raise
        print(f"molre {args.command}: error: {user_message(err)}", file=sys.stderr)
        return 2


def is_user_error(err: BaseException) -> bool:
    """Bad input, files, folders, values or a full / read-only disk; not a bug in the code."""
    from molre_lib.engine.run_lock import RunLockedError

    return isinstance(err, (ValueError, OSError, RunLockedError)) and not isinstance(err, UnicodeError)


def user_message(err: BaseException) -> str:
    """The error's own message; an OSError as 'file: reason'; long problem lists cut to a few lines."""
    if isinstance(err, OSError) and err.strerror and not str(err).startswith(str(err.filename or "\0")):
        text = f"{err.filename}: {err.strerror}" if err.filename else err.strerror
    else:
        text = str(err) or type(err).__name__
    lines = text.splitlines()
    if len(lines) > MAX_ERROR_LINES:
        lines = lines[:MAX_ERROR_LINES] + [f"  ... {len(lines) - MAX_ERROR_LINES} more line(s) (--debug shows all)"]
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
