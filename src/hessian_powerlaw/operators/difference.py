"""``E = B - A``: the difference of two operators, itself an operator (subspace robustness)."""

from __future__ import annotations

from torch import Tensor

from hessian_powerlaw.errors import UserInputError
from hessian_powerlaw.operators.base import OperatorBase
from hessian_powerlaw.protocols import Operator

__all__ = ["DifferenceOperator"]


class DifferenceOperator(OperatorBase):
    """``E = B - A`` as an operator: ``matmat(V) = B.matmat(V) - A.matmat(V)``.

    Both operators must have the same ``n``, ``dtype`` and ``device``. ``num_matvecs`` counts
    columns of ``E`` (each costs one product with ``A`` and one with ``B``).
    """

    def __init__(self, A: Operator, B: Operator) -> None:
        super().__init__()
        for name, op in (("A", A), ("B", B)):
            if not all(hasattr(op, attr) for attr in ("n", "dtype", "device", "matmat")):
                raise UserInputError(
                    f"operator {name} needs n, dtype, device and matmat (e.g. HessianOperator)"
                )
        if int(A.n) != int(B.n):
            raise UserInputError(
                f"the two operators differ in size (n = {A.n} and {B.n}); build both Hessians "
                "over the same parameters"
            )
        if A.dtype != B.dtype or str(A.device) != str(B.device):
            raise UserInputError(
                f"the two operators need the same dtype and device, got {A.dtype}/{A.device} "
                f"and {B.dtype}/{B.device}"
            )
        self.A = A
        self.B = B
        self.n = int(A.n)
        self.dtype = A.dtype
        self.device = A.device

    def _apply(self, V: Tensor) -> Tensor:
        return self.B.matmat(V) - self.A.matmat(V)

    def __repr__(self) -> str:
        return f"DifferenceOperator(n={self.n}, B={self.B!r}, A={self.A!r})"
