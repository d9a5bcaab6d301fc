"""``hessian-powerlaw report``: one self-contained report.html from the results in a folder."""

from __future__ import annotations

import argparse
import sys
import warnings
from typing import Any

from hessian_powerlaw.cli._common import add_command

EXAMPLES = """\
  hessian-powerlaw report results/demo
  hessian-powerlaw report runs/lenet --title "LeNet on digits"
"""


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``report``."""
    parser = add_command(
        subparsers,
        "report",
        "build DIR/report.html (figures embedded, works offline) from the results under DIR",
        EXAMPLES,
        run,
    )
    parser.add_argument(
        "directory", metavar="DIR",
        help="folder searched for spectrum.json, track.json and demo.json; files that cannot "
        "be read are named on stderr, and none readable is an error",
    )  # fmt: skip
    parser.add_argument("--title", default=None, help="page title; None = from DIR's name")
    return parser


def run(args: argparse.Namespace) -> int:
    """Run ``report``; returns the exit status."""
    from hessian_powerlaw.report.html import write_report

    # every file left out is a warning (SkippedResultWarning), printed as one stderr line
    # each; when none is valid write_report raises, and the CLI exits 2
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        path = write_report(args.directory, title=args.title)
    for message in dict.fromkeys(str(w.message) for w in caught):  # once each, in order
        print(f"hessian-powerlaw: warning: {message}", file=sys.stderr)
    print(path)
    return 0
