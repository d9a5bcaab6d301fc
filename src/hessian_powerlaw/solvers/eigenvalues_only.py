"""Eigenvalues when the Krylov basis does not fit: Lanczos with a bounded memory budget.

The block solver (:mod:`hessian_powerlaw.solvers.lanczos`) stores a basis of ``O(k)`` vectors.
For ``k = 1000`` and ``n`` in the millions that is tens of GB. This module computes the top
``k`` eigenvalues with at most ``memory_budget`` bytes of vectors, in two phases:

1. **Thick-restart Lanczos with locking, inside the budget** (Wu & Simon's TRLan, one vector
   a step, full reorthogonalization). The budget is one buffer of ``R`` vectors: locked Ritz
   vectors first, then the active basis. A Ritz pair is locked once its residual, *recomputed
   with one product* ``||H y - rho(y) y||``, is at the products' rounding level; locked pairs
   leave the active problem. When the locked vectors leave too little room for an active
   basis (fewer than ``_MIN_ACTIVE`` vectors), phase 1 ends. Its eigenvalues carry rigorous
   residual bounds (Krylov-Weinstein: some eigenvalue lies within ``||H y - rho y||`` of
   ``rho`` for a unit ``y``; orthonormal ``y`` give distinct eigenvalues).
2. **Eigenvalues-only Lanczos, deflated by the locked vectors** (three float64 vectors, no
   stored basis): the plain three-term recurrence on ``P H P`` (``P = I - Y Y^T``, ``Y`` the
   locked vectors; every new vector is projected off ``Y``), with the tridiagonal ``T`` grown
   to many thousands. ``T``'s eigenvalues are computed by bisection
   (``scipy.linalg.eigh_tridiagonal``); copies of one eigenvalue (the "ghosts" of finite
   precision) are merged; spurious values are removed by the Cullum-Willoughby test (a simple
   eigenvalue of ``T`` that is also an eigenvalue of ``T`` without its first row and column
   has no weight on the start vector); each value gets a bound and a converged flag from it.

Why this split (measured, ``benchmarks/bench_eigenvalues_only.py``, diagonal
``lambda_k = 10 / k`` for ``k <= 1000`` over a uniform bulk in ``[-1e-3, 9e-3]``,
``n = 2e5``): plain Lanczos matched 663 of the top 1000 (to 1e-5) after 16,000 products,
because the large eigenvalues, which converge first, keep coming back as ghosts that crowd
``T``; deflating the top 50 / 200 eigenvectors exactly matched 822 of the next 950 after
8,000 products / all 800 after 6,000. Full reorthogonalization (an in-core basis) needs
about 2,000. So the memory budget is spent on the vectors that cause most ghosts, the top
ones, and the rest is found without a basis.

**The bound of a phase-2 eigenvalue** (the theorem). Paige's analysis of the Lanczos process
in finite precision (C. C. Paige, *Accuracy and effectiveness of the Lanczos algorithm for the
symmetric eigenproblem*, Linear Algebra Appl. 34, 1980; Parlett, *The Symmetric Eigenvalue
Problem*, ch. 13; Meurant & Strakos, Acta Numerica 2006, sec. 4) shows that the computed
vectors and coefficients satisfy ``A Q_m = Q_m T_m + beta_m q_{m+1} e_m^T + F_m`` with columns
of ``Q_m`` of norm ``1 + O(n eps)`` and local rounding errors ``||f_j|| <= eps_1 ||A||``. For
an eigenvalue ``theta`` of ``T_m`` with unit eigenvector ``s``, ``y = Q_m s`` therefore has
``A y - theta y = beta_m s_m q_{m+1} + F_m s``, so some eigenvalue of ``A`` lies within
``(beta_m |s_m| + sqrt(m) eps_1 ||A||) / ||y||``. Paige proves that ``||y||`` is bounded
below, giving a bound of the form ``|lambda - theta| <= 2.5 (beta_m |s_m| + O(m eps_1 ||A||))``
for every Ritz value, up to a term of order ``m^3 eps ||A||`` that is needed only when
Ritz values crowd together and which his paper calls pessimistic. We certify only
*simple, isolated* Ritz values (no other Ritz value within ``_ISOLATION`` times the copy
tolerance), where ``||y||`` is close to 1, and report

    bound = 2.5 * (beta_m |s_m| + sqrt(m) * (rho + eps_1 * scale)) + ||R_Y||_F

where ``s`` is computed by inverse iteration and ``rho = ||T s - theta s||`` its residual in
``T`` (so ``s`` need not be exact: ``||Q_m (T s - theta s)|| <= sqrt(m) rho``),
``eps_1 = FLOOR_EPS * eps(dtype)`` (the project's assumption on a product's rounding, 100
units, the same as the block solver's floor), ``scale`` the largest ``|eigenvalue|`` seen (a
lower bound of ``||A||`` that converges first), and ``||R_Y||_F`` the Frobenius norm of the
locked vectors' residuals: ``A`` in the basis ``[Y, Y_perp]`` is the block diagonal of
``Y^T A Y`` and ``P A P`` plus a perturbation of norm at most ``||R_Y||_F`` (Weyl), so each
eigenvalue of ``P A P`` is within that of one of ``A``. The m^3 term is dropped: that is the
one step that is not proven, and the tests check the bound on operators with known spectra.
A value that converged and then grew copies (a ghost) keeps the bound certified at the last
step where it was simple: the relation above holds at every step.

**Multiple eigenvalues.** A single-vector Krylov space holds one vector of each eigenspace,
so phase 2 sees an eigenvalue of multiplicity ``r`` once: its further copies are created by
rounding only and are indistinguishable from ghosts (they are merged). Phase 1 often finds
the copies (after a copy is locked, rounding brings the next one in), and a copy locked in
phase 1 leaves the others to phase 2, which then reports one more. So multiplicities may be
undercounted: the result is then the top ``k`` of the eigenvalues counted with the
multiplicity found, and the ``k``-th reported value may lie below the true ``k``-th.
Eigenvalues closer than the copy tolerance (``10 sqrt(m) eps_1 scale``, 3e-10 at
``m = 2e4``, ``scale = 10`` in float64) are likewise reported once, and values within
``_ISOLATION`` times it of another Ritz value are not certified (flagged unconverged).

**float32 operators.** ``eps_1`` is then 1.2e-5: bounds and copy tolerances of the tail are
at that level times ``sqrt(m)``, so small eigenvalues are flagged unconverged (never falsely
converged). Use float64 products for this mode.

**Costs.** Products: phase 1 a few per locked eigenvalue plus one each to certify it; phase 2
grows with the number of ghosts, i.e. it falls as the budget (locked vectors) grows; see
docs/benchmarks.md. Work per product: ``2 (L + m) n`` in phase 1 and ``2 L n`` in phase 2 for
``L`` locked vectors. Memory: :func:`memory_plan` (``peak_bytes``), at most ``memory_budget``.

**Eigenvectors** (``vectors=j``): the locked ones are at hand; the others are rebuilt by a
second pass that regenerates the phase-2 Lanczos vectors from the same start vector (the
same products, deterministically, up to the step where each value was certified) and
accumulates ``Q s``; each is then certified by one more product, and its residual is used
when it is the smaller bound.
"""

from __future__ import annotations

import ctypes
import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy.linalg import eigh_tridiagonal, eigvalsh_tridiagonal
from scipy.linalg.lapack import dgtsv
from torch import Tensor

from hessian_powerlaw.criteria import CRITERIA, DEFAULT_CRITERION
from hessian_powerlaw.errors import UserInputError
from hessian_powerlaw.operators import as_operator
from hessian_powerlaw.progress import progress_bar
from hessian_powerlaw.solvers._spectrum import Spectrum
from hessian_powerlaw.solvers.lanczos import (
    _GUARD,
    _GUARD_PRODUCTS,
    FLOOR_EPS,
    _Criterion,
    default_tol,
)

__all__ = [
    "METHOD",
    "MemoryPlan",
    "lanczos_eigenvalues",
    "memory_plan",
]

#: ``Spectrum.method`` of this solver.
METHOD = "lanczos-eigenvalues-only"

_WHICH = ("largest", "smallest")
# Paige's factor (1 / a lower bound of ||y||) in the bound of a phase-2 eigenvalue
_PAIGE_FACTOR = 2.5
# copies of one eigenvalue are merged within _COPY_TOL * sqrt(m) * eps(dtype) * scale; a Ritz
# value is certified only when no other one is within _ISOLATION times that
_COPY_TOL = 10.0
_ISOLATION = 10.0
# phase 1: the active basis has at most _MAX_ACTIVE vectors; phase 1 ends when fewer than
# _MIN_ACTIVE fit beside the locked ones
_MAX_ACTIVE = 160
_MIN_ACTIVE = 12
# a locked vector's residual must be below _LOCK_FLOOR * eps_1 * scale ("norm" criterion:
# also below a hundredth of the tolerance, shared among the locked vectors)
_LOCK_FLOOR = 10.0
# columns per product when certifying vectors (bounds the extra memory: 2 * _CERT_BLOCK vectors)
_CERT_BLOCK = 4
# columns of the buffer handled at once by an in-place rotation
_COL_CHUNK = 8192
# phase 2: T is analysed after max(_ANALYSIS_MIN_STEP, _ANALYSIS_GROWTH * m) more steps
# or once its last duration is below _ANALYSIS_SHARE of the steps' time since; after
# _FAIL_CUTOFF certifications in a row that do not pass, the values below wait for the next
_ANALYSIS_MIN_STEP = 50
_ANALYSIS_GROWTH = 0.1
_ANALYSIS_SHARE = 0.2
_FAIL_CUTOFF = 16
# T's eigenvalues are all computed (sterf) rather than bisected when over 1/_ALL_EIGENVALUES
# of them are wanted
_ALL_EIGENVALUES = 8
# the Cullum-Willoughby test's tolerance in units of eps * ||T_m|| (spurious values are within
# rounding of an eigenvalue of T-hat; good ones measured 3.9e-12 and more away at ||T|| = 0.05)
_SPURIOUS_TOL = 100.0
# ... and confirmed by its eigenvector's first component (spurious: 1e-17 and below; good:
# the start vector's weight on the eigenvector, ~1/sqrt(n); measured 2e-5 and more)
_FIRST_COMPONENT = 1e-10
# steps examined by a retro search for the best certificate of a value with copies
_RETRO_STEPS = 32
# candidates analysed beyond the wanted count (some turn out to be copies still forming)
_SPARE_GROUPS = 20
# bytes of bookkeeping per Lanczos step (coefficients, analysis scratch) and a fixed margin
_BYTES_PER_STEP = 128
_FIXED_BYTES = 4 << 20


def _release_free_memory() -> None:
    """Hand freed heap memory back to the OS (glibc ``malloc_trim``), where available.

    Vectors of a few MB are below glibc's adaptive mmap threshold (up to 32 MB), so freed
    temporaries of varying sizes stay in the heap and count in the resident set; trimming at
    the solver's phase boundaries keeps the peak near the memory plan.
    """
    global _MALLOC_TRIM
    if _MALLOC_TRIM is None:
        try:
            _MALLOC_TRIM = ctypes.CDLL("libc.so.6").malloc_trim
        except (OSError, AttributeError):
            _MALLOC_TRIM = False
    if _MALLOC_TRIM:
        _MALLOC_TRIM(0)


_MALLOC_TRIM: Any = None


def _itemsize(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


@dataclass(frozen=True)
class MemoryPlan:
    """What :func:`lanczos_eigenvalues` will allocate for a problem and a budget.

    Attributes:
        n: the operator's dimension.
        itemsize: bytes per entry of the operator's dtype.
        budget: the memory budget in bytes (None: none given, the minimum is used).
        rows: vectors (operator dtype) of the buffer that holds locked and active vectors.
        reserve: rows kept free for eigenvectors rebuilt by the second pass.
        active: the largest active basis of phase 1 (0: no phase 1, plain Lanczos only).
        work_bytes: working vectors beside the buffer (the larger of the two phases).
        fixed_bytes: coefficients, analysis scratch and eigenvector output.
    """

    n: int
    itemsize: int
    budget: int | None
    rows: int
    reserve: int
    active: int
    work_bytes: int
    fixed_bytes: int

    @property
    def peak_bytes(self) -> int:
        """Bytes the solve will hold at most (the buffer, the working vectors, the rest)."""
        return self.rows * self.n * self.itemsize + self.work_bytes + self.fixed_bytes

    @property
    def locked_capacity(self) -> int:
        """The most vectors phase 1 can lock (0 without phase 1)."""
        return self.rows - self.reserve if self.active else 0


def memory_plan(
    n: int,
    k: int,
    dtype: torch.dtype,
    *,
    memory_budget: int | None = None,
    vectors: int = 0,
    max_matvecs: int | None = None,
) -> MemoryPlan:
    """The allocation of :func:`lanczos_eigenvalues` for ``n``, ``k``, ``dtype`` and a budget.

    Args:
        n: the operator's dimension.
        k: the number of eigenvalues.
        dtype: the operator's dtype (the buffer's); the recurrence runs in float64.
        memory_budget: bytes for everything the solver allocates that grows with ``n``
            (not the operator's own memory); None: the minimum (no locked vectors).
        vectors: eigenvectors wanted (their rows are reserved in the buffer).
        max_matvecs: the product budget (bookkeeping grows with it); None: the default.

    Returns:
        The :class:`MemoryPlan`; ``peak_bytes`` is at most ``memory_budget``.

    Raises:
        UserInputError: when the budget is below the minimum, which the message states.
    """
    isz = _itemsize(dtype)
    vec, vec64 = n * isz, n * 8
    steps = max_matvecs if max_matvecs is not None else _default_max_matvecs(k)
    # phase 1: w, a product, a projection temporary; certification blocks in and out.
    # phase 2 (and the second pass): q_prev, q, w, a regenerated/converted float64 vector,
    # a product in and out and a cast of w in the operator's dtype
    work1 = (3 + 2 * _CERT_BLOCK) * vec
    work2 = 4 * vec64 + 3 * vec
    work = max(work1, work2)
    fixed = _FIXED_BYTES + _BYTES_PER_STEP * steps + vectors * vec  # + eigenvector output
    minimum = work + fixed + vectors * vec
    if memory_budget is None:
        return MemoryPlan(n, isz, None, vectors, vectors, 0, work, fixed)
    if memory_budget < minimum:
        raise UserInputError(
            f"memory_budget={memory_budget} bytes is below the minimum of this mode for n={n} "
            f"and {vectors} eigenvectors: {minimum} bytes ({minimum / 2**20:.1f} MiB)"
        )
    rows = (memory_budget - work - fixed) // vec
    useful = vectors + min(k, n) + _MAX_ACTIVE + 1  # locking all k needs no more
    rows = int(min(rows, useful, n + vectors))
    free = rows - vectors
    active = 0
    if free >= _MIN_ACTIVE + 2 and n > 2 * _MIN_ACTIVE:
        active = int(min(_MAX_ACTIVE, free - 1, n - 1))
    return MemoryPlan(n, isz, int(memory_budget), rows, vectors, active, work, fixed)


def _default_max_matvecs(k: int) -> int:
    return max(3000, 40 * k)


class _Negated:
    """``-H``: the smallest eigenvalues of ``H`` are the largest of ``-H``."""

    def __init__(self, op: Any) -> None:
        self.op = op
        self.n, self.dtype, self.device = int(op.n), op.dtype, op.device

    def matmat(self, V: Tensor) -> Tensor:
        return -self.op.matmat(V)


def lanczos_eigenvalues(
    op: Any,
    k: int,
    *,
    tol: float | None = None,
    which: str = "largest",
    max_matvecs: int | None = None,
    memory_budget: int | None = None,
    seed: int = 0,
    progress: bool = False,
    criterion: str = DEFAULT_CRITERION,
    vectors: int = 0,
) -> Spectrum:
    """The ``k`` extreme eigenvalues of a symmetric operator within a memory budget.

    See the module docstring for the method, the bound and its limits.

    Args:
        op: an operator (``n``, ``dtype``, ``device``, ``matmat``) or a matrix.
        k: the number of eigenvalues, ``1 <= k <= n``.
        tol: tolerance of ``criterion`` on the error *bounds*; None: :func:`default_tol`.
        which: ``"largest"`` or ``"smallest"``.
        max_matvecs: budget of products (default ``max(3000, 40 k)``); when it runs out the
            values found are returned, flagged unconverged where their bound fails.
        memory_budget: bytes for the solver's vectors and bookkeeping (not the operator's own
            memory); None: the minimum (no locked vectors, many more products).
        seed: seed of the random start vectors.
        progress: show a progress bar of converged eigenvalues.
        criterion: ``"relative"`` (``bound <= tol |theta|``) or ``"norm"``
            (``bound <= tol * scale``).
        vectors: also return the eigenvectors of the ``vectors`` most extreme eigenvalues:
            ``eigenvectors`` then has ``vectors`` columns, in the order of ``eigenvalues``
            (its first ``vectors`` for "largest", its last for "smallest"); 0: none.

    Returns:
        ``Spectrum`` with eigenvalues in descending order, ``residuals`` = error bounds /
        ``scale``, ``relative_residuals`` = bounds / ``|theta|``, ``converged`` from the
        bounds, ``method="lanczos-eigenvalues-only"``.

    Raises:
        UserInputError: on invalid arguments or a budget below the minimum.
    """
    spectrum, _ = _solve(
        op, k, tol=tol, which=which, max_matvecs=max_matvecs, memory_budget=memory_budget,
        seed=seed, progress=progress, criterion=criterion, vectors=vectors,
    )  # fmt: skip
    return spectrum


def _solve(
    op: Any,
    k: int,
    *,
    tol: float | None,
    which: str,
    max_matvecs: int | None,
    memory_budget: int | None,
    seed: int,
    progress: bool,
    criterion: str,
    vectors: int,
) -> tuple[Spectrum, dict[str, Any]]:
    """:func:`lanczos_eigenvalues` and the solve's statistics (phases, products, plan)."""
    op = as_operator(op)
    n = int(op.n)
    if criterion not in CRITERIA:
        raise UserInputError(f"criterion must be one of {CRITERIA}, got {criterion!r}")
    if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or not 1 <= k <= n:
        raise UserInputError(f"k must be an integer in [1, n={n}], got {k!r}")
    if which not in _WHICH:
        raise UserInputError(
            f"which must be one of {_WHICH} in the eigenvalues-only mode, got {which!r}"
        )
    if tol is None:
        tol = default_tol(op.dtype, criterion)
    eps = torch.finfo(op.dtype).eps
    if not (isinstance(tol, (int, float)) and math.isfinite(tol) and eps < tol < 1):
        raise UserInputError(f"tol must be a number in ({eps:.2g}, 1), got {tol!r}")
    if not isinstance(vectors, (int, np.integer)) or not 0 <= vectors <= k:
        raise UserInputError(f"vectors must be an integer in [0, k={k}], got {vectors!r}")
    if max_matvecs is None:
        max_matvecs = _default_max_matvecs(int(k))
    if not isinstance(max_matvecs, (int, np.integer)) or max_matvecs < 1:
        raise UserInputError(f"max_matvecs must be a positive integer, got {max_matvecs!r}")
    if memory_budget is not None and (
        not isinstance(memory_budget, (int, np.integer)) or memory_budget <= 0
    ):
        raise UserInputError(
            f"memory_budget must be a positive number of bytes, got {memory_budget!r}"
        )
    plan = memory_plan(
        n, int(k), op.dtype, memory_budget=memory_budget, vectors=int(vectors),
        max_matvecs=int(max_matvecs),
    )  # fmt: skip
    work_op = _Negated(op) if which == "smallest" else op
    test = _Criterion(criterion, float(tol), op.dtype)
    start = time.perf_counter()
    passes_before = getattr(op, "num_data_passes", None)
    # as in the block solver, a guard of values beyond the k-th must converge too: in a dense
    # tail an eigenvalue near rank k can still be missing when k values have converged
    # (fcn:2x1000, K = 300 under 2 GiB: rank 298 of the full solver's was absent without it)
    k_solve = min(int(k) + math.ceil(_GUARD * int(k)), n)
    bar = progress_bar(total=k_solve, desc=f"top-{k} eigenvalues ({which})", enabled=progress)
    try:
        solver = _Solver(work_op, k_solve, test, plan, int(max_matvecs), seed, bar, int(k))
        result = solver.run(int(vectors))
    finally:
        bar.close()
    values, bounds, vecs = result.values, result.bounds, result.vectors
    if which == "smallest":
        values = -values
    order = np.argsort(-values, kind="stable")
    values, bounds = values[order], bounds[order]
    keep = slice(0, int(k)) if which == "largest" else slice(max(values.size - int(k), 0), None)
    values, bounds = values[keep], bounds[keep]  # the guard values are not reported
    if vecs is not None and which == "smallest":
        vecs = vecs[:, ::-1].copy()  # the smallest values come last in descending order
    scale = max(result.scale, 1e-300)
    passes = None
    if passes_before is not None:
        passes = int(op.num_data_passes) - int(passes_before)
    spectrum = Spectrum(
        eigenvalues=values,
        eigenvectors=vecs,
        residuals=bounds / scale,
        converged=test.passes(bounds, values, scale),
        num_matvecs=solver.matvecs,
        num_data_passes=passes,
        seconds=time.perf_counter() - start,
        tol=float(tol),
        which=which,
        method=METHOD,
        n=n,
        scale=scale,
        criterion=criterion,
        relative_residuals=bounds / np.maximum(np.abs(values), 1e-300),
    )
    stats = dict(solver.stats, plan=plan, peak_bytes=plan.peak_bytes)
    return spectrum, stats


@dataclass
class _Result:
    values: np.ndarray  # the solver's order: locked first, then phase 2, each descending
    bounds: np.ndarray
    vectors: np.ndarray | None  # (n, j): the eigenvectors of the j largest values
    scale: float


class _Solver:
    """One solve: phase 1 (thick restart with locking in the buffer), phase 2 (deflated
    eigenvalues-only Lanczos), and the optional second pass for eigenvectors.
    """

    def __init__(
        self,
        op: Any,
        k: int,
        criterion: _Criterion,
        plan: MemoryPlan,
        max_matvecs: int,
        seed: int,
        bar: Any,
        k_report: int | None = None,
    ) -> None:
        self.op, self.k, self.criterion, self.plan = op, k, criterion, plan
        # the k asked for; self.k adds the guard, whose values must converge too, unless they
        # take more than _GUARD_PRODUCTS of the products the first k took (a dense bulk just
        # below the k-th value would never let them)
        self.k_report = k if k_report is None else k_report
        self.max_matvecs, self.bar = max_matvecs, bar
        self.n, self.dtype, self.device = int(op.n), op.dtype, op.device
        self.eps1 = FLOOR_EPS * torch.finfo(self.dtype).eps  # a product's rounding, relative
        self.gen = torch.Generator().manual_seed(seed)
        self.matvecs = 0
        self.scale = 0.0
        self.Qt = torch.empty((plan.rows, self.n), dtype=self.dtype, device=self.device)
        self.L = 0  # locked vectors: rows [0, L) of Qt
        self.locked_values = np.empty(0)
        self.locked_residuals = np.empty(0)
        self.converged_shown = 0
        self.stats: dict[str, Any] = {}

    # ------------------------------------------------------------------ driver

    def run(self, vectors: int) -> _Result:
        started = time.perf_counter()
        if self.plan.active:
            _ThickRestart(self).run()
            _release_free_memory()
        self.stats.update(
            phase1_matvecs=self.matvecs, locked=self.L, phase1_seconds=time.perf_counter() - started
        )
        values, bounds = self.locked_values.copy(), self.locked_residuals + self._rounding()
        phase2 = None
        if self.L < self.k and self.matvecs < self.max_matvecs:
            phase2 = _DeflatedLanczos(self)
            p_values, p_bounds = phase2.run(self.k - self.L)
            values = np.concatenate([values, p_values])
            bounds = np.concatenate([bounds, p_bounds])
            self.stats.update(
                phase2_steps=phase2.m,
                analyses=phase2.analyses,
                analysis_seconds=phase2.analysis_seconds,
                certifications=phase2.certifications,
                retros=phase2.retros,
                stopped_at_floor=phase2.hopeless,
                guard_waived=phase2.guard_waived,
                ghost_copies=phase2.copies,
                spurious_removed=phase2.spurious,
                forming_copies_dropped=phase2.duplicates,
            )
        elif self.L < self.k:  # budget spent in phase 1: what is left is unconverged
            pass
        values, bounds = values[: self.k], bounds[: self.k]
        order = np.argsort(-values, kind="stable")
        vecs = None
        if vectors:
            vecs = self._eigenvectors(order[:vectors], values, bounds, phase2)
        return _Result(values, bounds, vecs, self.scale)

    def _rounding(self) -> float:
        """The rounding of one recomputed residual: a product's, relative to scale."""
        return self.eps1 * self.scale

    def update_progress(self, converged: int) -> None:
        self.bar.set_postfix(matvecs=self.matvecs, refresh=False)
        if converged > self.converged_shown:
            self.bar.update(converged - self.converged_shown)
            self.converged_shown = converged

    def random(self) -> Tensor:
        x = torch.randn(self.n, generator=self.gen, dtype=torch.float64)
        return x.to(self.device)

    def product(self, X: Tensor) -> Tensor:
        """``H X`` for ``X`` of shape ``(n, b)`` in the operator's dtype; counted."""
        out = self.op.matmat(X).detach()
        self.matvecs += X.shape[1]
        return out

    def certify_rows(
        self, r0: int, r1: int, at: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Rayleigh quotients ``rho`` and residuals ``||H y - rho y||`` (unit y) of rows
        ``[r0, r1)`` of the buffer, one block of products at a time (``at``: residuals at
        these values instead of rho); the rows are normalized in place.
        """
        rhos, residuals = [], []
        for a in range(r0, r1, _CERT_BLOCK):
            b = min(a + _CERT_BLOCK, r1)
            X = self.Qt[a:b].T.contiguous()
            HX = self.product(X)
            for i in range(b - a):
                x, hx = X[:, i], HX[:, i]
                norm2, rq, squares = 0.0, 0.0, []
                for c0 in range(0, self.n, _COL_CHUNK):  # float64 without vector temporaries
                    xc = x[c0 : c0 + _COL_CHUNK].to(torch.float64)
                    hc = hx[c0 : c0 + _COL_CHUNK].to(torch.float64)
                    norm2 += float(xc @ xc)
                    rq += float(xc @ hc)
                norm = math.sqrt(norm2)
                rho = rq / norm2
                rhos.append(rho)
                value = rho if at is None else float(at[a + i - r0])
                for c0 in range(0, self.n, _COL_CHUNK):
                    xc = x[c0 : c0 + _COL_CHUNK].to(torch.float64)
                    hc = hx[c0 : c0 + _COL_CHUNK].to(torch.float64)
                    squares.append(float(torch.linalg.vector_norm(hc - value * xc)) ** 2)
                residuals.append(math.sqrt(sum(squares)) / norm)
                self.Qt[a + i] /= norm
                del x, hx, xc, hc  # views: they would keep the block alive
            del X, HX
        _release_free_memory()
        return np.asarray(rhos), np.asarray(residuals)

    # ------------------------------------------------------------------ eigenvectors

    def _eigenvectors(
        self,
        chosen: np.ndarray,
        values: np.ndarray,
        bounds: np.ndarray,
        phase2: _DeflatedLanczos | None,
    ) -> np.ndarray:
        """Eigenvectors of the ``chosen`` results (solver indices): locked rows as they are,
        phase-2 ones rebuilt by the second pass and certified by one product each; a
        bound improves where the rebuilt vector's residual at the value is smaller.
        """
        out = np.empty((self.n, chosen.size), dtype=_numpy_dtype(self.dtype))
        rebuild = [(col, int(i)) for col, i in enumerate(chosen) if i >= self.L]
        for col, i in enumerate(chosen):
            if i < self.L:
                out[:, col] = self.Qt[int(i)].cpu().numpy()
        if rebuild and phase2 is not None:
            started = time.perf_counter()
            before = self.matvecs
            rows = phase2.rebuild([i - self.L for _, i in rebuild])
            at = np.array([values[i] for _, i in rebuild])
            _, residuals = self.certify_rows(self.L, self.L + rows, at=at)
            for j, (col, i) in enumerate(rebuild):
                out[:, col] = self.Qt[self.L + j].cpu().numpy()
                # Krylov-Weinstein for the unit vector: rigorous, no assumption on T
                bounds[i] = min(bounds[i], residuals[j] + self._rounding())
            self.stats.update(
                vectors_matvecs=self.matvecs - before,
                vectors_seconds=time.perf_counter() - started,
                rebuild_deviation=phase2.rebuild_deviation,
            )
        return out


def _distance_to(sorted_values: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Distance from each ``x`` to the nearest of ``sorted_values`` (ascending; inf if none)."""
    x = np.atleast_1d(np.asarray(x, dtype=np.float64))
    if sorted_values.size == 0:
        return np.full(x.shape, np.inf)
    i = np.searchsorted(sorted_values, x)
    right = sorted_values[np.minimum(i, sorted_values.size - 1)]
    left = sorted_values[np.maximum(i - 1, 0)]
    return np.minimum(np.abs(right - x), np.abs(left - x))


def _numpy_dtype(dtype: torch.dtype) -> np.dtype:
    return torch.empty((), dtype=dtype).numpy().dtype


class _ThickRestart:
    """Phase 1: thick-restart Lanczos (one vector a step) with locking, in the buffer.

    Rows ``[0, L)`` of ``Qt`` are locked vectors, rows ``[L, L + m)`` the active basis whose
    products were taken, row ``L + m`` the pending vector (orthogonal to all of them);
    ``T[:m, :m]`` is the projection of the active basis (diagonal after a restart, with the
    arrow filled by the next step's Gram-Schmidt coefficients).
    """

    def __init__(self, s: _Solver) -> None:
        self.s = s
        self.R = s.plan.rows - s.plan.reserve
        self.amax = s.plan.active
        self.T = np.zeros((self.amax + 1, self.amax + 1))
        self.m = 0
        self.last_beta = 0.0
        self.exhausted = False  # the basis spans all of R^n: its Ritz values are exact

    def capacity(self) -> int:
        """Active basis vectors that fit beside the locked ones (and the pending one)."""
        s = self.s
        return min(self.amax, self.R - s.L - 1, s.n - s.L - 1)

    def run(self) -> None:
        s = self.s
        x = s.random().to(s.dtype)
        s.Qt[0] = x / torch.linalg.vector_norm(x)
        while s.L < s.k_report and s.matvecs < s.max_matvecs and not self.exhausted:
            cap = self.capacity()
            if cap < _MIN_ACTIVE:
                break
            if self.m >= cap:
                self.restart(final=False)
                continue
            self.step()
        self.restart(final=True)

    def step(self) -> None:
        s = self.s
        L, m = s.L, self.m
        v = s.Qt[L + m]
        w = s.product(v[:, None])[:, 0].to(s.dtype)
        V = s.Qt[: L + m + 1]  # locked and active: one contiguous block of rows
        before = float(torch.linalg.vector_norm(w))
        h = V @ w
        w.addmv_(V.T, h, alpha=-1)
        after = float(torch.linalg.vector_norm(w))
        if after < 0.7 * before:  # twice is enough
            h2 = V @ w
            w.addmv_(V.T, h2, alpha=-1)
            h = h + h2
            after = float(torch.linalg.vector_norm(w))
        col = h[L:].to(torch.float64).cpu().numpy()
        self.T[: m + 1, m] = col
        self.T[m, : m + 1] = col
        s.scale = max(s.scale, abs(float(col[-1])))
        if after <= 1e3 * torch.finfo(s.dtype).eps * max(s.scale, 1e-300):
            after = 0.0  # an invariant subspace: continue with a random orthogonal vector
            w = self._random_orthogonal(L + m + 1)
            if w is None:  # the whole space is spanned: the Ritz values are exact
                self.m = m + 1
                self.last_beta = 0.0
                self.exhausted = True
                return
            s.Qt[L + m + 1] = w
        else:
            torch.div(w, after, out=s.Qt[L + m + 1])
        del w
        self.last_beta = after
        self.m = m + 1

    def _random_orthogonal(self, rows: int) -> Tensor | None:
        s = self.s
        if rows >= s.n:
            return None
        V = s.Qt[:rows]
        x = s.random().to(s.dtype)
        for _ in range(2):
            x = x - V.T @ (V @ x)
        return x / torch.linalg.vector_norm(x)

    def lock_threshold(self) -> float:
        s = self.s
        floor = _LOCK_FLOOR * s.eps1 * s.scale
        if s.criterion.name == "norm":
            share = 0.01 * s.criterion.tol * s.scale / math.sqrt(max(self.R, 1))
            return max(floor, share)
        return floor

    def restart(self, final: bool) -> None:
        """Rayleigh-Ritz of the active basis; lock the certified converged wanted pairs,
        keep the best others (none when ``final``) and continue from the pending vector.
        """
        s = self.s
        m, L = self.m, s.L
        if m == 0:
            return
        theta, S = np.linalg.eigh(self.T[:m, :m])
        theta, S = theta[::-1].copy(), S[:, ::-1].copy()  # descending
        s.scale = max(s.scale, float(np.abs(theta).max()))
        estimates = np.abs(self.last_beta * S[m - 1])
        threshold = self.lock_threshold()
        # wanted: the top half of the active Ritz values at most (the bottom ones converge to
        # the other end of the spectrum)
        wanted = min(s.k - L, max(m // 2, 1))
        room = self.R - L if final else self.R - L - 1
        candidates = [i for i in range(wanted) if estimates[i] <= threshold][:room]
        c = len(candidates)
        keep: list[int] = []
        if not final:
            cap_next = min(self.amax, self.R - (L + c) - 1, s.n - L - c - 1)
            rest = [i for i in range(m) if i not in set(candidates)]
            keep = rest[: max(min(s.k - L - c, cap_next // 2, m - c), 0)]
        chosen = candidates + keep
        if chosen:
            self._rotate(L, m, S[:, chosen])
        if not final:
            s.Qt[L + len(chosen)] = s.Qt[L + m]  # the pending vector follows the kept ones
        passed = np.zeros(c, dtype=bool)
        values = theta[chosen].copy()
        residuals = np.full(len(chosen), np.inf)
        if c:
            rho, res = s.certify_rows(L, L + c)
            values[:c], residuals[:c] = rho, res
            passed = res <= threshold
            s.scale = max(s.scale, float(np.abs(rho).max()))
        order = np.concatenate([np.flatnonzero(passed), np.flatnonzero(~passed)])
        if c and not passed.all():  # locked rows first (an estimate was optimistic)
            self._permute_rows(L, order)
            values[:c], residuals[:c] = values[order], residuals[order]
        new = int(passed.sum())
        s.locked_values = np.concatenate([s.locked_values, values[:new]])
        s.locked_residuals = np.concatenate([s.locked_residuals, residuals[:new]])
        s.L = L + new
        s.update_progress(s.L)
        if final:
            self.m = 0
            return
        active = values[new:]
        self.m = active.size
        self.T[:] = 0.0
        self.T[: self.m, : self.m] = np.diag(active)

    def _permute_rows(self, r0: int, order: np.ndarray) -> None:
        """Row ``r0 + i`` of the buffer becomes row ``r0 + order[i]``, by cycles of swaps
        through one spare row (no block copy).
        """
        s = self.s
        done = np.zeros(order.size, dtype=bool)
        spare = torch.empty(s.n, dtype=s.dtype, device=s.device)
        for start in range(order.size):
            if done[start] or order[start] == start:
                done[start] = True
                continue
            spare.copy_(s.Qt[r0 + start])  # the cycle start -> order[start] -> ...
            i = start
            while True:
                done[i] = True
                j = int(order[i])
                if j == start:
                    s.Qt[r0 + i].copy_(spare)
                    break
                s.Qt[r0 + i].copy_(s.Qt[r0 + j])
                i = j
        del spare

    def _rotate(self, r0: int, m: int, S: np.ndarray) -> None:
        """Rows ``[r0, r0 + c)`` of the buffer become ``S^T`` times rows ``[r0, r0 + m)``,
        a chunk of columns at a time (each chunk is read before it is overwritten).
        """
        s = self.s
        St = torch.as_tensor(np.ascontiguousarray(S.T), dtype=s.dtype, device=s.device)
        c = St.shape[0]
        for a in range(0, s.n, _COL_CHUNK):
            b = min(a + _COL_CHUNK, s.n)
            s.Qt[r0 : r0 + c, a:b] = St @ s.Qt[r0 : r0 + m, a:b]


class _DeflatedLanczos:
    """Phase 2: the three-term recurrence in float64 on ``P H P`` (P projects off the locked
    rows of the buffer), with the analysis of ``T`` described in the module docstring.
    """

    def __init__(self, s: _Solver) -> None:
        self.s = s
        self.Y = s.Qt[: s.L]
        size = s.max_matvecs - s.matvecs + 1
        self.alpha = np.zeros(size)
        self.beta = np.zeros(size)
        self.m = 0
        self.start_state = s.gen.get_state()
        eps = torch.finfo(s.dtype).eps
        # Weyl: the locked block's coupling, and the locked vectors' orthonormality defect
        self.weyl = 0.0
        if s.L:
            self.weyl = float(np.sqrt(np.sum(s.locked_residuals**2)))
            self.weyl += s.L * eps * max(s.scale, 1e-300)
        # certificates found so far: value, bound, the step of T that gave it
        self.hv = np.empty(0)
        self.hb = np.empty(0)
        self.hs = np.empty(0, dtype=np.int64)
        self.count_guess = 0
        self.invariant = False
        self.hopeless = False
        self.k_done_at: int | None = None  # products when the first k values had converged
        self.guard_waived = False
        self.copies = 0
        self.spurious = 0
        self.retro_values: list[float] = []
        self.duplicates = 0
        self.result_values = np.empty(0)
        self.result_steps = np.empty(0, dtype=np.int64)
        self.analyses = 0
        self.analysis_seconds = 0.0
        self.certifications = 0
        self.retros = 0
        self.rebuild_deviation = 0.0

    # -------------------------------------------------------------- recurrence

    def _buffers(self) -> None:
        """The working vectors, allocated once (no temporaries of length n in the loop): the
        three Lanczos vectors in float64, and casts to the operator's dtype when it differs.
        """
        s = self.s
        f64 = torch.float64
        self.vecs = [torch.empty(s.n, dtype=f64, device=s.device) for _ in range(3)]
        self.cast = None
        self.cast64 = None
        if s.dtype != f64:
            self.cast = torch.empty(s.n, dtype=s.dtype, device=s.device)
            self.cast64 = torch.empty(s.n, dtype=f64, device=s.device)

    def _release(self) -> None:
        self.vecs, self.cast, self.cast64 = [], None, None
        _release_free_memory()

    def _start(self, q: Tensor) -> None:
        """The start vector (the same random draw on every pass), off Y, normalized, in q."""
        s = self.s
        s.gen.set_state(self.start_state)
        q.copy_(s.random())
        self._deflate(q)
        self._deflate(q)
        q.div_(torch.linalg.vector_norm(q))

    def _deflate(self, w: Tensor) -> None:
        """``w <- w - Y (Y^T w)`` in place."""
        if self.Y.shape[0] == 0:
            return
        if self.Y.dtype == torch.float64:
            c = self.Y @ w
            w.addmv_(self.Y.T, c, alpha=-1)
            return
        assert self.cast is not None and self.cast64 is not None
        self.cast.copy_(w)
        c = self.Y @ self.cast
        torch.mv(self.Y.T, c, out=self.cast)
        self.cast64.copy_(self.cast)
        w.sub_(self.cast64)

    def _step(self, q: Tensor, q_prev: Tensor | None, beta_prev: float, w: Tensor) -> float:
        """One step: the unnormalized next vector into ``w``; returns alpha."""
        s = self.s
        if self.cast is None:
            w.copy_(s.product(q[:, None])[:, 0])
        else:
            self.cast.copy_(q)
            w.copy_(s.product(self.cast[:, None])[:, 0])
        if q_prev is not None:
            w.add_(q_prev, alpha=-beta_prev)
        alpha = float(q @ w)
        w.add_(q, alpha=-alpha)
        self._deflate(w)
        correction = float(q @ w)  # local reorthogonalization against q
        w.add_(q, alpha=-correction)
        return alpha + correction

    def run(self, wanted: int) -> tuple[np.ndarray, np.ndarray]:
        """Steps until the top ``wanted`` values are converged or the products run out."""
        s = self.s
        self.wanted = wanted
        self._buffers()
        q, w, spare = self.vecs
        self._start(q)
        q_prev: Tensor | None = None
        beta_prev = 0.0
        analysed_at, analysis_cost, step_time = 0, 0.0, 0.0
        while s.matvecs < s.max_matvecs:
            started = time.perf_counter()
            alpha = self._step(q, q_prev, beta_prev, w)
            beta = float(torch.linalg.vector_norm(w))
            j = self.m
            self.alpha[j], self.beta[j] = alpha, beta
            self.m = j + 1
            s.scale = max(s.scale, abs(alpha))
            if beta <= 1e3 * np.finfo(np.float64).eps * max(s.scale, 1e-300):
                self.invariant = True  # an invariant subspace: T's eigenvalues are exact
                self.beta[j] = 0.0
                break
            w.div_(beta)
            # rotate: the old q_prev's storage takes the next w
            q_prev, q, w, beta_prev = q, w, (q_prev if q_prev is not None else spare), beta
            step_time += time.perf_counter() - started
            added = self.m - analysed_at
            if added >= _ANALYSIS_MIN_STEP and (
                added >= _ANALYSIS_GROWTH * self.m or analysis_cost <= _ANALYSIS_SHARE * step_time
            ):
                started = time.perf_counter()
                values, bounds, done = self.analyze()
                analysis_cost = time.perf_counter() - started
                analysed_at, step_time = self.m, 0.0
                if (done and not self.hopeless) or self._guard_spent(values, bounds):
                    self._release()
                    return values, bounds
                if done:
                    break  # the rounding floor stops the rest: bounds for all, then stop
        del q, q_prev, w, spare
        self._release()
        values, bounds, _ = self.analyze(final=True)
        return values, bounds

    def _guard_spent(self, values: np.ndarray, bounds: np.ndarray) -> bool:
        """Whether the guard beyond the k asked for has had its share of products."""
        s = self.s
        if self.k_done_at is None:
            need = s.k_report - s.L
            if need > 0 and (
                values.size < need
                or not s.criterion.passes(bounds[:need], values[:need], s.scale).all()
            ):
                return False
            self.k_done_at = s.matvecs
        self.guard_waived = s.matvecs >= (1 + _GUARD_PRODUCTS) * self.k_done_at
        return self.guard_waived

    # -------------------------------------------------------------- analysis of T

    def tolerances(self, m: int) -> tuple[float, float]:
        """(copy tolerance, isolation distance) at step m."""
        s = self.s
        eps = torch.finfo(s.dtype).eps
        copy = _COPY_TOL * math.sqrt(m) * eps * max(s.scale, 1e-300)
        return copy, _ISOLATION * copy

    def spurious_tol(self, m: int) -> float:
        """Cullum-Willoughby: a simple eigenvalue of T_m this close to one of T_m without its
        first row and column is spurious (its eigenvector has no weight on the start
        vector); the distance is ``beta_1 |s_1| |s_1_hat|``, which for good values is far
        above the eigenvalues' own accuracy, a few units of ``eps ||T_m||``.
        """
        a = self.alpha[:m]
        norm = float(np.abs(a).max() + 2 * np.abs(self.beta[: m - 1]).max(initial=0.0))
        return _SPURIOUS_TOL * np.finfo(np.float64).eps * max(norm, 1e-300)

    def ritz_top(self, m: int, count: int) -> np.ndarray:
        """The ``count`` largest eigenvalues of T_m, descending: bisection for a few, all of
        them by ``sterf`` (O(m^2), unharmed by clusters of copies) for many.
        """
        a, b = self.alpha[:m], self.beta[: m - 1]
        count = min(count, m)
        if m == 1:
            return a.copy()
        if count * _ALL_EIGENVALUES >= m:
            return eigvalsh_tridiagonal(a, b, lapack_driver="sterf")[::-1][:count].copy()
        top = (m - count, m - 1)
        vals = eigh_tridiagonal(a, b, eigvals_only=True, select="i", select_range=top)
        return vals[::-1].copy()

    def ritz_window(
        self, m: int, lo: float, hi: float, hat: bool = False, every: bool = False
    ) -> np.ndarray:
        """Eigenvalues of T_m (``hat``: T_m without its first row and column) in [lo, hi]
        (``every``: computed from all of them, for windows holding a large share).
        """
        a, b = self.alpha[:m], self.beta[: m - 1]
        if hat:
            a, b = a[1:], b[1:]
        if a.size <= 1:
            return a[(a >= lo) & (a <= hi)].copy()
        if every:
            vals = eigvalsh_tridiagonal(a, b, lapack_driver="sterf")
            return vals[(vals >= lo) & (vals <= hi)].copy()
        return eigh_tridiagonal(a, b, eigvals_only=True, select="v", select_range=(lo, hi))

    def smallest(self, m: int) -> float:
        """The smallest eigenvalue of T_m."""
        a, b = self.alpha[:m], self.beta[: m - 1]
        if m == 1:
            return float(a[0])
        return float(eigh_tridiagonal(a, b, eigvals_only=True, select="i", select_range=(0, 0))[0])

    def ritz_vector(self, m: int, theta: float) -> tuple[np.ndarray, float, float]:
        """Unit eigenvector s of T_m for the eigenvalue near ``theta`` by inverse iteration
        (LAPACK ``gtsv``, partial pivoting), its Rayleigh quotient and ``||T s - value s||``.
        """
        a, b = self.alpha[:m], self.beta[: m - 1]
        if m == 1:
            return np.ones(1), float(a[0]), 0.0
        rng = np.random.default_rng(m)
        x = rng.standard_normal((m, 1))
        shift = theta
        step = 10 * np.finfo(np.float64).eps * max(self.s.scale, abs(theta), 1e-300)
        for attempt in range(4):
            y = x
            ok = True
            for _ in range(2):
                _, _, _, y, info = dgtsv(b, a - shift, b, y)
                if info != 0 or not np.all(np.isfinite(y)):
                    ok = False
                    break
                y /= np.linalg.norm(y)
            if ok:
                x = y
                break
            shift = theta + (attempt + 1) * step  # exactly singular: move off the eigenvalue
        vec = x[:, 0]
        Tv = a * vec
        Tv[:-1] += b * vec[1:]
        Tv[1:] += b * vec[:-1]
        value = float(vec @ Tv)
        rho = float(np.linalg.norm(Tv - value * vec))
        return vec, value, rho

    def floor(self, m: int) -> float:
        """The part of the bound at step m that no convergence removes (rounding, Weyl)."""
        s = self.s
        return _PAIGE_FACTOR * math.sqrt(m) * s.eps1 * max(s.scale, 1e-300) + self.weyl

    def certify(self, m: int, theta: float) -> tuple[float, float]:
        """(value, bound) of the Ritz value near ``theta`` of T_m (module docstring)."""
        s = self.s
        self.certifications += 1
        vec, value, rho = self.ritz_vector(m, theta)
        delta = abs(self.beta[m - 1]) * abs(vec[-1])
        noise = math.sqrt(m) * (rho + s.eps1 * max(s.scale, 1e-300))
        return value, _PAIGE_FACTOR * (delta + noise) + self.weyl

    def _simple_at(self, m: int, center: float) -> tuple[int, tuple[float, float, int] | None]:
        """How many Ritz values of T_m lie within the isolation distance of ``center``, and
        when exactly one does and it is good: its (value, bound, m).
        """
        copy, iso = self.tolerances(m)
        near = self.ritz_window(m, center - iso, center + iso)
        if near.size != 1:
            return near.size, None
        hat = self.ritz_window(m, float(near[0]) - copy, float(near[0]) + copy, hat=True)
        if hat.size and _distance_to(hat, near)[0] <= self.spurious_tol(m):
            return 1, None  # spurious at that step
        # the isolation of the certified value: no other Ritz value within iso (checked)
        value, bound = self.certify(m, float(near[0]))
        return 1, (value, bound, m)

    def _retro(self, center: float) -> tuple[float, float, int] | None:
        """Certify a value that already has copies at an earlier step where it was a simple,
        isolated, good Ritz value: the last such step (bisection on the step), then up to
        ``_RETRO_STEPS`` earlier steps, for the smallest bound (a copy forming nearby mixes
        into the vector and raises the bound shortly before it appears).
        """
        self.retros += 1
        self.retro_values.append(center)
        lo, hi, last = 1, self.m, None
        while hi - lo > 1:
            mid = (lo + hi) // 2
            count = self._count_near(mid, center)
            if count >= 2:
                hi = mid
            else:
                lo = mid
                if count == 1:
                    last = mid
        if last is None:
            return None
        best = None
        stride = max(1, last // (4 * _RETRO_STEPS))
        rising = 0
        for m in range(last, 0, -stride)[:_RETRO_STEPS]:
            count, found = self._simple_at(m, center)
            if count == 0:
                break  # before the value converged
            if found is None or abs(found[0] - center) > found[1]:
                continue
            if best is None or found[1] < best[1]:
                best, rising = found, 0
            else:
                rising += 1
                if rising >= _RETRO_STEPS // 4:
                    break
        return best

    def _retried(self, center: float, copy: float) -> bool:
        """Whether a retro search was already made for this value (one is enough)."""
        return any(abs(v - center) <= copy for v in self.retro_values)

    def _count_near(self, m: int, center: float) -> int:
        _, iso = self.tolerances(m)
        return int(self.ritz_window(m, center - iso, center + iso).size)

    def _groups(self, m: int, limit: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The top ``limit`` eigenvalues of T_m at most (descending), and the start and end
        indices of its good groups of copies (spurious simple values removed), enough for
        ``wanted`` when they exist.
        """
        count = min(max(self.count_guess, 2 * self.wanted + 2 * _SPARE_GROUPS), limit)
        while True:
            theta = self.ritz_top(m, count)
            self.s.scale = max(self.s.scale, abs(float(theta[0])))
            copy, iso = self.tolerances(m)
            # a group: Ritz values closer than the isolation distance (copies, and copies
            # still forming, which cannot be certified apart)
            cuts = np.flatnonzero(-np.diff(theta) > iso) + 1
            starts = np.concatenate([[0], cuts]).astype(np.int64)
            ends = np.concatenate([cuts, [theta.size]]).astype(np.int64)
            if count < m:  # the last group may continue below the selection
                starts, ends = starts[:-1], ends[:-1]
            sizes = ends - starts
            good = np.ones(starts.size, dtype=bool)
            simple = np.flatnonzero(sizes == 1)
            if simple.size and m > 1:
                every = count * _ALL_EIGENVALUES >= m
                lo, hi = float(theta[-1]) - copy, float(theta[0]) + copy
                hat = self.ritz_window(m, lo, hi, hat=True, every=every)
                spurious = self.spurious_tol(m)
                flagged = simple[_distance_to(hat, theta[starts[simple]]) <= spurious]
                _, iso = self.tolerances(m)
                for g in flagged:
                    # the verdict rests on s_1 being tiny: check it where the eigenvector is
                    # well defined (isolated; next to a forming copy the two mix)
                    i = starts[g]
                    gap = min(
                        theta[i - 1] - theta[i] if i > 0 else np.inf,
                        theta[i] - theta[i + 1] if i + 1 < theta.size else np.inf,
                    )
                    if gap >= iso:
                        vec, _, _ = self.ritz_vector(m, float(theta[i]))
                        good[g] = abs(vec[0]) > _FIRST_COMPONENT
            if good.sum() > self.wanted + max(_SPARE_GROUPS, self.wanted // 10) or count >= limit:
                self.count_guess = count
                self.spurious = int((~good).sum())
                return theta, starts[good], ends[good]
            count = min(limit, 2 * count)

    def analyze(self, final: bool = False) -> tuple[np.ndarray, np.ndarray, bool]:
        """The top ``wanted`` good values of T_m with bounds, and whether all converged.

        Candidates are the good groups from the top (a few more than wanted); each gets the
        best certificate of this or an earlier step. A candidate that has not converged and
        lies within its own bound (or within the isolation distance) of a converged one is
        a copy still forming, not another eigenvalue: it is dropped.
        """
        s = self.s
        started = time.perf_counter()
        self.analyses += 1
        m = self.m
        s.scale = max(s.scale, abs(self.smallest(m)))
        theta, starts, ends = self._groups(m, m)
        copy, iso = self.tolerances(m)
        # distance to the neighbouring good groups: how far a certificate may be matched
        lows = np.concatenate([[np.inf], theta[ends - 1], [-np.inf]])
        highs = np.concatenate([[np.inf], theta[starts], [-np.inf]])
        good_gaps = np.minimum(lows[:-2] - theta[starts], theta[ends - 1] - highs[2:])
        take = self.wanted + max(_SPARE_GROUPS, self.wanted // 10)
        starts, ends, good_gaps = starts[:take], ends[:take], good_gaps[:take]
        count = starts.size
        sizes = ends - starts
        centers = np.array([theta[a:b].mean() for a, b in zip(starts, ends)])
        widths = np.array([theta[a] - theta[b - 1] for a, b in zip(starts, ends)])
        # distance to any other Ritz value (Paige's isolation, for certifying)
        padded = np.concatenate([[np.inf], theta, [-np.inf]])
        gaps = np.minimum(padded[starts] - theta[starts], theta[ends - 1] - padded[ends + 1])
        # certificates from earlier steps
        values, bounds = centers.copy(), np.full(count, np.inf)
        steps = np.full(count, m, dtype=np.int64)
        matched = np.full(count, -1, dtype=np.int64)
        if self.hv.size and count:
            for g in range(count):
                close = np.abs(self.hv - centers[g]) <= widths[g] + iso + self.hb
                close &= self.hb < 0.5 * good_gaps[g]
                if close.any():
                    idx = np.flatnonzero(close)
                    best = idx[np.argmin(self.hb[idx])]
                    matched[g] = best
                    values[g], bounds[g], steps[g] = self.hv[best], self.hb[best], self.hs[best]
        scale = max(s.scale, 1e-300)
        passing = s.criterion.passes(bounds, values, scale)
        # no certificate at this step or later can pass where the rounding terms alone fail
        floor = self.floor(m)
        reachable = s.criterion.thresholds(centers, scale) >= floor
        failures = 0
        for g in range(count):
            if passing[g] or (not reachable[g] and not final):
                continue
            if sizes[g] == 1 and gaps[g] >= iso:
                if failures >= _FAIL_CUTOFF and not final:
                    continue
                value, bound = self.certify(m, float(centers[g]))
                step = m
            elif sizes[g] > 1 and reachable[g] and not self._retried(float(centers[g]), copy):
                found = self._retro(float(centers[g]))
                if found is None:
                    continue
                value, bound, step = found
            else:
                continue
            ok = bool(s.criterion.passes(np.array([bound]), np.array([value]), scale)[0])
            failures = 0 if ok else failures + 1
            if bound < bounds[g]:
                values[g], bounds[g], steps[g] = value, bound, step
                self._record(value, bound, step, int(matched[g]))
        passing = s.criterion.passes(bounds, values, scale)
        keep = np.ones(count, dtype=bool)
        # two converged values are reported apart only when their bound intervals are
        # disjoint (then they are near different eigenvalues); the better bound stays
        accepted: list[int] = []
        for g in sorted(np.flatnonzero(passing), key=lambda i: bounds[i]):
            if any(abs(values[g] - values[a]) <= bounds[g] + bounds[a] for a in accepted):
                keep[g] = False
            else:
                accepted.append(g)
        # copies still forming next to a converged value are not further eigenvalues
        converged_values = np.sort(values[accepted])
        for g in np.flatnonzero(~passing):
            reach = max(iso, bounds[g] if np.isfinite(bounds[g]) else 0.0)
            if _distance_to(converged_values, values[g])[0] <= reach:
                keep[g] = False
        self.duplicates = int((~keep).sum())
        values, bounds, steps = values[keep], bounds[keep], steps[keep]
        sizes, reachable = sizes[keep], reachable[keep]
        values, bounds, steps = values[: self.wanted], bounds[: self.wanted], steps[: self.wanted]
        sizes, reachable = sizes[: self.wanted], reachable[: self.wanted]
        count = values.size
        self.copies = int((sizes - 1).sum())  # ghosts merged into the wanted values
        if final and count < self.wanted:  # too few good groups: the next Ritz values
            used = np.zeros(theta.size, dtype=bool)
            for a, b in zip(starts, ends):
                used[a:b] = True
            extra = theta[~used][: self.wanted - count]
            values = np.concatenate([values, extra])
            bounds = np.concatenate([bounds, np.full(extra.size, np.inf)])
            steps = np.concatenate([steps, np.full(extra.size, m, dtype=np.int64)])
            order = np.argsort(-values, kind="stable")
            values, bounds, steps = values[order], bounds[order], steps[order]
        # no certificate: the trivial bound (every Ritz value lies in [lambda_min, lambda_max])
        bounds = np.where(np.isfinite(bounds), bounds, 2 * scale)
        self.result_values, self.result_steps = values, steps
        ok = s.criterion.passes(bounds, values, scale)
        s.update_progress(s.L + int(ok.sum()))
        _release_free_memory()  # the analysis' arrays split freed vectors' heap space
        self.analysis_seconds += time.perf_counter() - started
        # at least two steps a wanted value: with fewer, the list could reach the values that
        # converge at the other end of the spectrum before the middle has Ritz values
        done = count >= self.wanted and bool(ok.all()) and m >= 2 * self.wanted
        if not final and not done and m >= 2 * self.wanted:
            # every value still unconverged is kept from passing by the rounding floor,
            # which grows with m: more steps cannot certify them (float32 products)
            self.hopeless = bool((ok[:count] | ~reachable[: ok[:count].size]).all())
            done = self.hopeless
        return values, bounds, done

    def _record(self, value: float, bound: float, step: int, old: int) -> None:
        """Keep a certificate: replace the matched one (index ``old``) or add it."""
        if old >= 0:
            self.hv[old], self.hb[old], self.hs[old] = value, bound, step
        else:
            self.hv = np.append(self.hv, value)
            self.hb = np.append(self.hb, bound)
            self.hs = np.append(self.hs, step)

    # -------------------------------------------------------------- second pass

    def rebuild(self, indices: list[int]) -> int:
        """Regenerate the Lanczos vectors and accumulate the Ritz vectors of the results
        ``indices`` (phase-2 order) into rows ``[L, L + len(indices))`` of the buffer, each
        from the step at which its value was certified; returns the number of rows.
        """
        s = self.s
        steps = [int(self.result_steps[i]) for i in indices]
        top = max(steps)
        S = np.zeros((len(indices), top))
        for r, i in enumerate(indices):
            vec, _, _ = self.ritz_vector(steps[r], float(self.result_values[i]))
            S[r, : steps[r]] = vec
        St = torch.as_tensor(S, dtype=s.dtype, device=s.device)
        acc = s.Qt[s.L : s.L + len(indices)]
        acc.zero_()
        self._buffers()
        q, w, spare = self.vecs
        self._start(q)
        q_prev: Tensor | None = None
        beta_prev = 0.0
        for j in range(top):
            if self.cast is None:
                acc.addr_(St[:, j], q)
            else:
                self.cast.copy_(q)
                acc.addr_(St[:, j], self.cast)
            if j == top - 1:
                break
            alpha = self._step(q, q_prev, beta_prev, w)
            beta = float(torch.linalg.vector_norm(w))
            deviation = max(abs(alpha - self.alpha[j]), abs(beta - self.beta[j]))
            self.rebuild_deviation = max(self.rebuild_deviation, deviation)
            w.div_(beta)
            q_prev, q, w, beta_prev = q, w, (q_prev if q_prev is not None else spare), beta
        del q, q_prev, w, spare
        self._release()
        return len(indices)
