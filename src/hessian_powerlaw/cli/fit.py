"""``hessian-powerlaw fit``: the power-law test on a file of eigenvalues from any tool."""

from __future__ import annotations

import argparse
import sys
import warnings
from typing import Any

from hessian_powerlaw.cli._common import add_command, add_json, print_json

HELP = "test a file of eigenvalues (from this tool or any other) for a power law"

EXAMPLES = """\
  hessian-powerlaw fit out/spectrum.json
  hessian-powerlaw fit eigenvalues.txt --k 500 --alpha 0.01
  hessian-powerlaw fit eigenvalues.npy --cutoff clauset --bootstrap 1000 --compare --json
Files: .npy, .txt/.csv (one value per line; '#' comments and one header line allowed),
or JSON ({"eigenvalues": [...]} or the tool's spectrum.json)."""


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``fit``."""
    p = add_command(subparsers, "fit", HELP, EXAMPLES, run)
    p.add_argument("file", metavar="EIGENVALUES_FILE", help="eigenvalues: .npy, .txt, .csv, .json")
    p.add_argument("--k", type=int, default=None, help="use the top K eigenvalues (default: all)")
    p.add_argument("--alpha", type=float, default=0.05, help="significance level of the KS test")
    p.add_argument(
        "--cutoff",
        choices=("kth", "clauset"),
        default="kth",
        help="lambda_cut: the k-th eigenvalue (the paper) or the KS-optimal one (Clauset et al.)",
    )
    p.add_argument(
        "--critical",
        choices=("asymptotic", "exact"),
        default="asymptotic",
        help="KS critical value: c(alpha)/sqrt(k) (the paper) or the exact KS distribution",
    )
    p.add_argument(
        "--bootstrap",
        type=int,
        default=0,
        metavar="N",
        help="also compute the bootstrap goodness-of-fit p-value with N synthetic samples",
    )
    p.add_argument(
        "--compare",
        action="store_true",
        help="also test the power law against exponential, log-normal, stretched exponential "
        "and truncated power law",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap")
    add_json(p)
    return p


def run(args: argparse.Namespace) -> int:
    """Run ``fit``; returns the exit status."""
    from hessian_powerlaw.io import load_eigenvalues
    from hessian_powerlaw.powerlaw import bootstrap_pvalue, compare_alternatives, fit_power_law

    values = load_eigenvalues(args.file)
    result: dict[str, Any] = {"file": args.file}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit = fit_power_law(
            values, k=args.k, alpha=args.alpha, cutoff=args.cutoff, critical=args.critical
        )
        result["fit"] = fit
        if args.bootstrap:
            result["bootstrap"] = bootstrap_pvalue(
                values, k=args.k, n_boot=args.bootstrap, seed=args.seed, cutoff=args.cutoff
            )
        if args.compare:
            result["alternatives"] = compare_alternatives(values, k=args.k, cutoff=args.cutoff)
    for message in dict.fromkeys(str(w.message) for w in caught):  # once each, in order
        print(f"hessian-powerlaw: warning: {message}", file=sys.stderr)

    if args.json:
        print_json(result)
        return 0
    print(fit)
    for key in ("bootstrap", "alternatives"):
        if key in result:
            print(result[key])
    return 0
