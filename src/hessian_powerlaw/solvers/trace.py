"""Stochastic trace estimation: Hutchinson and Hutch++.

Hutchinson: for Rademacher probes ``z`` (entries +-1), ``E[z^T H z] = tr(H)``; with ``m``
probes the estimate is the mean of ``z_i^T H z_i`` and its standard error the sample standard
deviation over ``sqrt(m)``.

Hutch++ (Meyer, Musco, Musco, Woodruff 2021) spends a third of the budget on a sketch
``Q = orth(H S)`` of the dominant range, takes ``tr(Q^T H Q)`` exactly, and runs Hutchinson on
the deflated remainder ``(I - QQ^T) H (I - QQ^T)`` with the last third. The deflated part has
far smaller variance when the spectrum decays (as Hessian spectra do). Given ``Q`` the exact
part has no variance, so the standard error is that of the remainder's Hutchinson mean.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from hessian_powerlaw import distributed
from hessian_powerlaw._results import ResultMixin
from hessian_powerlaw.errors import UserInputError
from hessian_powerlaw.operators import as_operator
from hessian_powerlaw.protocols import Operator, OperatorLike
from hessian_powerlaw.solvers._usage import OperatorUsage

__all__ = ["TraceEstimate", "hutchinson_trace"]

_METHODS = ("hutch++", "hutchinson")


@dataclass(frozen=True)
class TraceEstimate(ResultMixin):
    """A trace estimate with its standard error (``estimate +- 3 * std_error`` is ~99.7%)."""

    estimate: float
    std_error: float
    num_matvecs: int
    num_data_passes: int | None
    method: str
    seconds: float
    n: int


def hutchinson_trace(
    op: OperatorLike,
    num_matvecs: int = 100,
    method: str = "hutch++",
    seed: int = 0,
    block_size: int = 32,
) -> TraceEstimate:
    """Estimate ``tr(H)`` with ``num_matvecs`` operator columns.

    Args:
        op: an operator (``n``, ``dtype``, ``device``, ``matmat``).
        num_matvecs: the budget; ``"hutch++"`` needs at least 6 (rounded down to a multiple
            of 3), ``"hutchinson"`` at least 2 (for a standard error).
        method: ``"hutch++"`` (default) or ``"hutchinson"``.
        seed: seed of the random probes.
        block_size: columns per ``matmat`` call (memory vs. batching).

    Returns:
        The :class:`TraceEstimate`: the estimate, its standard error and the products used.

    Raises:
        UserInputError: an unknown method or a budget below its minimum.
    """
    op = as_operator(op)
    if method not in _METHODS:
        raise UserInputError(f"method must be one of {_METHODS}, got {method!r}")
    least = 6 if method == "hutch++" else 2
    if not isinstance(num_matvecs, int) or num_matvecs < least:
        raise UserInputError(f"num_matvecs must be an integer >= {least} for {method}")
    if block_size < 1:
        raise UserInputError(f"block_size must be >= 1, got {block_size}")
    distributed.check_consistent(n=int(op.n), num_matvecs=num_matvecs, method=method, seed=seed)
    gen = torch.Generator().manual_seed(seed)
    usage = OperatorUsage(op)
    if method == "hutchinson":
        estimate, std_error, used = _hutchinson(op, num_matvecs, gen, block_size)
    else:
        estimate, std_error, used = _hutch_pp(op, num_matvecs, gen, block_size)
    return TraceEstimate(
        estimate=estimate,
        std_error=std_error,
        num_matvecs=used,
        num_data_passes=usage.data_passes,
        method=method,
        seconds=usage.seconds,
        n=int(op.n),
    )


def rademacher(n: int, count: int, gen: torch.Generator, op: Operator) -> Tensor:
    """``count`` columns of independent +-1 entries, in the operator's dtype and device."""
    signs = torch.randint(0, 2, (n, count), generator=gen, dtype=torch.int64) * 2 - 1
    # identical on every rank by construction under torch.distributed: rank 0's draw
    return distributed.broadcast(signs.to(device=op.device, dtype=op.dtype))


def _apply_blocked(op: Operator, X: Tensor, block_size: int) -> Tensor:
    return torch.cat(
        [op.matmat(X[:, i : i + block_size]).detach() for i in range(0, X.shape[1], block_size)],
        dim=1,
    )


def _quadratic_forms(op: Operator, Z: Tensor, block_size: int) -> Tensor:
    """``z_i^T H z_i`` for the columns of Z, in float64."""
    HZ = _apply_blocked(op, Z, block_size)
    return (Z.to(torch.float64) * HZ.to(torch.float64)).sum(dim=0).cpu()


def _mean_and_error(samples: Tensor) -> tuple[float, float]:
    m = samples.numel()
    mean = float(samples.mean())
    std = float(samples.std(unbiased=True)) if m > 1 else math.inf
    return mean, std / math.sqrt(m)


def _hutchinson(op: Operator, m: int, gen: torch.Generator, bs: int) -> tuple[float, float, int]:
    samples = _quadratic_forms(op, rademacher(int(op.n), m, gen, op), bs)
    mean, err = _mean_and_error(samples)
    return mean, err, m


def _hutch_pp(op: Operator, m: int, gen: torch.Generator, bs: int) -> tuple[float, float, int]:
    n = int(op.n)
    third = min(m // 3, n)
    S = rademacher(n, third, gen, op)
    Q, _ = torch.linalg.qr(_apply_blocked(op, S, bs).to(torch.float64))
    HQ = _apply_blocked(op, Q.to(op.dtype), bs).to(torch.float64)
    exact_part = float((Q * HQ).sum())  # tr(Q^T H Q)
    G = rademacher(n, third, gen, op).to(torch.float64)
    G = G - Q @ (Q.T @ G)
    G = G - Q @ (Q.T @ G)  # twice: keeps the probes orthogonal to Q to rounding
    remainder = _quadratic_forms(op, G.to(op.dtype), bs)
    mean, err = _mean_and_error(remainder)
    return exact_part + mean, err, 3 * third
