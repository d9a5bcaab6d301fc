"""Eigensolvers and spectral estimators for operators (anything with n, dtype, device, matmat)."""

from hessian_powerlaw.solvers._spectrum import Spectrum
from hessian_powerlaw.solvers._state import SolverCheckpoint
from hessian_powerlaw.solvers.dense import DENSE_MAX_N, dense_eigenpairs, dense_matrix
from hessian_powerlaw.solvers.density import SpectralDensity, broadened_density, spectral_density
from hessian_powerlaw.solvers.lanczos import DEFAULT_TOL, default_tol, top_eigenpairs
from hessian_powerlaw.solvers.norm import NormEstimate, spectral_norm
from hessian_powerlaw.solvers.trace import TraceEstimate, hutchinson_trace

__all__ = [
    "DEFAULT_TOL",
    "DENSE_MAX_N",
    "NormEstimate",
    "SolverCheckpoint",
    "SpectralDensity",
    "Spectrum",
    "TraceEstimate",
    "broadened_density",
    "dense_eigenpairs",
    "dense_matrix",
    "default_tol",
    "hutchinson_trace",
    "spectral_density",
    "spectral_norm",
    "top_eigenpairs",
]
