"""Certified top Hessian eigenvalues of PyTorch models and the power-law spectral method.

The method is that of Tang et al., "Investigating the Overlooked Hessian Structure: From CNNs
to LLMs" (ICML 2025).

The public names are imported lazily so that ``import hessian_powerlaw`` and the command
line start fast; ``from hessian_powerlaw import top_eigenpairs`` works as usual.
"""

from __future__ import annotations

from hessian_powerlaw._lazy import lazy_exports

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS: dict[str, str] = {
    "HessianOperator": "hessian_powerlaw.operators",
    "top_eigenpairs": "hessian_powerlaw.solvers",
    "dense_eigenpairs": "hessian_powerlaw.solvers",
    "hutchinson_trace": "hessian_powerlaw.solvers",
    "spectral_density": "hessian_powerlaw.solvers",
    "Spectrum": "hessian_powerlaw.solvers",
    "fit_power_law": "hessian_powerlaw.powerlaw",
    "PowerLawFit": "hessian_powerlaw.powerlaw",
    "UserInputError": "hessian_powerlaw.errors",
    "analyze": "hessian_powerlaw.analysis",
    "analyze_spec": "hessian_powerlaw.analysis",
    "AnalysisOptions": "hessian_powerlaw.options",
    "Analysis": "hessian_powerlaw.analysis",
    "track_run": "hessian_powerlaw.tracking",
    "HessianHook": "hessian_powerlaw.hooks",
    "run_demo": "hessian_powerlaw.demo",
    "write_report": "hessian_powerlaw.report",
    "MatrixOperator": "hessian_powerlaw.operators",
    "TraceEstimate": "hessian_powerlaw.solvers",
    "SpectralDensity": "hessian_powerlaw.solvers",
    "broadened_density": "hessian_powerlaw.solvers",
    "rank_regression": "hessian_powerlaw.powerlaw",
    "bootstrap_pvalue": "hessian_powerlaw.powerlaw",
    "compare_alternatives": "hessian_powerlaw.powerlaw",
    "eigengap_fit": "hessian_powerlaw.powerlaw",
    "correlate": "hessian_powerlaw.measures",
    "correlation_table": "hessian_powerlaw.measures",
    "TrainConfig": "hessian_powerlaw.training",
    "train": "hessian_powerlaw.training",
    "max_entropy_density": "hessian_powerlaw.theory",
    "subspace_overlap": "hessian_powerlaw.theory",
    "subspace_stability": "hessian_powerlaw.theory",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


__getattr__, __dir__ = lazy_exports("hessian_powerlaw", _EXPORTS, globals())
