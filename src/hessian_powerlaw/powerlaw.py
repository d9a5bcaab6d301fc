r"""Power-law statistics for Hessian spectra: the paper's estimator, calibrated tests, alternatives.

Pure numpy/scipy (no torch): works on eigenvalues from this tool or from any other.

The model (Tang et al., ICML 2025): the top ``k`` eigenvalues are samples of a continuous
power-law density

.. math::  p(\lambda) = \frac{\beta - 1}{\lambda_c} (\lambda / \lambda_c)^{-\beta},
           \qquad \lambda \ge \lambda_c,

with the cutoff :math:`\lambda_c = \lambda_k` (the paper) or chosen by minimising the KS distance
(Clauset, Shalizi and Newman 2009). The maximum-likelihood estimate is

.. math::  \hat\beta = 1 + k \Big/ \sum_{i=1}^{k} \ln(\lambda_i / \lambda_c),
           \qquad \sigma_\beta = (\hat\beta - 1)/\sqrt{k},

and the rank exponent of :math:`\lambda_k \propto k^{-s}` is :math:`s = 1/(\beta - 1)`.

Throughout, ``a = beta - 1`` and the tail is handled in the scale-free variable
``y = x / lambda_cut >= 1`` (``t = ln y >= 0``), which makes every result invariant to the units
of the eigenvalues.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import integrate, optimize, special, stats

from hessian_powerlaw._results import ResultMixin
from hessian_powerlaw.errors import UserInputError, check_int

__all__ = [
    "AlternativesComparison",
    "BootstrapResult",
    "DroppedEigenvaluesWarning",
    "EigengapFit",
    "LikelihoodRatioTest",
    "PowerLawFit",
    "RankRegression",
    "bootstrap_pvalue",
    "compare_alternatives",
    "critical_value",
    "eigengap_fit",
    "fit_power_law",
    "power_law_span",
    "rank_regression",
]

Cutoff = Literal["kth", "clauset"]
Critical = Literal["asymptotic", "exact"]
FloatArray = NDArray[np.float64]

#: Smallest number of positive values a fit accepts.
MIN_POINTS = 10
#: Massey (1951) c(alpha) for the one-sample KS critical value c/sqrt(k), k > 35 (the paper's).
MASSEY_C: dict[float, float] = {0.20: 1.07, 0.15: 1.14, 0.10: 1.22, 0.05: 1.36, 0.01: 1.63}
#: Above this k the asymptotic critical value is allowed (Massey's table is for k > 35).
ASYMPTOTIC_FROM_K = 36
# rows x columns of the largest temporary matrix the vectorised KS code builds at once
_CHUNK_ELEMENTS = 2_000_000


class DroppedEigenvaluesWarning(UserWarning):
    """Non-positive eigenvalues were left out of a power-law fit (counted in ``n_dropped``)."""


# ----------------------------------------------------------------------------------------------
# results


@dataclass(frozen=True)
class PowerLawFit(ResultMixin):
    """A power-law fit of the top eigenvalues (see the module docstring for the maths).

    ``k`` is the number of eigenvalues in the fitted tail (all of them at or above
    ``lambda_cut``); ``n_available`` the positive eigenvalues the cutoff was chosen among;
    ``n_dropped`` the non-positive ones left out. ``is_power_law`` is
    ``ks_distance < critical_value``.
    """

    k: int
    n_available: int
    n_dropped: int
    lambda_cut: float
    lambda_1: float
    beta: float
    sigma_beta: float
    s: float
    sigma_s: float
    ks_distance: float
    critical_value: float
    alpha: float
    is_power_law: bool
    cutoff: str
    critical: str

    def __str__(self) -> str:
        relation, verdict = ("<", "power law") if self.is_power_law else (">=", "not a power law")
        return (
            f"s = {self.s:.3f} +/- {self.sigma_s:.3f} (beta = {self.beta:.3f}, k = {self.k}), "
            f"d_ks = {self.ks_distance:.4f} {relation} {self.critical_value:.4f}: {verdict}"
        )


@dataclass(frozen=True)
class RankRegression(ResultMixin):
    """Least-squares line through ``(log k, log lambda_k)``: ``lambda_k ~ lambda_1_fit * k^-s``.

    Descriptive only (the picture people draw): the points are ordered statistics, not
    independent, so the confidence interval (a residual bootstrap) is indicative, not a test.
    """

    k: int
    s: float
    lambda_1_fit: float
    r_squared: float
    s_ci_low: float
    s_ci_high: float
    confidence: float
    n_boot: int
    seed: int

    def __str__(self) -> str:
        pct = round(100 * self.confidence)
        return (
            f"rank regression: s = {self.s:.3f} ({pct}% CI {self.s_ci_low:.3f} .. "
            f"{self.s_ci_high:.3f}), R^2 = {self.r_squared:.4f}, k = {self.k}"
        )


@dataclass(frozen=True)
class BootstrapResult(ResultMixin):
    """Semi-parametric goodness-of-fit p-value (Clauset, Shalizi, Newman 2009, section 4.1).

    ``p_value`` is the fraction of synthetic power-law samples, each refitted exactly like
    the data, whose KS distance is at least the observed one; small values reject the power
    law. ``synthetic_ks_q95`` is the 95% quantile of the synthetic distances: a critical value
    calibrated for the estimated parameters (the KS tables assume known ones).
    """

    p_value: float
    standard_error: float
    n_boot: int
    k: int
    beta: float
    ks_distance: float
    synthetic_ks_mean: float
    synthetic_ks_q95: float
    cutoff: str
    seed: int

    def __str__(self) -> str:
        return (
            f"bootstrap p = {self.p_value:.3f} +/- {self.standard_error:.3f} "
            f"({self.n_boot} synthetic samples, d_ks = {self.ks_distance:.4f}, "
            f"95% of synthetic d_ks < {self.synthetic_ks_q95:.4f})"
        )


@dataclass(frozen=True)
class LikelihoodRatioTest(ResultMixin):
    """Power law against one alternative on the same tail.

    ``loglik_ratio`` is ``R = sum_i (log p_pl(x_i) - log p_alt(x_i))``: positive favours the
    power law. ``normalized_ratio`` is ``R / (sd * sqrt(k))`` with ``sd`` the standard deviation
    of the pointwise differences. ``p_value`` is Vuong's two-sided ``erfc(|R| / (sd sqrt(2k)))``
    for non-nested alternatives and ``P(chi2_1 > 2|R|)`` for the nested truncated power law.
    ``parameters`` are the alternative's maximum-likelihood parameters for ``y = x/lambda_cut``.
    """

    alternative: str
    test: str
    loglik_ratio: float
    normalized_ratio: float
    p_value: float
    preferred: str
    loglik_alternative: float
    parameters: dict[str, float]


@dataclass(frozen=True)
class AlternativesComparison(ResultMixin):
    """Likelihood-ratio tests of the power law against heavy-tailed alternatives."""

    k: int
    lambda_cut: float
    beta: float
    loglik_power_law: float
    significance: float
    tests: tuple[LikelihoodRatioTest, ...]

    def __getitem__(self, alternative: str) -> LikelihoodRatioTest:
        for test in self.tests:
            if test.alternative == alternative:
                return test
        names = ", ".join(t.alternative for t in self.tests)
        raise KeyError(f"no test against {alternative!r}; have {names}")

    def __str__(self) -> str:
        lines = [f"power law (beta = {self.beta:.3f}, k = {self.k}) against:"]
        for t in self.tests:
            lines.append(
                f"  {t.alternative:<24} R = {t.loglik_ratio:+9.2f}  p = {t.p_value:.3g}  "
                f"({t.test}) -> {t.preferred}"
            )
        return "\n".join(lines)


@dataclass(frozen=True)
class EigengapFit(ResultMixin):
    """Power-law fit of the eigengaps ``delta_i = lambda_i - lambda_{i+1}`` of the top k.

    The paper predicts ``delta_k ~ k^-(s+1)``. ``gap_fit`` treats the gaps as samples (the
    method of :func:`fit_power_law`), so ``gap_fit.s`` is the rank exponent of the sorted
    gaps; ``index_exponent`` is the least-squares exponent of ``delta_i`` against the index
    ``i`` itself (they agree when the gaps decrease with ``i``). Both are compared with
    ``predicted_gap_exponent = s + 1``.
    """

    k: int
    s: float
    predicted_gap_exponent: float
    gap_fit: PowerLawFit
    index_exponent: float
    n_zero_gaps: int

    def __str__(self) -> str:
        return (
            f"eigengaps: exponent {self.gap_fit.s:.3f} (rank fit), {self.index_exponent:.3f} "
            f"(index regression); s + 1 = {self.predicted_gap_exponent:.3f}"
        )


# ----------------------------------------------------------------------------------------------
# input checks


def _as_values(eigenvalues: ArrayLike, name: str = "eigenvalues") -> FloatArray:
    """A 1-D float64 copy of ``eigenvalues``; NaN/Inf are an error that says how many and where."""
    try:
        values = np.array(eigenvalues, dtype=np.float64)
    except (TypeError, ValueError):
        raise UserInputError(f"{name} must be a sequence of numbers") from None
    if values.ndim != 1:
        raise UserInputError(
            f"{name} must be one-dimensional; got an array of shape {values.shape}"
        )
    bad = np.flatnonzero(~np.isfinite(values))
    if bad.size:
        shown = ", ".join(f"{values[i]} at index {i}" for i in bad[:5])
        more = f" and {bad.size - 5} more" if bad.size > 5 else ""
        raise UserInputError(
            f"{name} contain {bad.size} non-finite value(s) ({shown}{more}); remove them or "
            "recompute the spectrum"
        )
    return values


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise UserInputError(
            f"{name} must be one of {', '.join(map(repr, choices))}; got {value!r}"
        )


def _check_alpha(alpha: float) -> float:
    if not (isinstance(alpha, (int, float)) and 0.0 < float(alpha) < 1.0):
        raise UserInputError(
            f"alpha must be a significance level in (0, 1), e.g. 0.05; got {alpha!r}"
        )
    return float(alpha)


def _top_positive(values: FloatArray, k: int | None) -> tuple[FloatArray, int]:
    """The top ``k`` values (all when None), descending, without the non-positive ones."""
    desc = np.sort(values)[::-1]
    if k is not None:
        k = check_int(k, "k", MIN_POINTS)
        if k > desc.size:
            raise UserInputError(
                f"k = {k} is larger than the number of eigenvalues ({desc.size}); "
                "use a smaller k or omit it"
            )
        desc = desc[:k]
    positive = desc[desc > 0]
    n_dropped = desc.size - positive.size
    if positive.size < MIN_POINTS:
        raise UserInputError(
            f"only {positive.size} positive eigenvalue(s) among the {desc.size} selected; a "
            f"power-law fit needs at least {MIN_POINTS} (compute more eigenvalues)"
        )
    if n_dropped:
        warnings.warn(
            f"dropped {n_dropped} non-positive eigenvalue(s) of the {desc.size} selected; "
            f"the fit uses the {positive.size} positive ones",
            DroppedEigenvaluesWarning,
            stacklevel=3,
        )
    return positive, n_dropped


# ----------------------------------------------------------------------------------------------
# the estimator and the KS distance


def _log_ratios(desc: FloatArray) -> FloatArray:
    """``t_i = ln(lambda_i / lambda_cut)`` for a descending tail whose last entry is the cut.

    The ratio is formed first: values a few ulps apart then keep a positive log ratio, which
    a difference of two large logarithms would round to zero. Ratios beyond the float range
    (spectra spanning more than 308 decades) fall back to the difference of logarithms.
    """
    with np.errstate(over="ignore"):
        ratio = desc / desc[-1]
    return np.where(np.isfinite(ratio), np.log(ratio), np.log(desc) - math.log(desc[-1]))


def _exponent(t: FloatArray) -> float:
    """MLE of ``a = beta - 1`` from the log ratios: ``a = k / sum t``."""
    total = float(np.sum(t))
    if not total > 0.0:
        raise UserInputError(
            f"the top {t.size} eigenvalues are all equal; a power law cannot be fitted"
        )
    return t.size / total


def _powerlaw_cdf(t: FloatArray, a: FloatArray | float) -> FloatArray:
    """``F = 1 - y^-a = 1 - exp(-a t)``, accurate near 0."""
    return -np.expm1(-np.multiply(a, t))


def _ks_from_sorted(cdf_ascending: FloatArray) -> FloatArray:
    """KS distance between the empirical CDF and a model CDF at ascending sample points.

    ``cdf_ascending[..., i]`` is the model CDF at the (i+1)-th smallest point. The empirical
    CDF jumps from ``i/m`` to ``(i+1)/m`` there; the supremum over all ``x`` is attained at one
    side of a jump, so ``d = max_i max((i+1)/m - F_i, F_i - i/m)``. This is also exact with
    ties: within a tied group the first point gives the left limit and the last the right one.
    """
    m = cdf_ascending.shape[-1]
    steps = np.arange(m, dtype=np.float64) / m
    upper = np.max(steps + 1.0 / m - cdf_ascending, axis=-1)
    lower = np.max(cdf_ascending - steps, axis=-1)
    return np.maximum(upper, lower)


def critical_value(k: int, alpha: float = 0.05, method: Critical = "asymptotic") -> float:
    """KS critical value ``d_c`` for ``k`` points at significance ``alpha``.

    ``"asymptotic"`` (the paper's convention, for k > 35): ``c(alpha)/sqrt(k)`` with Massey's
    c = 1.07, 1.14, 1.22, 1.36, 1.63 for alpha = 0.20, 0.15, 0.10, 0.05, 0.01, and the
    Kolmogorov quantile ``kstwobign.isf(alpha)`` (of which these are the rounded values) for
    other alphas. ``"exact"``: the finite-k KS distribution, ``scipy.stats.kstwo.isf``. For
    k <= 35 the exact value is always used.
    """
    k = check_int(k, "k", 1)
    alpha = _check_alpha(alpha)
    _check_choice("critical", method, ("asymptotic", "exact"))
    if method == "exact" or k < ASYMPTOTIC_FROM_K:
        return float(stats.kstwo.isf(alpha, k))
    c = next((v for a, v in MASSEY_C.items() if math.isclose(a, alpha)), None)
    if c is None:
        c = float(stats.kstwobign.isf(alpha))
    return c / math.sqrt(k)


def _clauset_tail_size(desc: FloatArray) -> int:
    """Number of top values whose power-law fit has the smallest KS distance.

    Candidate cutoffs are the distinct values with at least ``MIN_POINTS`` values at or above
    them. For candidate index ``j`` (tail ``desc[:j+1]``, ``m = j+1``) the estimate is
    ``a_j = m / (S_j - m ln x_j)`` with ``S_j`` the cumulative sum of ``ln x``; all KS
    distances are computed at once, a chunk of candidates at a time. Ties in the distance go
    to the larger tail.
    """
    n = desc.size
    logs = np.log(desc)
    cum = np.cumsum(logs)
    last_of_group = np.append(desc[1:] < desc[:-1], True)
    ends = np.flatnonzero(last_of_group & (np.arange(n) >= MIN_POINTS - 1))
    sizes = ends + 1
    sums = cum[ends] - sizes * logs[ends]
    ends, sizes, sums = ends[sums > 0], sizes[sums > 0], sums[sums > 0]
    if ends.size == 0:
        raise UserInputError("the eigenvalues are all equal; a power law cannot be fitted")
    exps = sizes / sums
    distances = np.empty(ends.size)
    cols = np.arange(n)
    rows_per_chunk = max(1, _CHUNK_ELEMENTS // n)
    for start in range(0, ends.size, rows_per_chunk):
        j = ends[start : start + rows_per_chunk, None]
        m = sizes[start : start + rows_per_chunk, None].astype(np.float64)
        inside = cols[None, :] <= j
        t = np.where(inside, logs[None, :] - logs[j], 0.0)
        cdf = _powerlaw_cdf(t, exps[start : start + rows_per_chunk, None])
        # desc[i] is the (j - i + 1)-th smallest point of tail j
        rank = (j - cols[None, :] + 1).astype(np.float64)
        upper = np.where(inside, rank / m - cdf, -np.inf).max(axis=1)
        lower = np.where(inside, cdf - (rank - 1) / m, -np.inf).max(axis=1)
        distances[start : start + rows_per_chunk] = np.maximum(upper, lower)
    best = ends.size - 1 - int(np.argmin(distances[::-1]))
    return int(sizes[best])


def _fit_tail(
    tail: FloatArray,
    n_available: int,
    n_dropped: int,
    alpha: float,
    cutoff: str,
    critical: str,
) -> PowerLawFit:
    k = tail.size
    t = _log_ratios(tail)
    a = _exponent(t)
    distance = float(_ks_from_sorted(_powerlaw_cdf(t[::-1], a)))
    d_c = critical_value(k, alpha, critical)  # type: ignore[arg-type]
    s = 1.0 / a
    return PowerLawFit(
        k=k,
        n_available=n_available,
        n_dropped=n_dropped,
        lambda_cut=float(tail[-1]),
        lambda_1=float(tail[0]),
        beta=1.0 + a,
        sigma_beta=a / math.sqrt(k),
        s=s,
        sigma_s=s / math.sqrt(k),  # delta method: |ds/dbeta| sigma_beta = sigma_beta / a^2
        ks_distance=distance,
        critical_value=d_c,
        alpha=alpha,
        is_power_law=bool(distance < d_c),
        cutoff=cutoff,
        critical=critical,
    )


def fit_power_law(
    eigenvalues: ArrayLike,
    k: int | None = None,
    alpha: float = 0.05,
    cutoff: Cutoff = "kth",
    critical: Critical = "asymptotic",
) -> PowerLawFit:
    r"""Fit a power law to the top ``k`` positive eigenvalues (the paper's method).

    The estimate is :math:`\beta = 1 + k / \sum \ln(\lambda_i/\lambda_{cut})`,
    :math:`s = 1/(\beta - 1)`, :math:`\sigma_\beta = (\beta - 1)/\sqrt k`,
    :math:`\sigma_s = s/\sqrt k` (delta method); ``ks_distance`` is the exact supremum of
    :math:`|F_{emp} - F|` with :math:`F(x) = 1 - (x/\lambda_{cut})^{1-\beta}`.

    Args:
        eigenvalues: any order; NaN/Inf raise a ValueError naming how many and where.
        k: use the ``k`` largest values (all when None). Non-positive values among them are
            dropped with a :class:`DroppedEigenvaluesWarning` and counted in ``n_dropped``.
        alpha: significance level of the KS test.
        cutoff: ``"kth"``: :math:`\lambda_{cut} = \lambda_k` (the paper). ``"clauset"``: the
            cutoff that minimises the KS distance over the selected values; ``k`` on the result
            is then the number of values kept.
        critical: ``"asymptotic"`` or ``"exact"``, see :func:`critical_value`.

    Returns:
        The :class:`PowerLawFit`: ``k``, ``beta``, ``s`` and their errors, ``ks_distance``,
        ``critical_value`` and the verdict ``is_power_law``.

    Raises:
        UserInputError: non-finite values, fewer than 10 positive values, or bad arguments.
    """
    values = _as_values(eigenvalues)
    alpha = _check_alpha(alpha)
    _check_choice("cutoff", cutoff, ("kth", "clauset"))
    _check_choice("critical", critical, ("asymptotic", "exact"))
    selection, n_dropped = _top_positive(values, k)
    size = _clauset_tail_size(selection) if cutoff == "clauset" else selection.size
    return _fit_tail(selection[:size], selection.size, n_dropped, alpha, cutoff, critical)


def power_law_span(
    eigenvalues: ArrayLike, step: int = 100, alpha: float = 0.05
) -> PowerLawFit | None:
    """The fit of the largest top-K that the paper's KS test calls a power law, or None.

    K runs over ``step, 2 step, ...`` and all the positive values.

    A descriptive diagnostic, not a test (it looks at many K): where a spectrum's head is a
    power law and its tail bends away, it says how far down the power law reaches, e.g. for a
    Hessian on too few samples, whose smallest top eigenvalues fall below the law.

    Args:
        eigenvalues: any order (as :func:`fit_power_law`).
        step: the grid of K; at least :data:`MIN_POINTS`.
        alpha: significance level of the KS test.

    Returns:
        The :class:`PowerLawFit` of that K (``fit.k`` is K), or None.

    Raises:
        UserInputError: as :func:`fit_power_law`, or a ``step`` below the minimum.
    """
    values = _as_values(eigenvalues)
    if not isinstance(step, (int, np.integer)) or isinstance(step, bool) or step < MIN_POINTS:
        raise UserInputError(f"step must be an integer >= {MIN_POINTS}, got {step!r}")
    positive = int((values > 0).sum())
    sizes = list(range(step, positive + 1, step))
    if positive >= MIN_POINTS and (not sizes or sizes[-1] != positive):
        sizes.append(positive)
    for k in reversed(sizes):
        fit = fit_power_law(values, k=k, alpha=alpha)
        if fit.is_power_law:
            return fit
    return None


# ----------------------------------------------------------------------------------------------
# rank regression


def _slopes(x: FloatArray, y: FloatArray) -> FloatArray:
    """Least-squares slopes of ``y`` on ``x`` along the last axis."""
    xc = x - x.mean(axis=-1, keepdims=True)
    yc = y - y.mean(axis=-1, keepdims=True)
    return np.sum(xc * yc, axis=-1) / np.sum(xc * xc, axis=-1)


def rank_regression(
    eigenvalues: ArrayLike,
    k: int | None = None,
    n_boot: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> RankRegression:
    r"""Least-squares fit of :math:`\log\lambda_r = c - s \log r`, r = 1..k, with a bootstrap CI.

    The ranks are a fixed design, so the confidence interval resamples the residuals of the
    fitted line (``n_boot`` times, percentile interval). Report it, do not test with it: the
    residuals of ordered eigenvalues are correlated, which no bootstrap of this kind sees; use
    :func:`fit_power_law` for the test.

    Args:
        eigenvalues: any order; the positive ones among the top ``k`` are used.
        k: the number of top values (all when None).
        n_boot: bootstrap samples of the confidence interval.
        confidence: the interval's level.
        seed: seed of the bootstrap.

    Returns:
        The :class:`RankRegression`: the slope ``s``, its interval, the intercept and ``r2``.

    Raises:
        UserInputError: too few positive values or bad arguments.
    """
    values = _as_values(eigenvalues)
    n_boot = check_int(n_boot, "n_boot", 10)
    if not 0.0 < confidence < 1.0:
        raise UserInputError(f"confidence must be in (0, 1), e.g. 0.95; got {confidence!r}")
    desc, _ = _top_positive(values, k)
    log_rank = np.log(np.arange(1, desc.size + 1, dtype=np.float64))
    log_value = np.log(desc)
    slope = float(_slopes(log_rank, log_value))
    intercept = float(log_value.mean() - slope * log_rank.mean())
    residual = log_value - (intercept + slope * log_rank)
    total = np.sum((log_value - log_value.mean()) ** 2)
    r_squared = 1.0 - float(np.sum(residual**2) / total) if total > 0 else 1.0

    rng = np.random.default_rng(seed)
    fitted = log_value - residual
    boot = np.empty(n_boot)
    rows_per_chunk = max(1, _CHUNK_ELEMENTS // desc.size)
    for start in range(0, n_boot, rows_per_chunk):
        rows = min(rows_per_chunk, n_boot - start)
        resampled = fitted + residual[rng.integers(0, desc.size, size=(rows, desc.size))]
        boot[start : start + rows] = -_slopes(log_rank, resampled)
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(boot, [tail, 1.0 - tail])
    return RankRegression(
        k=int(desc.size),
        s=-slope,
        lambda_1_fit=math.exp(intercept),
        r_squared=r_squared,
        s_ci_low=float(low),
        s_ci_high=float(high),
        confidence=float(confidence),
        n_boot=n_boot,
        seed=seed,
    )


# ----------------------------------------------------------------------------------------------
# bootstrap goodness of fit


def _synthetic_ks_kth(a: float, k: int, n_boot: int, rng: np.random.Generator) -> FloatArray:
    """KS distances of ``n_boot`` power-law samples of size ``k``, each refitted like the data.

    A sample is ``y = U^(-1/a)`` (scale is irrelevant); the refit takes its smallest value as
    the cut, as the ``"kth"`` rule does, then the MLE exponent and the KS distance. All rows of
    a chunk are done at once.
    """
    out = np.empty(n_boot)
    rows_per_chunk = max(1, _CHUNK_ELEMENTS // k)
    for start in range(0, n_boot, rows_per_chunk):
        rows = min(rows_per_chunk, n_boot - start)
        log_y = np.sort(-np.log1p(-rng.random((rows, k))) / a, axis=1)  # ln U^(-1/a), U in (0,1]
        t = log_y - log_y[:, :1]
        exps = k / t.sum(axis=1, keepdims=True)
        out[start : start + rows] = _ks_from_sorted(_powerlaw_cdf(t, exps))
    return out


def _synthetic_ks_clauset(
    fit: PowerLawFit, selection: FloatArray, n_boot: int, rng: np.random.Generator
) -> FloatArray:
    """Clauset et al.'s semi-parametric scheme: tail from the fitted law, body resampled.

    Each synthetic set has ``n`` values; each is, with probability ``k/n``, a power-law draw
    above ``lambda_cut`` and otherwise a draw from the observed values below it. The cutoff
    search and the fit are then repeated on it.
    """
    n = selection.size
    body = selection[fit.k :]
    a = fit.beta - 1.0
    out = np.empty(n_boot)
    for b in range(n_boot):
        n_tail = rng.binomial(n, fit.k / n) if body.size else n
        tail = fit.lambda_cut * np.exp(-np.log1p(-rng.random(n_tail)) / a)
        sample = np.concatenate([tail, rng.choice(body, n - n_tail)]) if body.size else tail
        desc = np.sort(sample)[::-1]
        try:
            size = _clauset_tail_size(desc)
        except UserInputError:  # a degenerate resample (all values tied)
            out[b] = 1.0
            continue
        t = _log_ratios(desc[:size])
        out[b] = _ks_from_sorted(_powerlaw_cdf(t[::-1], _exponent(t)))
    return out


def bootstrap_pvalue(
    eigenvalues: ArrayLike,
    k: int | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    cutoff: Cutoff = "kth",
) -> BootstrapResult:
    r"""Goodness-of-fit p-value of the power law by parametric bootstrap (Clauset et al. 2009).

    The data are fitted with :func:`fit_power_law`; ``n_boot`` synthetic samples are drawn
    from the fitted law and each is refitted the same way (cutoff rule included), because
    the KS tables are not valid once the exponent is estimated from the data. Clauset et al.
    reject the power law when ``p <= 0.1``. ``cutoff="kth"`` is vectorised (n_boot = 1000 at
    k = 1000 takes about a second); ``"clauset"`` repeats the cutoff search on every sample,
    with the values below the cutoff resampled from the data, and costs about ``n_boot``
    times one Clauset fit.

    Args:
        eigenvalues: any order, as for :func:`fit_power_law`.
        k: the number of top values (all when None).
        n_boot: synthetic samples (at least 10).
        seed: seed of the synthetic samples.
        cutoff: ``"kth"`` or ``"clauset"``, as for :func:`fit_power_law`.

    Returns:
        The :class:`BootstrapResult`: ``p_value``, the fraction of synthetic distances ``>=``
        the observed one, and its ``standard_error`` ``sqrt(p(1-p)/n_boot)``.

    Raises:
        UserInputError: the data cannot be fitted or bad arguments.
    """
    values = _as_values(eigenvalues)
    n_boot = check_int(n_boot, "n_boot", 1)
    _check_choice("cutoff", cutoff, ("kth", "clauset"))
    selection, n_dropped = _top_positive(values, k)
    with warnings.catch_warnings():  # already warned by _top_positive
        warnings.simplefilter("ignore", DroppedEigenvaluesWarning)
        fit = fit_power_law(selection, cutoff=cutoff)
    rng = np.random.default_rng(seed)
    if cutoff == "kth":
        synthetic = _synthetic_ks_kth(fit.beta - 1.0, fit.k, n_boot, rng)
    else:
        synthetic = _synthetic_ks_clauset(fit, selection, n_boot, rng)
    p = float(np.mean(synthetic >= fit.ks_distance))
    return BootstrapResult(
        p_value=p,
        standard_error=math.sqrt(p * (1.0 - p) / n_boot),
        n_boot=n_boot,
        k=fit.k,
        beta=fit.beta,
        ks_distance=fit.ks_distance,
        synthetic_ks_mean=float(synthetic.mean()),
        synthetic_ks_q95=float(np.quantile(synthetic, 0.95)),
        cutoff=cutoff,
        seed=seed,
    )


# ----------------------------------------------------------------------------------------------
# alternatives, fitted by maximum likelihood on y = x / lambda_cut >= 1 (t = ln y)
#
# Each fitter returns (pointwise log-densities of y, parameters). Densities of x differ by
# -ln(lambda_cut) for every model, which cancels in every ratio; the reported total
# log-likelihoods include it.


def _loglik_power_law(t: FloatArray) -> tuple[FloatArray, dict[str, float]]:
    """``p(y) = a y^-(a+1)``: closed-form MLE ``a = k / sum t``."""
    a = _exponent(t)
    return math.log(a) - (a + 1.0) * t, {"beta": 1.0 + a}


def _loglik_exponential(t: FloatArray) -> tuple[FloatArray, dict[str, float]]:
    """``p(y) = r exp(-r (y - 1))``: closed-form MLE ``r = 1 / mean(y - 1)``.

    Computed in log space from ``t = ln y``: ``ln(y - 1) = t + ln(-expm1(-t))`` (exact for a
    tail whose values differ in the last bits, where ``exp(t) - 1`` keeps only a few
    significant digits, and finite for any finite ``t``), ``ln mean(y - 1)`` by logsumexp,
    and ``r (y - 1) = exp(ln(y - 1) - ln mean(y - 1)) <= k``: a tail of values near the
    float maximum (1e308) overflows nowhere.
    """
    with np.errstate(divide="ignore"):  # y = 1 at the cut: ln 0 = -inf, and exp(-inf) = 0
        log_em1 = t + np.log(-np.expm1(-t))
    log_mean = float(special.logsumexp(log_em1)) - math.log(t.size)
    return -log_mean - np.exp(log_em1 - log_mean), {"rate": math.exp(-log_mean)}


def _log_normaliser_halfline_gauss(eta1: float, eta2: float) -> float:
    """``log int_0^inf exp(eta1 t + eta2 t^2) dt`` for ``eta2 < 0``, stable for any ``eta1``.

    With ``sigma = (-2 eta2)^(-1/2)``, ``mu = eta1 sigma^2`` and ``z = mu/sigma`` the integral is
    ``sqrt(2 pi) sigma exp(z^2/2) Phi(z)``; for ``z < 0`` the product ``exp(z^2/2) Phi(z)`` is
    ``erfcx(-z/sqrt 2)/2``, which stays accurate as the law tends to an exponential
    (``eta2 -> 0``, the power-law limit of the log-normal).
    """
    sigma = 1.0 / math.sqrt(-2.0 * eta2)
    z = eta1 * sigma
    if z < 0:
        return (
            math.log(sigma)
            + 0.5 * math.log(math.pi / 2.0)
            + math.log(special.erfcx(-z / math.sqrt(2)))
        )
    return (
        math.log(sigma) + 0.5 * math.log(2.0 * math.pi) + 0.5 * z * z + float(special.log_ndtr(z))
    )


def _loglik_lognormal(t: FloatArray) -> tuple[FloatArray, dict[str, float]]:
    """Log-normal truncated to ``y >= 1``: ``t = ln y`` is a normal truncated to ``t >= 0``.

    Fitted in natural parameters ``(eta1, eta2) = (mu/sigma^2, -1/(2 sigma^2))``, where the
    negative log-likelihood ``-eta1 sum t - eta2 sum t^2 + k A(eta)`` is convex; ``eta2`` is
    parametrised as ``-exp(w)``. Two starts (moments, and the power-law limit) guard the
    optimiser. ``p(y) = p_t(ln y) / y``.
    """
    m1, m2 = float(np.mean(t)), float(np.mean(t * t))

    def nll(theta: FloatArray) -> float:
        eta1, eta2 = float(theta[0]), -math.exp(float(theta[1]))
        return -(eta1 * m1 + eta2 * m2) + _log_normaliser_halfline_gauss(eta1, eta2)

    var = max(float(np.var(t)), 1e-12)
    starts = [
        np.array([m1 / var, math.log(0.5 / var)]),
        np.array([-1.0 / m1, math.log(1e-3 / (m2 + 1e-12))]),  # near the exponential limit
    ]
    best = min((_minimise(nll, x0) for x0 in starts), key=lambda r: r.fun)
    eta1, eta2 = float(best.x[0]), -math.exp(float(best.x[1]))
    a_norm = _log_normaliser_halfline_gauss(eta1, eta2)
    sigma = 1.0 / math.sqrt(-2.0 * eta2)
    return eta1 * t + eta2 * t * t - a_norm - t, {"mu": eta1 * sigma**2, "sigma": sigma}


def _loglik_stretched_exponential(t: FloatArray) -> tuple[FloatArray, dict[str, float]]:
    """Weibull truncated to ``y >= 1``: ``p(y) = b r y^(b-1) exp(-r (y^b - 1))``.

    For fixed shape ``b`` the rate has the closed form ``r = k / sum(y^b - 1)``, leaving a 1-D
    search over ``log b`` (coarse grid, then bounded Brent). ``y^b - 1`` is handled as
    ``expm1(b t)`` in logs so large eigenvalue ratios do not overflow.
    """
    k = t.size

    def log_expm1(x: FloatArray) -> FloatArray:
        with np.errstate(divide="ignore"):  # t = 0 at the cut: log(0) = -inf is right
            return np.where(
                x > 30.0,
                x + np.log1p(-np.exp(-np.minimum(x, 700.0))),
                np.log(np.expm1(np.minimum(x, 30.0))),
            )

    def profile(log_b: float) -> tuple[float, float, FloatArray]:
        b = math.exp(log_b)
        le = log_expm1(b * t)
        log_r = math.log(k) - float(special.logsumexp(le))
        ll = log_b + log_r + (b - 1.0) * t - np.exp(log_r + le)
        return float(ll.sum()), log_r, ll

    grid = np.linspace(-8.0, 5.0, 53)
    values = [profile(g)[0] for g in grid]
    i = int(np.argmax(values))
    lo, hi = grid[max(i - 1, 0)], grid[min(i + 1, grid.size - 1)]
    res = optimize.minimize_scalar(lambda g: -profile(g)[0], bounds=(lo, hi), method="bounded")
    log_b = float(res.x) if -res.fun >= values[i] else float(grid[i])
    _, log_r, ll = profile(log_b)
    return ll, {"shape": math.exp(log_b), "rate": math.exp(log_r)}


def _expm1_minus_x(x: float) -> float:
    """``e^x - 1 - x`` without the cancellation near 0."""
    if abs(x) < 1e-3:
        return 0.5 * x * x * (1.0 + x / 3.0 * (1.0 + x / 4.0 * (1.0 + x / 5.0)))
    return math.expm1(x) - x


def _log_normaliser_tpl_t(a: float, rate: float) -> float:
    """``log int_0^inf exp(g(t)) dt`` with ``g(t) = -a t - rate expm1(t)``, ``rate > 0``, any ``a``.

    ``g`` is concave with its maximum at ``t* = ln(-a/rate)`` when ``-a > rate``, else at 0.
    With ``s = -g'(t*) >= 0`` and ``c = -g''(t*) = rate e^t*``, exactly
    ``g(t* + x) - g(t*) = -s x - c (e^x - 1 - x)``, which is integrated in ``v = x / h``. ``h``
    is the least of the distances where the linear, the quadratic and the exponential term
    alone reach 1 (``1/s``, ``sqrt(2/c)``, ``1 + ln(1 + 1/c)``): the drop at ``h`` is then at
    least 1 and ``h`` is within a factor 3 of where it is 1, so the integrand has width O(1)
    whatever the scale of the data (for a tail whose values differ in the last digits ``a`` is
    ~1e14 and all the mass lies within ~1e-14 of 0). By concavity the drop at ``|v| >= 1`` is at
    least ``|v|`` times the drop at ``v = +-1``, which bounds where the integrand is above
    ``e^-800``; the range is cut in pieces ``[0, 1], [1, 4], [4, 16], ...`` for ``quad``.
    """
    log_rate = math.log(rate)
    interior = -a > rate
    peak = math.log(-a / rate) if interior else 0.0
    slope = 0.0 if interior else a + rate
    c = -a if interior else rate
    log_c = log_rate + peak
    g_peak = -a * peak + a + rate if interior else 0.0
    h = min(math.sqrt(2.0 / c), 1.0 + math.log1p(c) - log_c)
    if slope > 0.0:
        h = min(h, 1.0 / slope)

    def drop(x: float) -> float:  # g(t* + x) - g(t*) <= 0
        if x <= 1.0:
            return -slope * x - c * _expm1_minus_x(x)
        if log_c + x > 700.0:  # c e^x > 1e304: the integrand is 0
            return -math.inf
        return -slope * x - (math.exp(log_c + x) - c * (1.0 + x))

    def integral(sign: float, limit: float) -> float:
        edges = [0.0, min(1.0, limit)]
        while edges[-1] < limit:
            edges.append(min(4.0 * edges[-1], limit))
        if sign > 0 and log_c < -1.0:
            # after a nearly flat stretch the integrand falls off a cliff, of width ~1 in x,
            # where c e^x passes 1: give quad its edges
            cliff = [(d - log_c) / h for d in (-3.0, -1.0, 0.0, 1.0, 3.0)]
            edges = sorted(set(edges).union(v for v in cliff if 0.0 < v < limit))
        return sum(
            integrate.quad(lambda v: math.exp(drop(sign * h * v)), lo, hi, epsrel=1e-10)[0]
            for lo, hi in zip(edges[:-1], edges[1:])
        )

    total = integral(1.0, max(1.0, 800.0 / -drop(h)))
    if interior:
        left = peak / h
        if left > 1.0 and drop(-h) < 0.0:
            left = min(left, max(1.0, 800.0 / -drop(-h)))
        total += integral(-1.0, left)
    return g_peak + math.log(h) + math.log(total)


def _log_normaliser_truncated_power_law(beta: float, rate: float) -> float:
    """``log Z`` with ``Z = int_1^inf y^-beta exp(-rate y) dy`` (``rate > 0``, any ``beta``).

    In ``t = ln y``: ``Z = exp(-rate) int_0^inf exp(-(beta - 1) t - rate expm1(t)) dt``.
    """
    return -rate + _log_normaliser_tpl_t(beta - 1.0, rate)


def _loglik_truncated_power_law(
    t: FloatArray, em1: FloatArray, power_law_beta: float
) -> tuple[FloatArray, dict[str, float]]:
    """The truncated power law: a power law with an exponential cutoff.

    ``p(y) = y^-beta exp(-rate y) / Z(beta, rate)``, ``y >= 1``: the power law with an
    exponential cutoff, which contains the power law at ``rate = 0``.

    An exponential family in ``(beta, rate)`` with statistics ``t`` and ``em1 = y - 1``, so the
    likelihood is concave. Nelder-Mead from three starts over the scale-free coordinates
    ``(alpha, log rho)``: ``beta = 1 + alpha a_pl`` (``a_pl = 1/mean(t)``, the power law's
    ``beta - 1``, at ``alpha = 1``) and ``rate = rho / mean(em1)``, so that both terms of the
    likelihood are O(1) for any tail, also a flat one (``beta`` > 50) or one whose values differ
    in the last digits (``beta`` ~1e5..1e14). If no positive rate beats the power law, the fit
    is the power law itself (``rate = 0``, the boundary of the nested test).
    """
    top = float(np.max(em1))  # the mean of values near 1e308 overflows unless scaled first
    st, se = float(np.mean(t)), top * float(np.mean(em1 / top))
    a_pl = power_law_beta - 1.0

    def unpack(theta: FloatArray) -> tuple[float, float]:
        return 1.0 + float(theta[0]) * a_pl, math.exp(float(theta[1])) / se

    def nll(theta: FloatArray) -> float:
        # outside this box exp(log rho) over/underflows and the maximum is never there (the
        # likelihood is concave, the starts O(1)). A probe there gets inf, which Nelder-Mead
        # just rejects: its best vertex (at worst a start) stays finite, so no inf - inf.
        if not (abs(float(theta[0])) < 1e6 and abs(float(theta[1])) < 600.0):
            return math.inf
        beta, rate = unpack(theta)
        return beta * st + rate * se + _log_normaliser_tpl_t(beta - 1.0, rate)

    starts = [np.array([1.0, math.log(1e-3)]), np.array([0.5, math.log(0.1)]), np.array([0.1, 0.5])]
    best = min((_minimise(nll, x0, method="Nelder-Mead") for x0 in starts), key=lambda r: r.fun)
    nll_power_law = -(math.log(a_pl) - power_law_beta * st)
    if not best.fun < nll_power_law:
        return math.log(a_pl) - power_law_beta * t, {"beta": power_law_beta, "rate": 0.0}
    beta, rate = unpack(best.x)
    log_z = _log_normaliser_tpl_t(beta - 1.0, rate)
    return -beta * t - rate * em1 - log_z, {"beta": beta, "rate": rate}


def _minimise(
    fun: Callable[[FloatArray], float], x0: FloatArray, method: str = "Nelder-Mead"
) -> optimize.OptimizeResult:
    with warnings.catch_warnings(), np.errstate(over="ignore", under="ignore"):
        warnings.simplefilter("ignore", integrate.IntegrationWarning)
        return optimize.minimize(
            fun,
            x0,
            method=method,
            options={"xatol": 1e-9, "fatol": 1e-12, "maxiter": 4000, "maxfev": 8000},
        )


def _ratio_test(
    name: str,
    ll_pl: FloatArray,
    ll_alt: FloatArray,
    params: dict[str, float],
    nested: bool,
    significance: float,
    shift: float,
) -> LikelihoodRatioTest:
    diff = ll_pl - ll_alt
    ratio = float(diff.sum())
    sd = float(diff.std())
    # Each log-density carries rounding errors of a few ulps of its size. Differences at that
    # level (a tail whose values differ only in the last bits) are noise, and Vuong's ratio
    # R / sd of two such noises is arbitrary: the laws are indistinguishable, as when sd = 0.
    noise = 16.0 * np.finfo(np.float64).eps * (1.0 + float(np.max(np.abs(ll_pl) + np.abs(ll_alt))))
    if not sd > noise:
        sd = 0.0
    normalized = ratio / (sd * math.sqrt(diff.size)) if sd > 0 else 0.0
    if nested:
        p = float(stats.chi2.sf(2.0 * abs(ratio), 1))
        preferred = name if p < significance and ratio < 0 else "power law"
        test = "nested chi2(1)"
    else:
        p = float(special.erfc(abs(ratio) / (sd * math.sqrt(2.0 * diff.size)))) if sd > 0 else 1.0
        preferred = ("power law" if ratio > 0 else name) if p < significance else "inconclusive"
        test = "vuong"
    return LikelihoodRatioTest(
        alternative=name,
        test=test,
        loglik_ratio=ratio,
        normalized_ratio=normalized,
        p_value=p,
        preferred=preferred,
        loglik_alternative=float(ll_alt.sum()) - shift,
        parameters={key: float(v) for key, v in params.items()},
    )


def compare_alternatives(
    eigenvalues: ArrayLike,
    k: int | None = None,
    significance: float = 0.1,
    cutoff: Cutoff = "kth",
) -> AlternativesComparison:
    r"""Likelihood-ratio tests of the power law against other heavy-tailed laws.

    All models are fitted by maximum likelihood to the same tail (the values at or above
    ``lambda_cut`` chosen as in :func:`fit_power_law`), each conditioned on
    ``x >= lambda_cut``:

    - exponential ``exp(-r (y - 1))``, log-normal, stretched exponential (Weibull): non-nested,
      Vuong's normalised test, ``p = erfc(|R| / (sd sqrt(2k)))``;
    - truncated power law ``y^-beta exp(-r y)``: nested (the power law is ``r = 0``),
      ``p = P(chi2_1 > 2|R|)``, as in Clauset et al. (conservative: ``r = 0`` is a boundary).

    Args:
        eigenvalues: any order, as for :func:`fit_power_law`.
        k: the number of top values (all when None).
        significance: the p-value below which a test names the better law (Clauset et al.
            use 0.1).
        cutoff: ``"kth"`` or ``"clauset"``, as for :func:`fit_power_law`.

    Returns:
        The :class:`AlternativesComparison`, one test per alternative; ``preferred`` names the
        better law when ``p < significance``, otherwise ``"inconclusive"`` (``"power law"``
        for the nested test, whose null it is).

    Raises:
        UserInputError: the data cannot be fitted or bad arguments.
    """
    values = _as_values(eigenvalues)
    if not 0.0 < significance < 1.0:
        raise UserInputError(f"significance must be in (0, 1), e.g. 0.1; got {significance!r}")
    fit = fit_power_law(values, k=k, cutoff=cutoff)
    selection, _ = _top_positive_quiet(values, k)
    tail = selection[: fit.k]
    t = _log_ratios(tail)
    with np.errstate(over="ignore"):
        em1 = np.expm1(t)  # y - 1, exact also for values a few ulps apart
    if not np.isfinite(em1).all():  # lambda_1 / lambda_cut > 1.8e308
        raise UserInputError(
            f"the top eigenvalue {tail[0]:.3g} is more than 1.8e308 times lambda_cut = "
            f"{fit.lambda_cut:.3g}, beyond floating point for the alternative laws; compare a "
            "tail that spans fewer decades (a smaller k)"
        )
    shift = tail.size * math.log(fit.lambda_cut)  # log-densities of x = those of y - ln cut

    ll_pl, _ = _loglik_power_law(t)
    alternatives = [
        ("exponential", *_loglik_exponential(t), False),
        ("lognormal", *_loglik_lognormal(t), False),
        ("stretched_exponential", *_loglik_stretched_exponential(t), False),
        ("truncated_power_law", *_loglik_truncated_power_law(t, em1, fit.beta), True),
    ]
    tests = tuple(
        _ratio_test(name, ll_pl, ll, params, nested, significance, shift)
        for name, ll, params, nested in alternatives
    )
    return AlternativesComparison(
        k=fit.k,
        lambda_cut=fit.lambda_cut,
        beta=fit.beta,
        loglik_power_law=float(ll_pl.sum()) - shift,
        significance=float(significance),
        tests=tests,
    )


def _top_positive_quiet(values: FloatArray, k: int | None) -> tuple[FloatArray, int]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DroppedEigenvaluesWarning)
        return _top_positive(values, k)


# ----------------------------------------------------------------------------------------------
# eigengaps


def eigengap_fit(eigenvalues: ArrayLike, k: int | None = None, alpha: float = 0.05) -> EigengapFit:
    r"""The power-law fit of the gaps :math:`\delta_i = \lambda_i - \lambda_{i+1}` of the top k.

    The paper (Tang et al., ICML 2025) predicts :math:`\delta_k \sim k^{-(s+1)}`. Zero gaps
    (repeated eigenvalues) cannot enter a power law and are counted in ``n_zero_gaps``. The
    index exponent is the least-squares slope of :math:`\log\delta_i` on :math:`\log i` over
    the positive gaps.

    Args:
        eigenvalues: any order, as for :func:`fit_power_law`.
        k: the number of top values (all when None).
        alpha: significance level of the KS test of the gaps.

    Returns:
        The :class:`EigengapFit`: the index exponent next to the predicted ``s + 1``.

    Raises:
        UserInputError: too few positive gaps or bad arguments.
    """
    values = _as_values(eigenvalues)
    fit = fit_power_law(values, k=k, alpha=alpha)
    selection, _ = _top_positive_quiet(values, k)
    gaps = selection[:-1] - selection[1:]
    index = np.arange(1, gaps.size + 1, dtype=np.float64)
    positive = gaps > 0
    if positive.sum() < MIN_POINTS:
        raise UserInputError(
            f"only {int(positive.sum())} positive eigengaps among the top {selection.size} "
            f"eigenvalues; need at least {MIN_POINTS}"
        )
    gap_fit = fit_power_law(gaps[positive], alpha=alpha)
    index_exponent = -float(_slopes(np.log(index[positive]), np.log(gaps[positive])))
    return EigengapFit(
        k=fit.k,
        s=fit.s,
        predicted_gap_exponent=fit.s + 1.0,
        gap_fit=gap_fit,
        index_exponent=index_exponent,
        n_zero_gaps=int((~positive).sum()),
    )
