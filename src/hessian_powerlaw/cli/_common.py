"""Arguments and output helpers shared by the sub-commands."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from hessian_powerlaw._results import to_jsonable


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Shows defaults in ``--help`` and keeps the examples' line breaks."""


def add_command(
    subparsers: Any, name: str, help: str, examples: str, run: Any
) -> argparse.ArgumentParser:
    """Register a sub-command with its one-line help, its examples and its ``run``."""
    parser = subparsers.add_parser(
        name,
        help=help,
        description=help,
        epilog="examples:\n" + examples,
        formatter_class=HelpFormatter,
    )
    parser.set_defaults(run=run)
    return parser


def add_quiet(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quiet", action="store_true", help="no progress bars on stderr")


def add_json(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--json", action="store_true", help="print the result as JSON on stdout instead of text"
    )


def print_json(obj: Any) -> None:
    json.dump(to_jsonable(obj), sys.stdout, indent=2, allow_nan=False)
    sys.stdout.write("\n")


def add_seq_len(parser: argparse.ArgumentParser) -> None:
    """``--seq-len`` for commands that load text data (train, spectrum, subspace)."""
    parser.add_argument(
        "--seq-len",
        type=int,
        default=None,
        metavar="L",
        help="text data: tokens per sequence, and chargpt's context; give the length the model "
        "was trained with (default 128, or an hf:PATH model's shorter context)",
    )
