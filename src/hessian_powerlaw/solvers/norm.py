r"""``||E||_2`` of a symmetric operator by block Lanczos: its two extreme eigenvalues."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from hessian_powerlaw._results import ResultMixin
from hessian_powerlaw.protocols import Operator
from hessian_powerlaw.solvers.lanczos import top_eigenpairs

__all__ = ["NormEstimate", "spectral_norm"]


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
    op: Operator,
    tol: float = 1e-4,
    seed: int = 0,
    max_matvecs: int | None = None,
    progress: bool = False,
) -> NormEstimate:
    """``||op||_2`` of a symmetric operator by block Lanczos (largest and smallest eigenvalue).

    ``tol`` is the relative residual of the two extreme Ritz pairs; the Ritz values converge
    quadratically in it, so 1e-4 gives the norm to about 1e-8 relative.
    """
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


def _ones_like_op(op: Operator) -> torch.Tensor:
    return torch.ones((int(op.n), 1), dtype=op.dtype, device=op.device)
