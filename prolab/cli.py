"""``prolab ...`` (the installed command) or ``python -m prolab ...``: the command-line interface.

Each command group lives in ``prolab/commands/<group>.py`` and exposes ``register(subparsers)``;
handlers receive the parsed ``argparse.Namespace``. A :class:`ProLabError` (a user mistake) prints
one line to stderr and exits with status 2; anything else is a bug and keeps its traceback.
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
    "prolab.commands.predict",
    "prolab.commands.export",
)


def program_name() -> str:
    """``prolab`` when run as the installed command, else ``python -m prolab``."""
    return "prolab" if os.path.basename(sys.argv[0] or "") == "prolab" else "python -m prolab"


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
    try:
        return int(args.handler(args) or 0)
    except ProLabError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
