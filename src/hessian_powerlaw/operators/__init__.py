"""Linear operators for the solvers: the Hessian of a model's loss, and explicit matrices.

An *operator* is anything with ``n``, ``dtype``, ``device`` and ``matmat(V[n, b]) -> [n, b]``
(``matvec(v)`` is ``matmat(v[:, None])[:, 0]``; :class:`~hessian_powerlaw.protocols.Operator`);
the solvers are duck-typed on these members, so a user's own operator plugs in the same way.

- :mod:`.base`: the shared base class, :class:`MatrixOperator`, :class:`ScipyOperator` and
  :func:`as_operator`, what the solvers call first;
- :mod:`.hessian`: :class:`HessianOperator`, the Hessian of a model's sample-weighted mean
  loss, by Hessian-vector products;
- :mod:`.microbatch`: how many samples of a batch one product pass takes, and the check that
  splitting a batch leaves the operator unchanged;
- :mod:`.determinism`: the checks that every pass sees the same data and every product is
  reproducible and finite, and the one error naming the cause when not;
- :mod:`.params`: which parameters, by name pattern, tensor or ``"last"``;
- :mod:`.difference`: :class:`DifferenceOperator`, ``E = B - A``.
"""

from hessian_powerlaw.operators.base import (
    MatrixOperator,
    OperatorBase,
    ScipyOperator,
    as_operator,
)
from hessian_powerlaw.operators.difference import DifferenceOperator
from hessian_powerlaw.operators.hessian import HessianOperator
from hessian_powerlaw.operators.microbatch import (
    ACCELERATOR_PRODUCT_FRACTION,
    CPU_PRODUCT_BYTES,
)
from hessian_powerlaw.operators.params import select_params, summarize_names

__all__ = [
    "ACCELERATOR_PRODUCT_FRACTION",
    "CPU_PRODUCT_BYTES",
    "DifferenceOperator",
    "HessianOperator",
    "MatrixOperator",
    "OperatorBase",
    "ScipyOperator",
    "as_operator",
    "select_params",
    "summarize_names",
]
