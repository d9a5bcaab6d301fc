"""``hessian-powerlaw demo``: the embedded default, random-init vs trained LeNet on MNIST.

A thin shell over :func:`hessian_powerlaw.demo.run_demo`: it prints the table, the sentences
and the verdict the library computed.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from hessian_powerlaw.cli._common import add_command, add_json, add_quiet, print_json

EXAMPLES = """\
  hessian-powerlaw demo                       # LeNet on MNIST, K = 1000 (the paper's test)
  hessian-powerlaw demo --quick --out /tmp/demo   # digits, K = 60: under a minute
"""


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``demo``."""
    parser = add_command(
        subparsers,
        "demo",
        "train a LeNet on MNIST and test its random-init and trained Hessian spectra for a "
        "power law at the paper's K = 1000",
        EXAMPLES,
        run,
    )
    parser.add_argument(
        "--out", metavar="DIR", default="results/demo",
        help="folder for demo.json, the figures, report.html and the training run",
    )  # fmt: skip
    parser.add_argument(
        "--quick", action="store_true",
        help="smaller run (LeNet on 8x8 digits, k = 60 on 600 images): under a minute on 2 "
        "cores; the paper's KS test is not decisive at that k, and the output says so",
    )  # fmt: skip
    add_json(parser)
    add_quiet(parser)
    return parser


def run(args: argparse.Namespace) -> int:
    """Run ``demo``; returns the exit status."""
    from hessian_powerlaw.cli._common import check_output_folder
    from hessian_powerlaw.demo import run_demo
    from hessian_powerlaw.report.tables import DEMO_COLUMNS, demo_summary, text_table

    start = time.perf_counter()
    out = check_output_folder(args.out)
    result = run_demo(out, quick=args.quick, progress=not args.quiet)
    if args.json:
        print_json(result)
        return 0
    training, settings = result.training, result.settings
    dtype = next(iter(result.states.values()))["analysis"]["config"]["dtype"]
    print(
        f"{result.model} trained on {result.data} for {training['epochs']} "
        f"epoch{'s' * (training['epochs'] != 1)} "
        f"({training['steps']} steps): test accuracy {training['test_accuracy']:.3f}"
    )
    print(
        f"Hessian: top k = {settings.k} eigenvalues on {result.num_samples} training samples "
        f"({dtype} products); the paper (Tang et al., Table 1, LeNet on MNIST): K = 1000"
    )
    print()
    print(text_table(result.table, DEMO_COLUMNS))
    print()
    print(demo_summary(result.table))
    for note in result.notes:
        print(f"note: {note}")
    print(result.finding)
    for line in result.verdict:
        print(f"  - {line}")
    print(f"wrote {out / 'demo.json'}, {out / 'demo.png'}, {out / 'report.html'}")
    print(f"total time {time.perf_counter() - start:.1f} s")
    return 0
