"""``hessian-powerlaw demo``: the embedded default, random-init vs trained LeNet on digits."""

from __future__ import annotations

import argparse
import time
from typing import Any

from hessian_powerlaw.cli._common import add_command, add_json, add_quiet, print_json

EXAMPLES = """\
  hessian-powerlaw demo
  hessian-powerlaw demo --quick --out /tmp/demo
"""


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser = add_command(
        subparsers,
        "demo",
        "train a LeNet on digits and test random-init vs trained Hessian spectra for a power law",
        EXAMPLES,
        run,
    )
    parser.add_argument(
        "--out", metavar="DIR", default="results/demo",
        help="folder for demo.json, the figures, report.html and the training run",
    )  # fmt: skip
    parser.add_argument(
        "--quick", action="store_true",
        help="smaller run (fewer epochs, k and samples): under a minute on 2 cores",
    )  # fmt: skip
    add_json(parser)
    add_quiet(parser)
    return parser


def run(args: argparse.Namespace) -> int:
    from hessian_powerlaw.cli.spectrum import check_output_folder
    from hessian_powerlaw.report.tables import DEMO_COLUMNS, demo_summary, text_table
    from hessian_powerlaw.tracking import run_demo

    start = time.perf_counter()
    out = check_output_folder(args.out)
    result = run_demo(out, quick=args.quick, progress=not args.quiet)
    if args.json:
        print_json(result)
        return 0
    training = result.training
    print(
        f"{result.model} trained on {result.data} for {training['epochs']} epochs "
        f"({training['steps']} steps): test accuracy {training['test_accuracy']:.3f}; "
        f"Hessian on {result.num_samples} training samples, {result.settings.dtype}"
    )
    print()
    print(text_table(result.table, DEMO_COLUMNS))
    print()
    print(demo_summary(result.table))
    print(f"wrote {out / 'demo.json'}, {out / 'demo.png'}, {out / 'report.html'}")
    print(f"total time {time.perf_counter() - start:.1f} s")
    return 0
