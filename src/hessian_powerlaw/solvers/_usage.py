"""What a solver's products cost: the bookkeeping every solver reports in its result."""

from __future__ import annotations

import time

from hessian_powerlaw.protocols import Operator

__all__ = ["OperatorUsage"]


class OperatorUsage:
    """The operator's counters when a solve starts; what the solve used of them so far.

    Args:
        op: the operator. ``num_matvecs`` (columns multiplied) is optional, and so is
            ``num_data_passes`` (passes over a Hessian's data; matrices have none).
    """

    def __init__(self, op: Operator) -> None:
        self._op = op
        self._start = time.perf_counter()
        self._matvecs = int(getattr(op, "num_matvecs", 0))
        self._passes = getattr(op, "num_data_passes", None)

    @property
    def matvecs(self) -> int:
        """Operator columns multiplied since the start (0 when the operator does not count)."""
        return int(getattr(self._op, "num_matvecs", self._matvecs)) - self._matvecs

    @property
    def data_passes(self) -> int | None:
        """Passes over the data since the start; ``None`` when the operator has no data."""
        if self._passes is None:
            return None
        return int(self._op.num_data_passes) - int(self._passes)

    @property
    def seconds(self) -> float:
        """Wall time since the start."""
        return time.perf_counter() - self._start
