r"""The paper's theory made measurable: maximum entropy, eigengaps, robust low-dimensional subspace.

PAPER.md ("Theory") makes three claims; this module turns each into a number a user can compute.

Maximum entropy
    Maximising the spectral entropy plus ``beta`` times the volume entropy,

    .. math::  J[p] = -\int p \ln p \, d\lambda \;-\; \beta \int p \ln\lambda \, d\lambda,
               \qquad \int p \, d\lambda = 1,

    over densities on :math:`[\lambda_{min}, \lambda_{max}]` gives the power law
    :math:`p(\lambda) \propto \lambda^{-\beta}`. :func:`max_entropy_density` finds the maximiser
    *numerically* (Newton's method on the discretised functional; nothing in it assumes the
    answer) so that tests can compare it with the closed form. :func:`predicted_rank_law` is
    the rank law that a power-law density implies for its order statistics,
    :math:`\lambda_k / \lambda_1 = k^{-s}` with :math:`s = 1/(\beta - 1)`.

Eigengaps
    :math:`\delta_k = \lambda_k - \lambda_{k+1} \sim k^{-(s+1)}`: measured with
    :func:`hessian_powerlaw.powerlaw.eigengap_fit` and reported next to ``s + 1``.

Robust low-dimensional subspace
    Two Hessians of the same model on different data (two halves, two seeds, two nearby
    checkpoints) differ by ``E = H_B - H_A``. :func:`compare_operators` measures how far their
    top eigenvectors move and puts the measurement next to two bounds:

    * Davis-Kahan, in the variant of Yu, Wang and Samworth (2015, Biometrika 102, Cor. 1):
      for symmetric ``A`` and ``B = A + E`` with eigenvalues
      :math:`\lambda_1 \ge \lambda_2 \ge \dots` of ``A`` and unit eigenvectors
      :math:`a_i` of ``A``, :math:`b_i` of ``B``,

      .. math::  \sin\theta(a_i, b_i) \le
                 \frac{2 \|E\|_2}{\min(\lambda_{i-1} - \lambda_i,\; \lambda_i - \lambda_{i+1})},
                 \qquad \lambda_0 = +\infty .

      It needs no condition on the size of ``E``, and only the eigenvalues of ``A``. With the
      roles of ``A`` and ``B`` swapped (``E -> -E``, same norm) it holds with the gaps of ``B``
      too, so the reported bound is the smaller of the two.
    * The paper's power-law form :math:`2 \|E\|_2 (i+1)^{s+1} / \lambda_1`: Davis-Kahan with
      the gaps of an exact rank law, :math:`\lambda_i - \lambda_{i+1} =
      \lambda_1 (i^{-s} - (i+1)^{-s}) \ge s \lambda_1 (i+1)^{-(s+1)}`, without the factor
      ``1/s``. It is therefore a rigorous bound only for an exact power law with ``s >= 1``;
      on real spectra it is a prediction of the trend, and the report shows how it compares.

    For the top-``m`` subspaces the same theorem (Frobenius form, ``d = m``) gives
    :math:`\|\sin\Theta\|_F^2 = m (1 - \mathrm{overlap}_m) \le 4 m \|E\|_2^2 / \delta_m^2`, i.e.
    :math:`\mathrm{overlap}_m \ge 1 - 4 \|E\|_2^2 / (\lambda_m - \lambda_{m+1})^2`.

    ``||E||_2`` is measured by Lanczos on the difference operator (:class:`DifferenceOperator`).

Low dimension
    The fraction of the trace and of the gradient's squared norm in the top-``m`` eigenspace,
    and the effective dimension :math:`\sum_i \lambda_i / (\lambda_i + c)` (MacKay 1992).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from hessian_powerlaw._results import ResultMixin
from hessian_powerlaw.errors import UserInputError, check_int
from hessian_powerlaw.options import AnalysisOptions

if TYPE_CHECKING:  # torch and matplotlib are imported where used, so numpy users stay light
    import torch
    from matplotlib.figure import Figure

__all__ = [
    "DifferenceOperator",
    "LowDimension",
    "MaxEntropyDensity",
    "NormEstimate",
    "SubspaceOverlap",
    "SubspaceStability",
    "compare_operators",
    "davis_kahan_bounds",
    "effective_dimension",
    "eigenvector_angles",
    "low_dimension_curves",
    "max_entropy_density",
    "overlap_curve",
    "overlap_lower_bounds",
    "power_law_bounds",
    "power_law_density",
    "predicted_rank_law",
    "spectral_norm",
    "split_batches",
    "subspace_figure",
    "subspace_overlap",
    "subspace_stability",
]

FloatArray = NDArray[np.float64]

#: splits accepted by :func:`subspace_stability` besides an explicit pair of batch lists
SPLITS = ("halves", "seeds")
#: :func:`subspace_stability`'s defaults where they differ from :class:`AnalysisOptions`'s.
SUBSPACE_DEFAULTS: dict[str, Any] = {"trace_matvecs": 99}


# ============================================================================================
# Maximum entropy
# ============================================================================================


@dataclass(frozen=True)
class MaxEntropyDensity(ResultMixin):
    r"""The numerical maximiser of :math:`J[p]` on a grid, next to the closed-form power law.

    Attributes:
        beta, lambda_min, lambda_max: the problem.
        grid: the log-spaced grid of :math:`\lambda` values (``grid_size`` points).
        density: the numerical maximiser :math:`p_i` (normalised with the trapezoid rule).
        power_law: the closed form :math:`\lambda^{-\beta} / Z` on the grid, with the exact
            continuous normaliser ``Z`` (not the grid's), for comparison.
        max_relative_error: :math:`\max_i |p_i / p^{pl}_i - 1|` (quadrature error, ``O(h^2)``).
        fitted_exponent: least-squares slope of :math:`\ln p` on :math:`\ln\lambda`; the
            closed form says ``-beta``.
        objective: :math:`J` at the maximiser; the closed form says :math:`\ln Z`.
        log_normaliser: :math:`\ln Z` of the closed form.
        entropy: the spectral entropy :math:`-\int p \ln p` of the maximiser.
        stationarity: the KKT residual :math:`\max_i |\partial J / \partial p_i - \nu|` (with
            ``nu`` the normalisation multiplier), 0 at the exact discrete maximiser.
        iterations: Newton iterations used; ``converged``: stationarity below ``tol``.
    """

    beta: float
    lambda_min: float
    lambda_max: float
    grid: FloatArray
    density: FloatArray
    power_law: FloatArray
    max_relative_error: float
    fitted_exponent: float
    objective: float
    log_normaliser: float
    entropy: float
    stationarity: float
    iterations: int
    converged: bool

    _skip_in_dict = ("grid", "density", "power_law")

    def rank_law(self, num_eigenvalues: int) -> FloatArray:
        r"""``lambda_k / lambda_1`` for ``k = 1..K`` read off the *numerical* density.

        ``K`` eigenvalues drawn from the density have the ``k``-th largest near the point
        whose survival probability is ``k / K``: :math:`S(\lambda_k) = k/K` with
        :math:`S(x) = \int_x^{\lambda_{max}} p`. The survival function is integrated on the
        grid (trapezoid rule) and inverted by interpolation in :math:`\ln\lambda`. For a
        power law far from ``lambda_max`` this is :func:`predicted_rank_law`.
        """
        K = check_int(num_eigenvalues, "num_eigenvalues", 1)
        lam, p = self.grid, self.density
        pieces = 0.5 * (p[1:] + p[:-1]) * np.diff(lam)
        survival = np.concatenate([np.cumsum(pieces[::-1])[::-1], [0.0]])
        survival = survival / survival[0]
        targets = np.arange(1, K + 1, dtype=np.float64) / K
        # survival decreases along the grid; np.interp needs increasing abscissae
        log_lam = np.interp(targets, survival[::-1], np.log(lam)[::-1])
        values = np.exp(log_lam)
        return values / values[0]


def power_law_density(
    beta: float, lambda_min: float, lambda_max: float, x: ArrayLike
) -> FloatArray:
    r"""The closed form :math:`\lambda^{-\beta} / Z` on :math:`[\lambda_{min}, \lambda_{max}]`.

    :math:`Z = (\lambda_{max}^{1-\beta} - \lambda_{min}^{1-\beta}) / (1 - \beta)`, or
    :math:`\ln(\lambda_{max}/\lambda_{min})` for ``beta = 1``.
    """
    beta, a, b = _check_interval(beta, lambda_min, lambda_max)
    return np.asarray(x, dtype=np.float64) ** (-beta) / math.exp(_log_normaliser(beta, a, b))


def _log_normaliser(beta: float, a: float, b: float) -> float:
    """``ln Z`` of the power law on [a, b], computed stably in log space."""
    if abs(beta - 1.0) < 1e-12:
        return math.log(math.log(b / a))
    e = 1.0 - beta  # Z = (b^e - a^e)/e = b^e (1 - (a/b)^e) / e, etc.
    if e > 0:
        return e * math.log(b) + math.log(-math.expm1(e * math.log(a / b))) - math.log(e)
    return e * math.log(a) + math.log(-math.expm1(e * math.log(b / a))) - math.log(-e)


def _check_interval(
    beta: float, lambda_min: float, lambda_max: float
) -> tuple[float, float, float]:
    values = {"beta": beta, "lambda_min": lambda_min, "lambda_max": lambda_max}
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
            raise UserInputError(f"{name} must be a number, got {value!r}")
        if not math.isfinite(float(value)):
            raise UserInputError(f"{name} must be finite, got {value!r}")
    if not 0 < lambda_min < lambda_max:
        raise UserInputError(
            f"need 0 < lambda_min < lambda_max, got lambda_min={lambda_min!r}, "
            f"lambda_max={lambda_max!r}; pass the smallest and largest eigenvalue of the range"
        )
    return float(beta), float(lambda_min), float(lambda_max)


def _trapezoid_weights(x: FloatArray) -> FloatArray:
    """Weights ``w`` with ``sum(w f(x)) = trapezoid rule of f`` on the (non-uniform) grid."""
    h = np.diff(x)
    w = np.zeros_like(x)
    w[:-1] += h / 2
    w[1:] += h / 2
    return w


def max_entropy_density(
    beta: float,
    lambda_min: float,
    lambda_max: float,
    grid_size: int = 4096,
    tol: float = 1e-10,
    max_iterations: int = 200,
) -> MaxEntropyDensity:
    r"""Maximise :math:`J[p] = -\int p\ln p - \beta\int p\ln\lambda` with :math:`\int p = 1`.

    The density is discretised on a log-spaced grid :math:`\lambda_1 < \dots < \lambda_N` with
    trapezoid weights :math:`w_i`, and the unknowns are the masses :math:`m_i = w_i p_i`:

    .. math::  \min_m f(m) = \sum_i m_i \left(\ln\frac{m_i}{w_i} + \beta\ln\lambda_i\right)
               \quad\text{s.t.}\quad \sum_i m_i = 1,\; m_i > 0 ,

    which is :math:`-J` discretised. ``f`` is strictly convex (Hessian
    :math:`\mathrm{diag}(1/m)`), so its stationary point is the unique maximiser of ``J``.
    It is found by the equality-constrained Newton method (Boyd and Vandenberghe, *Convex
    Optimization*, Alg. 10.1) started from the *uniform* density: with diagonal Hessian the
    KKT system has the closed-form solution :math:`\Delta = -m \odot (g + \nu)`,
    :math:`\nu = -\langle m, g\rangle / \sum m`, and a backtracking line search keeps the
    masses positive. Newton is affine-invariant, so masses spread over many decades (a
    steep power law over a wide range) do not slow it down, as they do first-order methods.
    Iteration stops when the KKT residual :math:`\max_i |g_i + \nu|` is below ``tol``.

    Nothing here assumes the form of the answer; the result carries the closed-form power law
    and the discrepancy so that the claim "maximum entropy gives the power law" is checked,
    not presumed. ``beta`` may be any real number (``beta <= 1`` gives a density that is not
    a heavy tail but is still the maximiser).
    """
    beta, a, b = _check_interval(beta, lambda_min, lambda_max)
    n = check_int(grid_size, "grid_size", 16)
    if not 0 < tol < 1:
        raise UserInputError(f"tol must be in (0, 1), got {tol!r}")
    iterations_cap = check_int(max_iterations, "max_iterations", 1)
    lam = np.geomspace(a, b, n)
    w = _trapezoid_weights(lam)
    cost = beta * np.log(lam) - np.log(w)  # f(m) = sum m (ln m + cost)
    masses, iterations, residual = _entropy_newton(cost, w / w.sum(), tol, iterations_cap)
    density = masses / w
    closed = power_law_density(beta, a, b, lam)
    log_p = np.log(density)
    log_lam = np.log(lam)
    slope = np.polyfit(log_lam, log_p, 1)[0]
    entropy = -float(np.sum(masses * log_p))
    return MaxEntropyDensity(
        beta=beta,
        lambda_min=a,
        lambda_max=b,
        grid=lam,
        density=density,
        power_law=closed,
        max_relative_error=float(np.max(np.abs(density / closed - 1.0))),
        fitted_exponent=float(slope),
        objective=entropy - beta * float(np.sum(masses * log_lam)),
        log_normaliser=_log_normaliser(beta, a, b),
        entropy=entropy,
        stationarity=residual,
        iterations=iterations,
        converged=bool(residual <= tol),
    )


def _entropy_newton(
    cost: FloatArray, start: FloatArray, tol: float, max_iterations: int
) -> tuple[FloatArray, int, float]:
    """Minimise ``sum m (ln m + cost)`` over the simplex by constrained Newton from ``start``.

    Returns the masses, the iterations used and the final KKT residual ``max |g + nu|``.
    """
    m = start.copy()

    def f(x: FloatArray) -> float:
        return float(np.sum(x * (np.log(x) + cost)))

    residual = math.inf
    for iteration in range(max_iterations + 1):
        g = np.log(m) + 1.0 + cost
        nu = -float(m @ g) / float(m.sum())  # multiplier that keeps sum(m) fixed
        kkt = g + nu
        residual = float(np.max(np.abs(kkt)))
        if residual <= tol or iteration == max_iterations:
            return m, iteration, residual
        step = -m * kkt  # the Newton direction: -H^{-1} (g + nu) with H = diag(1/m)
        decrement = -float(g @ step)  # Newton decrement squared, > 0 away from the optimum
        t = 1.0
        shrinking = step < 0
        if np.any(shrinking):  # stay strictly inside the positive orthant
            t = min(1.0, 0.99 * float(np.min(m[shrinking] / -step[shrinking])))
        f0 = f(m)
        trial = m
        while t > 1e-12:
            trial = m + t * step
            if np.all(trial > 0) and f(trial) <= f0 - 0.25 * t * decrement:
                break
            t *= 0.5
        m = trial / trial.sum()  # remove rounding drift from the constraint
    return m, max_iterations, residual  # pragma: no cover - the loop always returns


def predicted_rank_law(beta: float, k: int) -> FloatArray:
    r"""``lambda_i / lambda_1 = i^(-s)`` for ``i = 1..k``, with ``s = 1/(beta - 1)``.

    For ``K`` samples of :math:`p \propto \lambda^{-\beta}` (``beta > 1``, no upper cutoff)
    the survival function is :math:`S(x) = (x/\lambda_{min})^{1-\beta}`, and the ``i``-th
    largest sample sits near :math:`S(\lambda_i) = i/K`, i.e.
    :math:`\lambda_i \propto i^{-1/(\beta-1)}`: the ratio to :math:`\lambda_1` does not depend
    on ``K`` or :math:`\lambda_{min}`.
    """
    if isinstance(beta, bool) or not isinstance(beta, (int, float, np.floating, np.integer)):
        raise UserInputError(f"beta must be a number, got {beta!r}")
    if not (math.isfinite(beta) and beta > 1):
        raise UserInputError(
            f"beta must be a finite number > 1 for a rank law (s = 1/(beta-1)), got {beta!r}"
        )
    count = check_int(k, "k", 1)
    s = 1.0 / (float(beta) - 1.0)
    return np.arange(1, count + 1, dtype=np.float64) ** (-s)


# ============================================================================================
# Subspaces, angles and overlaps
# ============================================================================================


@dataclass(frozen=True)
class SubspaceOverlap(ResultMixin):
    r"""Principal angles between two subspaces and their overlap.

    ``principal_angles`` (radians, ascending) are :math:`\arccos\sigma_j` for the singular
    values :math:`\sigma_j` of :math:`Q_U^T Q_V` (orthonormal bases); ``overlap`` is
    :math:`\|Q_U^T Q_V\|_F^2 / k = \sum_j \cos^2\theta_j / k` with ``k`` the smaller dimension:
    1 for identical (or nested) subspaces, about ``k/n`` for random ones.
    """

    k: int
    principal_angles: FloatArray
    cosines: FloatArray
    overlap: float


def _as_basis(U: Any, name: str) -> FloatArray:
    """A float64 ``(n, k)`` array from a numpy array or tensor; a vector becomes one column."""
    if hasattr(U, "detach"):
        U = U.detach().cpu().numpy()
    arr = np.asarray(U, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2 or arr.shape[1] < 1 or arr.shape[0] < arr.shape[1]:
        raise UserInputError(
            f"{name} must be an (n, k) array of k <= n column vectors, got shape {arr.shape}"
        )
    if not np.all(np.isfinite(arr)):
        raise UserInputError(f"{name} has NaN or infinite entries")
    return arr


def _orthonormal(U: FloatArray, name: str) -> FloatArray:
    Q, R = np.linalg.qr(U)
    diag = np.abs(np.diag(R))
    if diag.min() <= 1e-12 * max(diag.max(), 1e-300):
        raise UserInputError(f"the columns of {name} are linearly dependent; pass a basis")
    return Q


def subspace_overlap(U: Any, V: Any) -> SubspaceOverlap:
    """Principal angles and overlap between ``span(U)`` and ``span(V)`` (columns; any basis)."""
    A = _as_basis(U, "U")
    B = _as_basis(V, "V")
    if A.shape[0] != B.shape[0]:
        raise UserInputError(f"U and V need the same number of rows, got {A.shape} and {B.shape}")
    Qa, Qb = _orthonormal(A, "U"), _orthonormal(B, "V")
    sigma = np.clip(np.linalg.svd(Qa.T @ Qb, compute_uv=False), 0.0, 1.0)
    k = int(min(A.shape[1], B.shape[1]))
    sigma = np.sort(sigma)[::-1][:k]
    return SubspaceOverlap(
        k=k,
        principal_angles=np.arccos(sigma),
        cosines=sigma,
        overlap=float(np.sum(sigma**2) / k),
    )


def overlap_curve(U: Any, V: Any) -> FloatArray:
    r"""``overlap_m = ||U_m^T V_m||_F^2 / m`` for the leading ``m = 1..k`` columns.

    ``U`` and ``V`` must have orthonormal columns already (eigenvectors); the cumulative sums
    of :math:`C = U^T V` give all ``k`` values from one ``k x k`` product.
    """
    A = _as_basis(U, "U")
    B = _as_basis(V, "V")
    if A.shape != B.shape:
        raise UserInputError(f"U and V need the same shape, got {A.shape} and {B.shape}")
    C2 = (A.T @ B) ** 2
    cumulative = np.cumsum(np.cumsum(C2, axis=0), axis=1)  # [m-1, m-1] = sum of the m x m block
    m = np.arange(1, A.shape[1] + 1, dtype=np.float64)
    return np.clip(np.diagonal(cumulative) / m, 0.0, 1.0)


def eigenvector_angles(U: Any, V: Any) -> FloatArray:
    r"""Angles :math:`\arccos|u_i^T v_i| / (\|u_i\| \|v_i\|)` between matching columns (radians).

    Eigenvectors are defined up to sign, so the angle lies in :math:`[0, \pi/2]`.
    """
    A = _as_basis(U, "U")
    B = _as_basis(V, "V")
    if A.shape != B.shape:
        raise UserInputError(f"U and V need the same shape, got {A.shape} and {B.shape}")
    cos = np.abs(np.sum(A * B, axis=0)) / (np.linalg.norm(A, axis=0) * np.linalg.norm(B, axis=0))
    return np.arccos(np.clip(cos, 0.0, 1.0))


# ============================================================================================
# Bounds
# ============================================================================================


def _descending(eigenvalues: ArrayLike, name: str = "eigenvalues") -> FloatArray:
    values = np.asarray(eigenvalues, dtype=np.float64).reshape(-1)
    if values.size < 2:
        raise UserInputError(f"{name}: need at least 2 eigenvalues (k + 1 for k bounds)")
    if not np.all(np.isfinite(values)):
        raise UserInputError(f"{name} has NaN or infinite values")
    return np.sort(values)[::-1]


def _check_norm(e_norm: float) -> float:
    if not (isinstance(e_norm, (int, float, np.floating)) and math.isfinite(e_norm)):
        raise UserInputError(f"e_norm must be a finite number, got {e_norm!r}")
    if e_norm < 0:
        raise UserInputError(f"e_norm is a norm and must be >= 0, got {e_norm!r}")
    return float(e_norm)


def davis_kahan_bounds(eigenvalues: ArrayLike, e_norm: float) -> FloatArray:
    r"""Per-eigenvector Davis-Kahan bounds from measured eigenvalues (Yu, Wang, Samworth 2015).

    Given the top ``k + 1`` eigenvalues :math:`\lambda_1 \ge \dots \ge \lambda_{k+1}` of ``A``
    and :math:`\|E\|_2`, returns for ``i = 1..k``

    .. math::  \frac{2\|E\|_2}{\min(\lambda_{i-1} - \lambda_i,\; \lambda_i - \lambda_{i+1})},
               \qquad \lambda_0 = +\infty,

    which bounds :math:`\sin\theta(a_i, b_i)` for the eigenvectors of ``A`` and ``A + E``.
    A zero gap gives ``inf`` (no bound). The bound is not clipped at 1.
    """
    lam = _descending(eigenvalues)
    norm = _check_norm(e_norm)
    gaps = lam[:-1] - lam[1:]  # gaps[i] = lambda_{i+1} - lambda_{i+2} (0-based i)
    below = gaps  # lambda_i - lambda_{i+1} for i = 1..k
    above = np.concatenate([[np.inf], gaps[:-1]])  # lambda_{i-1} - lambda_i, lambda_0 = +inf
    smallest = np.minimum(above, below)
    with np.errstate(divide="ignore"):
        return np.where(smallest > 0, 2.0 * norm / np.where(smallest > 0, smallest, 1.0), np.inf)


def overlap_lower_bounds(eigenvalues: ArrayLike, e_norm: float) -> FloatArray:
    r"""Lower bounds of the top-``m`` overlap, ``m = 1..k``, from the top ``k + 1`` eigenvalues.

    Yu-Wang-Samworth (Thm. 2) with ``r = 1, s = m``: :math:`\|\sin\Theta\|_F \le
    2\sqrt{m}\|E\|_2 / (\lambda_m - \lambda_{m+1})`, and
    :math:`\|\sin\Theta\|_F^2 = m (1 - \mathrm{overlap}_m)`, so
    :math:`\mathrm{overlap}_m \ge 1 - 4\|E\|_2^2 / (\lambda_m - \lambda_{m+1})^2` (floored at 0).
    """
    lam = _descending(eigenvalues)
    norm = _check_norm(e_norm)
    gaps = lam[:-1] - lam[1:]
    with np.errstate(divide="ignore", invalid="ignore"):
        bound = 1.0 - 4.0 * norm**2 / gaps**2
    return np.where(gaps > 0, np.maximum(bound, 0.0), 0.0)


def power_law_bounds(lambda_1: float, s: float, e_norm: float, k: int) -> FloatArray:
    r"""The paper's form :math:`2\|E\|_2 (i+1)^{s+1} / \lambda_1` for ``i = 1..k``.

    Davis-Kahan with the gaps of an exact rank law :math:`\lambda_i = \lambda_1 i^{-s}`, whose
    gaps satisfy :math:`\lambda_i - \lambda_{i+1} \ge s\lambda_1 (i+1)^{-(s+1)}`; the paper
    drops the ``1/s``, so this is a bound for an exact power law with ``s >= 1`` and a
    prediction of the trend otherwise.
    """
    norm = _check_norm(e_norm)
    count = check_int(k, "k", 1)
    if not (math.isfinite(lambda_1) and lambda_1 > 0):
        raise UserInputError(f"lambda_1 must be a positive number, got {lambda_1!r}")
    if not (math.isfinite(s) and s > 0):
        raise UserInputError(f"s must be a positive number, got {s!r}")
    i = np.arange(1, count + 1, dtype=np.float64)
    return 2.0 * norm * (i + 1.0) ** (s + 1.0) / lambda_1


# ============================================================================================
# The difference operator and its norm
# ============================================================================================


class DifferenceOperator:
    """``E = B - A`` as an operator: ``matmat(V) = B.matmat(V) - A.matmat(V)``.

    Both operators must have the same ``n``, ``dtype`` and ``device``. ``num_matvecs`` counts
    columns of ``E`` (each costs one product with ``A`` and one with ``B``).
    """

    def __init__(self, A: Any, B: Any) -> None:
        for name, op in (("A", A), ("B", B)):
            if not all(hasattr(op, attr) for attr in ("n", "dtype", "device", "matmat")):
                raise UserInputError(
                    f"operator {name} needs n, dtype, device and matmat (e.g. HessianOperator)"
                )
        if int(A.n) != int(B.n):
            raise UserInputError(
                f"the two operators differ in size (n = {A.n} and {B.n}); build both Hessians "
                "over the same parameters"
            )
        if A.dtype != B.dtype or str(A.device) != str(B.device):
            raise UserInputError(
                f"the two operators need the same dtype and device, got {A.dtype}/{A.device} "
                f"and {B.dtype}/{B.device}"
            )
        self.A = A
        self.B = B
        self.n = int(A.n)
        self.dtype = A.dtype
        self.device = A.device
        self.num_matvecs = 0

    def matmat(self, V: torch.Tensor) -> torch.Tensor:
        self.num_matvecs += int(V.shape[1])
        return self.B.matmat(V) - self.A.matmat(V)

    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        return self.matmat(v[:, None])[:, 0]

    def __repr__(self) -> str:
        return f"DifferenceOperator(n={self.n}, B={self.B!r}, A={self.A!r})"


@dataclass(frozen=True)
class NormEstimate(ResultMixin):
    r"""``||E||_2`` by Lanczos: the extreme eigenvalues of the symmetric ``E``.

    ``value`` is :math:`\max(|\theta_{max}|, |\theta_{min}|) + r` with ``r`` the absolute
    residual of that Ritz pair: a Ritz value lies inside the spectrum, so adding the residual
    (Kahan's bound on the distance to the nearest eigenvalue) errs on the safe side for the
    bounds that use it. ``ritz_value`` is the plain Lanczos estimate.
    """

    value: float
    ritz_value: float
    largest: float
    smallest: float
    residual: float
    converged: bool
    num_matvecs: int
    seconds: float


def spectral_norm(
    op: Any,
    tol: float = 1e-4,
    seed: int = 0,
    max_matvecs: int | None = None,
    progress: bool = False,
) -> NormEstimate:
    """``||op||_2`` of a symmetric operator by block Lanczos (largest and smallest eigenvalue).

    ``tol`` is the relative residual of the two extreme Ritz pairs; the Ritz values converge
    quadratically in it, so 1e-4 gives the norm to about 1e-8 relative.
    """
    from hessian_powerlaw.solvers import top_eigenpairs

    start = time.perf_counter()
    if int(op.n) == 1:
        value = float(op.matmat(_ones_like_op(op))[0, 0])
        return NormEstimate(abs(value), abs(value), value, value, 0.0, True, 1, 0.0)
    spec = top_eigenpairs(
        op,
        k=2,
        tol=tol,
        which="both",
        seed=seed,
        max_matvecs=max_matvecs,
        progress=progress,
        criterion="norm",
    )
    largest, smallest = float(spec.eigenvalues[0]), float(spec.eigenvalues[-1])
    pick = 0 if abs(largest) >= abs(smallest) else -1
    ritz = abs(float(spec.eigenvalues[pick]))
    residual = float(spec.residuals[pick]) * float(spec.scale)
    return NormEstimate(
        value=ritz + residual,
        ritz_value=ritz,
        largest=largest,
        smallest=smallest,
        residual=residual,
        converged=bool(np.all(spec.converged)),
        num_matvecs=int(spec.num_matvecs),
        seconds=time.perf_counter() - start,
    )


def _ones_like_op(op: Any) -> torch.Tensor:
    import torch

    return torch.ones((int(op.n), 1), dtype=op.dtype, device=op.device)


# ============================================================================================
# Low dimension
# ============================================================================================


@dataclass(frozen=True)
class LowDimension(ResultMixin):
    r"""How much of the curvature and of the gradient the top-``m`` eigenspace holds.

    Attributes:
        trace: :math:`\mathrm{tr}(H)` used (exact or a Hutch++ estimate, see ``trace_std_error``).
        trace_fraction: :math:`\sum_{i \le m}\lambda_i / \mathrm{tr}(H)` for ``m = 1..k``.
            Negative eigenvalues outside the top ``k`` can make it exceed 1.
        gradient_norm_sq: :math:`\|g\|^2`, or None when no gradient was given.
        gradient_fraction: :math:`\sum_{i \le m} (u_i^T g)^2 / \|g\|^2` (None without ``g``).
        effective_dimension: :math:`\sum_{i \le k} \lambda_i^+ / (\lambda_i^+ + c)` for each
            ``c`` in ``c_values`` (``lambda^+ = max(lambda, 0)``). Only the top ``k`` terms
            are summed, so it is a lower bound of the full sum.
    """

    trace: float | None
    trace_std_error: float | None
    trace_fraction: FloatArray | None
    gradient_norm_sq: float | None
    gradient_fraction: FloatArray | None
    c_values: FloatArray
    effective_dimension: FloatArray


def effective_dimension(eigenvalues: ArrayLike, c: float) -> float:
    r""":math:`\sum_i \lambda_i^+ / (\lambda_i^+ + c)` for ``c > 0`` (MacKay's effective dimension).

    Directions with curvature well above ``c`` count 1, those well below count 0.
    """
    if not (isinstance(c, (int, float, np.floating)) and math.isfinite(c) and c > 0):
        raise UserInputError(f"c must be a positive number, got {c!r}")
    lam = np.maximum(np.asarray(eigenvalues, dtype=np.float64), 0.0)
    return float(np.sum(lam / (lam + c)))


def low_dimension_curves(
    eigenvalues: ArrayLike,
    eigenvectors: Any = None,
    trace: float | None = None,
    gradient: Any = None,
    c_values: Sequence[float] | None = None,
    trace_std_error: float | None = None,
) -> LowDimension:
    """Trace and gradient fractions captured by the top-``m`` eigenspace, and N_eff(c).

    ``eigenvectors`` (``(n, k)``, orthonormal) are needed only with ``gradient``. The default
    ``c_values`` are ``lambda_1 * (1e-1, 1e-2, 1e-3)``.
    """
    lam = np.asarray(eigenvalues, dtype=np.float64).reshape(-1)
    if lam.size < 1 or not np.all(np.isfinite(lam)):
        raise UserInputError("eigenvalues must be a non-empty array of finite numbers")
    fraction = None
    if trace is not None:
        if not (math.isfinite(trace) and trace != 0):
            raise UserInputError(f"trace must be a finite non-zero number, got {trace!r}")
        fraction = np.cumsum(lam) / float(trace)
    grad_sq, grad_fraction = None, None
    if gradient is not None:
        if eigenvectors is None:
            raise UserInputError("the gradient fraction needs the eigenvectors too")
        U = _as_basis(eigenvectors, "eigenvectors")
        g = np.asarray(
            gradient.detach().cpu().numpy() if hasattr(gradient, "detach") else gradient,
            dtype=np.float64,
        ).reshape(-1)
        if g.shape[0] != U.shape[0] or U.shape[1] != lam.size:
            raise UserInputError(
                f"gradient of length {g.shape[0]} and eigenvectors {U.shape} do not match "
                f"{lam.size} eigenvalues"
            )
        grad_sq = float(g @ g)
        if grad_sq > 0:
            grad_fraction = np.cumsum((U.T @ g) ** 2) / grad_sq
    if c_values is None:
        top = float(np.max(lam))
        c_values = [top * f for f in (1e-1, 1e-2, 1e-3)] if top > 0 else [1.0]
    cs = np.asarray([float(c) for c in c_values], dtype=np.float64)
    return LowDimension(
        trace=None if trace is None else float(trace),
        trace_std_error=trace_std_error,
        trace_fraction=fraction,
        gradient_norm_sq=grad_sq,
        gradient_fraction=grad_fraction,
        c_values=cs,
        effective_dimension=np.asarray([effective_dimension(lam, float(c)) for c in cs]),
    )


# ============================================================================================
# Subspace stability
# ============================================================================================


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
    op_a: Any,
    op_b: Any,
    k: int,
    *,
    tol: float | None = None,
    seed: int = 0,
    max_matvecs: int | None = None,
    norm_tol: float = 1e-4,
    trace: Any = None,
    gradient: Any = None,
    c_values: Sequence[float] | None = None,
    alpha: float = 0.05,
    split: str = "A vs B",
    progress: bool = False,
) -> SubspaceStability:
    """Measure how the top-``k`` eigenvectors move from ``op_a`` to ``op_b``, with bounds.

    Computes the top ``k + 1`` eigenpairs of both operators (block Lanczos, relative
    residual ``tol``), ``||op_b - op_a||_2`` by Lanczos on :class:`DifferenceOperator`, then the
    per-index angles, the top-``m`` overlaps, the Davis-Kahan and power-law bounds, the
    eigengap fit and, when ``trace`` (a number or a ``TraceEstimate``) and/or ``gradient``
    (of the loss behind ``op_a``) are given, the low-dimension curves for ``op_a``.
    """
    from hessian_powerlaw.solvers import top_eigenpairs

    count = check_int(k, "k", 1)
    n = int(op_a.n)
    if count + 1 > n:
        raise UserInputError(f"k must be below n = {n} (k + 1 eigenpairs are needed), got {k}")
    start = time.perf_counter()
    diff = DifferenceOperator(op_a, op_b)  # validates that the two operators match
    # eigenvectors, not only eigenvalues, are compared: residuals relative to |lambda_1|
    options = dict(tol=tol, seed=seed, max_matvecs=max_matvecs, progress=progress, criterion="norm")
    spec_a = top_eigenpairs(op_a, count + 1, return_vectors=True, **options)
    spec_b = top_eigenpairs(op_b, count + 1, return_vectors=True, **options)
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


# ============================================================================================
# From a model and its data
# ============================================================================================


def _take(batch: Any, index: Any) -> Any:
    """Rows ``index`` of every tensor in a batch (tuple/list, dict or a single tensor)."""
    if isinstance(batch, dict):
        return {key: value[index] for key, value in batch.items()}
    if isinstance(batch, (tuple, list)):
        return type(batch)(t[index] for t in batch)
    return batch[index]


def _batch_len(batch: Any) -> int:
    first = next(iter(batch.values())) if isinstance(batch, dict) else batch
    if isinstance(first, (tuple, list)):
        first = first[0]
    return int(first.shape[0])


def split_batches(batches: Sequence[Any]) -> tuple[list[Any], list[Any]]:
    """Two disjoint halves of a list of batches.

    Two or more batches: the even- and odd-numbered batches. One batch: its even- and
    odd-numbered samples (interleaving keeps both halves alike when the data are sorted,
    e.g. by class or writer).
    """
    batches = list(batches)
    if len(batches) >= 2:
        return batches[0::2], batches[1::2]
    if len(batches) == 1:
        (batch,) = batches
        if _batch_len(batch) < 2:
            raise UserInputError("one batch of one sample cannot be split into halves")
        return [_take(batch, slice(0, None, 2))], [_take(batch, slice(1, None, 2))]
    raise UserInputError("no batches to split; pass data with at least two samples")


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
    loss: Any,
    data: Any,
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
        chosen.k,
        tol=chosen.tol,
        seed=chosen.seed,
        max_matvecs=chosen.max_matvecs,
        trace=trace,
        gradient=op_a.gradient(),
        c_values=c_values,
        alpha=chosen.alpha,
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


# ============================================================================================
# Figure
# ============================================================================================


def subspace_figure(result: SubspaceStability | dict[str, Any]) -> Figure:
    """Two panels: sin(angle) per index with both bounds; top-m overlap with its lower bound.

    Takes the result or its ``to_dict()``; built without pyplot (no global state).
    """
    from matplotlib.figure import Figure

    get = result.get if isinstance(result, dict) else lambda name: getattr(result, name)
    sines = np.asarray(get("sin_angles"), dtype=np.float64)
    dk = np.asarray(_nan_for_none(get("davis_kahan_bound")), dtype=np.float64)
    pl = np.asarray(_nan_for_none(get("power_law_bound")), dtype=np.float64)
    overlap = np.asarray(get("overlap"), dtype=np.float64)
    lower = np.asarray(get("overlap_lower_bound"), dtype=np.float64)
    index = np.arange(1, sines.size + 1)

    fig = Figure(figsize=(11.0, 4.2), layout="constrained")
    ax1, ax2 = fig.subplots(1, 2)
    floor = max(float(np.min(sines[sines > 0])) / 2 if np.any(sines > 0) else 1e-6, 1e-12)
    ax1.semilogy(index, np.maximum(sines, floor), "o-", ms=3, label=r"measured $\sin\theta_i$")
    ax1.semilogy(index, dk, "--", label="Davis-Kahan bound (measured gaps)")
    if np.any(np.isfinite(pl)):
        ax1.semilogy(index, pl, ":", label=r"paper: $2\|E\|(i+1)^{s+1}/\lambda_1$")
    ax1.axhline(1.0, color="0.6", lw=0.8)
    top = max(10.0, float(np.nanmax(np.where(np.isfinite(dk), dk, np.nan), initial=1.0)))
    ax1.set_ylim(floor / 2, min(top * 2, 1e6))
    ax1.set_xlabel("eigenvector index i")
    ax1.set_ylabel(r"$\sin\theta(a_i, b_i)$")
    ax1.set_title("eigenvector angles between the two Hessians")
    ax1.legend(fontsize=8)
    m = np.arange(1, overlap.size + 1)
    ax2.plot(m, overlap, "o-", ms=3, label=r"overlap $\|U_m^T V_m\|_F^2/m$")
    ax2.plot(m, lower, "--", label="Davis-Kahan lower bound")
    ax2.set_ylim(-0.02, 1.02)
    ax2.set_xlabel("subspace dimension m")
    ax2.set_ylabel("overlap of the top-m subspaces")
    ax2.set_title("top-m subspace overlap")
    ax2.legend(fontsize=8)
    return fig


def _nan_for_none(values: Any) -> list[float]:
    return [math.nan if v is None else float(v) for v in values]
