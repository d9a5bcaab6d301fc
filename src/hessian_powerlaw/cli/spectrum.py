"""``hessian-powerlaw spectrum``: top Hessian eigenvalues of one model state, fit and measures."""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path
from typing import Any

from hessian_powerlaw.cli._common import add_command, add_json, add_quiet, add_seq_len, print_json
from hessian_powerlaw.criteria import CRITERIA, DEFAULT_CRITERION
from hessian_powerlaw.errors import UserInputError

EXAMPLES = """\
  hessian-powerlaw spectrum --model lenet --data digits --k 100
  hessian-powerlaw spectrum --model lenet --data digits --checkpoint RUN/final.pt --out out
  hessian-powerlaw spectrum --model fcn:2x100 --data fashion-mnist --samples 2000 --dtype float32
  hessian-powerlaw spectrum --model chargpt:4x128 --data shakespeare --params per-block --k 50
"""


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser = add_command(
        subparsers,
        "spectrum",
        "top-k Hessian eigenvalues of a model, their power-law fit, lambda_max and trace",
        EXAMPLES,
        run,
    )
    add_model_arguments(parser)
    parser.add_argument(
        "--checkpoint",
        metavar="FILE",
        help="weights to load (a run's ckpt-*.pt / final.pt, or a state_dict); "
        "without it the model is at random initialisation",
    )
    add_analysis_arguments(parser, default_k=300, per_block=True, criterion=True)
    parser.add_argument(
        "--no-density", action="store_true", help="skip the spectral density (SLQ) estimate"
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
    add_json(parser)
    add_quiet(parser)
    parser.set_defaults(data_parallel=True)  # under torchrun the ranks share the products
    parser.set_defaults(resume_hint=resume_hint)
    return parser


#: The eigensolver's saved state inside --out (a dot file: no output of the command).
STATE_FILE = ".solver-state.pt"
DEFAULT_SAVE_EVERY = 180.0


def state_file(args: argparse.Namespace) -> Path | None:
    """Where this run keeps its eigensolver state, or None when it is not resumable:
    ``--params per-block`` (several solves) and torchrun with several ranks (each rank
    would need the same file) are left out."""
    from hessian_powerlaw.distributed import world_size

    if parse_params(args.params) == "per-block":
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


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        required=True,
        metavar="SPEC",
        help="lenet, fcn:DxW, linear-net:DxW, resnet18[:WIDTH], chargpt:LxD[:H], hf:PATH, "
        "or module:attr",
    )
    parser.add_argument(
        "--data",
        required=True,
        metavar="SPEC",
        help="digits[:N], mnist[:N], fashion-mnist[:N], mnist-idx:DIR, cifar10:DIR, "
        "shakespeare, text:FILE",
    )
    add_seq_len(parser)


def add_analysis_arguments(
    parser: argparse.ArgumentParser,
    default_k: int,
    per_block: bool = False,
    criterion: bool = False,
) -> None:
    """Options shared by ``spectrum``, ``track`` and ``subspace``: what Hessian, how many
    eigenvalues. ``per_block``: the command accepts ``--params per-block``; ``criterion``:
    it offers ``--criterion`` (eigenvalue-only commands)."""
    parser.add_argument("--k", type=int, default=default_k, help="number of top eigenvalues")
    parser.add_argument(
        "--params",
        default=None,
        metavar="P",
        help="parameters of the Hessian: None = all trainable; comma-separated globs over "
        "the model's own parameter names ('classifier.*'; 'transformer.h.1.mlp.c_proj.*' for "
        "an hf:PATH GPT-2); 'last' (the last layer, as the paper does for LLMs)"
        + ("; 'per-block' (one spectrum per repeated block)" if per_block else ""),
    )
    parser.add_argument(
        "--samples",
        type=int,
        default=None,
        metavar="N",
        help="training samples in the Hessian; None = all of a small set, at most 2048 "
        "images or 256 sequences (a fixed seeded subset)",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=None,
        metavar="B",
        help="split the Hessian samples into batches of B (memory); None = one batch",
    )
    parser.add_argument(
        "--dtype",
        choices=("float64", "float32"),
        default="float64",
        help="precision of the Hessian-vector products",
    )
    parser.add_argument(
        "--device",
        default=None,
        metavar="DEV",
        help="torch device of the Hessian-vector products (cpu, cuda, cuda:1); None = where the "
        "model is (cpu); under torchrun, cuda means each rank's own GPU",
    )
    parser.add_argument(
        "--alpha", type=float, default=0.05, help="significance level of the KS power-law test"
    )
    if criterion:
        parser.add_argument(
            "--criterion",
            choices=CRITERIA,
            default=DEFAULT_CRITERION,
            help="what --tol bounds: 'relative' = ||H v - lambda v|| / |lambda| for each "
            "eigenvalue (default; certifies every eigenvalue to --tol relative accuracy), "
            "'norm' = ||H v - lambda v|| / |lambda_1|",
        )
        tol_help = (
            "convergence tolerance of --criterion (default: relative 1e-3; norm 1e-6 in "
            "float64, 1e-5 in float32)"
        )
    else:
        tol_help = (
            "relative residual ||H v - lambda v|| / |lambda_1| at which an eigenpair has "
            "converged (default 1e-6 in float64, 1e-5 in float32)"
        )
    parser.add_argument("--tol", type=float, default=None, help=tol_help)
    parser.add_argument(
        "--max-matvecs",
        type=int,
        default=None,
        metavar="M",
        help="cap on Hessian-vector products (unconverged eigenpairs are flagged)",
    )
    parser.add_argument(
        "--trace-matvecs",
        type=int,
        default=100,
        metavar="M",
        help="Hessian-vector products for the Hutch++ trace estimate (0 skips it)",
    )
    parser.add_argument(
        "--n-boot", type=int, default=1000, metavar="B",
        help="bootstrap samples for the calibrated goodness-of-fit p-value (0 skips it)",
    )  # fmt: skip
    parser.add_argument("--seed", type=int, default=0, help="seed of model init, data and probes")


def parse_params(text: str | None) -> Any:
    """``None`` -> all; ``last``/``per-block`` stay names; otherwise a list of name globs."""
    if text is None:
        return None
    text = text.strip()
    if text in ("", "all"):
        return None
    if text in ("last", "per-block"):
        return text
    patterns = [p.strip() for p in text.split(",") if p.strip()]
    if not patterns:
        raise UserInputError(f"--params {text!r} names no parameters")
    return patterns


def check_output_folder(out: str | os.PathLike[str]) -> Path:
    """Fail before any computation when ``out`` cannot be created or written."""
    from hessian_powerlaw.io import check_target_dir

    return check_target_dir(out, "--out")


def unconverged_warning(spec: Any) -> str:
    """One line for a spectrum whose eigenpairs did not all reach the tolerance."""
    missed = int(sum(not bool(c) for c in spec.converged))
    return (
        f"warning: {missed} of {len(spec.converged)} eigenpairs did not reach the residual "
        f"tolerance {spec.tol:g} ({getattr(spec, 'criterion', 'norm')} criterion) within "
        f"{spec.num_matvecs} products (largest residual {max(spec.residuals):.2g} of "
        "|lambda_1|); the fit uses them as they are. Raise --max-matvecs or "
        "loosen --tol (float32 residuals rarely go below about 1e-5)"
    )


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
            lines.append("  " + unconverged_warning(spec))
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
    from hessian_powerlaw.analysis import analyze_spec
    from hessian_powerlaw.distributed import is_primary
    from hessian_powerlaw.io import atomic_write_json, staged_dir
    from hessian_powerlaw.report.outputs import write_spectrum_figures

    if not (math.isfinite(args.save_every) and args.save_every >= 0):
        raise UserInputError(
            f"--save-every must be a number of seconds >= 0, got {args.save_every}"
        )
    out = check_output_folder(args.out)
    state = state_file(args)
    result = analyze_spec(
        args.model,
        args.data,
        checkpoint=args.checkpoint,
        samples=args.samples,
        batch_size=args.batch_size,
        seq_len=args.seq_len,
        params=parse_params(args.params),
        k=args.k,
        dtype=args.dtype,
        device=args.device,
        tol=args.tol,
        criterion=args.criterion,
        max_matvecs=args.max_matvecs,
        trace_matvecs=args.trace_matvecs,
        density=not args.no_density,
        alpha=args.alpha,
        n_boot=args.n_boot,
        seed=args.seed,
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
        print_json(record)
    else:
        print(summary_text(result, written))
    return 0
