"""``hessian-powerlaw subspace``: is the top Hessian eigenspace robust to the data?"""

from __future__ import annotations

import argparse
import time
from typing import Any

from hessian_powerlaw.cli import _common
from hessian_powerlaw.errors import UserInputError

HELP = (
    "top-k Hessian eigenvectors on two data halves: angles, top-m overlaps, Davis-Kahan and "
    "power-law bounds"
)

EXAMPLES = """\
  hessian-powerlaw subspace --model lenet --data digits --checkpoint RUN/final.pt --k 50
  hessian-powerlaw subspace --model lenet --data digits --checkpoint RUN/final.pt --splits seeds \\
      --samples 600 --out out/subspace
  hessian-powerlaw subspace --model fcn:2x100 --data fashion-mnist:6000 --checkpoint F --json
Writes DIR/subspace.json and DIR/subspace.png (angles vs index with the bounds; overlap vs m)."""


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``subspace``."""
    parser = _common.add_command(subparsers, "subspace", HELP, EXAMPLES, run)
    _common.add_model_arguments(parser)
    _common.add_analysis_arguments(parser, default_k=50)
    parser.add_argument(
        "--splits",
        choices=("halves", "seeds"),
        default="halves",
        help="halves: the Hessian samples split into two disjoint halves (even/odd); seeds: "
        "two seeded random subsets of --samples each (default half the training set)",
    )
    parser.add_argument(
        "--backend",
        choices=("auto", "vmap", "autograd"),
        default="auto",
        help="Hessian-vector products: vmap (batched forward-over-reverse), autograd (double "
        "backward; faster for float64 convolutions on CPU), auto (vmap, else autograd)",
    )
    parser.add_argument(
        "--out",
        metavar="DIR",
        default="results/subspace",
        help="folder for subspace.json and subspace.png",
    )
    _common.add_json(parser)
    _common.add_quiet(parser)
    return parser


def _resolve_params(model: Any, text: str | None) -> Any:
    params = _common.parse_params(text)
    if params == "per-block":
        raise UserInputError(
            "--params per-block is not supported by subspace; name one group, e.g. 'last' or 'fc*'"
        )
    if params == "last":
        from hessian_powerlaw.analysis import parameter_groups

        return parameter_groups(model, "last")["last"]
    return params


def compute(args: argparse.Namespace) -> dict[str, Any]:
    """Load data and model from the specs, run :func:`theory.subspace_stability`, return a record.

    Args:
        args: the parsed command line.

    Returns:
        The record: the result (``stability``), the inputs (``config``: the analysis options,
        the splits, the parameters and the backend) and versions; under the key ``_result``
        also the result object (not written to JSON).
    """
    from hessian_powerlaw import zoo
    from hessian_powerlaw.analysis import default_num_samples, versions
    from hessian_powerlaw.options import AnalysisOptions
    from hessian_powerlaw.theory import subspace_stability
    from hessian_powerlaw.training import load_model_state

    start = time.perf_counter()
    # the eigenvectors are compared: residuals relative to |lambda_1|
    options = AnalysisOptions.from_args(args, criterion="norm")
    data = zoo.load_data(args.data, seed=args.seed, model_spec=args.model, seq_len=args.seq_len)
    model = load_model_state(args.model, data, args.checkpoint, args.seed)
    if options.samples is None and args.splits == "halves":
        options = options.replace(samples=default_num_samples(data))
    result = subspace_stability(
        model,
        data.loss,
        data,
        splits=args.splits,
        options=options,
        params=_resolve_params(model, args.params),
        backend=args.backend,
        progress=not args.quiet,
    )
    config = {
        **options.to_dict(),
        "tol": options.resolved_tol(),
        "splits": args.splits,
        "params": args.params,
        "backend": args.backend,
    }
    return {
        "model": args.model,
        "data": args.data,
        "checkpoint": args.checkpoint,
        "config": config,
        "stability": result.to_dict(),
        "versions": versions(),
        "seconds": time.perf_counter() - start,
        "_result": result,
    }


def run(args: argparse.Namespace) -> int:
    """Run ``subspace``; returns the exit status."""
    from hessian_powerlaw.io import atomic_write_bytes, atomic_write_json, staged_dir
    from hessian_powerlaw.report.plots import png_bytes, subspace_figure

    out = _common.check_output_folder(args.out)
    record = compute(args)
    result = record.pop("_result")
    figure = subspace_figure(result)
    with staged_dir(out) as stage:
        atomic_write_json(stage / "subspace.json", record)
        atomic_write_bytes(stage / "subspace.png", png_bytes(figure, dpi=130))
    written = [out / "subspace.json", out / "subspace.png"]
    if args.json:
        _common.print_json(record)
    else:
        state = f"checkpoint {args.checkpoint}" if args.checkpoint else "random init"
        print(f"{args.model} on {args.data} ({state}), {record['seconds']:.1f} s")
        print(result.summary())
        print("wrote " + ", ".join(str(p) for p in written))
    return 0


__all__ = ["add_parser", "compute", "run"]
