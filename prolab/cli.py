"""``prolab ...`` (the installed command) or ``python -m prolab ...``: the command-line interface.

Each command group lives in ``prolab/commands/<group>.py`` and exposes ``register(subparsers)``;
handlers receive the parsed ``argparse.Namespace``. A :class:`ProLabError` (a user mistake), an
``OSError`` (a path the system refuses) or a ``RecursionError`` (input nested too deeply) prints one line
to stderr and exits with status 2; anything else is a bug and keeps its traceback.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from prolab.errors import ProLabError

#: Command modules, in the order they appear in ``--help``.
COMMAND_MODULES = (
    "prolab.commands.labelspace",
    "prolab.commands.describe",
    "prolab.commands.train",
    "prolab.commands.evaluate",
    "prolab.commands.calibrate",
    "prolab.commands.predict",
    "prolab.commands.export",
)


def program_name() -> str:
    """``prolab`` when run as the installed command, else ``python -m prolab``."""
    return "prolab" if os.path.basename(sys.argv[0] or "") == "prolab" else "python -m prolab"


def os_error_message(exc: OSError) -> str:
    """``Permission denied: /x/y`` rather than ``[Errno 13] Permission denied: '/x/y'``."""
    what = exc.strerror or str(exc) or exc.__class__.__name__
    return f"{what}: {exc.filename}" if exc.filename else what


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=program_name(),
        description="ProLab Explorer: property-level label spaces and segmentation.")
    parser.add_argument("-v", "--verbose", action="store_true", help="show debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # default paths never download
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(levelname)s: %(message)s")
    from prolab.threads import apply_thread_policy  # OpenMP sleeps while it waits: fast on a busy machine

    logging.getLogger(__name__).debug("threads: %s", apply_thread_policy().describe())
    try:
        return int(args.handler(args) or 0)
    except ProLabError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # the file system said no (a --out under /proc, a file where a folder goes, ...)
        print(f"error: {os_error_message(exc)}", file=sys.stderr)
        return 2
    except RecursionError:  # an input nested deeper than Python's parsers recurse
        print("error: an input file is nested too deeply to be read.", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
