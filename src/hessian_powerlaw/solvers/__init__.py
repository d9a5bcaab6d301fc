"""Eigensolvers and spectral estimators for operators (anything with n, dtype, device, matmat)."""

from hessian_powerlaw.solvers._spectrum import Spectrum
from hessian_powerlaw.solvers.dense import DENSE_MAX_N, dense_eigenpairs, dense_matrix
from hessian_powerlaw.solvers.lanczos import top_eigenpairs

__all__ = ["DENSE_MAX_N", "Spectrum", "dense_eigenpairs", "dense_matrix", "top_eigenpairs"]
