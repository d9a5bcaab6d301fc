r"""Maximum entropy: the numerical maximiser of the paper's functional, and the rank law.

Maximising the spectral entropy plus ``beta`` times the volume entropy over densities on
:math:`[\lambda_{min}, \lambda_{max}]` gives the power law :math:`p \propto \lambda^{-\beta}`
(the paper's "Theory", Tang et al., ICML 2025); :func:`max_entropy_density` finds the
maximiser numerically so that the claim is checked, not presumed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from hessian_powerlaw._results import ResultMixin
from hessian_powerlaw.errors import UserInputError, check_int

FloatArray = NDArray[np.float64]


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
