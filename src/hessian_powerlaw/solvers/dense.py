"""Exact eigenpairs of a small operator: build H column by column, then ``eigh``."""

from __future__ import annotations

import numpy as np
import torch

from hessian_powerlaw.errors import UserInputError
from hessian_powerlaw.operators import as_operator
from hessian_powerlaw.protocols import OperatorLike
from hessian_powerlaw.solvers._spectrum import Spectrum
from hessian_powerlaw.solvers._usage import OperatorUsage

__all__ = ["DENSE_MAX_N", "dense_eigenpairs", "dense_matrix"]

#: Largest dimension ``dense_eigenpairs`` accepts: a float64 matrix of this size takes 3.2 GB
#: and ``eigh`` on it minutes; beyond it use ``top_eigenpairs``.
DENSE_MAX_N = 20_000


def dense_matrix(op: OperatorLike, block_size: int = 64, max_n: int = DENSE_MAX_N) -> torch.Tensor:
    """The explicit matrix ``H = op @ I`` in float64, built ``block_size`` columns at a time.

    The result is symmetrized, ``(H + H^T) / 2``, which removes the rounding asymmetry of
    Hessian-vector products without changing the exact matrix.
    """
    op = as_operator(op)
    n = int(op.n)
    if n > max_n:
        raise UserInputError(
            f"dense_eigenpairs refuses n = {n:,} > {max_n:,} (memory O(n^2), time O(n^3)); "
            "use top_eigenpairs, or select fewer parameters with params=..."
        )
    if block_size < 1:
        raise UserInputError(f"block_size must be >= 1, got {block_size}")
    H = torch.empty((n, n), dtype=torch.float64)
    for start in range(0, n, block_size):
        stop = min(start + block_size, n)
        E = torch.zeros((n, stop - start), dtype=op.dtype, device=op.device)
        E[torch.arange(start, stop), torch.arange(stop - start)] = 1
        H[:, start:stop] = op.matmat(E).detach().to("cpu", torch.float64)
    return (H + H.T) / 2


def dense_eigenpairs(
    op: OperatorLike, return_vectors: bool = False, block_size: int = 64, max_n: int = DENSE_MAX_N
) -> Spectrum:
    """All eigenpairs of ``op`` exactly (ground truth for small models).

    Builds ``H`` with ``n / block_size`` calls of ``op.matmat`` and runs ``torch.linalg.eigh``
    in float64. Residuals ``||H v - lambda v|| / |lambda_1|`` are computed against the built
    matrix.

    Args:
        op: an operator (or anything :func:`~hessian_powerlaw.operators.as_operator` takes).
        return_vectors: also return the eigenvectors.
        block_size: columns per ``matmat`` call.
        max_n: the largest ``n`` accepted.

    Returns:
        The :class:`Spectrum` of all ``n`` eigenpairs, descending, all converged.

    Raises:
        UserInputError: ``n > max_n`` (default 20,000), or not an operator.
    """
    op = as_operator(op)
    usage = OperatorUsage(op)
    H = dense_matrix(op, block_size=block_size, max_n=max_n)
    evals, evecs = torch.linalg.eigh(H)
    evals, evecs = evals.flip(0), evecs.flip(1)  # descending
    scale = float(evals.abs().max()) if evals.numel() else 1.0
    residuals = torch.linalg.vector_norm(H @ evecs - evecs * evals, dim=0) / max(scale, 1e-300)
    residuals_np = residuals.numpy()
    return Spectrum(
        eigenvalues=evals.numpy(),
        eigenvectors=evecs.numpy() if return_vectors else None,
        residuals=residuals_np,
        converged=np.ones(evals.shape[0], dtype=bool),
        num_matvecs=usage.matvecs,
        num_data_passes=usage.data_passes,
        seconds=usage.seconds,
        # eigh is exact up to rounding: report the largest residual it reached as the tolerance
        tol=float(residuals_np.max()) if residuals_np.size else 0.0,
        which="all",
        method="dense",
        n=int(op.n),
        scale=scale,
    )
