"""Certified extreme eigenpairs: thick-restart block Lanczos with locking.

For an operator ``H`` (anything with ``n``, ``dtype``, ``device``, ``matmat``) we build an
orthonormal basis ``Q = [Q_0, Q_1, ...]`` of the block Krylov space
``span{X, H X, H^2 X, ...}`` of a random start block ``X`` (``p`` columns), keeping the
products ``HQ = H Q`` alongside. Both live in buffers allocated once (no re-copying as the basis
grows). Each new block ``W = H Q_last`` is orthogonalized first against the last two blocks
(the three-term recurrence, cheap) and then once against *all* of ``Q`` (full
reorthogonalization, two BLAS-3 passes over the basis); a second full pass runs only when the
first one removed most of the block ("twice is enough"), so the basis stays orthonormal to
rounding and no spurious copies of converged eigenvalues appear. The Gram-Schmidt
coefficients are exactly the new columns of the projected matrix ``T = Q^T H Q``, so the
Rayleigh-Ritz step is one small float64 ``eigh(T)``.

Convergence is estimated cheaply with the Lanczos relation: ``H Q = Q T + Q_next B E^T``, so
a Ritz pair ``(theta, y = Q s)`` has residual ``||H y - theta y|| = ||B s_last||``, where
``s_last`` is the part of ``s`` on the last block. When the estimates of all wanted pairs
pass, the residuals are recomputed *from the stored products* ``HQ s - theta Q s``, which
certifies them without trusting the recurrence (nothing is reported converged on an estimate
alone). ``eigh(T)`` costs ``O(m^3)``: at ``m`` in the thousands it is run only after enough new
columns that it stays a small fraction of the products' time.

Convergence criterion (``criterion``), for each pair:

- ``"relative"``: ``||H v - theta v|| <= tol * |theta|``. A residual bounds the distance of
  ``theta`` to an eigenvalue of ``H``, so this certifies every eigenvalue to ``tol`` relative
  accuracy, the tail as well as the head: what a power-law fit of the eigenvalues needs.
  Eigenvalues below the precision of the products themselves cannot be resolved relatively;
  a pair also counts as converged when its residual is below ``FLOOR_EPS * eps * |lambda_1|``
  (``eps`` of the operator's dtype), the level at which the products' rounding dominates.
- ``"norm"``: ``||H v - theta v|| <= tol * |lambda_1|``, relative to the largest Ritz value
  in magnitude (a lower bound of ``||H||_2`` that converges first): scipy ``eigsh``'s style.

When the basis would exceed ``basis_size`` columns it is restarted thickly: converged wanted
Ritz pairs are *locked* (kept in the basis for orthogonality, no longer part of the
Rayleigh-Ritz problem or of further restarts), the best other Ritz vectors are kept, and the
iteration continues from ``Q_next``, which is orthogonal to them. Memory therefore stays
``2 * n * basis_size`` numbers of the operator's dtype, ``basis_size = O(k + p)``.

Multiple eigenvalues: a block Krylov space holds at most ``p`` vectors of one eigenspace, so
copies beyond the block size enter only through rounding and the random vectors that restarts
and breakdowns bring in. With full reorthogonalization they do enter, and are then resolved
like any other pair (``tests/test_solvers.py``: a triple and a six-fold eigenvalue found with
every copy at block sizes 1 and 4); a copy can be found late, after the solve has stopped,
only when the guard pairs beyond ``k`` (5 %) are all converged without it.

The guard: the stopping test asks 5 % more pairs than ``k`` to pass, since in a dense tail an
eigenvalue near rank ``k`` can be absent from the basis when the ``k`` largest Ritz pairs
present have converged. The guard may take at most 25 % more products than the ``k`` pairs
took, since a dense bulk just below the ``k``-th eigenvalue would never let it converge.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from hessian_powerlaw import distributed
from hessian_powerlaw.criteria import CRITERIA, DEFAULT_CRITERION
from hessian_powerlaw.errors import UserInputError
from hessian_powerlaw.operators import as_operator
from hessian_powerlaw.progress import progress_bar
from hessian_powerlaw.solvers import _gram, _state, memory
from hessian_powerlaw.solvers._spectrum import Spectrum
from hessian_powerlaw.solvers._state import SolverCheckpoint, as_checkpoint
from hessian_powerlaw.solvers._usage import OperatorUsage

__all__ = [
    "CRITERIA",
    "DEFAULT_CRITERION",
    "DEFAULT_STATE_INTERVAL",
    "DEFAULT_TOL",
    "SolverCheckpoint",
    "default_tol",
    "top_eigenpairs",
]

_WHICH = ("largest", "smallest", "both")

#: Seconds between saves of a checkpointed solve's state, unless the checkpoint says otherwise.
DEFAULT_STATE_INTERVAL = _state.DEFAULT_INTERVAL


#: Default ``tol`` by criterion and operator dtype. "relative": a residual of 1e-3 |theta|
#: bounds each eigenvalue's relative error by 1e-3 (in practice far less: the error of a
#: Ritz value is about residual^2 / gap), which is what the fit of log-eigenvalues needs.
#: "norm": float32 Hessian-vector products carry relative errors of a few 1e-7 that add up
#: over a batch, so residuals stall at a few 1e-6 |lambda_1| (measured: 6.7e-6 on a float32
#: MLP, where a 1e-6 run spent its whole budget); 1e-5 is reachable.
DEFAULT_TOL = {
    "relative": {torch.float64: 1e-3, torch.float32: 1e-3},
    "norm": {torch.float64: 1e-6, torch.float32: 1e-5},
}

#: A residual below ``FLOOR_EPS * eps(dtype) * |lambda_1|`` is at the products' own rounding
#: level (float32: 1.2e-5, float64: 2.2e-14 of |lambda_1|); "relative" accepts it.
FLOOR_EPS = 100.0

# Rayleigh-Ritz (eigh of T, O(m^3)) runs after at least this fraction of the active basis has
# been added since the last one, unless its measured time is below this fraction of the time
# the products of those columns took
_RR_GROWTH = 0.1
_RR_TIME_SHARE = 0.05
# a pair is locked once its residual is below this share of every wanted pair's threshold
_LOCK_SHARE = 0.1
# share of k beyond the k-th pair whose convergence the stopping test also asks for
_GUARD = 0.05
# the guard may take this share more products than the k wanted pairs took
_GUARD_PRODUCTS = 0.25
# rows of the basis handled at once by the in-place restart (bounds its extra memory)
_ROW_CHUNK = 8192


def default_tol(dtype: torch.dtype, criterion: str = DEFAULT_CRITERION) -> float:
    """The default ``tol`` for an operator of ``dtype`` under ``criterion``.

    ``"norm"``: 1e-6 (float64) or 1e-5 (float32); ``"relative"``: 1e-3.
    """
    table = DEFAULT_TOL.get(criterion, DEFAULT_TOL["norm"])
    return table.get(dtype, table[torch.float64])


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
    criterion: str = DEFAULT_CRITERION,
    checkpoint: str | os.PathLike[str] | SolverCheckpoint | None = None,
    memory_budget: int | str | None = None,
) -> Spectrum:
    """The ``k`` extreme eigenpairs of a symmetric operator, each with a certified residual.

    Args:
        op: an operator (``n``, ``dtype``, ``device``, ``matmat``), e.g. ``HessianOperator``.
        k: the number of eigenpairs, ``1 <= k <= n``.
        tol: the convergence tolerance of ``criterion``; ``None``: :func:`default_tol`
            (relative: 1e-3; norm: 1e-6, float32 1e-5).
        which: ``"largest"`` (algebraic), ``"smallest"`` (most negative first) or ``"both"``
            (``ceil(k/2)`` largest and ``floor(k/2)`` smallest, as scipy's ``"BE"``).
        block_size: columns per ``matmat``. Default: 4 on a CPU (8 from k = 200) and 16 on
            a GPU (at most k, at least 2 when k > 1). Larger blocks batch better and
            orthogonalize faster, smaller ones need fewer products
            (``benchmarks/bench_topk.py``, docs/benchmarks.md).
        max_matvecs: budget of operator columns (default ``max(2000, 20 * (k + block))``).
            When it runs out, the pairs found are returned with ``converged`` False where
            the criterion fails: never silently.
        return_vectors: also return the ``(n, k)`` eigenvectors (numpy).
        seed: seed of the random start block.
        progress: show a progress bar of converged eigenpairs out of ``k``.
        basis_size: maximal basis columns before a thick restart
            (default ``max(2 * (k + extra), k + extra + 4 * block)``).
        criterion: ``"relative"`` (``||H v - theta v|| <= tol |theta|``, the default) or
            ``"norm"`` (``<= tol |lambda_1|``); see the module docstring.
        checkpoint: a state file (path) or a :class:`SolverCheckpoint` (path, seconds between
            saves, the caller's identity of the operator). The solve's complete state is
            saved there every ``interval`` seconds between block steps; a solve that finds
            a state of the same problem continues that iteration exactly (the same
            eigenvalues as an uninterrupted run, to rounding), one of another problem is a
            UserInputError naming what differs. The file is removed once the solve returns.
            Not supported under torch.distributed with several ranks.
        memory_budget: bytes (or a size such as ``"4GiB"``) the solver's own storage may
            take; default: half the free memory of the operator's device. Chosen before
            any product (see :mod:`hessian_powerlaw.solvers.memory`): the basis and its
            products when they fit; else the basis alone ("block-lanczos-lean": ``k`` more
            products certify the final pairs), with a smaller basis if need be; else, when
            no eigenvectors are asked for and ``which`` is one end (a ``checkpoint`` is then
            not kept: a warning says so),
            :func:`~hessian_powerlaw.solvers.eigenvalues_only.lanczos_eigenvalues` (no
            basis; eigenvalues with finite-precision error bounds). A request that nothing
            fits is a UserInputError. With ``progress`` a method other than the first is
            announced on stderr before any product. ``Spectrum.method`` and
            ``Spectrum.memory_bytes`` record the choice.

    Returns:
        ``Spectrum`` with eigenvalues in descending order, ``residuals`` relative to
        ``|lambda_1|`` and ``relative_residuals`` relative to each ``|theta|``. The basis has
        the operator's dtype (float32 allowed); the projected problem is solved in float64.
    """
    op = as_operator(op)  # a matrix or scipy LinearOperator is wrapped; else: what an op is
    n = int(op.n)
    if criterion not in CRITERIA:
        raise UserInputError(f"criterion must be one of {CRITERIA}, got {criterion!r}")
    if tol is None:
        tol = default_tol(op.dtype, criterion)
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
    # the eigenvalues-only mode has its own default product budget
    values_only_matvecs = max_matvecs
    if max_matvecs is None:
        max_matvecs = max(2000, 20 * (k + p))
    if max_matvecs < p:
        raise UserInputError(f"max_matvecs={max_matvecs} is below one block ({p}); raise it")

    # the eigenvalues-only mode keeps no basis: no eigenvectors, one end of the spectrum
    values_only: tuple[int, int | None] | str = (k, values_only_matvecs)
    if return_vectors or which == "both":
        values_only = "eigenvectors" if return_vectors else 'which="both"'
    plan = _plan(
        n, k_want, p, m_max, basis_size is not None, op.dtype, op.device, memory_budget,
        values_only,
    )  # fmt: skip
    # a resumable solve is a wish, the budget a limit: the eigenvalues-only mode keeps no state
    unresumable = plan.method == _VALUES_ONLY and checkpoint is not None
    note = "; it keeps no state to resume from: the solve runs without its checkpoint"
    if progress and plan.method != "block-lanczos":  # say before any product what runs
        print(f"memory budget: {plan.describe()}{note if unresumable else ''}", file=sys.stderr)
    elif unresumable:
        warnings.warn(f"{plan.describe()}{note}", stacklevel=2)
    if plan.method == _VALUES_ONLY:
        return _eigenvalues_only(
            op, k, tol, which, plan, seed, progress, criterion, values_only_matvecs
        )
    m_max, lean = plan.basis_size, plan.method == "block-lanczos-lean"
    if lean and max_matvecs < k + p:
        raise UserInputError(
            f"max_matvecs={max_matvecs} leaves nothing to iterate with after the {k} "
            f"products that certify a lean solve ({plan.describe()}); raise it"
        )
    # under torch.distributed every rank must run this same solve (one clear error if not)
    distributed.check_consistent(
        n=n, k=k, tol=tol, which=which, block=p, basis=m_max, max_matvecs=max_matvecs,
        seed=seed, method=plan.method,
    )  # fmt: skip
    test = _Criterion(criterion, float(tol), op.dtype)
    solver = _BlockLanczos(op, p, m_max, k, k_want, which, test, seed, lean=lean)
    saver = None
    resumed = 0
    state = as_checkpoint(checkpoint)
    if state is not None:
        if distributed.world_size() > 1:
            raise UserInputError(
                "a solver checkpoint is not supported under torch.distributed with several "
                "ranks; run without one"
            )
        fingerprint = {
            "n": n,
            "dtype": str(op.dtype),
            "k": int(k),
            "tol": float(tol),
            "criterion": criterion,
            "which": which,
            "block_size": p,
            "basis_size": m_max,
            "method": plan.method,
            "seed": int(seed),
            **{f"identity.{key}": value for key, value in dict(state.identity).items()},
        }
        if state.path.exists():
            resumed = solver.load(state.path, fingerprint)
        saver = _Saver(solver, state, fingerprint)
    usage = OperatorUsage(op)
    desc = f"top-{k} eigenpairs ({which}"
    desc += f"; {plan.describe()})" if lean else ")"
    bar = progress_bar(total=k, desc=desc, enabled=progress)
    try:
        result = solver.run(max_matvecs, bar, return_vectors, saver)
    finally:
        bar.close()
    if state is not None:  # the solve is over: a later one must start afresh
        with contextlib.suppress(FileNotFoundError):
            state.path.unlink()
    scale = result.scale
    return Spectrum(
        eigenvalues=result.values,
        eigenvectors=result.vectors if return_vectors else None,
        residuals=result.abs_residuals / scale,
        converged=test.passes(result.abs_residuals, result.values, scale),
        num_matvecs=solver.matvecs,
        num_data_passes=usage.data_passes,
        seconds=usage.seconds,
        tol=float(tol),
        which=which,
        method=plan.method,
        n=n,
        scale=scale,
        criterion=criterion,
        relative_residuals=result.abs_residuals / np.maximum(np.abs(result.values), 1e-300),
        resumed_matvecs=resumed,
        memory_bytes=plan.bytes,
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


_VALUES_ONLY = "lanczos-eigenvalues-only"  # eigenvalues_only.METHOD (imported lazily)


def _plan(
    n: int,
    k_want: int,
    p: int,
    m_max: int,
    basis_fixed: bool,
    dtype: torch.dtype,
    device: Any,
    memory_budget: int | str | None,
    values_only: tuple[int, int | None] | str,
) -> memory.Plan:
    """The first method that fits the budget (see :mod:`hessian_powerlaw.solvers.memory`).

    ``values_only`` is ``(k, max_matvecs)`` when the eigenvalues-only mode may serve the
    request (no eigenvectors, one end of the spectrum), else what the request asks for that
    it cannot give.
    """
    device = torch.device(device)
    budget = (
        memory.default_budget(device)
        if memory_budget is None
        else memory.parse_bytes(memory_budget)
    )
    itemsize = torch.empty((), dtype=dtype).element_size()

    def needs(m: int, lean: bool) -> int:
        return memory.block_lanczos_bytes(n, min(m + p, n), k_want, p, itemsize, lean)

    for method, lean in (("block-lanczos", False), ("block-lanczos-lean", True)):
        if needs(m_max, lean) <= budget:
            return memory.Plan(method, m_max, needs(m_max, lean), budget)
    smallest = min(k_want + p, n)
    if not basis_fixed and needs(smallest, True) <= budget:
        low, high = smallest, m_max  # the largest basis that fits: needs() grows with m
        while high - low > 1:
            middle = (low + high) // 2
            low, high = (middle, high) if needs(middle, True) <= budget else (low, middle)
        return memory.Plan("block-lanczos-lean", low, needs(low, True), budget)
    least = needs(m_max if basis_fixed else smallest, True)
    if isinstance(values_only, str):
        why = f"; the eigenvalues-only mode, which needs no basis, cannot give {values_only}"
    else:
        from hessian_powerlaw.solvers import eigenvalues_only

        k, max_matvecs = values_only
        if dtype != torch.float64:
            # its bounds carry a product's rounding, 100 eps |lambda_1|: 1.2e-5 |lambda_1| in
            # float32, above most of a top-1000 (fcn:2x1000 at K = 1000 under 4 GiB in float32
            # ended with 142 of 1000 converged after 58 minutes; float64 certifies them)
            raise UserInputError(
                f"memory_budget of {memory.format_bytes(budget)} leaves only the eigenvalues-"
                f"only mode (the basis of {m_max if basis_fixed else smallest} vectors needs "
                f"{memory.format_bytes(least)}), and its error bounds need float64 products, "
                f"not {str(dtype).removeprefix('torch.')}; use a float64 operator (--dtype "
                "float64) or raise the budget (--memory)"
            )
        try:
            peak = eigenvalues_only.memory_plan(
                n, k, dtype, memory_budget=budget, max_matvecs=max_matvecs
            ).peak_bytes
        except UserInputError:
            why = ", and the eigenvalues-only mode more than that budget"
        else:
            return memory.Plan(_VALUES_ONLY, 0, peak, budget)
    raise UserInputError(
        f"memory_budget of {memory.format_bytes(budget)} is too small: the basis of "
        f"{m_max if basis_fixed else smallest} vectors of length {n} needs about "
        f"{memory.format_bytes(least)}{why}; raise the budget (--memory), lower k, or use a "
        "float32 operator"
    )


def _eigenvalues_only(
    op: Any,
    k: int,
    tol: float,
    which: str,
    plan: memory.Plan,
    seed: int,
    progress: bool,
    criterion: str,
    max_matvecs: int | None,
) -> Spectrum:
    """The request served by the eigenvalues-only mode (no basis, no eigenvectors)."""
    from hessian_powerlaw.solvers import eigenvalues_only

    if distributed.world_size() > 1:
        raise UserInputError(
            f"{plan.describe()} is not supported under torch.distributed with several ranks; "
            "raise the budget (--memory) so that the block solver's basis fits"
        )
    spectrum = eigenvalues_only.lanczos_eigenvalues(
        op, k, tol=tol, which=which, max_matvecs=max_matvecs, memory_budget=plan.budget,
        seed=seed, progress=progress, criterion=criterion,
    )  # fmt: skip
    return dataclasses.replace(spectrum, memory_bytes=plan.bytes)


# default columns per block by device type: what benchmarks/bench_topk.py found fastest; on a
# CPU 8 from k = 200 on, where Gram-Schmidt against thousands of basis vectors costs as much as
# the products (docs/benchmarks.md: LeNet K = 300 in float32, block 4 took 1,084 products and
# block 8 1,152 in 3 % less time; a K = 1000 diagonal solve spent 130 s in Gram-Schmidt with
# block 4 and 113 s with block 8, one thread)
_DEFAULT_BLOCK = {"cpu": 4}
_DEFAULT_BLOCK_LARGE_K = {"cpu": 8}
_LARGE_K = 200
_DEFAULT_BLOCK_ACCELERATOR = 16


def _block_size(block_size: int | None, k: int, n: int, device_type: str) -> int:
    if block_size is None:
        table = _DEFAULT_BLOCK_LARGE_K if k >= _LARGE_K else _DEFAULT_BLOCK
        default = table.get(device_type, _DEFAULT_BLOCK_ACCELERATOR)
        block_size = min(default, max(k, 2))
    if not isinstance(block_size, (int, np.integer)) or block_size < 1:
        raise UserInputError(f"block_size must be a positive integer, got {block_size!r}")
    return int(min(block_size, n))


@dataclass(frozen=True)
class _Criterion:
    """When a pair with absolute residual ``r`` and value ``theta`` has converged."""

    name: str
    tol: float
    dtype: torch.dtype

    def thresholds(self, values: np.ndarray, scale: float) -> np.ndarray:
        """The largest absolute residual each pair may have."""
        if self.name == "norm":
            return np.full(values.shape, self.tol * scale)
        floor = FLOOR_EPS * torch.finfo(self.dtype).eps * scale
        return np.maximum(self.tol * np.abs(values), floor)

    def passes(self, residuals: np.ndarray, values: np.ndarray, scale: float) -> np.ndarray:
        return residuals <= self.thresholds(values, scale)


@dataclass
class _Result:
    values: np.ndarray  # descending
    vectors: np.ndarray | None
    abs_residuals: np.ndarray  # ||H v - theta v||
    scale: float


class _BlockLanczos:
    """The state of one solve.

    Rows ``[0, nl)`` of the buffers ``Qt``/``HQt`` (basis vectors as rows) hold locked
    (converged) Ritz vectors and their products; rows ``[nl, m)`` the active basis, whose
    projection is ``T[:ma, :ma]`` (``ma = m - nl``); ``next_block`` is the pending block,
    orthogonal to all of them.
    """

    def __init__(
        self,
        op: Any,
        p: int,
        m_max: int,
        k: int,
        k_want: int,
        which: str,
        criterion: _Criterion,
        seed: int,
        lean: bool = False,
    ) -> None:
        self.op, self.p, self.m_max, self.lean = op, p, m_max, lean
        self.k, self.k_want, self.which, self.criterion = k, k_want, which, criterion
        # the stopping test also asks a guard of pairs beyond the k-th to pass: in a dense
        # tail an eigenvalue near rank k can still be absent from the basis when the k
        # largest Ritz pairs present have converged (seen at K = 1000: ranks 974-984 missing,
        # errors of 3e-3 beyond the tolerance; with a 5 % guard, none)
        self.k_check = min(k + math.ceil(_GUARD * k), k_want)
        self.k_done_at: int | None = None  # products when the k wanted pairs first passed
        self.n, self.dtype, self.device = int(op.n), op.dtype, op.device
        self.gen = torch.Generator().manual_seed(seed)
        capacity = min(m_max + p, self.n)
        # basis vectors and their products as *rows*: a leading block of rows is contiguous,
        # and BLAS reads it at full speed (a column slice of an (n, m) matrix was 5-10x slower)
        self.Qt = torch.empty((capacity, self.n), dtype=self.dtype, device=self.device)
        # the products of the basis, unless lean: then certificates take products of their own
        self.HQt = None if lean else torch.empty_like(self.Qt)
        self.w_scale = 0.0  # the largest column norm of the last block's products
        self.T = torch.zeros((capacity, capacity), dtype=torch.float64)
        self.B = torch.empty((0, 0), dtype=torch.float64)  # H Q_last = Q T[:, last] + Q_next B
        self.m = 0  # columns in use
        self.nl = 0  # locked columns
        self.locked_values = np.empty(0)
        self.locked_residuals = np.empty(0)
        self.last = 0  # start column of the last applied block
        self.has_previous = False  # whether a block precedes it (not after a restart)
        self.matvecs = 0
        self.product_seconds = 0.0
        self.rr_seconds = 0.0  # time of the last Rayleigh-Ritz step
        self.rr_at = 0  # self.matvecs at the last Rayleigh-Ritz step
        self.products_at_rr = 0.0  # self.product_seconds then
        self.scale = 0.0  # largest |theta| seen
        self.reserve = k if lean else 0  # products kept back for the lean certificates
        start = self._random(p)
        self.next_block, _ = torch.linalg.qr(start)

    # ------------------------------------------------------------------ main loop

    def run(
        self, max_matvecs: int, bar: Any, want_vectors: bool, saver: _Saver | None = None
    ) -> _Result:
        while True:
            if saver is not None:
                saver.maybe_save()  # between block steps the state is complete and consistent
            width = min(self.next_block.shape[1], max_matvecs - self.reserve - self.matvecs)
            if width <= 0 or self.next_block.shape[1] == 0:
                break  # budget spent, or the Krylov space is all of R^n
            if self.m + width > self.m_max:
                self._restart()
            self._extend(self.next_block[:, :width])
            if not self._rayleigh_ritz_due():
                continue
            theta, S = self._ritz()
            # the k wanted pairs and a guard beyond them must pass (estimated residuals)
            checked, checked_locked = self._wanted(theta, self.k_check)
            estimates = self._estimated_residuals(S[:, checked])
            values = np.concatenate([self.locked_values[checked_locked], theta[checked]])
            bounds = np.concatenate([self.locked_residuals[checked_locked], estimates])
            ok = self.criterion.passes(bounds, values, self.scale)
            # the bar counts converged pairs (estimated) out of k, never backwards
            bar.set_postfix(matvecs=self.matvecs, refresh=False)
            bar.update(max(min(int(ok.sum()), self.k) - int(bar.n), 0))
            # all Ritz values checked must exist: after a breakdown (an invariant subspace,
            # e.g. a rank-deficient H) the estimates of the fewer ones found so far are all ~0
            if self._stop(values, ok):
                chosen, locked = self._wanted(theta)
                # a lean solve's certificates cost k products and end it: they are final
                result = self._certify(theta, S, chosen, locked, want_vectors)
                passed = self.criterion.passes(result.abs_residuals, result.values, self.scale)
                if self.lean or passed.all():
                    return result
        theta, S = self._ritz()
        chosen, locked = self._wanted(theta)
        return self._certify(theta, S, chosen, locked, want_vectors)

    def _stop(self, values: np.ndarray, ok: np.ndarray) -> bool:
        """Whether the k wanted pairs and the guard beyond them passed (estimates).

        The guard may take at most ``_GUARD_PRODUCTS`` more products than the k wanted pairs
        took: a dense bulk just below the k-th eigenvalue would never let it converge.
        """
        if len(values) >= self.k_check and ok.all():
            return True
        if self.k_done_at is None:
            top = _select(values, min(self.k, len(values)), self.which)
            if len(values) < self.k or not ok[top].all():
                return False
            self.k_done_at = self.matvecs
        return self.matvecs >= (1 + _GUARD_PRODUCTS) * self.k_done_at

    def _rayleigh_ritz_due(self) -> bool:
        """Whether to solve the projected problem now.

        Always while it is cheap, else once the basis grew by ``_RR_GROWTH`` or its cost is
        a small share of the products'.
        """
        added = self.matvecs - self.rr_at
        if added >= _RR_GROWTH * (self.m - self.nl):
            return True
        product_time = self.product_seconds - self.products_at_rr
        return self.rr_seconds <= _RR_TIME_SHARE * product_time

    # ------------------------------------------------------------------ one block step

    def _extend(self, block: Tensor) -> None:
        """Apply H to ``block``, append it, fill T's new columns, prepare the next block."""
        started = time.perf_counter()
        W = self.op.matmat(block).detach().to(self.dtype)
        self.product_seconds += time.perf_counter() - started
        width = block.shape[1]
        self.matvecs += width
        m_old = self.m
        m = m_old + width
        self.Qt[m_old:m] = block.T
        if self.HQt is not None:
            self.HQt[m_old:m] = W.T
        self.w_scale = float(torch.linalg.vector_norm(W, dim=0).max())
        # the three-term recurrence spans the previous block and this one
        recurrence = self.last if self.has_previous else m_old
        self.last, self.m = m_old, m
        C, R = self._orthogonalize(W, recurrence)  # W = Q C + R, R orthogonal to Q (float64 C)
        self.next_block, self.B, D = self._next_block(R)  # R = Q_next B + Q D
        C = C + D
        self.has_previous = True
        # the projection of the active basis: locked rows are dropped (their coupling to new
        # columns is their residual, at most tol; certificates use the stored products)
        a0, a1 = m_old - self.nl, m - self.nl
        Ca = C[self.nl :]
        self.T[:a1, a0:a1] = Ca
        self.T[a0:a1, :a0] = Ca[:a0].T
        self.T[a0:a1, a0:a1] = (Ca[a0:] + Ca[a0:].T) / 2

    def _orthogonalize(self, W: Tensor, recurrence: int) -> tuple[Tensor, Tensor]:
        """Gram-Schmidt of ``W`` against all of Q: returns (Q^T W in float64, residual).

        First against the last two blocks (where the three-term recurrence puts almost all
        of ``W``), then one pass against the whole basis, and a second one only when that
        pass removed more than a third of what was left (Kahan's "twice is enough" test).
        """
        m = self.m
        C = torch.zeros((m, W.shape[1]), dtype=torch.float64)
        Rt = W.T.contiguous()  # the block as rows: see _gram for why the layout matters
        c = _gram.project_out(self.Qt[recurrence:m], Rt)
        C[recurrence:] += c.to(torch.float64).cpu()
        for _ in range(2):
            before = torch.linalg.vector_norm(Rt, dim=1)
            c = _gram.project_out(self.Qt[:m], Rt)
            C += c.to(torch.float64).cpu()
            after = torch.linalg.vector_norm(Rt, dim=1)
            if bool((after >= 0.7 * before).all()):
                break
        return C, Rt.T

    def _next_block(self, R: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Orthonormal ``Q_next`` and ``B`` with ``R = Q_next B + Q D`` (D is rounding-level).

        Directions of ``R`` that vanish (an invariant subspace was found) are replaced by
        random vectors orthogonal to Q, so the iteration continues; when the basis already
        spans the space left, the block shrinks, down to zero columns at ``n``.
        """
        m = self.m
        room = self.n - m
        if room <= 0:
            empty = torch.empty((self.n, 0), dtype=self.dtype, device=self.device)
            return empty, torch.zeros((0, R.shape[1]), dtype=torch.float64), self._zeros_d(R)
        if room < R.shape[1]:
            return self._complement_block(R, room)
        Qn, B = torch.linalg.qr(R)
        scale = self.w_scale
        diag = torch.diagonal(B).abs()
        tiny = diag <= 1e3 * torch.finfo(self.dtype).eps * scale
        if bool(tiny.any()):
            Qn = Qn.clone()
            Qn[:, tiny] = self._random(int(tiny.sum()))
            B = B.clone()
            B[tiny, :] = 0
        elif float(diag.min()) >= 0.1 * float(diag.max()):
            # a well-conditioned B keeps Q_next as orthogonal to Q as R is: no second pass
            return Qn, B.to(torch.float64).cpu(), self._zeros_d(R)
        Qn_rows = Qn.T.contiguous()  # second pass: orthogonal to Q and within the block
        D1 = _gram.project_out(self.Qt[:m], Qn_rows)
        Qn, B2 = torch.linalg.qr(Qn_rows.T)
        B64 = (B2.to(torch.float64) @ B.to(torch.float64)).cpu()
        D = (D1.to(torch.float64).cpu() @ B.to(torch.float64).cpu()).cpu()
        return Qn, B64, D

    def _complement_block(self, R: Tensor, room: int) -> tuple[Tensor, Tensor, Tensor]:
        """Near the full space: ``Q_next`` spans the orthogonal complement of Q exactly."""
        Q = self.Qt[: self.m].T.to(torch.float64)
        X = torch.cat([Q, self._random(room).to(torch.float64)], dim=1)
        full, _ = torch.linalg.qr(X)
        Qn = full[:, self.m :]
        Qn = Qn - Q @ (Q.T @ Qn)
        Qn, _ = torch.linalg.qr(Qn)
        B = (Qn.T @ R.to(torch.float64)).cpu()
        return Qn.to(self.dtype), B, self._zeros_d(R)

    def _zeros_d(self, R: Tensor) -> Tensor:
        return torch.zeros((self.m, R.shape[1]), dtype=torch.float64)

    # ------------------------------------------------------------------ Rayleigh-Ritz

    def _ritz(self) -> tuple[np.ndarray, np.ndarray]:
        """Eigenpairs of the active T in float64, ascending."""
        started = time.perf_counter()
        ma = self.m - self.nl
        # torch's eigh (not numpy's): it respects torch's thread setting, and on a busy machine
        # an over-threaded BLAS makes even this small problem slow
        theta, S = torch.linalg.eigh(self.T[:ma, :ma])
        self.rr_seconds = time.perf_counter() - started
        self.rr_at, self.products_at_rr = self.matvecs, self.product_seconds
        theta_np = theta.numpy()
        if theta_np.size:
            self.scale = max(self.scale, float(np.abs(theta_np).max()))
        if self.locked_values.size:
            self.scale = max(self.scale, float(np.abs(self.locked_values).max()))
        self.scale = max(self.scale, 1e-300)
        return theta_np, S.numpy()

    def _wanted(self, theta: np.ndarray, count: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The ``count`` (default k) wanted pairs among locked values and active Ritz values.

        Returns indices into ascending ``theta`` and into ``locked_values``.
        """
        nl = self.locked_values.size
        values = np.concatenate([self.locked_values, theta])
        picked = _select(values, self.k if count is None else count, self.which)
        return picked[picked >= nl] - nl, picked[picked < nl]

    def _estimated_residuals(self, S_wanted: np.ndarray) -> np.ndarray:
        """``||B s_last||`` per Ritz vector: the Lanczos residual, no products needed."""
        if self.B.numel() == 0:
            return np.zeros(S_wanted.shape[1])
        S_last = torch.as_tensor(S_wanted[self.last - self.nl :])
        return torch.linalg.vector_norm(self.B @ S_last, dim=0).numpy()

    def _certify(
        self,
        theta: np.ndarray,
        S: np.ndarray,
        chosen: np.ndarray,
        locked: np.ndarray,
        want_vectors: bool,
    ) -> _Result:
        """True residuals ``||H y - theta y||`` of the chosen and locked pairs.

        From the stored products ``HQ s - theta Q s``, where locked pairs keep the residuals
        certified when they were locked; a lean solve has no stored products: the chosen Ritz
        vectors are formed in place of the active basis (which ends the iteration) and the
        operator is applied to them and to the locked ones, ``p`` at a time (``k`` more
        products).
        """
        S_c = torch.as_tensor(S[:, chosen]).to(device=self.device, dtype=self.dtype)
        values = np.concatenate([self.locked_values[locked], theta[chosen]])
        if self.lean:
            self._ritz_residuals(S_c, theta[chosen], in_place=True)
            rows = np.concatenate([locked, self.nl + np.arange(chosen.size)]).astype(np.int64)
            abs_res = self._residuals_by_products(rows, values)
        else:
            residuals, Y = self._ritz_residuals(S_c, theta[chosen], want_vectors)
            abs_res = np.concatenate([self.locked_residuals[locked], residuals])
        order = np.argsort(-values, kind="stable")
        vectors = None
        if want_vectors and self.lean:
            vectors = self.Qt[torch.as_tensor(rows[order], device=self.device)].T.cpu().numpy()
        elif want_vectors:
            parts = [self.Qt[torch.as_tensor(locked, dtype=torch.long)].T.cpu(), Y.cpu()]
            vectors = torch.cat(parts, dim=1).numpy()[:, order]
        return _Result(
            values=values[order].copy(),
            vectors=vectors,
            abs_residuals=abs_res[order],
            scale=self.scale,
        )

    def _residuals_by_products(self, rows: np.ndarray, values: np.ndarray) -> np.ndarray:
        """``||H y - theta y||`` for basis rows ``y``, the operator applied ``p`` rows at once."""
        abs_res = np.empty(rows.size)
        for start in range(0, rows.size, self.p):
            part = slice(start, min(start + self.p, rows.size))
            Y = self.Qt[torch.as_tensor(rows[part], device=self.device)].T
            started = time.perf_counter()
            HY = self.op.matmat(Y.contiguous()).detach().to(self.dtype)
            self.product_seconds += time.perf_counter() - started
            self.matvecs += Y.shape[1]
            vals = torch.as_tensor(values[part], dtype=torch.float64, device=self.device)
            diff = HY.to(torch.float64) - Y.to(torch.float64) * vals
            abs_res[part] = torch.linalg.vector_norm(diff, dim=0).cpu().numpy()
        return abs_res

    def _ritz_residuals(
        self, S: Tensor, values: np.ndarray, want_vectors: bool = False, in_place: bool = False
    ) -> tuple[np.ndarray | None, Tensor | None]:
        """``||HQ_a s - theta Q_a s||`` for the columns of ``S``.

        Computed over row chunks so that only ``chunk x columns`` extra memory is needed.
        ``want_vectors`` also returns ``Q_a S``; ``in_place`` makes ``Q_a S`` and ``HQ_a S``
        the first rows of the active basis (a restart's rotation; each chunk is read before
        it is overwritten). A lean solve has no ``HQ``: it only rotates, and the residuals
        are None.
        """
        nl, m, count = self.nl, self.m, S.shape[1]
        vals = torch.as_tensor(values, dtype=torch.float64, device=self.device)
        squares = torch.zeros(count, dtype=torch.float64, device=self.device)
        Y = torch.empty((self.n, count), dtype=self.dtype) if want_vectors else None
        for r0 in range(0, self.n, _ROW_CHUNK):
            r1 = min(r0 + _ROW_CHUNK, self.n)
            y = self.Qt[nl:m, r0:r1].T @ S
            if Y is not None:
                Y[r0:r1] = y.cpu()
            if in_place:
                self.Qt[nl : nl + count, r0:r1] = y.T
            if self.HQt is None:
                continue
            hy = self.HQt[nl:m, r0:r1].T @ S
            diff = hy.to(torch.float64) - y.to(torch.float64) * vals
            squares += (diff * diff).sum(dim=0)
            if in_place:
                self.HQt[nl : nl + count, r0:r1] = hy.T
        if self.HQt is None:
            return None, Y
        return squares.sqrt().cpu().numpy(), Y

    # ------------------------------------------------------------------ restart

    def _restart(self) -> None:
        """Lock converged wanted pairs and keep the best other Ritz vectors.

        The iteration continues from the pending block (orthogonal to them).
        """
        theta, S = self._ritz()
        ma = theta.shape[0]
        nl = self.nl
        # pairs kept in the new basis: the wanted ones plus a third of the room beyond them
        keep_total = self.k_want + (self.m_max - self.k_want) // 3
        keep_count = max(keep_total - nl, min(self.k_want - nl, ma - 1))
        keep_count = max(min(keep_count, ma - self.p, self.m_max - self.p - nl), 0)
        keep = np.sort(_select(theta, keep_count, self.which))
        S_keep = torch.as_tensor(S[:, keep]).to(device=self.device, dtype=self.dtype)
        vals = theta[keep]
        estimates = self._estimated_residuals(S[:, keep])  # before the rotation
        residuals, _ = self._ritz_residuals(S_keep, vals, in_place=True)
        if residuals is None:  # lean: the Lanczos estimates decide; products certify at the end
            residuals = estimates
        # lock the kept pairs that are among the k_want wanted overall and converged below
        # every wanted pair's threshold: the coupling a locked pair leaves out of T is its
        # residual, which must not keep the others from their own (relative) thresholds
        all_values = np.concatenate([self.locked_values, vals])
        wanted = _select(all_values, self.k_want, self.which)
        in_want = np.zeros(all_values.size, dtype=bool)
        in_want[wanted] = True
        limit = _LOCK_SHARE * self.criterion.thresholds(all_values[wanted], self.scale).min()
        lock = in_want[nl:] & (residuals <= limit)
        order = np.concatenate([np.flatnonzero(lock), np.flatnonzero(~lock)])
        if lock.any() and not lock.all():  # locked ones first, then the active rest
            index = torch.as_tensor(order + nl, device=self.device)
            for r0 in range(0, self.n, _ROW_CHUNK):
                rows = slice(r0, min(r0 + _ROW_CHUNK, self.n))
                self.Qt[nl : nl + keep.size, rows] = self.Qt[index, rows]
                if self.HQt is not None:
                    self.HQt[nl : nl + keep.size, rows] = self.HQt[index, rows]
        new_locked = int(lock.sum())
        self.locked_values = np.concatenate([self.locked_values, vals[lock]])
        self.locked_residuals = np.concatenate([self.locked_residuals, residuals[lock]])
        self.nl = nl + new_locked
        self.m = nl + keep.size
        active = vals[order][new_locked:]
        self.T.zero_()
        ma = active.size
        self.T[:ma, :ma] = torch.diag(torch.as_tensor(active))
        self.has_previous = False  # kept Ritz vectors are no block of the recurrence
        self.B = torch.empty((0, 0), dtype=torch.float64)
        # the pending block: re-orthogonalize against the new basis for safety (rounding)
        Qn_rows = self.next_block.T.contiguous()
        _gram.project_out(self.Qt[: self.m], Qn_rows)
        self.next_block, _ = torch.linalg.qr(Qn_rows.T)

    # ------------------------------------------------------------------ saved state

    # the scalar counters that, with the buffers, make up the whole iteration state
    _COUNTERS = (
        "m", "nl", "last", "has_previous", "matvecs", "product_seconds", "rr_seconds",
        "rr_at", "products_at_rr", "scale", "w_scale", "k_done_at",
    )  # fmt: skip

    def save(self, path: Path, fingerprint: dict[str, Any]) -> None:
        """Write the complete state (only the used rows of the basis) atomically."""
        ma = self.m - self.nl
        small = {
            "fingerprint": fingerprint,
            "counters": {name: getattr(self, name) for name in self._COUNTERS},
            "T": self.T[:ma, :ma].clone(),
            "B": self.B.clone(),
            "next_block": self.next_block.cpu().clone(),
            "locked_values": torch.from_numpy(self.locked_values.copy()),
            "locked_residuals": torch.from_numpy(self.locked_residuals.copy()),
            "generator": self.gen.get_state(),
        }
        rows = [self.Qt[: self.m]] + ([] if self.HQt is None else [self.HQt[: self.m]])
        _state.write_state(path, small, rows)

    def load(self, path: Path, fingerprint: dict[str, Any]) -> int:
        """Continue from the state in ``path``; returns the products it already holds.

        UserInputError, naming the differing fields, when it was saved for another problem.
        """
        with open(path, "rb") as fh:
            small = _state.read_header(fh, path)
            differs = _state.describe_mismatch(small.get("fingerprint", {}), fingerprint)
            if differs is not None:
                raise UserInputError(
                    f"solver state {str(path)!r} belongs to another solve ({differs}); "
                    "delete it, or save this solve's state elsewhere"
                )
            counters = small["counters"]
            m = int(counters["m"])
            read = _state.read_rows
            read(fh, self.Qt[:m], path)
            if self.HQt is not None:
                read(fh, self.HQt[:m], path)
        for name in self._COUNTERS:
            # k_done_at came later; a state saved before it resumes as if the guard just began
            setattr(self, name, counters.get(name) if name == "k_done_at" else counters[name])
        ma = self.m - self.nl
        self.T.zero_()
        self.T[:ma, :ma] = small["T"]
        self.B = small["B"]
        self.next_block = small["next_block"].to(device=self.device, dtype=self.dtype)
        self.locked_values = small["locked_values"].numpy()
        self.locked_residuals = small["locked_residuals"].numpy()
        self.gen.set_state(small["generator"])
        return int(self.matvecs)

    def _random(self, count: int) -> Tensor:
        X = torch.randn((self.n, count), generator=self.gen, dtype=torch.float64)
        # identical on every rank by construction under torch.distributed: rank 0's draw
        return distributed.broadcast(X.to(device=self.device, dtype=self.dtype))


class _Saver:
    """Saves a solver's state to a checkpoint's file every ``interval`` seconds.

    With a positive interval, saves are also at least ``_SAVE_SPACING`` times the last save's
    duration apart: writing a basis of many GB must not take over the solve (it stays at
    most about a tenth of the time). ``interval=0`` saves after every block step.
    """

    def __init__(
        self, solver: _BlockLanczos, checkpoint: SolverCheckpoint, fingerprint: dict[str, Any]
    ) -> None:
        self.solver, self.checkpoint, self.fingerprint = solver, checkpoint, fingerprint
        self.saved_at = time.monotonic()
        self.saved_matvecs = solver.matvecs
        self.save_seconds = 0.0
        _state.remove_stale_temporaries(checkpoint.path)

    def maybe_save(self) -> None:
        """Save when the interval has passed and products were added since the last save."""
        if self.solver.matvecs == self.saved_matvecs:
            return
        interval = self.checkpoint.interval
        if interval > 0:
            interval = max(interval, _SAVE_SPACING * self.save_seconds)
        if time.monotonic() - self.saved_at < interval:
            return
        started = time.monotonic()
        self.solver.save(self.checkpoint.path, self.fingerprint)
        self.saved_at = time.monotonic()
        self.save_seconds = self.saved_at - started
        self.saved_matvecs = self.solver.matvecs


# saves of the state are at least this many times their own duration apart
_SAVE_SPACING = 9.0


def _select(values: np.ndarray, count: int, which: str) -> np.ndarray:
    """Indices of the ``count`` wanted entries of ``values`` (any order)."""
    m = values.shape[0]
    count = min(count, m)
    order = np.argsort(values, kind="stable")
    if which == "largest":
        return order[m - count :]
    if which == "smallest":
        return order[:count]
    high = math.ceil(count / 2)
    low = count - high
    return np.concatenate([order[:low], order[m - high :]])
