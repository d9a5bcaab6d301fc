"""Spectral density by stochastic Lanczos quadrature (SLQ).

For a unit probe ``v``, ``m`` Lanczos steps give a tridiagonal ``T_m = U diag(theta) U^T``
and the Gauss quadrature ``v^T f(H) v ~ sum_j tau_j^2 f(theta_j)`` with ``tau_j = U[0, j]``
(exact for polynomials of degree < 2m). Averaging over ``P`` random probes,

    phi(t) = (1/P) sum_l sum_j tau_lj^2 delta(t - theta_lj)

estimates the spectral density ``(1/n) sum_i delta(t - lambda_i)``: the weights sum to 1 and
``sum w theta`` estimates ``tr(H) / n``. The probes run together as the columns of one
``matmat`` block, each with full reorthogonalization against its own Lanczos vectors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from hessian_powerlaw import distributed
from hessian_powerlaw._results import ResultMixin
from hessian_powerlaw.errors import UserInputError
from hessian_powerlaw.operators import as_operator
from hessian_powerlaw.protocols import Operator, OperatorLike
from hessian_powerlaw.solvers._usage import OperatorUsage
from hessian_powerlaw.solvers.trace import rademacher

__all__ = ["SpectralDensity", "broadened_density", "spectral_density"]


@dataclass(frozen=True)
class SpectralDensity(ResultMixin):
    """SLQ nodes and weights: ``nodes[l, j]`` with weight ``weights[l, j]`` for probe ``l``.

    Each probe's weights sum to ``1 / num_probes`` (all weights sum to 1). A probe whose
    Lanczos run ended early (an invariant subspace) has zero weights past its last step.
    """

    nodes: np.ndarray
    weights: np.ndarray
    num_probes: int
    lanczos_steps: int
    num_matvecs: int
    num_data_passes: int | None
    seconds: float
    n: int

    @property
    def mean(self) -> float:
        """``sum w theta``: the estimate of ``tr(H) / n``."""
        return float(np.sum(self.weights * self.nodes))

    @property
    def probe_means(self) -> np.ndarray:
        """``v_l^T H v_l`` for each unit probe: their mean is ``mean``."""
        return np.sum(self.weights * self.nodes, axis=1) * self.num_probes

    @property
    def mean_std_error(self) -> float:
        """Standard error of ``mean`` over the probes (inf with one probe)."""
        if self.num_probes < 2:
            return math.inf
        return float(np.std(self.probe_means, ddof=1) / math.sqrt(self.num_probes))

    def density(self, grid: np.ndarray, sigma: float) -> np.ndarray:
        """The Gaussian-broadened density on ``grid`` (see ``broadened_density``)."""
        return broadened_density(self, grid, sigma)


def spectral_density(
    op: OperatorLike, num_probes: int = 10, lanczos_steps: int = 80, seed: int = 0
) -> SpectralDensity:
    """SLQ nodes and weights of ``op``'s spectrum (stochastic Lanczos quadrature).

    Costs ``num_probes * lanczos_steps`` operator columns, applied as ``lanczos_steps``
    ``matmat`` calls of ``num_probes`` columns. Memory: ``n * num_probes * lanczos_steps``
    numbers for the Lanczos vectors (full reorthogonalization).

    Args:
        op: an operator (``n``, ``dtype``, ``device``, ``matmat``).
        num_probes: random probe vectors.
        lanczos_steps: Lanczos steps per probe (at most ``n``).
        seed: seed of the probes.

    Returns:
        The :class:`SpectralDensity`: quadrature nodes and weights per probe.

    Raises:
        UserInputError: non-positive probe or step counts.
    """
    op = as_operator(op)
    n = int(op.n)
    if not isinstance(num_probes, int) or num_probes < 1:
        raise UserInputError(f"num_probes must be a positive integer, got {num_probes!r}")
    if not isinstance(lanczos_steps, int) or lanczos_steps < 1:
        raise UserInputError(f"lanczos_steps must be a positive integer, got {lanczos_steps!r}")
    steps = min(lanczos_steps, n)
    distributed.check_consistent(n=n, num_probes=num_probes, lanczos_steps=steps, seed=seed)
    gen = torch.Generator().manual_seed(seed)
    usage = OperatorUsage(op)
    alpha, beta, lengths, used = _block_of_lanczos_runs(op, num_probes, steps, gen)
    nodes = np.zeros((num_probes, steps))
    weights = np.zeros((num_probes, steps))
    for p in range(num_probes):
        length = lengths[p]
        T = np.diag(alpha[:length, p]) + np.diag(beta[: length - 1, p], 1)
        T = T + np.diag(beta[: length - 1, p], -1)
        theta, U = torch.linalg.eigh(torch.as_tensor(T))
        nodes[p, :length] = theta.numpy()
        weights[p, :length] = U[0].numpy() ** 2 / num_probes
    return SpectralDensity(
        nodes=nodes,
        weights=weights,
        num_probes=num_probes,
        lanczos_steps=steps,
        num_matvecs=usage.matvecs if hasattr(op, "num_matvecs") else used,
        num_data_passes=usage.data_passes,
        seconds=usage.seconds,
        n=n,
    )


def _block_of_lanczos_runs(
    op: Operator, P: int, steps: int, gen: torch.Generator
) -> tuple[np.ndarray, np.ndarray, list[int], int]:
    """``P`` independent Lanczos runs side by side: alpha (steps, P), beta (steps, P), lengths.

    A run whose next ``beta`` falls to rounding level has found an invariant subspace: its
    quadrature is already exact, so it stops there (its column keeps being multiplied, but
    its coefficients are no longer recorded).
    """
    n = int(op.n)
    dtype = op.dtype
    V = rademacher(n, P, gen, op)
    V = V / torch.linalg.vector_norm(V, dim=0)
    basis = torch.empty((steps, n, P), dtype=dtype, device=op.device)
    alpha = np.zeros((steps, P))
    beta = np.zeros((steps, P))
    lengths = [steps] * P
    active = np.ones(P, dtype=bool)
    eps = torch.finfo(dtype).eps
    used = 0
    for j in range(steps):
        basis[j] = V
        W = op.matmat(V).detach().to(dtype)
        used += P
        a = (V * W).sum(dim=0)
        alpha[j, active] = a.double().cpu().numpy()[active]
        scale = torch.linalg.vector_norm(W, dim=0)
        for _ in range(2):  # full reorthogonalization of each run against its own vectors
            coeffs = torch.einsum("snp,np->sp", basis[: j + 1], W)
            W = W - torch.einsum("snp,sp->np", basis[: j + 1], coeffs)
        b = torch.linalg.vector_norm(W, dim=0)
        if j == steps - 1:
            break
        ended = (b <= 1e3 * eps * torch.clamp(scale, min=1e-300)).cpu().numpy() & active
        for p in np.flatnonzero(ended):
            lengths[p] = j + 1
        active &= ~ended
        if not active.any():
            break
        beta[j, active] = b.double().cpu().numpy()[active]
        # ended runs continue on a harmless unit vector; their coefficients are ignored
        safe = torch.where(torch.as_tensor(active, device=W.device), b, torch.ones_like(b))
        V = W / safe
        if (~active).any():
            V[:, torch.as_tensor(~active, device=W.device)] = basis[0][
                :, torch.as_tensor(~active, device=W.device)
            ]
    return alpha, beta, lengths, used


def broadened_density(sd: SpectralDensity, grid: np.ndarray, sigma: float) -> np.ndarray:
    """The SLQ density broadened by Gaussians: ``sum_lj w_lj N(t; theta_lj, sigma^2)``.

    Args:
        sd: the nodes and weights of :func:`spectral_density`.
        grid: where to evaluate the density.
        sigma: the width of the Gaussians.

    Returns:
        The density on ``grid``; it integrates to 1 over the line.
    """
    if not (isinstance(sigma, (int, float)) and sigma > 0):
        raise UserInputError(f"sigma must be a positive number, got {sigma!r}")
    t = np.asarray(grid, dtype=np.float64)
    nodes = sd.nodes.reshape(-1)
    weights = sd.weights.reshape(-1)
    keep = weights > 0
    z = (t[..., None] - nodes[keep]) / sigma
    return np.exp(-0.5 * z**2) @ weights[keep] / (sigma * math.sqrt(2 * math.pi))
