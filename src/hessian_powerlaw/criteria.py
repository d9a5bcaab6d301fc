"""Names of the eigensolver's convergence criteria, free of torch so the CLI starts fast.

- ``"relative"``: ``||H v - theta v|| <= tol * |theta|`` for each pair: every eigenvalue is
  certified to ``tol`` relative accuracy, the tail as well as the head (what a power-law fit
  of log-eigenvalues needs). The default.
- ``"norm"``: ``||H v - theta v|| <= tol * |lambda_1|``: residuals relative to the largest
  eigenvalue in magnitude, scipy ``eigsh``'s style; the stricter choice for eigenvectors.

The solver (:func:`hessian_powerlaw.solvers.top_eigenpairs`) documents them in full.
"""

from __future__ import annotations

CRITERIA = ("relative", "norm")
DEFAULT_CRITERION = "relative"
