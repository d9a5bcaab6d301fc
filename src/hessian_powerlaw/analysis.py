"""One model state in, its Hessian spectrum, power-law fit and measures out.

:func:`analyze` chains the layers below it for a model already in memory:

1. ``H`` = the Hessian of the sample-weighted mean loss over ``batches`` w.r.t. the chosen
   parameters (:class:`~hessian_powerlaw.operators.HessianOperator`);
2. the top ``k`` eigenpairs of ``H`` by block Lanczos, each with its relative residual
   ``||H v - lambda v|| / |lambda_1|`` and a converged flag (``top_eigenpairs``);
3. the power-law fit of the positive top eigenvalues (the paper's): ``beta = 1 + K / sum
   ln(lambda_i / lambda_K)``, ``s = 1 / (beta - 1)``, the KS distance ``d_ks`` and its
   critical value ``d_c`` (``fit_power_law``);
4. the sharpness measures ``lambda_max = lambda_1`` and ``tr(H)`` (Hutch++ estimate with its
   standard error), and optionally the whole spectral density by stochastic Lanczos
   quadrature.

:func:`analyze_spec` does the same from spec strings (the ``spectrum`` command): it loads the
data and the model from the zoo or from a checkpoint, and with ``params="per-block"`` gives one
analysis per parameter group (embeddings, each block, head).
"""

from __future__ import annotations

import dataclasses
import hashlib
import platform
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from hessian_powerlaw._results import ResultMixin
from hessian_powerlaw.errors import UserInputError, check_int
from hessian_powerlaw.options import AnalysisOptions, dtype_name, parse_dtype
from hessian_powerlaw.protocols import DataBundle, Loss, Operator, OperatorLike
from hessian_powerlaw.training import checkpoint_path, load_model_state

if TYPE_CHECKING:
    from hessian_powerlaw.solvers import SolverCheckpoint, TraceEstimate

# Hessian samples taken by default: all of a small training set, a fixed seeded (stratified)
# subset of a large one. Text data counts sequences (the paper uses a batch of 256).
DEFAULT_MAX_SAMPLES: dict[str, int] = {"image": 2048, "text": 256}
PER_BLOCK = "per-block"
#: ``analyze_spec``'s defaults where they differ from :class:`AnalysisOptions`'s: the
#: ``spectrum`` command also estimates the spectral density.
SPEC_DEFAULTS: dict[str, Any] = {"density": True}

__all__ = [
    "Analysis",
    "AnalysisOptions",
    "Density",
    "ModelAnalysis",
    "analyze",
    "analyze_groups",
    "analyze_operator",
    "analyze_spec",
    "check_int",
    "checkpoint_path",
    "default_num_samples",
    "dtype_name",
    "evaluate_model",
    "load_model_state",
    "parameter_groups",
    "parse_dtype",
    "versions",
]


@dataclass(frozen=True)
class Density(ResultMixin):
    """Stochastic Lanczos quadrature density, Gaussian-broadened (width ``sigma``), on a grid."""

    grid: np.ndarray
    values: np.ndarray
    sigma: float
    num_probes: int
    lanczos_steps: int


@dataclass(frozen=True)
class Analysis(ResultMixin):
    """Spectrum, power-law fit and measures of the Hessian of one model state.

    ``fit`` is ``None`` when fewer than 10 of the top eigenvalues are positive (a power law
    cannot be tested); ``fit_error`` then says why. Beyond the paper's KS test against
    ``d_c``: ``bootstrap``, the calibrated goodness-of-fit p-value (Clauset et al.: the KS
    table is not valid once beta is estimated), and ``alternatives``, likelihood-ratio tests
    of the power law against exponential, log-normal, stretched exponential and truncated
    power law on the same tail. ``measures`` always holds the same keys: ``lambda_max``,
    ``trace``, ``trace_stderr``, ``s``, ``sigma_s``, ``beta``, ``d_ks``, ``d_c``,
    ``is_power_law``, ``p_value`` (bootstrap), ``lr_exponential`` and ``lr_exponential_p``
    (normalised log-likelihood ratio against the exponential, > 0 favours the power law, and
    its p-value); ``None`` where undefined.
    """

    spectrum: Any  # hessian_powerlaw.solvers.Spectrum
    fit: Any  # hessian_powerlaw.powerlaw.PowerLawFit | None
    fit_error: str | None
    bootstrap: Any  # hessian_powerlaw.powerlaw.BootstrapResult | None
    alternatives: Any  # hessian_powerlaw.powerlaw.AlternativesComparison | None
    trace: Any  # hessian_powerlaw.solvers.TraceEstimate | None
    lambda_max: float
    measures: dict[str, Any]
    density: Density | None
    num_params: int
    params: str
    seconds: float
    config: dict[str, Any]

    @property
    def eigenvalues(self) -> np.ndarray:
        """The top eigenvalues, descending (``spectrum.eigenvalues``)."""
        return np.asarray(self.spectrum.eigenvalues)


# what a ModelAnalysis hands through from its one Analysis (the spectrum.json top level)
_ANALYSIS_FIELDS = frozenset(
    {"spectrum", "fit", "fit_error", "bootstrap", "alternatives", "trace", "lambda_max",
     "measures", "density", "num_params", "eigenvalues"}
)  # fmt: skip


@dataclass(frozen=True)
class ModelAnalysis(ResultMixin):
    """What the ``spectrum`` command computes and writes as ``spectrum.json``.

    ``analysis`` is the Hessian over the chosen parameters; with ``params="per-block"`` it is
    ``None`` and ``blocks`` maps each parameter group to its own analysis.
    """

    kind: str = field(default="spectrum", init=False)  # first key of the JSON file
    model: str
    data: str
    checkpoint: str | None
    num_samples: int
    params: str
    analysis: Analysis | None
    blocks: dict[str, Analysis]
    evaluation: dict[str, dict[str, float]]
    config: dict[str, Any]
    versions: dict[str, str]
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        """``spectrum.json`` as a dict.

        ``spectrum.json``: with one selection its analysis is merged into the top level
        (``spectrum``, ``fit``, ``measures``, ... next to ``model`` and ``data``), so the file
        reads like one analysis; per-block results keep their analyses under ``blocks``.
        """
        record = super().to_dict()
        analysis = record.pop("analysis")
        if analysis is None:
            return record
        for key in ("config", "seconds", "params"):  # the command-level values win
            analysis.pop(key, None)
        return {**record, **analysis}

    @property
    def analyses(self) -> dict[str, Analysis]:
        """``{label: Analysis}`` for the whole selection or for each block."""
        if self.analysis is not None:
            return {self.params: self.analysis}
        return dict(self.blocks)

    def __getattr__(self, name: str) -> Any:
        """The fields of the one analysis, read through.

        ``result.fit``, ``result.spectrum``, ... of the one analysis, as :func:`analyze`'s
        result has them (``spectrum.json`` reads the same way); per-block results say where
        to look instead.
        """
        if name.startswith("_") or name not in _ANALYSIS_FIELDS:
            raise AttributeError(name)
        analysis = self.__dict__.get("analysis")
        if analysis is None:
            raise AttributeError(
                f"a per-block result has no single {name!r}; use .blocks[label].{name} "
                f"(labels: {', '.join(self.__dict__.get('blocks', {}))})"
            )
        return getattr(analysis, name)


def versions() -> dict[str, str]:
    """Versions that produced a result (recorded in every JSON we write).

    Returns:
        ``{"hessian_powerlaw", "torch", "numpy", "python"}`` versions.
    """
    from hessian_powerlaw import __version__

    return {
        "hessian_powerlaw": __version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }


def resolved_eigenvalues(spectrum: Any, dtype: torch.dtype) -> np.ndarray:
    """The eigenvalues with those indistinguishable from zero set to exactly 0.

    An eigenvalue computed with relative residual ``r_i`` is only known to within
    ``r_i |lambda_1|``, and none better than rounding, ``~100 eps |lambda_1|``. A positive
    value below that floor (the null space of an over-parameterised model comes out as
    +-1e-17) is not evidence of positive curvature; letting it into the fit would put
    ``lambda_cut`` at the rounding level and wreck ``beta``.
    """
    values = np.asarray(spectrum.eigenvalues, dtype=float).copy()
    if values.size == 0:
        return values
    residuals = np.nan_to_num(np.asarray(spectrum.residuals, dtype=float), nan=np.inf)
    floor = np.abs(values).max() * np.maximum(residuals, 100 * torch.finfo(dtype).eps)
    values[values <= floor] = 0.0
    return values


def fit_or_reason(eigenvalues: np.ndarray, alpha: float) -> tuple[Any, str | None]:
    """The power-law fit of the positive eigenvalues, or ``(None, reason)`` when untestable.

    Non-positive values (see :func:`resolved_eigenvalues`) are left out of the fit and
    counted in its ``n_dropped``. The fit needs at least 10 positive values (a random-init
    network near a saddle can have fewer among its top k): that case is a result to report,
    not an error.
    """
    from hessian_powerlaw.powerlaw import DroppedEigenvaluesWarning, fit_power_law

    positive = int(np.sum(np.asarray(eigenvalues) > 0))
    if positive < 10:
        return None, (
            f"only {positive} of the top {len(eigenvalues)} eigenvalues are positive (above "
            "their error bound); a power-law fit needs at least 10 (increase k)"
        )
    with warnings.catch_warnings():
        # non-positive values are expected below the top of a random-init spectrum; the fit
        # still records how many it dropped (n_dropped)
        warnings.simplefilter("ignore", DroppedEigenvaluesWarning)
        return fit_power_law(np.asarray(eigenvalues, dtype=float), alpha=alpha), None


def estimate_trace(op: Operator, num_matvecs: int, seed: int) -> TraceEstimate | None:
    """Hutch++ estimate of ``tr(H)`` (``solvers.TraceEstimate``); ``num_matvecs=0`` skips it."""
    if num_matvecs == 0:
        return None
    from hessian_powerlaw.solvers import hutchinson_trace

    return hutchinson_trace(op, num_matvecs, method="hutch++", seed=seed)


def estimate_density(
    op: Operator, num_probes: int, lanczos_steps: int, seed: int, points: int = 400
) -> Density:
    """SLQ density, broadened with a Gaussian of width 1% of the spectral range."""
    from hessian_powerlaw.solvers import broadened_density, spectral_density

    sd = spectral_density(op, num_probes=num_probes, lanczos_steps=lanczos_steps, seed=seed)
    nodes = np.asarray(sd.nodes, dtype=float)[np.asarray(sd.weights) > 0]
    low, high = float(nodes.min()), float(nodes.max())
    span = max(high - low, 1e-12 * max(abs(high), 1.0))
    sigma = 0.01 * span
    grid = np.linspace(low - 5 * sigma, high + 5 * sigma, points)
    values = np.asarray(broadened_density(sd, grid, sigma), dtype=float)
    return Density(grid, values, sigma, num_probes, lanczos_steps)


def goodness_of_fit(
    eigenvalues: np.ndarray, fit: Any, n_boot: int, alternatives: bool, seed: int
) -> tuple[Any, Any]:
    """Bootstrap p-value (``n_boot`` samples, 0 skips) and likelihood-ratio tests of a fit."""
    if fit is None:
        return None, None
    from hessian_powerlaw.powerlaw import (
        DroppedEigenvaluesWarning,
        bootstrap_pvalue,
        compare_alternatives,
    )

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DroppedEigenvaluesWarning)
        boot = bootstrap_pvalue(eigenvalues, n_boot=n_boot, seed=seed) if n_boot else None
        compared = compare_alternatives(eigenvalues) if alternatives else None
    return boot, compared


def measures_of(
    spectrum: Any, fit: Any, trace: Any, boot: Any = None, compared: Any = None
) -> dict[str, Any]:
    """The flat measure dictionary that tracking, correlations and tables use."""
    eigenvalues = np.asarray(spectrum.eigenvalues, dtype=float)
    exponential = compared["exponential"] if compared is not None else None
    return {
        "lambda_max": float(eigenvalues[0]) if eigenvalues.size else None,
        "trace": trace.estimate if trace else None,
        "trace_stderr": trace.std_error if trace else None,
        "s": float(fit.s) if fit else None,
        "sigma_s": float(fit.sigma_s) if fit else None,
        "beta": float(fit.beta) if fit else None,
        "d_ks": float(fit.ks_distance) if fit else None,
        "d_c": float(fit.critical_value) if fit else None,
        "is_power_law": bool(fit.is_power_law) if fit else None,
        "p_value": float(boot.p_value) if boot else None,
        "lr_exponential": float(exponential.normalized_ratio) if exponential else None,
        "lr_exponential_p": float(exponential.p_value) if exponential else None,
    }


def _params_label(params: Any) -> str:
    if params is None:
        return "all"
    if isinstance(params, str):
        return params
    if all(isinstance(p, str) for p in params):
        return ",".join(params)
    return f"{len(params)} tensors"


def analyze(
    model: nn.Module,
    loss: Loss,
    batches: Any,
    options: AnalysisOptions | None = None,
    *,
    params: Any = None,
    device: str | torch.device | None = None,
    progress: bool = False,
    checkpoint: Any = None,
    **option_values: Any,
) -> Analysis:
    """Top-``k`` Hessian spectrum, power-law fit, ``lambda_max`` and trace of one model state.

    Args:
        model: the model, at the weights to analyse; never modified.
        loss: an ``nn.Module`` criterion for ``(x, y)`` batches, or a callable
            ``(model, batch) -> scalar`` (:class:`~hessian_powerlaw.operators.HessianOperator`).
        batches: one batch, a list of batches or a re-iterable loader, the same every pass.
        options: the analysis options; ``None``: the defaults of :class:`AnalysisOptions`.
        params: ``None`` (all trainable), tensors, or name patterns (``"fc2.*"``, ``"last"``).
        device: where the products run; ``None``: where the model is.
        progress: a progress bar of the eigensolve on stderr.
        checkpoint: the eigensolver's state file or
            :class:`~hessian_powerlaw.solvers.SolverCheckpoint` (an interrupted solve resumes).
        **option_values: fields of :class:`AnalysisOptions` (``k=30``, ``tol=1e-4``, ...)
            that replace those of ``options``.

    Returns:
        The :class:`Analysis`; its ``config`` records the options.

    Raises:
        UserInputError: invalid options, ``k`` above the number of parameters, or a model,
            loss or batches the operator refuses.
    """
    chosen = AnalysisOptions.of(options, **option_values)
    from hessian_powerlaw.operators import HessianOperator

    start = time.perf_counter()
    op = HessianOperator(model, loss, batches, params=params, device=device,
                         **chosen.operator_kwargs())  # fmt: skip
    result = analyze_operator(op, chosen, progress=progress, params_label=_params_label(params),
                              checkpoint=checkpoint)  # fmt: skip
    # the operator's set-up (copying parameters, checking batches) counts too
    return dataclasses.replace(result, seconds=time.perf_counter() - start)


def analyze_operator(
    op: OperatorLike,
    options: AnalysisOptions | None = None,
    *,
    progress: bool = False,
    params_label: str = "all",
    checkpoint: Any = None,
    **option_values: Any,
) -> Analysis:
    """:func:`analyze` for any symmetric operator.

    :func:`analyze` for any symmetric operator: a ``HessianOperator``, a ``MatrixOperator``,
    a user's own (``n``, ``dtype``, ``device``, ``matmat``) or a matrix.

    Args:
        op: the operator (or anything :func:`~hessian_powerlaw.operators.as_operator` takes).
        options: the analysis options (``dtype`` is the operator's own here).
        progress: a progress bar of the eigensolve on stderr.
        params_label: how the result names the parameters.
        checkpoint: the eigensolver's state file (see
            :func:`hessian_powerlaw.solvers.top_eigenpairs`).
        **option_values: fields of :class:`AnalysisOptions` that replace those of ``options``.

    Returns:
        The :class:`Analysis`.

    Raises:
        UserInputError: invalid options or ``k`` above the operator's size.
    """
    chosen = AnalysisOptions.of(options, **option_values)
    from hessian_powerlaw.operators import as_operator
    from hessian_powerlaw.solvers import top_eigenpairs

    op = as_operator(op)
    if chosen.k > op.n:
        raise UserInputError(
            f"k = {chosen.k} is larger than the number of parameters in the Hessian ({op.n}); "
            f"use k <= {op.n}"
        )
    start = time.perf_counter()
    spectrum = top_eigenpairs(op, **chosen.solver_kwargs(), progress=progress,
                              checkpoint=checkpoint)  # fmt: skip
    seed = chosen.seed
    resolved = resolved_eigenvalues(spectrum, op.dtype)
    fit, fit_error = fit_or_reason(resolved, chosen.alpha)
    boot, compared = goodness_of_fit(resolved, fit, chosen.n_boot, chosen.alternatives, seed)
    trace = estimate_trace(op, min(chosen.trace_matvecs, _trace_budget(op.n)), seed)
    sld = None
    if chosen.density:
        steps = min(chosen.lanczos_steps, op.n)
        sld = estimate_density(op, chosen.density_probes, steps, seed)
    return Analysis(
        spectrum=spectrum,
        fit=fit,
        fit_error=fit_error,
        bootstrap=boot,
        alternatives=compared,
        trace=trace,
        lambda_max=float(np.asarray(spectrum.eigenvalues)[0]),
        measures=measures_of(spectrum, fit, trace, boot, compared),
        density=sld,
        num_params=int(op.n),
        params=params_label,
        seconds=time.perf_counter() - start,
        config=_config(chosen, tol=spectrum.tol, dtype=dtype_name(op.dtype)),
    )


def _config(options: AnalysisOptions, **resolved: Any) -> dict[str, Any]:
    """What a result records of its options.

    What a result records of its options: all of them, with the values they resolved to
    (the solver's default ``tol``, the operator's dtype).
    """
    return {**options.to_dict(), **resolved}


def _trace_budget(n: int) -> int:
    """Hutch++ with about ``n`` products is already exact; more would only cost time."""
    return max(3, 3 * ((n + 2) // 3))


# --------------------------------------------------------------------------------------
# From specs: the `spectrum` command's library half
# --------------------------------------------------------------------------------------


def default_num_samples(data: DataBundle) -> int:
    """All of a small training set, a fixed subset of a large one (``DEFAULT_MAX_SAMPLES``).

    Args:
        data: the data bundle.

    Returns:
        The number of Hessian samples.
    """
    cap = DEFAULT_MAX_SAMPLES.get(getattr(data, "kind", "image"), 2048)
    return min(int(data.num_train), cap)


def hessian_batches(data: DataBundle, options: AnalysisOptions) -> tuple[list[Any], int]:
    """The fixed Hessian batches that ``options.samples``, ``batch_size`` and ``seed`` name.

    Args:
        data: the data bundle.
        options: the analysis options.

    Returns:
        ``(batches, num_samples)``, ``num_samples`` defaulting to
        :func:`default_num_samples`.
    """
    num_samples = options.samples if options.samples is not None else default_num_samples(data)
    return data.hessian_batches(num_samples, options.batch_size, options.seed), num_samples


def parameter_groups(model: nn.Module, params: Any) -> dict[str, Any]:
    """The parameter selections to analyse, by label.

    Args:
        model: the model.
        params: a selection as :class:`~hessian_powerlaw.operators.HessianOperator` takes
            it, ``"last"`` (the model-aware last layer) or ``"per-block"``.

    Returns:
        ``{label: params}``: one group, or one per block with ``params="per-block"``.

    Raises:
        UserInputError: ``"per-block"`` on a model without blocks.
    """
    from hessian_powerlaw.zoo.blocks import last_layer_names, per_block_groups

    if params == "last":
        # the model-aware last layer: an LM's output head even when its weight is tied
        return {"last": last_layer_names(model)}
    if params != PER_BLOCK:
        return {_params_label(params): params}

    groups = per_block_groups(model)
    if not groups:
        raise UserInputError("--params per-block found no parameter groups in this model")
    return dict(groups)


def analyze_groups(
    model: nn.Module,
    loss: Loss,
    batches: Any,
    params: Any,
    options: AnalysisOptions | None = None,
    **keywords: Any,
) -> dict[str, Analysis]:
    """:func:`analyze` for each parameter group of :func:`parameter_groups`.

    Args:
        model: the model.
        loss: its loss.
        batches: the Hessian batches.
        params: the selection, ``"last"`` or ``"per-block"``.
        options: the analysis options.
        **keywords: :func:`analyze`'s other keyword arguments and option values.

    Returns:
        ``{label: Analysis}``.
    """
    return {
        label: analyze(model, loss, batches, options, params=group, **keywords)
        for label, group in parameter_groups(model, params).items()
    }


def analyze_spec(
    model_spec: str,
    data_spec: str,
    options: AnalysisOptions | None = None,
    *,
    checkpoint: str | Path | None = None,
    seq_len: int | None = None,
    params: Any = None,
    device: str | None = None,
    evaluate: bool = True,
    progress: bool = False,
    state_file: str | Path | None = None,
    state_interval: float | None = None,
    **option_values: Any,
) -> ModelAnalysis:
    """Build data and model from specs (and a checkpoint), then :func:`analyze` them.

    Args:
        model_spec: a model spec (``lenet``, ``fcn:2x100``, ``hf:PATH``, ...).
        data_spec: a data spec (``digits``, ``mnist:1000``, ``shakespeare``, ...).
        options: the analysis options; ``None``: :class:`AnalysisOptions` with the spectral
            density on (``SPEC_DEFAULTS``). ``samples`` defaults to
            :func:`default_num_samples`, ``batch_size`` to one batch.
        checkpoint: weights to load (a checkpoint file or a run folder,
            :func:`~hessian_powerlaw.training.checkpoint_path`); ``None``: random init.
        seq_len: tokens per sequence of text data (as the model was trained with).
        params: the parameter selection; ``"per-block"`` analyses each group separately.
        device: where the products run (the model's evaluation stays on the CPU).
        evaluate: add train/test loss and accuracy.
        progress: progress bars on stderr.
        state_file: where the eigensolve saves its state every ``state_interval`` seconds
            (default :data:`~hessian_powerlaw.solvers.lanczos.DEFAULT_STATE_INTERVAL`), so
            that calling again with the same arguments after an interruption continues it;
            the state is tied to the model, data, checkpoint contents, samples, batches,
            parameters, dtype and seed. Not available with ``params="per-block"``.
        state_interval: seconds between saves of the state.
        **option_values: fields of :class:`AnalysisOptions` that replace those of ``options``.

    Returns:
        The :class:`ModelAnalysis` (``spectrum.json``).

    Raises:
        UserInputError: bad specs, options, checkpoint or state file (another call's state
            names what differs).
    """
    chosen = AnalysisOptions.of(options, defaults=SPEC_DEFAULTS, **option_values)
    from hessian_powerlaw import zoo

    start = time.perf_counter()
    seed = chosen.seed
    # the model spec matters for text data: an hf:PATH model brings its own tokenizer
    data = zoo.load_data(data_spec, seed=seed, model_spec=model_spec, seq_len=seq_len)
    checkpoint_str = None if checkpoint is None else str(checkpoint)
    model = load_model_state(model_spec, data, checkpoint_str, seed)
    batches, num_samples = hessian_batches(data, chosen)
    solver_state = None
    if state_file is not None:
        if params == PER_BLOCK:
            raise UserInputError(
                "a solver state file is not supported with params='per-block' (one solve per "
                "block); analyse the blocks one at a time to make them resumable"
            )
        solver_state = _solver_checkpoint(
            state_file,
            state_interval,
            model=model_spec,
            data=data_spec,
            checkpoint_sha256=None if checkpoint is None else _sha256(checkpoint_path(checkpoint)),
            samples=int(num_samples),
            batch_size=chosen.batch_size,
            seq_len=getattr(data, "seq_len", None),
            params=_params_label(params),
            dtype=chosen.dtype,
            seed=seed,
        )
    analyses = analyze_groups(model, data.loss, batches, params, chosen, device=device,
                              progress=progress, checkpoint=solver_state)  # fmt: skip
    per_block = params == PER_BLOCK
    config = _config(chosen, tol=chosen.resolved_tol(), device=device,
                     seq_len=getattr(data, "seq_len", None))  # fmt: skip
    return ModelAnalysis(
        model=model_spec,
        data=data_spec,
        checkpoint=checkpoint_str,
        num_samples=min(int(num_samples), int(data.num_train)),
        params=PER_BLOCK if per_block else _params_label(params),
        analysis=None if per_block else next(iter(analyses.values())),
        blocks=analyses if per_block else {},
        evaluation=evaluate_model(model, data) if evaluate else {},
        config=config,
        versions=versions(),
        seconds=time.perf_counter() - start,
    )


def _solver_checkpoint(
    path: str | Path, interval: float | None, **identity: Any
) -> SolverCheckpoint:
    """The solver's checkpoint with what identifies the operator beyond its size."""
    from hessian_powerlaw.solvers import SolverCheckpoint
    from hessian_powerlaw.solvers.lanczos import DEFAULT_STATE_INTERVAL

    chosen = DEFAULT_STATE_INTERVAL if interval is None else interval
    return SolverCheckpoint(Path(path), chosen, identity)


def _sha256(path: Path) -> str:
    """The SHA-256 of a file's contents.

    The file's contents as a hash: a checkpoint overwritten with new weights is another
    Hessian even under the same name.
    """
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(2**20), b""):
                digest.update(chunk)
    except OSError as exc:
        raise UserInputError(f"cannot read checkpoint {str(path)!r}: {exc.strerror}") from None
    return digest.hexdigest()


def evaluate_model(model: nn.Module, data: DataBundle) -> dict[str, dict[str, float]]:
    """Train and test loss and accuracy of the model state (the bundle's ``evaluate``).

    Args:
        model: the model.
        data: the data bundle.

    Returns:
        ``{"train": {"loss", "accuracy"}, "test": {...}}``.
    """
    return {split: dict(data.evaluate(model, split)) for split in ("train", "test")}
