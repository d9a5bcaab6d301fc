r"""Principal angles, overlaps and angles between matching eigenvectors of two subspaces."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from hessian_powerlaw._results import ResultMixin
from hessian_powerlaw.errors import UserInputError

FloatArray = NDArray[np.float64]


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
    """Principal angles and overlap between ``span(U)`` and ``span(V)``.

    Args:
        U: an ``(n, k)`` array or tensor whose columns span one subspace (any basis).
        V: an ``(n, m)`` array or tensor for the other.

    Returns:
        The :class:`SubspaceOverlap`.

    Raises:
        UserInputError: shapes that do not match, or columns that are not a basis.
    """
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
