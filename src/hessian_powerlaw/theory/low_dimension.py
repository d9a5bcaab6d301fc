r"""How much of the curvature and of the gradient the top eigenspace holds (low dimension)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from hessian_powerlaw._results import ResultMixin
from hessian_powerlaw.errors import UserInputError
from hessian_powerlaw.theory.subspaces import _as_basis

FloatArray = NDArray[np.float64]


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
