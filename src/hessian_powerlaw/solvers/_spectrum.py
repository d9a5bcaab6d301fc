"""The result type of the eigensolvers."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hessian_powerlaw._results import ResultMixin

__all__ = ["Spectrum"]


@dataclass(frozen=True)
class Spectrum(ResultMixin):
    """Eigenpairs of a symmetric operator, with a certificate for each.

    Attributes:
        eigenvalues: float64 numpy array, descending.
        eigenvectors: ``(n, k)`` numpy array whose column ``i`` belongs to ``eigenvalues[i]``,
            or None when not requested (never included in ``to_dict()``).
        residuals: ``||H v_i - lambda_i v_i|| / scale`` per pair (the relative residual of
            the design's, ``||H v - lambda v|| / |lambda_1|``).
        converged: bool mask, whether each pair meets ``criterion`` at ``tol``; unconverged
            pairs are never hidden.
        num_matvecs: operator columns applied by the solver.
        num_data_passes: passes over the data (None when the operator has no data).
        seconds: wall time of the solve.
        tol: the requested residual tolerance.
        which: ``"largest"``, ``"smallest"``, ``"both"`` or ``"all"`` (dense).
        method: ``"block-lanczos"``, ``"block-lanczos-lean"`` (basis without its products,
            see ``memory_budget``) or ``"dense"``.
        n: the operator's dimension.
        scale: ``|lambda_1|``, the largest Ritz value in magnitude the solver saw (a lower
            bound of ``||H||_2``); ``residuals * scale`` are the absolute residuals.
        criterion: what ``tol`` bounds: ``"norm"`` (``residuals <= tol``) or ``"relative"``
            (``relative_residuals <= tol``, or a residual at the products' rounding level;
            see :mod:`hessian_powerlaw.solvers.lanczos`).
        relative_residuals: ``||H v_i - lambda_i v_i|| / |lambda_i|`` per pair (None when
            not computed).
        resumed_matvecs: products reused from a saved solver state (0: a fresh solve);
            ``num_matvecs`` counts them too, so ``num_matvecs - resumed_matvecs`` were new.
        memory_bytes: the solver's planned peak storage in bytes (its basis, products and
            work space; not the operator's own memory), None where not planned.
    """

    eigenvalues: np.ndarray
    eigenvectors: np.ndarray | None
    residuals: np.ndarray
    converged: np.ndarray
    num_matvecs: int
    num_data_passes: int | None
    seconds: float
    tol: float
    which: str
    method: str
    n: int
    scale: float
    criterion: str = "norm"
    relative_residuals: np.ndarray | None = None
    resumed_matvecs: int = 0
    memory_bytes: int | None = None

    _skip_in_dict = ("eigenvectors",)

    @property
    def k(self) -> int:
        """The number of eigenpairs returned."""
        return int(self.eigenvalues.shape[0])

    @property
    def all_converged(self) -> bool:
        return bool(np.all(self.converged))

    @property
    def num_converged(self) -> int:
        return int(np.count_nonzero(self.converged))
