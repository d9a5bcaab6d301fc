"""Arguments and output helpers shared by the sub-commands."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from hessian_powerlaw._results import to_jsonable


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Shows defaults in ``--help`` and keeps the examples' line breaks.

    A default is appended only when it says something: not for flags (False), not for
    ``None`` (the help text says what no value means), and not when the help already
    describes its default.
    """

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        quiet = action.default is None or action.default is False
        if quiet or action.default == argparse.SUPPRESS or "default" in text:
            return text
        return super()._get_help_string(action)


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


# Integer options of any sub-command and their smallest valid value: checked at the door so
# that a mistake names the flag the user typed, not the library's parameter behind it.
_COUNTS = {
    "k": 1, "samples": 1, "batch_size": 1, "max_matvecs": 1, "seq_len": 1, "every": 1,
    "epochs": 1, "steps": 1, "checkpoint_every": 1, "eval_every": 1, "eval_batches": 1,
    "threads": 1, "trace_matvecs": 0, "n_boot": 0, "bootstrap": 0, "warmup_steps": 0,
}  # fmt: skip


def check_counts(args: argparse.Namespace) -> None:
    """UserInputError naming the flag when an integer option is below its minimum."""
    from hessian_powerlaw.errors import UserInputError

    for dest, minimum in _COUNTS.items():
        value = getattr(args, dest, None)
        if isinstance(value, int) and value < minimum:
            flag = "--" + dest.replace("_", "-")
            raise UserInputError(f"{flag} must be an integer >= {minimum}, got {value}")


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
