r"""Robust low-dimensional subspace: how the top eigenvectors of two Hessians differ, with bounds.

Two Hessians of the same model on different data (two halves, two seeds, two nearby
checkpoints) differ by ``E = H_B - H_A``; :func:`compare_operators` measures how far their top
eigenvectors move and puts the measurement next to the Davis-Kahan bounds and the paper's
power-law form (:mod:`hessian_powerlaw.theory.bounds`); :func:`subspace_stability` does it
for a model and its data.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from hessian_powerlaw._results import ResultMixin
from hessian_powerlaw.batching import split_batches
from hessian_powerlaw.errors import UserInputError
from hessian_powerlaw.operators import DifferenceOperator
from hessian_powerlaw.options import AnalysisOptions
from hessian_powerlaw.protocols import DataBundle, Loss, Operator
from hessian_powerlaw.solvers.norm import NormEstimate, spectral_norm
from hessian_powerlaw.theory.bounds import (
    davis_kahan_bounds,
    overlap_lower_bounds,
    power_law_bounds,
)
from hessian_powerlaw.theory.low_dimension import LowDimension, low_dimension_curves
from hessian_powerlaw.theory.subspaces import eigenvector_angles, overlap_curve

FloatArray = NDArray[np.float64]

#: splits accepted by :func:`subspace_stability` besides an explicit pair of batch lists
SPLITS = ("halves", "seeds")
#: :func:`subspace_stability`'s defaults where they differ from :class:`AnalysisOptions`'s.
SUBSPACE_DEFAULTS: dict[str, Any] = {"trace_matvecs": 99}


@dataclass(frozen=True)
class SubspaceStability(ResultMixin):
    r"""How the top-``k`` eigenvectors of ``A`` and ``B = A + E`` differ, with the bounds.

    Per index ``i = 1..k``: ``angles`` (radians) between the ``i``-th eigenvectors,
    ``sin_angles``; ``davis_kahan_bound`` (the smaller of the bounds from the gaps of ``A``
    and of ``B``; see the module docstring) and ``davis_kahan_ratio = sin / bound`` (never
    above 1 for exact eigenvectors); ``power_law_bound`` / ``power_law_ratio`` (the paper's
    form, NaN when no power law could be fitted). Per ``m = 1..k``: ``overlap`` of the top-``m``
    subspaces and ``overlap_lower_bound``. ``bound_violations`` counts indices where the
    measured sine exceeds the Davis-Kahan bound by more than rounding (a sign of unconverged
    eigenvectors; it should be 0).

    ``eigenvalues_a/b`` hold ``k + 1`` values (the last only enters the ``k``-th gap).
    ``fit`` is the power-law fit of ``A``'s top ``k``; ``eigengaps`` the gap-exponent fit
    (``gap exponent`` vs ``s + 1``); the ``*_error`` strings say why one is missing.
    """

    k: int
    n: int
    split: str
    eigenvalues_a: FloatArray
    eigenvalues_b: FloatArray
    residuals_a: FloatArray
    residuals_b: FloatArray
    converged_a: np.ndarray
    converged_b: np.ndarray
    angles: FloatArray
    sin_angles: FloatArray
    davis_kahan_bound: FloatArray
    davis_kahan_ratio: FloatArray
    power_law_bound: FloatArray
    power_law_ratio: FloatArray
    overlap: FloatArray
    overlap_lower_bound: FloatArray
    bound_violations: int
    e_norm: NormEstimate
    fit: Any
    fit_error: str | None
    eigengaps: Any
    eigengaps_error: str | None
    low_dimension: LowDimension | None
    num_matvecs: int
    seconds: float
    info: dict[str, Any] = field(default_factory=dict)
    eigenvectors_a: FloatArray | None = None
    eigenvectors_b: FloatArray | None = None

    _skip_in_dict = ("eigenvectors_a", "eigenvectors_b")

    def summary(self) -> str:
        """A few lines for people: overlaps, head vs tail angles, the bounds, ||E||."""
        k = self.k
        head = max(1, min(10, k // 5))
        picks = sorted({m for m in (1, 5, 10, 20, k // 2, k) if 1 <= m <= k})
        overlaps = ", ".join(f"m={m}: {self.overlap[m - 1]:.3f}" for m in picks)
        deg = np.degrees(self.angles)
        lines = [
            f"top-{k} eigenvectors of two Hessians ({self.split}), n = {self.n} parameters",
            f"||E||_2 = {self.e_norm.value:.4g} (lambda_1 = {self.eigenvalues_a[0]:.4g}, "
            f"||E|| / lambda_1 = {self.e_norm.value / self.eigenvalues_a[0]:.3g})",
            f"top-m overlap: {overlaps}",
            f"eigenvector angle, median over the first {head}: {np.median(deg[:head]):.1f} deg; "
            f"over the last {head}: {np.median(deg[-head:]):.1f} deg",
            f"Davis-Kahan: sin(angle)/bound median {np.nanmedian(self.davis_kahan_ratio):.3g}, "
            f"max {np.nanmax(self.davis_kahan_ratio):.3g}, "
            f"bound < 1 for {int(np.sum(self.davis_kahan_bound < 1))}/{k} indices, "
            f"violations: {self.bound_violations}",
        ]
        if self.fit is not None:
            lines.append(f"power-law fit of A: {self.fit}")
        if self.eigengaps is not None:
            lines.append(str(self.eigengaps))
        if self.low_dimension is not None and self.low_dimension.trace_fraction is not None:
            ld = self.low_dimension
            text = f"top-{k} share of the trace: {ld.trace_fraction[-1]:.3f}"
            if ld.gradient_fraction is not None:
                text += f", of the squared gradient norm: {ld.gradient_fraction[-1]:.3f}"
            lines.append(text)
        return "\n".join(lines)


def compare_operators(
    op_a: Operator,
    op_b: Operator,
    k: int | None = None,
    options: AnalysisOptions | None = None,
    *,
    norm_tol: float = 1e-4,
    trace: Any = None,
    gradient: Any = None,
    c_values: Sequence[float] | None = None,
    split: str = "A vs B",
    progress: bool = False,
    **option_values: Any,
) -> SubspaceStability:
    """Measure how the top-``k`` eigenvectors move from ``op_a`` to ``op_b``, with bounds.

    Computes the top ``k + 1`` eigenpairs of both operators (block Lanczos; eigenvectors are
    compared, so residuals are relative to ``|lambda_1|``, the ``"norm"`` criterion),
    ``||op_b - op_a||_2`` by Lanczos on :class:`DifferenceOperator`, then the per-index
    angles, the top-``m`` overlaps, the Davis-Kahan and power-law bounds, the eigengap fit
    and, when ``trace`` and/or ``gradient`` are given, the low-dimension curves for ``op_a``.

    Args:
        op_a: the first operator.
        op_b: the second, of the same size, dtype and device.
        k: eigenvectors compared; ``None``: ``options.k``.
        options: the solver options (``tol``, ``seed``, ``max_matvecs``, ...) and ``alpha``,
            the significance level of the fits.
        norm_tol: the relative residual of the norm's two extreme Ritz pairs.
        trace: ``tr(H_A)``, a number or a ``TraceEstimate``.
        gradient: the gradient of the loss behind ``op_a``.
        c_values: the constants of the effective dimension.
        split: how the two operators differ, in words.
        progress: progress bars on stderr.
        **option_values: fields of :class:`AnalysisOptions` that replace those of
            ``options``.

    Returns:
        The :class:`SubspaceStability`.

    Raises:
        UserInputError: ``k + 1`` above the operators' size, or operators that differ.
    """
    from hessian_powerlaw.solvers import top_eigenpairs

    if k is not None:
        option_values["k"] = k
    chosen = AnalysisOptions.of(options, **option_values)
    count, seed, alpha = chosen.k, chosen.seed, chosen.alpha
    n = int(op_a.n)
    if count + 1 > n:
        raise UserInputError(f"k must be below n = {n} (k + 1 eigenpairs are needed), got {count}")
    start = time.perf_counter()
    diff = DifferenceOperator(op_a, op_b)  # validates that the two operators match
    # eigenvectors, not only eigenvalues, are compared: residuals relative to |lambda_1|
    solve = chosen.solver_kwargs(k=count + 1, criterion="norm", which="largest")
    spec_a = top_eigenpairs(op_a, return_vectors=True, progress=progress, **solve)
    spec_b = top_eigenpairs(op_b, return_vectors=True, progress=progress, **solve)
    norm = spectral_norm(diff, tol=norm_tol, seed=seed + 1, progress=progress)

    Ua, Ub = spec_a.eigenvectors[:, :count], spec_b.eigenvectors[:, :count]
    angles = eigenvector_angles(Ua, Ub)
    sines = np.sin(angles)
    dk = np.minimum(
        davis_kahan_bounds(spec_a.eigenvalues, norm.value),
        davis_kahan_bounds(spec_b.eigenvalues, norm.value),
    )
    overlap_bound = np.maximum(
        overlap_lower_bounds(spec_a.eigenvalues, norm.value),
        overlap_lower_bounds(spec_b.eigenvalues, norm.value),
    )
    fit, fit_error, gaps, gaps_error = _fits(spec_a.eigenvalues[:count], alpha)
    if fit is not None and fit.s > 0 and spec_a.eigenvalues[0] > 0:
        pl = power_law_bounds(float(spec_a.eigenvalues[0]), float(fit.s), norm.value, count)
    else:
        pl = np.full(count, np.nan)
    low = _low_dimension(spec_a, count, trace, gradient, c_values)
    with np.errstate(divide="ignore", invalid="ignore"):
        dk_ratio = sines / dk
        pl_ratio = sines / pl
    # one part in 1e9 of slack: the sines and bounds are float64 results of a few operations
    violations = int(np.sum(sines > dk * (1 + 1e-9) + 1e-12))
    return SubspaceStability(
        k=count,
        n=n,
        split=split,
        eigenvalues_a=spec_a.eigenvalues,
        eigenvalues_b=spec_b.eigenvalues,
        residuals_a=spec_a.residuals,
        residuals_b=spec_b.residuals,
        converged_a=spec_a.converged,
        converged_b=spec_b.converged,
        angles=angles,
        sin_angles=sines,
        davis_kahan_bound=dk,
        davis_kahan_ratio=dk_ratio,
        power_law_bound=pl,
        power_law_ratio=pl_ratio,
        overlap=overlap_curve(Ua, Ub),
        overlap_lower_bound=overlap_bound[:count],
        bound_violations=violations,
        e_norm=norm,
        fit=fit,
        fit_error=fit_error,
        eigengaps=gaps,
        eigengaps_error=gaps_error,
        low_dimension=low,
        num_matvecs=int(spec_a.num_matvecs + spec_b.num_matvecs + 2 * norm.num_matvecs),
        seconds=time.perf_counter() - start,
        eigenvectors_a=Ua,
        eigenvectors_b=Ub,
    )


def _fits(eigenvalues: FloatArray, alpha: float) -> tuple[Any, str | None, Any, str | None]:
    """The power-law fit and the eigengap fit, or the reason each is missing (few positives)."""
    import warnings

    from hessian_powerlaw.powerlaw import DroppedEigenvaluesWarning, eigengap_fit, fit_power_law

    results: list[Any] = []
    for fn in (fit_power_law, eigengap_fit):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DroppedEigenvaluesWarning)
                results += [fn(eigenvalues, alpha=alpha), None]
        except ValueError as exc:  # too few positive eigenvalues / gaps for a fit
            results += [None, str(exc)]
    return results[0], results[1], results[2], results[3]


def _low_dimension(
    spec: Any, k: int, trace: Any, gradient: Any, c_values: Sequence[float] | None
) -> LowDimension | None:
    if trace is None and gradient is None:
        return None
    estimate, error = None, None
    if trace is not None:
        estimate = float(getattr(trace, "estimate", trace))
        error = getattr(trace, "std_error", None)
    return low_dimension_curves(
        spec.eigenvalues[:k],
        spec.eigenvectors[:, :k],
        trace=estimate,
        gradient=gradient,
        c_values=c_values,
        trace_std_error=None if error is None else float(error),
    )


def _resolve_splits(
    data: Any, splits: Any, num_samples: int | None, batch_size: int | None, seed: int
) -> tuple[list[Any], list[Any], str]:
    """The two batch lists and a description of how they were made."""
    if isinstance(splits, (tuple, list)) and len(splits) == 2 and not isinstance(splits, str):
        return list(splits[0]), list(splits[1]), "given batches A vs B"
    if splits not in SPLITS:
        raise UserInputError(
            f"splits must be 'halves', 'seeds' or a pair (batches_a, batches_b), got {splits!r}"
        )
    bundle = hasattr(data, "hessian_batches")
    if splits == "halves":
        if bundle:
            batches = data.hessian_batches(num_samples, batch_size, seed)
        else:
            batches = [data] if isinstance(data, tuple) else list(data)
        a, b = split_batches(batches)
        return a, b, "disjoint halves of the data"
    if not bundle:
        raise UserInputError(
            "splits='seeds' draws two subsets with hessian_batches(...): pass a data bundle "
            "(zoo.load_data) as data, or pass splits=(batches_a, batches_b)"
        )
    size = num_samples if num_samples is not None else int(data.num_train) // 2
    if size >= int(data.num_train):
        raise UserInputError(
            f"splits='seeds' needs num_samples below the {data.num_train} training samples "
            "(else both draws are the whole set); lower num_samples"
        )
    a = data.hessian_batches(size, batch_size, seed)
    b = data.hessian_batches(size, batch_size, seed + 1)
    return a, b, f"two random subsets of {size} samples (seeds {seed}, {seed + 1})"


def subspace_stability(
    model: Any,
    loss: Loss | None,
    data: DataBundle | Any,
    k: int | None = None,
    splits: Any = "halves",
    options: AnalysisOptions | None = None,
    *,
    params: Any = None,
    num_samples: int | None = None,
    backend: str = "auto",
    c_values: Sequence[float] | None = None,
    progress: bool = False,
    **option_values: Any,
) -> SubspaceStability:
    """Top-``k`` Hessian eigenvectors on two data splits: angles, overlaps and bounds.

    The gradient for the low-dimension curve is that of the loss on split ``A``.

    Args:
        model: the model, as for ``HessianOperator``.
        loss: its loss; ``None`` takes ``data.loss`` of a bundle.
        data: a data bundle (``zoo.load_data``) or a list of batches (or one batch).
        k: eigenvectors compared (``k + 1`` eigenpairs are computed on each side); ``None``:
            ``options.k``.
        splits: ``"halves"``: disjoint halves (:func:`split_batches`) of the data (of the
            bundle's Hessian batches of ``options.samples``); ``"seeds"``: two seeded random
            subsets of ``options.samples`` (default half the training set), which may share
            samples; or a pair ``(batches_a, batches_b)``, e.g. the same batches for two
            nearby checkpoints go through :func:`compare_operators` with two operators.
        options: the analysis options (``samples``, ``batch_size``, ``dtype``, ``tol``,
            ``seed``, ``max_matvecs``, ``trace_matvecs``: Hutch++ products for the trace of
            ``H_A``, 0 skips the trace curve; ``alpha``). The eigenvectors are compared, so
            the solves use the ``"norm"`` criterion. ``None``: :class:`AnalysisOptions`
            with ``trace_matvecs=99``.
        params: the Hessian's parameters, passed to ``HessianOperator``.
        num_samples: the same as ``samples=`` (the older name).
        backend: the Hessian-vector-product backend of ``HessianOperator``.
        c_values: the constants of the effective dimension.
        progress: progress bars on stderr.
        **option_values: fields of :class:`AnalysisOptions` that replace those of
            ``options``.

    Returns:
        The :class:`SubspaceStability`, with ``info`` on the two operators.

    Raises:
        UserInputError: bad options, splits or data.
    """
    from hessian_powerlaw.operators import HessianOperator
    from hessian_powerlaw.solvers import hutchinson_trace

    if k is not None:
        option_values["k"] = k
    if num_samples is not None:
        option_values["samples"] = num_samples
    chosen = AnalysisOptions.of(options, defaults=SUBSPACE_DEFAULTS, **option_values)
    if loss is None:
        loss = getattr(data, "loss", None)
        if loss is None:
            raise UserInputError("loss is None and data has no .loss; pass the loss")
    batches_a, batches_b, description = _resolve_splits(
        data, splits, chosen.samples, chosen.batch_size, chosen.seed
    )
    kwargs = {"params": params, "backend": backend, **chosen.operator_kwargs()}
    op_a = HessianOperator(model, loss, batches_a, **kwargs)
    op_b = HessianOperator(model, loss, batches_b, **kwargs)
    trace = None
    if chosen.trace_matvecs:
        trace = hutchinson_trace(op_a, num_matvecs=chosen.trace_matvecs, seed=chosen.seed)
    result = compare_operators(
        op_a,
        op_b,
        options=chosen,
        trace=trace,
        gradient=op_a.gradient(),
        c_values=c_values,
        split=description,
        progress=progress,
    )
    info = {
        "num_samples_a": op_a.num_samples,
        "num_samples_b": op_b.num_samples,
        "params": list(op_a.param_names),
        "dtype": chosen.dtype,
    }
    return _with(result, info=info)


def _with(result: SubspaceStability, **changes: Any) -> SubspaceStability:
    import dataclasses

    return dataclasses.replace(result, **changes)
