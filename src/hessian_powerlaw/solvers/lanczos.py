"""Certified extreme eigenpairs: thick-restart block Lanczos with full reorthogonalization.

For an operator ``H`` (anything with ``n``, ``dtype``, ``device``, ``matmat``) we build an
orthonormal basis ``Q = [Q_0, Q_1, ...]`` of the block Krylov space
``span{X, H X, H^2 X, ...}`` of a random start block ``X`` (``p`` columns), keeping
``HQ = H Q`` alongside. Each new block is ``H Q_last`` orthogonalized against *all* of ``Q``
(classical Gram-Schmidt applied twice, "full reorthogonalization"), so the basis stays
orthonormal to rounding and no spurious copies of converged eigenvalues appear. The
Gram-Schmidt coefficients are exactly the new columns of the projected matrix
``T = Q^T H Q``, so the Rayleigh-Ritz step costs one small float64 ``eigh(T)``.

Convergence is checked cheaply with the Lanczos relation: ``H Q = Q T + Q_next B E^T``, so a
Ritz pair ``(theta, y = Q s)`` has residual ``||H y - theta y|| = ||B s_last||``, where
``s_last`` is the part of ``s`` on the last block. When the estimates of all wanted pairs are
below ``tol``, the residuals are recomputed *from the stored products* ``HQ s - theta Q s``,
which certifies them without trusting the recurrence (nothing is reported converged on an
estimate alone).

When the basis would exceed ``basis_size`` columns, it is restarted thickly: the best
``keep`` Ritz vectors replace the basis (``Q <- Q S_keep``, ``HQ <- HQ S_keep``,
``T <- diag(theta_keep)``) and the iteration continues from ``Q_next``, which is orthogonal to
them; memory therefore stays ``O(n * basis_size)`` with ``basis_size = O(k + p)``.

Residuals are relative, ``||H v - lambda v|| / |lambda_1|``, with ``|lambda_1|`` the largest
Ritz value in magnitude (a lower bound of ``||H||_2`` that converges first).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from hessian_powerlaw import distributed
from hessian_powerlaw.errors import UserInputError
from hessian_powerlaw.operators import as_operator
from hessian_powerlaw.progress import progress_bar
from hessian_powerlaw.solvers._spectrum import Spectrum

__all__ = ["DEFAULT_TOL", "default_tol", "top_eigenpairs"]

_WHICH = ("largest", "smallest", "both")

#: Default relative residual by operator dtype. float32 Hessian-vector products carry relative
#: errors of a few 1e-7 that add up over a batch, so residuals stall at a few 1e-6 (measured:
#: 6.7e-6 on a float32 MLP, where a 1e-6 run spent its whole budget); 1e-5 is reachable.
DEFAULT_TOL = {torch.float64: 1e-6, torch.float32: 1e-5}


def default_tol(dtype: torch.dtype) -> float:
    """The default ``tol`` for an operator of ``dtype``: 1e-6 (float64) or 1e-5 (float32)."""
    return DEFAULT_TOL.get(dtype, 1e-6)


def top_eigenpairs(
    op: Any,
    k: int,
    tol: float | None = None,
    which: str = "largest",
    block_size: int | None = None,
    max_matvecs: int | None = None,
    return_vectors: bool = False,
    seed: int = 0,
    progress: bool = False,
    basis_size: int | None = None,
) -> Spectrum:
    """The ``k`` extreme eigenpairs of a symmetric operator, each with a certified residual.

    Args:
        op: an operator (``n``, ``dtype``, ``device``, ``matmat``), e.g. ``HessianOperator``.
        k: the number of eigenpairs, ``1 <= k <= n``.
        tol: stop when every wanted pair has ``||H v - lambda v|| / |lambda_1| <= tol``;
            ``None``: :func:`default_tol` of the operator's dtype (1e-6, float32: 1e-5).
        which: ``"largest"`` (algebraic), ``"smallest"`` (most negative first) or ``"both"``
            (``ceil(k/2)`` largest and ``floor(k/2)`` smallest, as scipy's ``"BE"``).
        block_size: columns per ``matmat``. Default: 4 on a CPU and 16 on a GPU (at most k,
            at least 2 when k > 1). Larger blocks batch better, smaller ones need fewer
            products; on a CPU the batching gain is small, so 4 was fastest in
            ``benchmarks/bench_topk.py`` (docs/benchmarks.md).
        max_matvecs: budget of operator columns (default ``max(2000, 20 * (k + block))``).
            When it runs out, the pairs found are returned with ``converged`` False where
            the residual is above ``tol``: never silently.
        return_vectors: also return the ``(n, k)`` eigenvectors (numpy).
        seed: seed of the random start block.
        progress: show a progress bar of matvecs with the current largest residual.
        basis_size: maximal basis columns before a thick restart
            (default ``max(2 * (k + extra), k + extra + 4 * block)``).

    Returns:
        ``Spectrum`` with eigenvalues in descending order. The basis has the operator's dtype
        (float32 allowed); the projected problem is solved in float64.
    """
    op = as_operator(op)  # a matrix or scipy LinearOperator is wrapped; else: what an op is
    n = int(op.n)
    if tol is None:
        tol = default_tol(op.dtype)
    _validate(n, k, tol, which, op.dtype)
    p = _block_size(block_size, k, n, torch.device(op.device).type)
    extra = max(p, math.ceil(0.1 * k))  # Ritz pairs beyond k converge the k-th one faster
    k_want = min(k + extra, n)
    m_max = basis_size if basis_size is not None else max(2 * k_want, k_want + 4 * p)
    if m_max < min(k_want + p, n):
        raise UserInputError(
            f"basis_size={m_max} is too small for k={k} and block {p}; use at least {k_want + p}"
        )
    m_max = min(m_max, n)
    if max_matvecs is None:
        max_matvecs = max(2000, 20 * (k + p))
    if max_matvecs < p:
        raise UserInputError(f"max_matvecs={max_matvecs} is below one block ({p}); raise it")

    # under torch.distributed every rank must run this same solve (one clear error if not)
    distributed.check_consistent(
        n=n, k=k, tol=tol, which=which, block=p, basis=m_max, max_matvecs=max_matvecs, seed=seed
    )
    solver = _BlockLanczos(op, p, m_max, k, k_want, which, tol, seed)
    start = time.perf_counter()
    passes_before = getattr(op, "num_data_passes", None)
    bar = progress_bar(total=max_matvecs, desc=f"top-{k} eigenpairs ({which})", enabled=progress)
    try:
        result = solver.run(max_matvecs, bar)
    finally:
        bar.close()
    passes = None
    if passes_before is not None:
        passes = int(op.num_data_passes) - int(passes_before)
    return Spectrum(
        eigenvalues=result.values,
        eigenvectors=result.vectors if return_vectors else None,
        residuals=result.residuals,
        converged=result.residuals <= tol,
        num_matvecs=solver.matvecs,
        num_data_passes=passes,
        seconds=time.perf_counter() - start,
        tol=float(tol),
        which=which,
        method="block-lanczos",
        n=n,
        scale=result.scale,
    )


def _validate(n: int, k: int, tol: float, which: str, dtype: torch.dtype) -> None:
    if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or not 1 <= k <= n:
        raise UserInputError(f"k must be an integer in [1, n={n}], got {k!r}")
    if which not in _WHICH:
        raise UserInputError(f"which must be one of {_WHICH}, got {which!r}")
    eps = torch.finfo(dtype).eps
    if not (isinstance(tol, (int, float)) and math.isfinite(tol) and eps < tol < 1):
        raise UserInputError(
            f"tol must be a number in ({eps:.2g}, 1) for a {dtype} operator, got {tol!r}; "
            "use a float64 operator for tighter tolerances"
        )


# default columns per block by device type: what benchmarks/bench_topk.py found fastest
_DEFAULT_BLOCK = {"cpu": 4}
_DEFAULT_BLOCK_ACCELERATOR = 16


def _block_size(block_size: int | None, k: int, n: int, device_type: str) -> int:
    if block_size is None:
        default = _DEFAULT_BLOCK.get(device_type, _DEFAULT_BLOCK_ACCELERATOR)
        block_size = min(default, max(k, 2))
    if not isinstance(block_size, (int, np.integer)) or block_size < 1:
        raise UserInputError(f"block_size must be a positive integer, got {block_size!r}")
    return int(min(block_size, n))


@dataclass
class _Result:
    values: np.ndarray  # descending
    vectors: np.ndarray
    residuals: np.ndarray
    scale: float


class _BlockLanczos:
    """The state of one solve: basis Q, products HQ, projected T, and the pending block."""

    def __init__(
        self, op: Any, p: int, m_max: int, k: int, k_want: int, which: str, tol: float, seed: int
    ) -> None:
        self.op, self.p, self.m_max = op, p, m_max
        self.k, self.k_want, self.which, self.tol = k, k_want, which, tol
        self.n, self.dtype, self.device = int(op.n), op.dtype, op.device
        self.gen = torch.Generator().manual_seed(seed)
        self.Q = torch.empty((self.n, 0), dtype=self.dtype, device=self.device)
        self.HQ = torch.empty_like(self.Q)
        self.T = torch.empty((0, 0), dtype=torch.float64)
        self.B = torch.empty((0, 0), dtype=torch.float64)  # H Q_last = Q T[:, last] + Q_next B
        self.last = 0  # start column of the last applied block
        self.matvecs = 0
        start = self._random(p)
        self.next_block, _ = torch.linalg.qr(start)

    # ------------------------------------------------------------------ main loop

    def run(self, max_matvecs: int, bar: Any) -> _Result:
        while True:
            width = min(self.next_block.shape[1], max_matvecs - self.matvecs)
            if width <= 0 or self.next_block.shape[1] == 0:
                break  # budget spent, or the Krylov space is all of R^n
            if self.Q.shape[1] + width > self.m_max:
                self._restart()
            self._extend(self.next_block[:, :width])
            bar.update(width)
            theta, S = self._ritz()
            wanted = self._wanted(theta)
            scale = max(float(np.abs(theta).max()), 1e-300)
            estimates = self._estimated_residuals(S[:, wanted]) / scale
            bar.set_postfix(residual_estimate=f"{estimates.max():.2e}", refresh=False)
            # all k Ritz values must exist: after a breakdown (an invariant subspace, e.g. a
            # rank-deficient H) the estimates of the fewer ones found so far are all ~0
            if len(wanted) >= self.k and estimates.max() <= self.tol:
                result = self._certify(theta, S, wanted, scale)
                if result.residuals.max() <= self.tol:
                    return result
        theta, S = self._ritz()
        wanted = self._wanted(theta)
        scale = max(float(np.abs(theta).max()), 1e-300)
        return self._certify(theta, S, wanted, scale)

    # ------------------------------------------------------------------ one block step

    def _extend(self, block: Tensor) -> None:
        """Apply H to ``block``, append it, fill T's new columns, prepare the next block."""
        W = self.op.matmat(block).detach().to(self.dtype)
        self.matvecs += block.shape[1]
        m_old = self.Q.shape[1]
        self.Q = torch.cat([self.Q, block], dim=1)
        self.HQ = torch.cat([self.HQ, W], dim=1)
        self.last = m_old
        m = self.Q.shape[1]
        C, R = self._orthogonalize(W)  # W = Q C + R, R orthogonal to Q
        self.next_block, self.B, D = self._next_block(R)  # R = Q_next B + Q D
        C = C + D
        T = torch.zeros((m, m), dtype=torch.float64)
        T[:m_old, :m_old] = self.T
        T[:, m_old:] = C
        T[m_old:, :m_old] = C[:m_old].T
        T[m_old:, m_old:] = (C[m_old:] + C[m_old:].T) / 2
        self.T = T

    def _orthogonalize(self, W: Tensor) -> tuple[Tensor, Tensor]:
        """Classical Gram-Schmidt twice against all of Q: returns (Q^T W in float64, residual)."""
        C1 = self.Q.T @ W
        R = W - self.Q @ C1
        C2 = self.Q.T @ R
        R = R - self.Q @ C2
        return (C1 + C2).to(torch.float64).cpu(), R

    def _next_block(self, R: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Orthonormal ``Q_next`` and ``B`` with ``R = Q_next B + Q D`` (D is rounding-level).

        Directions of ``R`` that vanish (an invariant subspace was found) are replaced by
        random vectors orthogonal to Q, so the iteration continues; when the basis already
        spans the space left, the block shrinks, down to zero columns at ``n``.
        """
        m = self.Q.shape[1]
        room = self.n - m
        if room <= 0:
            empty = torch.empty((self.n, 0), dtype=self.dtype, device=self.device)
            return empty, torch.zeros((0, R.shape[1]), dtype=torch.float64), self._zeros_d(R)
        if room < R.shape[1]:
            return self._complement_block(R, room)
        Qn, B = torch.linalg.qr(R)
        scale = float(torch.linalg.vector_norm(self.HQ[:, self.last :], dim=0).max())
        tiny = torch.diagonal(B).abs() <= 1e3 * torch.finfo(self.dtype).eps * scale
        if bool(tiny.any()):
            Qn = Qn.clone()
            Qn[:, tiny] = self._random(int(tiny.sum()))
            B = B.clone()
            B[tiny, :] = 0
        D1 = self.Q.T @ Qn  # second pass: orthogonal to Q and within the block
        Qn = Qn - self.Q @ D1
        Qn, B2 = torch.linalg.qr(Qn)
        B64 = (B2.to(torch.float64) @ B.to(torch.float64)).cpu()
        D = (D1.to(torch.float64).cpu() @ B.to(torch.float64).cpu()).cpu()
        return Qn, B64, D

    def _complement_block(self, R: Tensor, room: int) -> tuple[Tensor, Tensor, Tensor]:
        """Near the full space: ``Q_next`` spans the orthogonal complement of Q exactly."""
        X = torch.cat([self.Q, self._random(room)], dim=1).to(torch.float64)
        full, _ = torch.linalg.qr(X)
        Qn = full[:, self.Q.shape[1] :]
        Qn = Qn - self.Q.to(torch.float64) @ (self.Q.to(torch.float64).T @ Qn)
        Qn, _ = torch.linalg.qr(Qn)
        B = (Qn.T @ R.to(torch.float64)).cpu()
        return Qn.to(self.dtype), B, self._zeros_d(R)

    def _zeros_d(self, R: Tensor) -> Tensor:
        return torch.zeros((self.Q.shape[1], R.shape[1]), dtype=torch.float64)

    # ------------------------------------------------------------------ Rayleigh-Ritz

    def _ritz(self) -> tuple[np.ndarray, np.ndarray]:
        """Eigenpairs of T in float64, ascending."""
        # torch's eigh (not numpy's): it respects torch's thread setting, and on a busy machine
        # an over-threaded BLAS makes even this small problem slow
        theta, S = torch.linalg.eigh(self.T)
        return theta.numpy(), S.numpy()

    def _wanted(self, theta: np.ndarray) -> np.ndarray:
        """Indices (into ascending ``theta``) of the k wanted Ritz values."""
        return self._select(theta, self.k)

    def _select(self, theta: np.ndarray, count: int) -> np.ndarray:
        m = theta.shape[0]
        count = min(count, m)
        if self.which == "largest":
            return np.arange(m - count, m)
        if self.which == "smallest":
            return np.arange(0, count)
        high = math.ceil(count / 2)
        low = count - high
        return np.concatenate([np.arange(0, low), np.arange(m - high, m)])

    def _estimated_residuals(self, S_wanted: np.ndarray) -> np.ndarray:
        """``||B s_last||`` per Ritz vector: the Lanczos residual, no products needed."""
        if self.B.numel() == 0:
            return np.zeros(S_wanted.shape[1])
        S_last = torch.as_tensor(S_wanted[self.last :])
        return torch.linalg.vector_norm(self.B @ S_last, dim=0).numpy()

    def _certify(
        self, theta: np.ndarray, S: np.ndarray, wanted: np.ndarray, scale: float
    ) -> _Result:
        """True residuals ``||HQ s - theta Q s|| / scale`` from the stored products."""
        order = wanted[np.argsort(-theta[wanted], kind="stable")]
        S_w = torch.as_tensor(S[:, order]).to(device=self.device, dtype=self.dtype)
        vals = torch.as_tensor(theta[order])
        Y = self.Q @ S_w
        HY = self.HQ @ S_w
        R = HY.to(torch.float64) - Y.to(torch.float64) * vals.to(self.device)
        residuals = torch.linalg.vector_norm(R, dim=0).cpu().numpy() / scale
        return _Result(
            values=theta[order].copy(), vectors=Y.cpu().numpy(), residuals=residuals, scale=scale
        )

    # ------------------------------------------------------------------ restart

    def _restart(self) -> None:
        """Keep the best Ritz vectors; continue from the pending block (orthogonal to them)."""
        theta, S = self._ritz()
        m = theta.shape[0]
        keep_count = min(self.k_want + (self.m_max - self.k_want) // 3, m - self.p)
        keep_count = max(keep_count, min(self.k_want, m - 1))
        keep = np.sort(self._select(theta, keep_count))
        S_keep = torch.as_tensor(S[:, keep]).to(device=self.device, dtype=self.dtype)
        self.Q = self.Q @ S_keep
        self.HQ = self.HQ @ S_keep
        self.T = torch.diag(torch.as_tensor(theta[keep]))
        # the pending block: re-orthogonalize against the new basis for safety (rounding)
        Qn = self.next_block
        Qn = Qn - self.Q @ (self.Q.T @ Qn)
        self.next_block, _ = torch.linalg.qr(Qn)

    def _random(self, count: int) -> Tensor:
        X = torch.randn((self.n, count), generator=self.gen, dtype=torch.float64)
        # identical on every rank by construction under torch.distributed: rank 0's draw
        return distributed.broadcast(X.to(device=self.device, dtype=self.dtype))
