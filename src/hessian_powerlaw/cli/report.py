"""``hessian-powerlaw report``: one self-contained report.html from the results in a folder."""

from __future__ import annotations

import argparse
from typing import Any

from hessian_powerlaw.cli._common import add_command

EXAMPLES = """\
  hessian-powerlaw report results/demo
  hessian-powerlaw report runs/lenet --title "LeNet on digits"
"""


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser = add_command(
        subparsers,
        "report",
        "build DIR/report.html (figures embedded, works offline) from the results under DIR",
        EXAMPLES,
        run,
    )
    parser.add_argument(
        "directory", metavar="DIR",
        help="folder searched for spectrum.json, track.json and demo.json",
    )  # fmt: skip
    parser.add_argument("--title", default=None, help="page title; None = from DIR's name")
    return parser


def run(args: argparse.Namespace) -> int:
    from hessian_powerlaw.report.html import write_report

    print(write_report(args.directory, title=args.title))
    return 0
