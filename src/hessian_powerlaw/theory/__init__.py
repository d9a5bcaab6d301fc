r"""The paper's theory made measurable: maximum entropy, eigengaps, robust low-dimensional subspace.

The paper (Tang et al., ICML 2025, "Theory") makes three claims; this package turns each into
a number a user can compute, one module per concern: :mod:`.max_entropy`, :mod:`.subspaces`,
:mod:`.bounds`, :mod:`.low_dimension` and :mod:`.stability`. The difference operator
``E = B - A`` is an operator (:class:`hessian_powerlaw.operators.DifferenceOperator`), its
norm a solver (:func:`hessian_powerlaw.solvers.spectral_norm`) and the figure a report
(:func:`hessian_powerlaw.report.plots.subspace_figure`).

Maximum entropy
    Maximising the spectral entropy plus ``beta`` times the volume entropy,

    .. math::  J[p] = -\int p \ln p \, d\lambda \;-\; \beta \int p \ln\lambda \, d\lambda,
               \qquad \int p \, d\lambda = 1,

    over densities on :math:`[\lambda_{min}, \lambda_{max}]` gives the power law
    :math:`p(\lambda) \propto \lambda^{-\beta}`. :func:`max_entropy_density` finds the maximiser
    *numerically* (Newton's method on the discretised functional; nothing in it assumes the
    answer) so that tests can compare it with the closed form. :func:`predicted_rank_law` is
    the rank law that a power-law density implies for its order statistics,
    :math:`\lambda_k / \lambda_1 = k^{-s}` with :math:`s = 1/(\beta - 1)`.

Eigengaps
    :math:`\delta_k = \lambda_k - \lambda_{k+1} \sim k^{-(s+1)}`: measured with
    :func:`hessian_powerlaw.powerlaw.eigengap_fit` and reported next to ``s + 1``.

Robust low-dimensional subspace
    Two Hessians of the same model on different data (two halves, two seeds, two nearby
    checkpoints) differ by ``E = H_B - H_A``. :func:`compare_operators` measures how far their
    top eigenvectors move and puts the measurement next to two bounds:

    * Davis-Kahan, in the variant of Yu, Wang and Samworth (2015, Biometrika 102, Cor. 1):
      for symmetric ``A`` and ``B = A + E`` with eigenvalues
      :math:`\lambda_1 \ge \lambda_2 \ge \dots` of ``A`` and unit eigenvectors
      :math:`a_i` of ``A``, :math:`b_i` of ``B``,

      .. math::  \sin\theta(a_i, b_i) \le
                 \frac{2 \|E\|_2}{\min(\lambda_{i-1} - \lambda_i,\; \lambda_i - \lambda_{i+1})},
                 \qquad \lambda_0 = +\infty .

      It needs no condition on the size of ``E``, and only the eigenvalues of ``A``. With the
      roles of ``A`` and ``B`` swapped (``E -> -E``, same norm) it holds with the gaps of ``B``
      too, so the reported bound is the smaller of the two.
    * The paper's power-law form :math:`2 \|E\|_2 (i+1)^{s+1} / \lambda_1`: Davis-Kahan with
      the gaps of an exact rank law, :math:`\lambda_i - \lambda_{i+1} =
      \lambda_1 (i^{-s} - (i+1)^{-s}) \ge s \lambda_1 (i+1)^{-(s+1)}`, without the factor
      ``1/s``. It is therefore a rigorous bound only for an exact power law with ``s >= 1``;
      on real spectra it is a prediction of the trend, and the report shows how it compares.

    For the top-``m`` subspaces the same theorem (Frobenius form, ``d = m``) gives
    :math:`\|\sin\Theta\|_F^2 = m (1 - \mathrm{overlap}_m) \le 4 m \|E\|_2^2 / \delta_m^2`, i.e.
    :math:`\mathrm{overlap}_m \ge 1 - 4 \|E\|_2^2 / (\lambda_m - \lambda_{m+1})^2`.

    ``||E||_2`` is measured by Lanczos on the difference operator (:class:`DifferenceOperator`).

Low dimension
    The fraction of the trace and of the gradient's squared norm in the top-``m`` eigenspace,
    and the effective dimension :math:`\sum_i \lambda_i / (\lambda_i + c)` (MacKay 1992).
"""

from __future__ import annotations

from hessian_powerlaw.batching import split_batches
from hessian_powerlaw.operators import DifferenceOperator
from hessian_powerlaw.solvers.norm import NormEstimate, spectral_norm
from hessian_powerlaw.theory.bounds import (
    davis_kahan_bounds,
    overlap_lower_bounds,
    power_law_bounds,
)
from hessian_powerlaw.theory.low_dimension import (
    LowDimension,
    effective_dimension,
    low_dimension_curves,
)
from hessian_powerlaw.theory.max_entropy import (
    MaxEntropyDensity,
    max_entropy_density,
    power_law_density,
    predicted_rank_law,
)
from hessian_powerlaw.theory.stability import (
    SPLITS,
    SUBSPACE_DEFAULTS,
    SubspaceStability,
    compare_operators,
    subspace_stability,
)
from hessian_powerlaw.theory.subspaces import (
    SubspaceOverlap,
    eigenvector_angles,
    overlap_curve,
    subspace_overlap,
)

__all__ = [
    "SPLITS",
    "SUBSPACE_DEFAULTS",
    "DifferenceOperator",
    "LowDimension",
    "MaxEntropyDensity",
    "NormEstimate",
    "SubspaceOverlap",
    "SubspaceStability",
    "compare_operators",
    "davis_kahan_bounds",
    "effective_dimension",
    "eigenvector_angles",
    "low_dimension_curves",
    "max_entropy_density",
    "overlap_curve",
    "overlap_lower_bounds",
    "power_law_bounds",
    "power_law_density",
    "predicted_rank_law",
    "spectral_norm",
    "split_batches",
    "subspace_overlap",
    "subspace_stability",
]
