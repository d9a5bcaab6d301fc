"""``hessian-powerlaw track``: spectra along a training run's checkpoints, vs generalization."""

from __future__ import annotations

import argparse
from types import SimpleNamespace
from typing import Any

from hessian_powerlaw.cli import _common

EXAMPLES = """\
  hessian-powerlaw train --model lenet --data digits --epochs 20 \\
      --checkpoint-epochs 0,1,2,4,8,12,16,20 --out runs/lenet
  hessian-powerlaw track runs/lenet --k 100
  hessian-powerlaw track runs/lenet --k 300 --every 2 --samples 1000 --quiet
  hessian-powerlaw track runs/lenet --k 50 --tensorboard runs/tb  # tensorboard --logdir runs/tb
"""


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``track``."""
    parser = _common.add_command(
        subparsers,
        "track",
        "Hessian spectra along a run's checkpoints, correlated with test loss and the gap",
        EXAMPLES,
        run,
    )
    parser.add_argument("run_dir", metavar="RUN", help="a run folder written by `train`")
    _common.add_analysis_arguments(parser, default_k=100, criterion=True)
    parser.add_argument(
        "--every", type=int, default=1, metavar="N",
        help="analyse every N-th checkpoint (the last one always)",
    )  # fmt: skip
    parser.add_argument(
        "--no-figures", action="store_true", help="write track.json only, no PNG figures"
    )
    parser.add_argument(
        "--tensorboard", default=None, metavar="DIR",
        help="also write each checkpoint's measures and rank plot as TensorBoard event files "
        "in DIR (needs the tensorboard package)",
    )  # fmt: skip
    _common.add_json(parser)
    _common.add_quiet(parser)
    parser.set_defaults(data_parallel=True)  # under torchrun the ranks share the products
    parser.set_defaults(resume_hint=resume_hint)
    return parser


def resume_hint(args: argparse.Namespace) -> str:
    """``track.json`` is rewritten after every checkpoint and reused with the same settings."""
    return (
        "rerunning the same command resumes: the checkpoints already analysed in "
        f"{args.run_dir}/track.json are kept"
    )


def _print_entry(entry: dict[str, Any]) -> None:
    m = entry["measures"]
    s = "-" if m.get("s") is None else f"{m['s']:.3f}"
    d_ks = "-" if m.get("d_ks") is None else f"{m['d_ks']:.4f}"
    print(
        f"step {entry['step']}: test loss {entry['test_loss']:.4f}, s = {s}, d_ks = {d_ks}, "
        f"lambda_max = {m['lambda_max']:.4g}",
        flush=True,
    )
    spec = entry["analysis"]["spectrum"]
    if not all(spec["converged"]):
        print("  " + _common.unconverged_warning(SimpleNamespace(**spec)), flush=True)


def run(args: argparse.Namespace) -> int:
    """Run ``track``; returns the exit status."""
    from hessian_powerlaw.measures import CorrelationRow, format_correlation_table
    from hessian_powerlaw.options import AnalysisOptions
    from hessian_powerlaw.report.tables import TRACK_STEP_COLUMNS, text_table, track_rows
    from hessian_powerlaw.tracking import track_run

    result = track_run(
        args.run_dir,
        AnalysisOptions.from_args(args),
        every=args.every,
        params=_common.parse_params(args.params),
        device=args.device,
        progress=not args.quiet,
        figures=not args.no_figures,
        on_entry=None if args.json else _print_entry,
        tensorboard=args.tensorboard,
    )
    record = result.to_dict()
    if args.json:
        _common.print_json(record)
        return 0
    print()
    print(text_table(track_rows(record), TRACK_STEP_COLUMNS))
    rows = [
        CorrelationRow(measure=measure, target=target, **stats)
        for target, table in record["correlations"].items()
        for measure, stats in table.items()
    ]
    print("\ncorrelation of each Hessian measure with test loss and gap across checkpoints:")
    print(format_correlation_table(rows))
    print(f"\nwrote {result.run}/track.json ({len(result.entries)} checkpoints)")
    if args.tensorboard:
        print(f"wrote TensorBoard event files to {args.tensorboard}")
    return 0
