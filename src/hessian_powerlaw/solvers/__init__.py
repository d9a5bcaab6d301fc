"""Eigensolvers and spectral estimators for operators (anything with n, dtype, device, matmat)."""

from hessian_powerlaw.solvers._spectrum import Spectrum
from hessian_powerlaw.solvers.dense import dense_eigenpairs, dense_matrix

__all__ = ["Spectrum", "dense_eigenpairs", "dense_matrix"]
