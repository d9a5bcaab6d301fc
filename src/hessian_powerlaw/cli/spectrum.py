"""``hessian-powerlaw spectrum``: top Hessian eigenvalues of one model state, fit and measures."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any

from hessian_powerlaw.cli import _common
from hessian_powerlaw.errors import UserInputError

EXAMPLES = """\
  hessian-powerlaw spectrum --model lenet --data digits --k 100
  hessian-powerlaw spectrum --model lenet --data digits --checkpoint RUN/final.pt --out out
  hessian-powerlaw spectrum --model fcn:2x100 --data fashion-mnist --samples 2000 --dtype float32
  hessian-powerlaw spectrum --model chargpt:4x128 --data shakespeare --params per-block --k 50
"""


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``spectrum``."""
    parser = _common.add_command(
        subparsers,
        "spectrum",
        "top-k Hessian eigenvalues of a model, their power-law fit, lambda_max and trace",
        EXAMPLES,
        run,
    )
    _common.add_model_arguments(parser)
    # spectrum's products are float32 on a CPU and float64 on a GPU unless asked (the
    # measurements are in options.spectrum_dtype's docstring)
    _common.add_analysis_arguments(
        parser, default_k=300, per_block=True, criterion=True, dtype_by_device=True
    )
    parser.add_argument(
        "--no-density",
        dest="density",
        action="store_false",
        help="skip the spectral density (SLQ) estimate, computed by default",
    )
    parser.add_argument(
        "--out",
        metavar="DIR",
        default="results/spectrum",
        help="folder for spectrum.json and spectrum.png; an interrupted eigensolve keeps its "
        f"state in DIR/{STATE_FILE}, and rerunning the same command resumes it",
    )
    parser.add_argument(
        "--save-every",
        type=float,
        default=DEFAULT_SAVE_EVERY,
        metavar="SECONDS",
        help=f"seconds between saves of the eigensolver's state (default {DEFAULT_SAVE_EVERY:g};"
        " 0: after every block of products). Not with --params per-block or under torchrun",
    )
    _common.add_json(parser)
    _common.add_quiet(parser)
    parser.set_defaults(data_parallel=True)  # under torchrun the ranks share the products
    parser.set_defaults(resume_hint=resume_hint)
    return parser


#: The eigensolver's saved state inside --out (a dot file: no output of the command).
STATE_FILE = ".solver-state.pt"
DEFAULT_SAVE_EVERY = 180.0


def state_file(args: argparse.Namespace) -> Path | None:
    """Where this run keeps its eigensolver state.

    Where this run keeps its eigensolver state, or None when it is not resumable:
    ``--params per-block`` (several solves) and torchrun with several ranks (each rank
    would need the same file) are left out.
    """
    from hessian_powerlaw.distributed import world_size

    if _common.parse_params(args.params) == "per-block":
        return None
    if world_size() > 1:
        return None
    return Path(args.out) / STATE_FILE


def resume_hint(args: argparse.Namespace) -> str:
    """After Ctrl-C: whether a saved eigensolver state lets the same command continue."""
    path = state_file(args)
    if path is None or not path.exists():
        return ""
    return f"rerunning the same command resumes the eigensolve saved in {path}"


def summary_text(result: Any, written: list[Path]) -> str:
    """A few human lines: what was computed, how well it converged, the fit verdict."""
    state = f"checkpoint {result.checkpoint}" if result.checkpoint else "random init"
    lines = [f"{result.model} on {result.data} ({state}), {result.num_samples} Hessian samples"]
    for label, analysis in result.analyses.items():
        spec = analysis.spectrum
        converged = int(sum(bool(c) for c in spec.converged))
        lines.append(
            f"[{label}] n = {analysis.num_params} parameters, top-{len(spec.eigenvalues)} "
            f"eigenvalues: {converged}/{len(spec.converged)} converged, max residual "
            f"{max(spec.residuals):.2g}, {spec.num_matvecs} Hessian-vector products, "
            f"{analysis.seconds:.1f} s"
        )
        if converged < len(spec.converged):
            lines.append("  " + _common.unconverged_warning(spec))
        trace = analysis.trace
        trace_text = f"{trace.estimate:.6g} +/- {trace.std_error:.2g}" if trace else "not computed"
        lines.append(f"  lambda_max = {analysis.lambda_max:.6g}, trace = {trace_text}")
        lines.append(
            f"  fit: {analysis.fit}" if analysis.fit else f"  no fit: {analysis.fit_error}"
        )
    for split, metrics in result.evaluation.items():
        lines.append(f"{split}: loss {metrics['loss']:.4f}, accuracy {metrics['accuracy']:.4f}")
    lines.append("wrote " + ", ".join(str(p) for p in written))
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Run ``spectrum``; returns the exit status."""
    from hessian_powerlaw.analysis import analyze_spec
    from hessian_powerlaw.distributed import is_primary
    from hessian_powerlaw.io import atomic_write_json, staged_dir
    from hessian_powerlaw.options import AnalysisOptions
    from hessian_powerlaw.report.outputs import write_spectrum_figures

    if not (math.isfinite(args.save_every) and args.save_every >= 0):
        raise UserInputError(
            f"--save-every must be a number of seconds >= 0, got {args.save_every}"
        )
    out = _common.check_output_folder(args.out)
    state = state_file(args)
    result = analyze_spec(
        args.model,
        args.data,
        AnalysisOptions.from_args(args),
        checkpoint=args.checkpoint,
        seq_len=args.seq_len,
        params=_common.parse_params(args.params),
        device=args.device,
        progress=not args.quiet,
        state_file=state,
        state_interval=args.save_every,
    )
    reused = 0 if result.analysis is None else result.analysis.spectrum.resumed_matvecs
    if reused:
        print(
            f"hessian-powerlaw spectrum: resumed the eigensolve saved in {state}: {reused} "
            "Hessian-vector products reused",
            file=sys.stderr,
        )
    if not is_primary():  # under torchrun only rank 0 writes and prints
        return 0
    record = result.to_dict()
    with staged_dir(out) as stage:
        atomic_write_json(stage / "spectrum.json", record)
        figures = write_spectrum_figures(record, stage)
    written = [out / "spectrum.json"] + [out / p.name for p in figures]
    if args.json:
        _common.print_json(record)
    else:
        print(summary_text(result, written))
    return 0
