"""``hessian-powerlaw subspace``: is the top Hessian eigenspace robust to the data?"""

from __future__ import annotations

import argparse
import time
from typing import Any

from hessian_powerlaw.cli._common import add_command, add_json, add_quiet, print_json
from hessian_powerlaw.cli.spectrum import (
    add_analysis_arguments,
    add_model_arguments,
    check_output_folder,
    parse_params,
)
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
    parser = add_command(subparsers, "subspace", HELP, EXAMPLES, run)
    add_model_arguments(parser)
    parser.add_argument(
        "--checkpoint",
        metavar="FILE",
        help="weights to load (a run's ckpt-*.pt / final.pt, or a state_dict); "
        "without it the model is at random initialisation",
    )
    add_analysis_arguments(parser, default_k=50)
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
    add_json(parser)
    add_quiet(parser)
    return parser


def _resolve_params(model: Any, text: str | None) -> Any:
    params = parse_params(text)
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

    The record holds the result (``stability``), the inputs and versions; with the key
    ``_result`` it also carries the result object (not written to JSON).
    """
    from hessian_powerlaw import zoo
    from hessian_powerlaw.analysis import (
        default_num_samples,
        load_model_state,
        parse_dtype,
        versions,
    )
    from hessian_powerlaw.solvers import default_tol
    from hessian_powerlaw.theory import subspace_stability

    start = time.perf_counter()
    if args.k < 1:
        raise UserInputError(f"--k must be >= 1, got {args.k}")
    dtype = parse_dtype(args.dtype)
    data = zoo.load_data(args.data, seed=args.seed, model_spec=args.model, seq_len=args.seq_len)
    model = load_model_state(args.model, data, args.checkpoint, args.seed)
    samples = args.samples
    if samples is None and args.splits == "halves":
        samples = default_num_samples(data)
    result = subspace_stability(
        model,
        data.loss,
        data,
        args.k,
        splits=args.splits,
        params=_resolve_params(model, args.params),
        num_samples=samples,
        batch_size=args.batch_size,
        dtype=dtype,
        backend=args.backend,
        tol=args.tol,
        seed=args.seed,
        max_matvecs=args.max_matvecs,
        trace_matvecs=args.trace_matvecs,
        alpha=args.alpha,
        progress=not args.quiet,
    )
    config = {
        "k": args.k,
        "splits": args.splits,
        "samples": samples,
        "batch_size": args.batch_size,
        "params": args.params,
        "dtype": args.dtype,
        "backend": args.backend,
        "tol": args.tol if args.tol is not None else default_tol(dtype, "norm"),
        "max_matvecs": args.max_matvecs,
        "trace_matvecs": args.trace_matvecs,
        "alpha": args.alpha,
        "seed": args.seed,
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
    from hessian_powerlaw.io import atomic_write_bytes, atomic_write_json, staged_dir
    from hessian_powerlaw.theory import subspace_figure

    out = check_output_folder(args.out)
    record = compute(args)
    result = record.pop("_result")
    figure = subspace_figure(result)
    with staged_dir(out) as stage:
        atomic_write_json(stage / "subspace.json", record)
        atomic_write_bytes(stage / "subspace.png", _png(figure))
    written = [out / "subspace.json", out / "subspace.png"]
    if args.json:
        print_json(record)
    else:
        state = f"checkpoint {args.checkpoint}" if args.checkpoint else "random init"
        print(f"{args.model} on {args.data} ({state}), {record['seconds']:.1f} s")
        print(result.summary())
        print("wrote " + ", ".join(str(p) for p in written))
    return 0


def _png(figure: Any) -> bytes:
    import io

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=130)
    return buffer.getvalue()


__all__ = ["add_parser", "compute", "run"]
