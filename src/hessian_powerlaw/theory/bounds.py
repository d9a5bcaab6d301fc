r"""Davis-Kahan bounds (Yu, Wang and Samworth 2015) and the paper's power-law form of them."""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike, NDArray

from hessian_powerlaw.errors import UserInputError, check_int

FloatArray = NDArray[np.float64]


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
