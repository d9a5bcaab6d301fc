"""The ``hessian-powerlaw`` command: a thin shell over the Python API.

Each sub-command lives in its own module of this package and exposes
``add_parser(subparsers)`` and ``run(args) -> int``. Library imports happen inside ``run``
so that ``--help`` is instant.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from hessian_powerlaw import __version__
from hessian_powerlaw.cli._common import check_counts
from hessian_powerlaw.errors import UserInputError

# sub-command modules, in the order ``--help`` lists them
COMMANDS: tuple[str, ...] = (
    "demo",
    "spectrum",
    "fit",
    "train",
    "track",
    "report",
    "reproduce",
    "subspace",
)

PROG = "hessian-powerlaw"


def build_parser() -> argparse.ArgumentParser:
    """The ``hessian-powerlaw`` parser with every sub-command."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=(
            "Top Hessian eigenvalues of PyTorch models and the power-law spectral method: "
            "compute certified eigenvalues, test them for a power law, relate them to "
            "training and generalization."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMANDS:
        module = importlib.import_module(f"hessian_powerlaw.cli.{name}")
        module.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (2 for a user's mistake)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        check_counts(args)
        if {"RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"} <= os.environ.keys():
            from hessian_powerlaw.cli._torchrun import run_cli  # under torchrun: one rank

            return run_cli(args, PROG)
        return int(args.run(args) or 0)
    except UserInputError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted{interrupted_note(args)}", file=sys.stderr)
        return 130


def interrupted_note(args: argparse.Namespace) -> str:
    """The note on resuming that an interrupted sub-command prints.

    ``"; rerunning ... resumes ..."`` for a sub-command that resumes where it stopped (it
    sets ``resume_hint(args) -> str`` as a parser default), else ``""``.
    """
    hint = getattr(args, "resume_hint", None)
    text = hint(args) if callable(hint) else None
    return f"; {text}" if text else ""
