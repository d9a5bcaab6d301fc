"""Arguments and output helpers shared by the sub-commands."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from hessian_powerlaw._results import to_jsonable


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Shows defaults in ``--help`` and keeps the examples' line breaks.

    A default is appended only when it says something: not for flags (False), not for
    ``None`` (the help text says what no value means), and not when the help already
    describes its default.
    """

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        quiet = action.default is None or action.default is False
        if quiet or action.default == argparse.SUPPRESS or "default" in text:
            return text
        return super()._get_help_string(action)


def add_command(
    subparsers: Any, name: str, help: str, examples: str, run: Any
) -> argparse.ArgumentParser:
    """Register a sub-command with its one-line help, its examples and its ``run``."""
    parser = subparsers.add_parser(
        name,
        help=help,
        description=help,
        epilog="examples:\n" + examples,
        formatter_class=HelpFormatter,
    )
    parser.set_defaults(run=run)
    return parser


# Integer options of any sub-command and their smallest valid value: checked at the door so
# that a mistake names the flag the user typed, not the library's parameter behind it.
_COUNTS = {
    "k": 1, "samples": 1, "batch_size": 1, "max_matvecs": 1, "seq_len": 1, "every": 1,
    "epochs": 1, "steps": 1, "checkpoint_every": 1, "eval_every": 1, "eval_batches": 1,
    "threads": 1, "workers": 1, "trace_matvecs": 0, "n_boot": 0, "bootstrap": 0, "warmup_steps": 0,
}  # fmt: skip


def check_counts(args: argparse.Namespace) -> None:
    """UserInputError naming the flag when an integer option is below its minimum."""
    from hessian_powerlaw.errors import UserInputError

    for dest, minimum in _COUNTS.items():
        value = getattr(args, dest, None)
        if isinstance(value, int) and value < minimum:
            flag = "--" + dest.replace("_", "-")
            raise UserInputError(f"{flag} must be an integer >= {minimum}, got {value}")


def add_quiet(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quiet", action="store_true", help="no progress bars on stderr")


def add_json(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--json", action="store_true", help="print the result as JSON on stdout instead of text"
    )


def print_json(obj: Any) -> None:
    json.dump(to_jsonable(obj), sys.stdout, indent=2, allow_nan=False)
    sys.stdout.write("\n")


def add_seq_len(parser: argparse.ArgumentParser) -> None:
    """``--seq-len`` for commands that load text data (train, spectrum, subspace)."""
    parser.add_argument(
        "--seq-len",
        type=int,
        default=None,
        metavar="L",
        help="text data: tokens per sequence, and chargpt's context; give the length the model "
        "was trained with (default 128, or an hf:PATH model's shorter context)",
    )


def add_model_arguments(parser: argparse.ArgumentParser, checkpoint: bool = True) -> None:
    """``--model``, ``--data``, ``--seq-len`` and (``checkpoint``) ``--checkpoint``.

    Args:
        parser: the sub-command's parser.
        checkpoint: also offer ``--checkpoint``.
    """
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
    if checkpoint:
        parser.add_argument(
            "--checkpoint",
            metavar="FILE",
            help="weights to load (a run's ckpt-*.pt / final.pt, or a state_dict; a run folder "
            "means its final.pt, else its last checkpoint); without it the model is at random "
            "initialisation",
        )


def add_analysis_arguments(
    parser: argparse.ArgumentParser,
    default_k: int,
    per_block: bool = False,
    criterion: bool = False,
    dtype_by_device: bool = False,
) -> None:
    """The flags of :class:`~hessian_powerlaw.options.AnalysisOptions` and the parameters.

    Shared by ``spectrum``, ``track`` and ``subspace``. Each flag's ``dest`` is the name of
    an option, so ``AnalysisOptions.from_args(args)`` reads them all; defaults come from
    :class:`~hessian_powerlaw.options.AnalysisOptions` itself. A new option needs its flag
    here and nothing else on the command line.

    Args:
        parser: the sub-command's parser.
        default_k: the command's default number of eigenvalues.
        per_block: the command accepts ``--params per-block``.
        criterion: the command offers ``--criterion`` (eigenvalue-only commands).
        dtype_by_device: ``--dtype`` defaults to ``None``, which ``AnalysisOptions.from_args``
            resolves by ``--device`` (:func:`~hessian_powerlaw.options.spectrum_dtype`).
    """
    from hessian_powerlaw.criteria import CRITERIA
    from hessian_powerlaw.options import DTYPE_NAMES, AnalysisOptions

    defaults = AnalysisOptions()
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
    _add_counts(
        parser,
        defaults,
        ("--samples", "N", "training samples in the Hessian; None = all of a small set, at "
         "most 2048 images or 256 sequences (a fixed seeded subset)"),
        ("--batch-size", "B", "split the Hessian samples into batches of B (memory); None = "
         "one batch"),
    )  # fmt: skip
    parser.add_argument(
        "--dtype",
        choices=DTYPE_NAMES,
        default=None if dtype_by_device else defaults.dtype,
        help="precision of the Hessian-vector products"
        + (" (default: float32 on a CPU, where it is as accurate as the fit needs and 3x "
           "faster; float64 on a GPU, where float32 convolutions are only about 3e-4 "
           "accurate, and with --memory, whose budget may leave the eigenvalues-only mode, "
           "which needs float64)" if dtype_by_device else ""),
    )  # fmt: skip
    parser.add_argument(
        "--memory",
        dest="memory_budget",
        default=defaults.memory_budget,
        metavar="SIZE",
        help="memory the eigensolver's basis may take, e.g. 4GiB (default: half the free "
        "memory); when the basis and its products do not fit, the basis alone is kept and "
        "k more products certify the result; when the basis alone does not fit either, "
        "the eigenvalues-only mode (float64 products) keeps none",
    )
    parser.add_argument(
        "--device",
        default=None,
        metavar="DEV",
        help="torch device of the Hessian-vector products (cpu, cuda, cuda:1); None = where the "
        "model is (cpu); under torchrun, cuda means each rank's own GPU",
    )
    parser.add_argument(
        "--alpha",
        type=float,
        default=defaults.alpha,
        help="significance level of the KS power-law test",
    )
    if criterion:
        parser.add_argument(
            "--criterion",
            choices=CRITERIA,
            default=defaults.criterion,
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
    parser.add_argument("--tol", type=float, default=defaults.tol, help=tol_help)
    _add_counts(
        parser,
        defaults,
        ("--max-matvecs", "M", "cap on Hessian-vector products (unconverged eigenpairs are "
         "flagged)"),
        ("--trace-matvecs", "M", "Hessian-vector products for the Hutch++ trace estimate (0 "
         "skips it)"),
        ("--n-boot", "B", "bootstrap samples for the calibrated goodness-of-fit p-value (0 "
         "skips it)"),
    )  # fmt: skip
    parser.add_argument(
        "--seed", type=int, default=defaults.seed, help="seed of model init, data and probes"
    )


def _add_counts(
    parser: argparse.ArgumentParser, defaults: Any, *flags: tuple[str, str, str]
) -> None:
    """Integer flags ``(flag, metavar, help)`` whose default is the option of the same name."""
    for flag, metavar, text in flags:
        default = getattr(defaults, flag.removeprefix("--").replace("-", "_"))
        parser.add_argument(flag, type=int, default=default, metavar=metavar, help=text)


def parse_params(text: str | None) -> Any:
    """The ``--params`` value as the library takes it.

    Args:
        text: the flag's value.

    Returns:
        ``None`` (all), ``"last"`` or ``"per-block"``, or a list of name globs.

    Raises:
        UserInputError: a value that names no parameters.
    """
    from hessian_powerlaw.errors import UserInputError

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
    """Fail before any computation when ``out`` cannot be created or written.

    Args:
        out: the ``--out`` folder.

    Returns:
        The folder as a path.

    Raises:
        UserInputError: it cannot be created or written.
    """
    from hessian_powerlaw.io import check_target_dir

    return check_target_dir(out, "--out")


def unconverged_warning(spec: Any) -> str:
    """One line for a spectrum whose eigenpairs did not all reach the tolerance.

    Args:
        spec: a ``Spectrum`` or its dict as a namespace.

    Returns:
        The warning.
    """
    missed = int(sum(not bool(c) for c in spec.converged))
    return (
        f"warning: {missed} of {len(spec.converged)} eigenpairs did not reach the residual "
        f"tolerance {spec.tol:g} ({getattr(spec, 'criterion', 'norm')} criterion) within "
        f"{spec.num_matvecs} products (largest residual {max(spec.residuals):.2g} of "
        "|lambda_1|); the fit uses them as they are. Raise --max-matvecs or "
        "loosen --tol (float32 residuals rarely go below about 1e-5)"
    )
