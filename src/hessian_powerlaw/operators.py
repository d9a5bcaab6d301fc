"""Linear operators for the solvers: the Hessian of a model's loss, and explicit matrices.

An *operator* is anything with ``n``, ``dtype``, ``device`` and ``matmat(V[n, b]) -> [n, b]``
(``matvec(v)`` is ``matmat(v[:, None])[:, 0]``); the solvers are duck-typed on these members,
so a user's own operator plugs in the same way.

``HessianOperator`` applies

    H = d^2/dtheta^2  L(theta),     L(theta) = sum_b (m_b / M) * loss_b(theta),

the Hessian of the sample-weighted mean loss over all batches, where ``m_b`` is the number of
samples in batch ``b`` (the length of its first tensor), ``M = sum_b m_b``, and ``theta`` is the
chosen parameters flattened in ``model.named_parameters()`` order. Each per-batch loss is
assumed to be a mean over its samples, so ``L`` equals the loss on the concatenated data.

Products are Hessian-vector products (Pearlmutter's trick), never an explicit matrix: for each
data batch the gradient graph is built once and reused for all ``b`` columns of ``V``, either
by ``torch.func.vmap`` over a forward-over-reverse ``jvp(grad)`` (one batched pass) or, for
models that ``vmap`` cannot trace, by an autograd double backward with ``retain_graph``.

The batched pass holds ``b`` tangent copies of a batch's activations. When that working set
is large, products are cheaper (fewer cache misses and page faults, no out-of-memory) if a
batch is applied in *micro-batches*: contiguous slices of its samples, each weighted by its
size. For a loss that is a mean over samples this is the same operator,

    H_b V = sum_c (m_c / m_b) H_c V,

the identity the data-parallel split (:mod:`hessian_powerlaw.distributed`) rests on too. The
operator checks it on the loss and gradient of each batch before it first splits it.
"""

from __future__ import annotations

import abc
import contextlib
import fnmatch
import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from hessian_powerlaw import _reproducibility, batching, distributed
from hessian_powerlaw.errors import UserInputError

__all__ = [
    "DifferenceOperator",
    "HessianOperator",
    "MatrixOperator",
    "OperatorBase",
    "ScipyOperator",
    "as_operator",
]

_BACKENDS = ("auto", "vmap", "autograd")

# micro_batch_size="auto": the largest micro-batch whose saved activations, times the columns
# of one vmapped product, stay within this many bytes. On a CPU it is a cache-and-allocator
# effect: for a LeNet on 1,797 digits in float64 (14.5 kB of activations a sample), b = 16
# columns cost about 2 gradients each on the whole batch (420 MB) and 1.2-1.4 in the four
# slices this budget gives (see docs/benchmarks.md). On an accelerator it guards memory: a
# fraction of the device memory that is free when the operator first needs the budget.
CPU_PRODUCT_BYTES = 128 * 2**20
ACCELERATOR_PRODUCT_FRACTION = 0.125
_FEW_SAMPLES = 8  # batches this small are never split by "auto"; activations measured on 2, 8


class OperatorBase(abc.ABC):
    """Shared members of the operators: ``matvec``, counters, ``to_scipy``.

    Subclasses set ``n``, ``dtype``, ``device`` and implement ``_apply(V) -> H V`` on a
    validated ``(n, b)`` tensor already in the operator's dtype and device.
    """

    n: int
    dtype: torch.dtype
    device: torch.device

    def __init__(self) -> None:
        self.num_matvecs = 0  # columns multiplied so far
        self.seconds = 0.0  # wall time spent in products

    @property
    def shape(self) -> tuple[int, int]:
        return (self.n, self.n)

    def matmat(self, V: Tensor) -> Tensor:
        """``H @ V`` for ``V`` of shape ``(n, b)``; the result has the operator's dtype."""
        V = self._check_block(V)
        start = time.perf_counter()
        out = self._apply(V) if V.shape[1] > 0 else V.clone()
        self.seconds += time.perf_counter() - start
        self.num_matvecs += V.shape[1]
        return out

    def matvec(self, v: Tensor) -> Tensor:
        """``H @ v`` for ``v`` of shape ``(n,)``."""
        v = torch.as_tensor(v)
        if v.ndim != 1:
            raise UserInputError(
                f"matvec expects a vector of shape ({self.n},), got {tuple(v.shape)}"
            )
        return self.matmat(v[:, None])[:, 0]

    def __matmul__(self, other: Tensor) -> Tensor:
        other = torch.as_tensor(other)
        return self.matvec(other) if other.ndim == 1 else self.matmat(other)

    def to_scipy(self) -> Any:
        """A ``scipy.sparse.linalg.LinearOperator`` that calls this operator (numpy in and out).

        Its dtype is float64 (float32 for a float32 operator); inputs are cast to the
        operator's dtype, so scipy solvers see exactly the products the solvers here see.
        """
        from scipy.sparse.linalg import LinearOperator

        np_dtype = np.float32 if self.dtype == torch.float32 else np.float64

        def _mm(X: np.ndarray) -> np.ndarray:
            X = np.asarray(X)
            X2 = X.reshape(self.n, -1)
            T = torch.as_tensor(np.ascontiguousarray(X2), device=self.device).to(self.dtype)
            Y = self.matmat(T).detach().cpu().numpy().astype(np_dtype, copy=False)
            return Y.reshape(X.shape)

        return LinearOperator(
            shape=(self.n, self.n), matvec=_mm, matmat=_mm, rmatvec=_mm, rmatmat=_mm, dtype=np_dtype
        )

    def _check_block(self, V: Tensor) -> Tensor:
        V = torch.as_tensor(V)
        if V.ndim != 2 or V.shape[0] != self.n:
            raise UserInputError(
                f"matmat expects a block of shape ({self.n}, b), got {tuple(V.shape)}; "
                "pass vectors as the columns of V"
            )
        return V.to(device=self.device, dtype=self.dtype)

    @abc.abstractmethod
    def _apply(self, V: Tensor) -> Tensor:
        """``H V`` for a block already checked by :meth:`_check_block`."""


class MatrixOperator(OperatorBase):
    """An explicit symmetric matrix as an operator (tests, synthetic spectra, user matrices).

    ``A`` is a torch tensor or anything ``numpy.asarray`` accepts. ``dtype`` defaults to
    ``A``'s floating dtype (float64 for integer input). Symmetry is checked to
    ``sqrt(eps) * max|A|`` and the matrix is then symmetrized exactly, ``(A + A^T) / 2``.
    """

    def __init__(
        self,
        A: Tensor | np.ndarray | Sequence[Sequence[float]],
        dtype: torch.dtype | None = None,
        device: str | torch.device | None = None,
    ) -> None:
        super().__init__()
        T = A if isinstance(A, Tensor) else torch.as_tensor(np.asarray(A))
        T = T.detach()
        if dtype is None:
            dtype = T.dtype if T.is_floating_point() else torch.float64
        _check_float_dtype(dtype)
        T = T.to(device=device if device is not None else T.device, dtype=dtype)
        if T.ndim != 2 or T.shape[0] != T.shape[1]:
            raise UserInputError(
                f"MatrixOperator needs a square matrix, got shape {tuple(T.shape)}"
            )
        if not bool(torch.isfinite(T).all()):
            raise UserInputError("MatrixOperator: the matrix has NaN or infinite entries")
        scale = float(T.abs().max()) if T.numel() else 0.0
        asym = float((T - T.T).abs().max()) if T.numel() else 0.0
        if asym > math.sqrt(torch.finfo(dtype).eps) * max(scale, 1e-300):
            raise UserInputError(
                f"MatrixOperator needs a symmetric matrix; max |A - A^T| = {asym:.3g} "
                f"(max |A| = {scale:.3g}); pass (A + A.T) / 2"
            )
        self.matrix = (T + T.T) / 2
        self.n = int(T.shape[0])
        self.dtype = dtype
        self.device = T.device

    def _apply(self, V: Tensor) -> Tensor:
        return self.matrix @ V

    def __repr__(self) -> str:
        return f"MatrixOperator(n={self.n}, dtype={self.dtype}, device={self.device})"


class ScipyOperator(OperatorBase):
    """A ``scipy.sparse.linalg.LinearOperator`` (or sparse matrix) as an operator, on the CPU.

    Products go through numpy in float64 (float32 when the scipy operator is float32).
    Symmetry is the caller's promise; :func:`as_operator` probes it once.
    """

    def __init__(self, A: Any) -> None:
        super().__init__()
        from scipy.sparse.linalg import aslinearoperator

        self.linear_operator = aslinearoperator(A)
        rows, cols = self.linear_operator.shape
        if rows != cols:
            raise UserInputError(f"a linear operator must be square, got shape {(rows, cols)}")
        self.n = int(rows)
        single = np.dtype(self.linear_operator.dtype) == np.float32
        self.dtype = torch.float32 if single else torch.float64
        self.device = torch.device("cpu")

    def _apply(self, V: Tensor) -> Tensor:
        out = np.asarray(self.linear_operator.matmat(V.numpy())).reshape(self.n, -1)
        if np.iscomplexobj(out):
            raise UserInputError("the linear operator returned complex values; pass a real one")
        return torch.as_tensor(np.ascontiguousarray(out)).to(self.dtype)

    def __repr__(self) -> str:
        return f"ScipyOperator(n={self.n}, dtype={self.dtype})"


class DifferenceOperator(OperatorBase):
    """``E = B - A`` as an operator: ``matmat(V) = B.matmat(V) - A.matmat(V)``.

    Both operators must have the same ``n``, ``dtype`` and ``device``. ``num_matvecs`` counts
    columns of ``E`` (each costs one product with ``A`` and one with ``B``).
    """

    def __init__(self, A: Any, B: Any) -> None:
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


_OPERATOR_HELP = (
    "an operator is an object with n, dtype, device and matmat (n: its size; dtype: "
    "torch.float64 or torch.float32; matmat(V: Tensor[n, b]) -> Tensor[n, b]), such as "
    "HessianOperator or MatrixOperator; a symmetric matrix (numpy array, torch tensor, nested "
    "list) or a scipy LinearOperator is wrapped into one"
)


def _is_operator(obj: Any) -> bool:
    members = ("n", "dtype", "device")
    return all(hasattr(obj, m) for m in members) and callable(getattr(obj, "matmat", None))


def as_operator(obj: Any) -> Any:
    """``obj`` as an operator for the solvers, as ``scipy.sparse.linalg.aslinearoperator``.

    - an operator (``n``, ``dtype``, ``device``, ``matmat``) is returned as it is;
    - a scipy ``LinearOperator`` or sparse matrix becomes a :class:`ScipyOperator`, after one
      probe of its symmetry: ``|u^T A w - w^T A u|`` must be at most ``sqrt(eps)`` (1.5e-8
      in float64) times ``||u|| (||A w|| + ||A u||)`` for two random vectors (2 products,
      not counted in ``num_matvecs``);
    - a torch tensor, numpy array or nested list becomes a :class:`MatrixOperator`, which
      checks that it is square, finite and symmetric.

    Anything else raises :class:`UserInputError` saying what an operator is.
    """
    if _is_operator(obj):
        return obj
    try:
        from scipy import sparse
        from scipy.sparse.linalg import LinearOperator
    except ImportError:  # pragma: no cover - scipy is a dependency
        sparse = LinearOperator = None
    if LinearOperator is not None and (isinstance(obj, LinearOperator) or sparse.issparse(obj)):
        op = ScipyOperator(obj)
        _check_symmetric_probe(op)
        return op
    if isinstance(obj, Tensor):
        matrix: Any = obj
    else:
        try:
            matrix = np.asarray(obj)
        except (ValueError, TypeError):  # ragged nested lists
            matrix = None
        if matrix is None or matrix.dtype.kind not in "biuf":
            raise UserInputError(
                f"expected an operator, got {type(obj).__name__}; {_OPERATOR_HELP}"
            )
    if matrix.ndim != 2:
        raise UserInputError(
            f"expected an operator, got a {type(obj).__name__} of shape {tuple(matrix.shape)}; "
            f"{_OPERATOR_HELP}"
        )
    return MatrixOperator(matrix)


def _check_symmetric_probe(op: ScipyOperator) -> None:
    gen = torch.Generator().manual_seed(0)
    U = torch.randn(op.n, 2, generator=gen, dtype=torch.float64).to(op.dtype)
    AU = op._apply(U)
    u, w, Au, Aw = U[:, 0], U[:, 1], AU[:, 0], AU[:, 1]
    asym = abs(float(u @ Aw - w @ Au))
    scale = float(torch.linalg.vector_norm(u)) * float(
        torch.linalg.vector_norm(Aw) + torch.linalg.vector_norm(Au)
    )
    if not asym <= math.sqrt(torch.finfo(op.dtype).eps) * scale:
        raise UserInputError(
            f"the solvers need a symmetric operator, but for random u, w the linear operator "
            f"gives u^T A w - w^T A u = {asym:.3g} (scale {scale:.3g}); pass (A + A^T) / 2"
        )


# --------------------------------------------------------------------------------------------
# HessianOperator
# --------------------------------------------------------------------------------------------

Batch = Any  # a tuple/list (x, y, ...), a dict, or a tensor


class _LossModule(nn.Module):
    """``forward(batch) -> scalar``: the user's model and loss as one module.

    ``torch.func.functional_call`` on this wrapper substitutes the parameters of every
    submodule, so a user callable ``loss(model, batch)`` that calls ``model(x)`` inside sees
    the substituted (and dtype-cast) parameters as well.
    """

    def __init__(self, model: nn.Module, loss: Callable[..., Tensor]) -> None:
        super().__init__()
        self.model = model
        self.criterion_style = isinstance(loss, nn.Module)
        if self.criterion_style:
            self.criterion = loss
        else:
            self._callable = loss

    def forward(self, batch: Batch) -> Tensor:
        if self.criterion_style:
            x, y = _split_xy(batch)
            return self.criterion(self.model(x), y)
        return self._callable(self.model, batch)


def _split_xy(batch: Batch) -> tuple[Any, Any]:
    if isinstance(batch, (tuple, list)) and len(batch) >= 2:
        return batch[0], batch[1]
    raise UserInputError(
        "a criterion loss (an nn.Module) needs (x, y) batches; got "
        f"{type(batch).__name__}; for dict batches pass a callable loss(model, batch)"
    )


class _VmapFailed(Exception):
    """The vmapped product raised while the ``"auto"`` backend was still undecided."""


class HessianOperator(OperatorBase):
    """The Hessian of a model's sample-weighted mean loss, as a linear operator.

    Args:
        model: any ``nn.Module``. It is never modified: the operator keeps detached copies of
            its parameters and buffers in ``dtype`` (no copy when dtype and device already
            match, so do not train the model while the operator is in use).
        loss: an ``nn.Module`` criterion, called as ``loss(model(x), y)`` on ``(x, y)``
            batches; or any other callable ``(model, batch) -> scalar tensor`` (dict batches,
            language models). The per-batch loss must be a mean over the batch's samples.
        batches: one batch (a tuple/list of tensors, a dict, or a tensor), a list of batches,
            or a re-iterable such as a ``DataLoader``. It must give the same data every pass.
            One-shot iterators (generators) are read once into a list.
        params: ``None`` (all parameters with ``requires_grad``), a list of parameter tensors
            of ``model``, or name patterns: a string or list of ``fnmatch`` globs such as
            ``"fc2.*"``, where ``"last"`` means the parameters of the last module (in
            ``model.modules()`` order) that owns parameters directly.
        dtype: float64 (default, for correctness) or float32 (for speed).
        device: where products run; default: the device of the model's first parameter.
        backend: ``"auto"`` (vmap, falling back to autograd when vmap cannot trace the
            model), ``"vmap"`` or ``"autograd"``.
        micro_batch_size: how many samples of a batch one product pass takes. ``"auto"``
            (default) splits a batch only when ``b`` tangent copies of its activations would
            exceed :data:`CPU_PRODUCT_BYTES` on a CPU, or :data:`ACCELERATOR_PRODUCT_FRACTION`
            of the free CUDA memory (activations measured once per batch shape, on 2 and 8
            samples; the budget fixed at the first product); an int caps every pass at that
            many samples; ``None`` never splits. Splitting needs the per-batch loss to be a
            mean over samples: the first time a batch is split the operator compares its
            loss and gradient with the size-weighted means of its slices' losses and
            gradients (relative tolerance ``sqrt(eps)``). When they differ (a summed,
            class-weighted or token-masked loss, batch statistics) ``"auto"`` keeps batches
            whole and an int raises :class:`UserInputError`.
        check_reproducible: repeat the first product on one column and raise
            :class:`UserInputError`, naming the likely cause (dropout or noise in forward,
            BatchNorm in train mode, a shuffling loader), when the two differ by more than
            :meth:`repeat_rtol` relative to their norm (1.5e-8 in float64, 3.5e-4 in
            float32, 0.031 in float32 with CUDA's TF32; rounding differs by ~1e-14 and
            ~1e-6 without TF32). It costs one column product,
            once, counted in neither ``num_matvecs`` nor ``num_data_passes``. Pass ``False``
            only for an operator that is random on purpose.

    Every product is checked for NaN and Inf; when it has any, the error says which is not
    finite: the parameters, a batch's data, its loss, its gradient, or only the product.
    For batches that are not a list (a DataLoader, any re-iterable) every pass over them is
    compared with the first one, by its number of samples and a checksum of its data that
    does not depend on the order of the samples: an iterable that is empty after one pass, a
    sampler that draws a random subset or random transforms raise :class:`UserInputError`.

    Floating-point input tensors are cast to ``dtype``; integer ones (labels, token ids) are
    only moved to ``device``. During products the model runs in eval mode; the mode of every
    module is restored afterwards.

    ``num_data_passes`` counts passes over all batches for any purpose (products, gradient,
    loss; not the one-off checks and measurements for micro-batches); ``num_matvecs`` counts
    product columns. ``splits_batches`` is ``None`` until a batch first needed splitting,
    then whether the loss and the model allowed it; ``last_pass_samples`` lists the samples
    of each (micro-)batch the last product took.
    """

    def __init__(
        self,
        model: nn.Module,
        loss: Callable[..., Tensor],
        batches: Any,
        params: Any = None,
        dtype: torch.dtype = torch.float64,
        device: str | torch.device | None = None,
        backend: str = "auto",
        micro_batch_size: int | str | None = "auto",
        check_reproducible: bool = True,
    ) -> None:
        super().__init__()
        if not isinstance(model, nn.Module):
            raise UserInputError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        model = distributed.unwrap_model(model)  # DDP hooks do not reduce Hessian products
        if not callable(loss):
            raise UserInputError(
                "loss must be an nn.Module criterion or a callable (model, batch) -> scalar"
            )
        if backend not in _BACKENDS:
            raise UserInputError(f"backend must be one of {_BACKENDS}, got {backend!r}")
        _check_float_dtype(dtype)
        _check_micro_batch_size(micro_batch_size)
        self.model = model
        self.loss = loss
        self.dtype = dtype
        self.device = _resolve_device(model, device)
        self.backend = backend
        self.micro_batch_size = micro_batch_size
        self.splits_batches: bool | None = None
        self._activation_bytes: dict[tuple[Any, ...], float] = {}
        self._budget: float | None = None
        self.last_pass_samples: list[int] = []  # samples of each pass of the last product
        self._split_checked: set[int] = set()  # batches whose loss was checked for splitting
        self.num_data_passes = 0
        self._active_backend: str | None = None if backend == "auto" else backend
        self._train_mode_seen: list[str] = []
        self.check_reproducible = bool(check_reproducible)
        self._repeat_checked = False  # whether the first product has been repeated

        self.param_names = _select_params(model, params)
        named = dict(model.named_parameters())
        selected = [named[name] for name in self.param_names]
        self.param_shapes: list[torch.Size] = [p.shape for p in selected]
        self._numels = [p.numel() for p in selected]
        self.n = int(sum(self._numels))
        self._theta = torch.cat(
            [p.detach().reshape(-1).to(device=self.device, dtype=dtype) for p in selected]
        )
        self._wrapper = _LossModule(model, loss)
        self._fixed = self._fixed_tensors()

        # under torch.distributed: check that ranks agree, keep this rank's slice of each batch
        self.batches = distributed.shard_checked(
            _normalize_batches(batches),
            self._theta,
            before_split=self._check_rank_split,
            dtype=str(dtype),
            check_reproducible=self.check_reproducible,
        )
        # a list gives the same batches every pass; anything else is summarised on this first
        # pass and every later pass is compared with it (_iter_batches)
        self._first_pass: _reproducibility.DataSummary | None = None
        self._passes = 1
        if not isinstance(self.batches, list):
            self._first_pass = _reproducibility.DataSummary()
        counts = []
        for b in self.batches:
            counts.append(_batch_size(b))
            if self._first_pass is not None:
                self._first_pass.add(b, counts[-1])
        self._local_counts = counts
        total = self._all_reduce(torch.tensor(float(sum(counts)), dtype=torch.float64))
        self.num_samples = int(round(float(total)))
        if self.num_samples <= 0:
            raise UserInputError("batches hold no samples; pass at least one non-empty batch")

    # ---------------------------------------------------------------- set-up helpers

    def _fixed_tensors(self) -> dict[str, Tensor]:
        """Every non-selected parameter and buffer of the wrapper, detached, in the op dtype.

        Casting them too makes the whole forward run in ``dtype``; integer buffers
        (e.g. BatchNorm's step counter) keep their dtype.
        """
        selected = {f"model.{name}" for name in self.param_names}
        fixed: dict[str, Tensor] = {}
        tensors = list(self._wrapper.named_parameters()) + list(self._wrapper.named_buffers())
        for name, t in tensors:
            if name in selected:
                continue
            t = t.detach()
            kwargs: dict[str, Any] = {"device": self.device}
            if t.is_floating_point():
                kwargs["dtype"] = self.dtype
            fixed[name] = t.to(**kwargs)
        return fixed

    def _all_reduce(self, tensor: Tensor, identical: Tensor | None = None) -> Tensor:
        """Sum ``tensor`` over processes (identity in a single process).

        ``identical`` (the block V of a product) must be equal on every rank; it is checked
        inside the same all-reduce (:func:`hessian_powerlaw.distributed.all_reduce_sum`).
        """
        return distributed.all_reduce_sum(tensor, identical=identical)

    # ---------------------------------------------------------------- the loss as a function

    def _unflatten(self, theta: Tensor) -> dict[str, Tensor]:
        pieces = torch.split(theta, self._numels)
        return {
            f"model.{name}": piece.view(shape)
            for name, piece, shape in zip(self.param_names, pieces, self.param_shapes)
        }

    def _loss_at(self, theta: Tensor, batch: Batch) -> Tensor:
        """The loss of one batch as a function of the flat selected parameters."""
        tensors = dict(self._fixed)
        tensors.update(self._unflatten(theta))
        out = torch.func.functional_call(self._wrapper, tensors, (batch,), strict=False)
        if not isinstance(out, Tensor) or out.numel() != 1:
            raise UserInputError(
                "the loss must return a scalar tensor (a mean over the batch); got "
                f"{type(out).__name__} with shape {tuple(getattr(out, 'shape', ()))}"
            )
        return out.reshape(())

    def _iter_batches(self) -> Iterator[tuple[float, Batch]]:
        """(weight m_b / M, batch moved to device and dtype) for this process's batches.

        A pass over a re-iterable that is not a list must hold the data of the first pass
        (:class:`~hessian_powerlaw._reproducibility.DataSummary`); the check runs when the
        pass ends, before its products are used.
        """
        summary = None if self._first_pass is None else _reproducibility.DataSummary()
        for batch in self.batches:
            size = _batch_size(batch)
            if summary is not None:
                summary.add(batch, size)
            yield size / self.num_samples, batching.to_device(batch, self.device, self.dtype)
        if summary is not None and self._first_pass is not None:
            self._passes += 1
            self._check_same_data(summary, self._first_pass)

    def _check_same_data(
        self, summary: _reproducibility.DataSummary, first: _reproducibility.DataSummary
    ) -> None:
        differs = summary.difference(first)
        if differs is None:
            return
        empty = summary.samples == 0
        where = f"on pass {self._passes} over them"
        first_pass = f"the first pass gave {first.samples} samples in {first.batches} batches"
        if empty or summary.samples != first.samples:
            seen = f"{summary.samples or 'no'} samples {where}, but {first_pass}"
        else:
            seen = f"different data {where} than on the first (the same {first.samples} samples)"
        cause = _reproducibility.data_change_cause(self.batches, empty)
        raise UserInputError(
            f"the Hessian batches gave {seen}: {cause}. "
            "The operator needs the same data on every pass: pass a list of batches (e.g. "
            "list(loader)), or a DataLoader with shuffle=False and no random transforms"
        )

    @contextlib.contextmanager
    def _eval_mode(self) -> Iterator[None]:
        modes = [(m, m.training) for m in self.model.modules()]
        self.model.eval()
        try:
            yield
        finally:
            # a callable loss may switch modules to train mode; remember it for diagnostics
            self._train_mode_seen = [
                name or type(m).__name__ for name, m in self.model.named_modules() if m.training
            ]
            for m, mode in modes:
                m.train(mode)

    # ---------------------------------------------------------------- products

    def _apply(self, V: Tensor) -> Tensor:
        out = self._product(V)
        # the reductions are over the all-reduced product: every rank raises alike
        if not bool(torch.isfinite(out).all()):
            raise self._not_finite_error()
        if self.check_reproducible and not self._repeat_checked:
            self._repeat_checked = True
            self._check_repeat(V[:, :1], out[:, :1])
        return out

    def _product(self, V: Tensor) -> Tensor:
        if self._active_backend is None:
            try:
                out = self._pass(V, "vmap")
                self._active_backend = "vmap"
                return out
            except _VmapFailed:  # vmap cannot trace this model: use double backward from now on
                self._active_backend = "autograd"
        return self._pass(V, self._active_backend)

    def _check_repeat(self, v: Tensor, first: Tensor) -> None:
        """Apply H to ``v`` again and compare with ``first`` (see ``check_reproducible``).

        The repeat is a one-off check: it counts in neither ``num_data_passes`` nor
        ``num_matvecs`` and leaves ``last_pass_samples`` as the product left it.
        """
        assert self._active_backend is not None
        samples, passes = self.last_pass_samples, self.num_data_passes
        try:
            second = self._pass(v, self._active_backend)
        finally:
            self.last_pass_samples, self.num_data_passes = samples, passes
        rtol = self.repeat_rtol()
        diff = _relative_difference(first, second)
        if not diff <= rtol:
            raise self._not_reproducible_error(diff, rtol)

    def repeat_rtol(self) -> float:
        """The relative difference two products of the same vector may have: ``sqrt(eps)``.

        ``eps`` is the dtype's (1.5e-8 in float64, 3.5e-4 in float32), except for float32 on
        CUDA with TF32 allowed (``torch.backends.cudnn.allow_tf32``, on by default, or
        ``torch.backends.cuda.matmul.allow_tf32``): TF32 keeps 10 mantissa bits, and a
        product of one column may take other kernels than one of ``b`` columns, so there
        ``eps = 2^-10`` and the tolerance is 0.031.
        """
        eps = torch.finfo(self.dtype).eps
        tf32 = torch.backends.cudnn.allow_tf32 or torch.backends.cuda.matmul.allow_tf32
        if self.dtype == torch.float32 and self.device.type == "cuda" and tf32:
            eps = 2.0**-10
        return math.sqrt(eps)

    def _pass(self, V: Tensor, backend: str) -> Tensor:
        """One pass over the data: local weighted sum of per-batch HVPs, then all-reduce."""
        hvp = self._hvp_vmap if backend == "vmap" else self._hvp_autograd
        # only the vmapped pass holds a tangent copy of the activations per column
        columns = V.shape[1] if backend == "vmap" else 1
        acc = torch.zeros_like(V)
        sizes: list[int] = []
        with self._eval_mode():
            for index, (weight, batch) in enumerate(self._iter_batches()):
                size = _batch_size(batch)
                for piece in self._micro_batches(index, batch, size, columns):
                    sizes.append(_batch_size(piece))
                    acc.add_(self._hvp(hvp, V, piece), alpha=weight * sizes[-1] / size)
        self.last_pass_samples = sizes
        self.num_data_passes += 1
        return self._all_reduce(acc, identical=V)

    def _hvp(self, hvp: Callable[[Tensor, Batch], Tensor], V: Tensor, batch: Batch) -> Tensor:
        """``hvp(V, batch)``; while the backend is undecided, a vmap failure is marked as such."""
        if self._active_backend is not None:
            return hvp(V, batch)
        try:
            return hvp(V, batch)
        except (UserInputError, distributed.DistributedError):
            raise
        except Exception as exc:
            raise _VmapFailed from exc

    # ---------------------------------------------------------------- micro-batches

    def _micro_batches(self, index: int, batch: Batch, size: int, columns: int) -> list[Batch]:
        """``batch`` number ``index`` as the slices one product pass takes.

        The first time a batch is split its loss is checked (:meth:`_loss_splits`); one
        batch that fails keeps every batch whole from then on.
        """
        if self.micro_batch_size is None or size <= 1 or self.splits_batches is False:
            return [batch]
        if self.micro_batch_size == "auto":
            if size <= _FEW_SAMPLES:  # too small to be worth measuring
                return [batch]
            per_pass = self._auto_micro_batch(batch, size, columns)
        else:
            per_pass = int(self.micro_batch_size)
        if per_pass >= size:
            return [batch]
        pieces = batching.split(batch, size, math.ceil(size / per_pass))
        if index not in self._split_checked:
            self.splits_batches = self._loss_splits(batch, pieces)
            self._split_checked.add(index)
            if not self.splits_batches:
                return [batch]
        return pieces

    def _auto_micro_batch(self, batch: Batch, size: int, columns: int) -> int:
        if self._budget is None:  # fixed once: products of as many columns cut the same slices
            self._budget = _product_budget(self.device)
        budget = self._budget
        try:
            per_sample = self._activation_bytes_per_sample(batch, size)
        except Exception:  # the model refuses small slices (e.g. batch statistics): keep whole
            self.splits_batches = False
            return size
        return max(1, int(budget // max(per_sample * columns, 1.0)))

    def _activation_bytes_per_sample(self, batch: Batch, size: int) -> float:
        """Bytes autograd saves per sample in the loss's forward, from two small slices.

        The difference of the totals on 2 and ``_FEW_SAMPLES`` samples leaves out whatever
        does not grow with the samples (parameters, buffers). Cached per batch shape (all
        dimensions but the first).
        """
        key = _trailing_shapes(batch)
        if key not in self._activation_bytes:
            few = self._saved_bytes(batching.take(batch, size, 0, 2))
            more = self._saved_bytes(batching.take(batch, size, 0, _FEW_SAMPLES))
            grown = (more - few) / (_FEW_SAMPLES - 2)
            self._activation_bytes[key] = float(grown if grown > 0 else more / _FEW_SAMPLES)
        return self._activation_bytes[key]

    def _saved_bytes(self, batch: Batch) -> int:
        total = 0

        def pack(t: Tensor) -> Tensor:
            nonlocal total
            total += t.numel() * t.element_size()
            return t

        theta = self._theta.detach().requires_grad_(True)
        with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            self._loss_at(theta, batch)
        return total

    def _loss_splits(self, batch: Batch, pieces: list[Batch]) -> bool:
        """Whether micro-batches may cut ``batch`` into ``pieces`` (see :meth:`_split_mismatch`)."""
        why = self._split_mismatch(batch, pieces)
        if why is None:
            return True
        if self.micro_batch_size != "auto":
            raise UserInputError(
                f"micro_batch_size={self.micro_batch_size}: the loss of a batch is not the "
                f"mean of its samples' losses ({why}), so a batch cannot be split into "
                f"{len(pieces)} slices; pass micro_batch_size=None or make the loss a mean "
                "over samples"
            )
        return False

    def _split_mismatch(self, batch: Batch, pieces: list[Batch]) -> str | None:
        """None when the batch's loss and gradient are the size-weighted means of its pieces'
        losses and gradients, else what differs. The model is in eval mode.

        Loss values alone can agree by accident (a class-weighted mean when the per-sample
        losses are all about equal, e.g. at a zero-initialised head); the gradient, a vector
        of n numbers, does not. Tolerance: ``sqrt(eps)`` relative to the size-weighted sum of
        the pieces' magnitudes (the scale of the rounding errors).
        """
        size = _batch_size(batch)
        try:
            whole_loss, whole_grad = self._batch_loss_and_gradient(batch)
            parts = [(_batch_size(p) / size, *self._batch_loss_and_gradient(p)) for p in pieces]
        except Exception as exc:  # e.g. batch statistics refuse a one-sample slice
            return f"a slice fails: {type(exc).__name__}: {exc}"
        loss = sum(w * value for w, value, _ in parts)
        grad = sum(w * g for w, _, g in parts)
        rtol = math.sqrt(torch.finfo(self.dtype).eps)
        loss_scale = sum(w * abs(value) for w, value, _ in parts)
        grad_scale = sum(w * float(torch.linalg.vector_norm(g)) for w, _, g in parts)
        grad_diff = float(torch.linalg.vector_norm(grad - whole_grad))
        if abs(loss - whole_loss) > rtol * max(loss_scale, abs(whole_loss), 1e-30):
            return f"whole batch loss {whole_loss:.10g}, size-weighted mean of slices {loss:.10g}"
        if grad_diff > rtol * max(grad_scale, 1e-30):
            return (
                "the size-weighted mean of the slices' gradients differs from the batch's "
                f"by {grad_diff / max(grad_scale, 1e-30):.2g} relative"
            )
        return None

    def _batch_loss_and_gradient(self, batch: Batch) -> tuple[float, Tensor]:
        theta = self._theta.detach().requires_grad_(True)
        with torch.enable_grad():
            loss = self._loss_at(theta, batch)
            (grad,) = torch.autograd.grad(loss, theta, allow_unused=True)
        return float(loss.detach()), torch.zeros_like(theta) if grad is None else grad.detach()

    def _check_rank_split(self, batches: list[Batch]) -> None:
        """Under ``W`` ranks every batch is cut into ``W`` slices, one per rank: refuse a
        loss that is not a mean over samples. Called by :func:`distributed.shard_checked`
        once the ranks agree on the data, on every batch, so every rank reaches the same
        verdict."""
        world = distributed.world_size()
        sizes = [batching.sample_count(b) for b in batches]
        if any(size is None for size in sizes):
            return  # whole batches are dealt round robin instead (distributed.shard)
        with self._eval_mode():
            for index, (batch, size) in enumerate(zip(batches, sizes)):
                if size < 2:
                    continue
                batch = batching.to_device(batch, self.device, self.dtype)
                why = self._split_mismatch(batch, batching.split(batch, size, world))
                if why is not None:
                    raise UserInputError(
                        f"{world} ranks share every Hessian batch, slice by slice, which "
                        "needs the loss of a batch to be the mean of its samples' losses "
                        f"(batch {index}: {why}); make the loss a mean over samples or run "
                        "in one process"
                    )

    def _hvp_vmap(self, V: Tensor, batch: Batch) -> Tensor:
        """H_b V by vmap over forward-over-reverse: the primal pass is shared by all columns."""
        theta = self._theta
        grad_fn = torch.func.grad(lambda t: self._loss_at(t, batch))

        def column(v: Tensor) -> Tensor:
            return torch.func.jvp(grad_fn, (theta,), (v,))[1]

        return torch.func.vmap(column, in_dims=1, out_dims=1, randomness="same")(V)

    def _hvp_autograd(self, V: Tensor, batch: Batch) -> Tensor:
        """H_b V by double backward: one gradient graph per batch, reused for every column."""
        theta = self._theta.detach().requires_grad_(True)
        with torch.enable_grad():
            loss = self._loss_at(theta, batch)
            (grad,) = torch.autograd.grad(loss, theta, create_graph=True)
            if not grad.requires_grad:  # the loss is linear in theta: H_b = 0
                return torch.zeros_like(V)
            cols = [
                torch.autograd.grad(grad, theta, grad_outputs=V[:, j], retain_graph=True)[0]
                for j in range(V.shape[1])
            ]
        return torch.stack(cols, dim=1).detach()

    # ---------------------------------------------------------------- loss and gradient

    def loss_and_gradient(self) -> tuple[float, Tensor]:
        """The weighted mean loss ``L(theta)`` and its gradient (shape ``(n,)``), one pass."""
        theta = self._theta.detach().requires_grad_(True)
        loss_acc = torch.zeros((), dtype=self.dtype, device=self.device)
        grad_acc = torch.zeros_like(self._theta)
        with self._eval_mode(), torch.enable_grad():
            for weight, batch in self._iter_batches():
                loss = self._loss_at(theta, batch)
                (grad,) = torch.autograd.grad(loss, theta, allow_unused=True)
                loss_acc += weight * loss.detach()
                if grad is not None:
                    grad_acc.add_(grad, alpha=weight)
        self.num_data_passes += 1
        both = self._all_reduce(torch.cat([loss_acc.reshape(1), grad_acc]))
        return float(both[0]), both[1:]

    def gradient(self) -> Tensor:
        """The gradient of the weighted mean loss with respect to the chosen parameters."""
        return self.loss_and_gradient()[1]

    def loss_value(self) -> float:
        """The weighted mean loss over all batches (one forward pass, no gradient)."""
        acc = torch.zeros((), dtype=self.dtype, device=self.device)
        with self._eval_mode(), torch.no_grad():
            for weight, batch in self._iter_batches():
                acc += weight * self._loss_at(self._theta, batch)
        self.num_data_passes += 1
        return float(self._all_reduce(acc.reshape(1))[0])

    # ---------------------------------------------------------------- diagnostics

    def check_deterministic(self, seed: int = 0, rtol: float | None = None) -> float:
        """Apply H twice to one random vector; raise if the two results differ.

        Returns the relative difference ``||H v - H v'|| / max(||H v||, ||H v'||)``. The
        tolerance defaults to :meth:`repeat_rtol` (``sqrt(eps)``, 1.5e-8 in float64), far
        above summation-order noise. The error names the likely cause: random numbers drawn
        in forward, dropout, BatchNorm, a shuffling DataLoader, or a loss that switches the
        model to train mode. (The first product of an operator is already checked this way
        on one column unless ``check_reproducible=False``.)
        """
        if rtol is None:
            rtol = self.repeat_rtol()
        gen = torch.Generator().manual_seed(seed)
        v = torch.randn(self.n, generator=gen, dtype=torch.float64).to(self.device, self.dtype)
        first = self.matvec(v)
        second = self.matvec(v)
        diff = _relative_difference(first, second)
        if not diff <= rtol:
            raise self._not_reproducible_error(diff, rtol)
        return diff

    def _not_reproducible_error(self, diff: float, rtol: float) -> UserInputError:
        causes = self._nondeterminism_causes()
        return UserInputError(
            f"Hessian-vector products are not reproducible: the same product computed twice "
            f"differs by {diff:.3g} relative (rounding stays below {rtol:.2g}), so every "
            f"eigenvalue would be wrong; likely cause: {'; '.join(causes)}"
        )

    def _nondeterminism_causes(self) -> list[str]:
        """The likely causes of irreproducible products, from one extra look at the loss:
        evaluated twice on the first batch, does it draw random numbers, does it change?"""
        draws_random = loss_varies = False
        batch = next(iter(self.batches), None)
        if batch is not None:
            batch = batching.to_device(batch, self.device, self.dtype)
            with self._eval_mode(), torch.no_grad():
                before = _reproducibility.rng_snapshot(self.device)
                try:
                    first = self._loss_at(self._theta, batch)
                    after = _reproducibility.rng_snapshot(self.device)
                    second = self._loss_at(self._theta, batch)
                except Exception:  # a diagnosis must not hide the error it explains
                    after = before
                else:
                    # beyond rounding, as for the products (a GPU may sum in any order)
                    gap = float((first - second).abs())
                    loss_varies = not gap <= math.sqrt(torch.finfo(self.dtype).eps) * float(
                        first.abs()
                    )
                draws_random = _reproducibility.rng_changed(before, after)
        return _reproducibility.nondeterminism_causes(
            self.model, self.batches, self._train_mode_seen, draws_random, loss_varies
        )

    def _not_finite_error(self) -> UserInputError:
        """What made a product NaN or Inf, checked in order: the parameters and buffers, each
        batch's data, its loss, its gradient; else the second derivatives themselves."""
        bad = [name for name, t in self._unflatten(self._theta).items() if not _finite(t)]
        bad += [name for name, t in self._fixed.items() if t.is_floating_point() and not _finite(t)]
        if bad:
            names = _abbreviate([name.removeprefix("model.") for name in bad])
            return UserInputError(
                f"the Hessian-vector product is not finite because the model's parameters or "
                f"buffers are not finite ({names}); load weights from before training diverged"
            )
        with self._eval_mode():
            for index, (_, batch) in enumerate(self._iter_batches()):
                if not all(_finite(t) for t in _float_tensors(batch)):
                    return UserInputError(
                        f"the Hessian-vector product is not finite because batch {index} holds "
                        "NaN or Inf values; clean the data"
                    )
                loss, grad = self._batch_loss_and_gradient(batch)
                if not math.isfinite(loss):
                    return UserInputError(
                        f"the loss is not finite ({loss}) on batch {index}, so neither are its "
                        "Hessian-vector products; check the loss function (log of 0, division "
                        "by 0) and the model's outputs on that batch"
                    )
                if not _finite(grad):
                    return UserInputError(
                        f"the gradient is not finite on batch {index} (the loss is {loss:.6g}), "
                        "so neither are its Hessian-vector products; the loss is not "
                        "differentiable at these weights (e.g. sqrt or abs at 0)"
                    )
        hint = "; try dtype=torch.float64" if self.dtype == torch.float32 else ""
        return UserInputError(
            "the Hessian-vector product is not finite, although the loss and gradient of every "
            "batch are: the second derivatives overflow or are infinite at these weights (e.g. "
            f"|w|^1.5 at 0){hint}"
        )

    def __repr__(self) -> str:
        return (
            f"HessianOperator(n={self.n}, params={len(self.param_names)} tensors, "
            f"num_samples={self.num_samples}, dtype={self.dtype}, device={self.device})"
        )


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def _finite(t: Tensor) -> bool:
    return bool(torch.isfinite(t).all())


def _float_tensors(batch: Batch) -> list[Tensor]:
    leaves = _reproducibility.leaves(batch)
    return [t for t in leaves if isinstance(t, Tensor) and t.is_floating_point()]


def _relative_difference(a: Tensor, b: Tensor) -> float:
    """``||a - b|| / max(||a||, ||b||)``, 0 for two zero vectors, NaN for non-finite ones."""
    scale = max(float(torch.linalg.vector_norm(a)), float(torch.linalg.vector_norm(b)))
    diff = float(torch.linalg.vector_norm(a - b))
    return diff / scale if scale > 0 else diff


def _check_float_dtype(dtype: Any) -> None:
    if dtype not in (torch.float32, torch.float64):
        raise UserInputError(f"dtype must be torch.float64 or torch.float32, got {dtype}")


def _check_micro_batch_size(value: Any) -> None:
    if value is None or value == "auto":
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UserInputError(
            f"micro_batch_size must be 'auto', None or a positive int, got {value!r}"
        )


def _product_budget(device: torch.device) -> float:
    """Bytes of activations times columns that one vmapped product pass may hold."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        # memory torch's caching allocator holds but does not use is free for our products
        cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
        return ACCELERATOR_PRODUCT_FRACTION * (free + cached)
    return float(CPU_PRODUCT_BYTES)


def _trailing_shapes(batch: Any) -> tuple[Any, ...]:
    """The shapes of a batch's tensors without the first dimension (a cache key)."""
    if isinstance(batch, Tensor):
        return (tuple(batch.shape[1:]),)
    if isinstance(batch, Mapping):
        return tuple((k, _trailing_shapes(v)) for k, v in batch.items())
    if isinstance(batch, (tuple, list)):
        return tuple(_trailing_shapes(v) for v in batch)
    return ()


def _resolve_device(model: nn.Module, device: str | torch.device | None) -> torch.device:
    if device is not None:
        try:
            resolved = torch.device(device)
        except (RuntimeError, TypeError) as exc:
            raise UserInputError(f"device {device!r} is not a valid torch device: {exc}") from None
        if resolved.type == "cuda" and not torch.cuda.is_available():
            raise UserInputError(
                f"device {device!r}: this PyTorch build or machine has no CUDA GPU; use 'cpu'"
            )
        return resolved
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def _abbreviate(names: Sequence[str], limit: int = 12) -> str:
    """``a, b, c, ... (N more)`` so that error messages stay one readable line."""
    shown = ", ".join(names[:limit])
    return shown if len(names) <= limit else f"{shown}, ... ({len(names) - limit} more)"


def _last_module_params(model: nn.Module) -> list[str]:
    """Names of the parameters owned directly by the last module that owns any.

    Matched by identity against ``model.named_parameters()``, so a weight tied to an earlier
    module (a language model's head sharing the embedding matrix) is found under the name
    that ``named_parameters`` lists it by.
    """
    last: list[nn.Parameter] = []
    for module in model.modules():
        own = [p for p in module.parameters(recurse=False) if p.requires_grad]
        if own:
            last = own
    wanted = {id(p) for p in last}
    return [name for name, p in model.named_parameters() if id(p) in wanted]


def _select_params(model: nn.Module, params: Any) -> list[str]:
    """Selected parameter names, in ``model.named_parameters()`` order, without duplicates."""
    named = list(model.named_parameters())
    available = [name for name, _ in named]
    if params is None:
        chosen = {name for name, p in named if p.requires_grad}
        if not chosen:
            raise UserInputError("the model has no trainable parameters (requires_grad=True)")
    elif isinstance(params, str) or (
        isinstance(params, Sequence) and params and all(isinstance(p, str) for p in params)
    ):
        chosen = _match_patterns(model, [params] if isinstance(params, str) else list(params))
    elif isinstance(params, Iterable):
        tensors = list(params)
        if not tensors or not all(isinstance(t, Tensor) for t in tensors):
            raise UserInputError(
                "params must be None, name patterns (e.g. 'fc2.*', 'last') or a non-empty "
                "list of the model's parameter tensors"
            )
        by_id = {id(p): name for name, p in named}
        missing = [i for i, t in enumerate(tensors) if id(t) not in by_id]
        if missing:
            raise UserInputError(
                f"params[{missing[0]}] is not a parameter of the model; pass tensors from "
                "model.parameters() or name patterns"
            )
        chosen = {by_id[id(t)] for t in tensors}
    else:
        raise UserInputError(
            f"params must be None, a pattern string, or a list; got {type(params).__name__}"
        )
    return [name for name in available if name in chosen]


def _match_patterns(model: nn.Module, patterns: list[str]) -> set[str]:
    available = [name for name, _ in model.named_parameters()]
    chosen: set[str] = set()
    for pattern in patterns:
        if pattern == "last":
            hits = _last_module_params(model)
        else:
            hits = [name for name in available if fnmatch.fnmatchcase(name, pattern)]
        if not hits:
            raise UserInputError(_no_match_message(pattern, available))
        chosen.update(hits)
    return chosen


def _no_match_message(pattern: str, available: Sequence[str]) -> str:
    """One line: the pattern, the model's own names (summarised), and an example glob."""
    hint = ""
    # hf:PATH models were once named with a "model." prefix; say what the pattern is now
    if pattern.startswith("model."):
        bare = pattern[len("model.") :]
        if any(fnmatch.fnmatchcase(name, bare) for name in available):
            hint = f"; parameters go by the model's own names now: did you mean {bare!r}?"
    if not hint:
        owner = available[-1].rpartition(".")[0] if available else ""
        example = f"{owner}.*" if owner else "*"
        hint = f" (fnmatch globs such as {example!r}, or 'last')"
    return (
        f"params pattern {pattern!r} matches no parameter; the model's parameters: "
        f"{summarize_names(available)}{hint}"
    )


def summarize_names(names: Sequence[str], limit: int = 16) -> str:
    """Parameter names for a message, short even for big models.

    Up to ``limit`` names are listed as they are. Beyond that, names that differ only in their
    numeric components (the blocks of a transformer) are collapsed into one, with each index
    set in braces: ``transformer.h.{0-11}.attn.c_attn.weight`` stands for 12 names. A group is
    collapsed only when it holds every combination of its indices, so the summary never names
    a parameter that does not exist. At most ``limit`` entries are shown, then how many more
    there are.
    """
    if len(names) <= limit:
        return ", ".join(names)
    groups: dict[tuple[str, ...], list[tuple[int, ...]]] = {}
    for name in names:
        parts = name.split(".")
        key = tuple("#" if part.isdigit() else part for part in parts)
        groups.setdefault(key, []).append(tuple(int(p) for p in parts if p.isdigit()))
    entries: list[str] = []
    for key, indices in groups.items():
        columns = [sorted(set(column)) for column in zip(*indices)]
        if len(indices) > 1 and len(set(indices)) == math.prod(len(c) for c in columns):
            ranges = iter(_index_set(column) for column in columns)
            entries.append(".".join(next(ranges) if part == "#" else part for part in key))
        else:
            for combo in indices:
                numbers = iter(str(i) for i in combo)
                entries.append(".".join(next(numbers) if part == "#" else part for part in key))
    return _abbreviate(entries, limit)


def _index_set(values: Sequence[int]) -> str:
    """``{0-11}`` for a contiguous run, ``{0,2,5}`` otherwise; a single index as is."""
    if len(values) == 1:
        return str(values[0])
    if values[-1] - values[0] + 1 == len(values):
        return f"{{{values[0]}-{values[-1]}}}"
    return "{" + ",".join(str(v) for v in values) + "}"


def _normalize_batches(batches: Any) -> Any:
    """A re-iterable collection of batches: a list, or the user's DataLoader as is."""
    if batches is None:
        raise UserInputError("batches is None; pass a batch (x, y), a list of batches or a loader")
    if batching.is_single_batch(batches):
        return [batches]
    if isinstance(batches, (list, tuple)):
        if not batches:
            raise UserInputError("batches is empty; pass at least one batch")
        return list(batches)
    if isinstance(batches, Iterator):  # a generator can be read only once: keep its batches
        return list(batches)
    if isinstance(batches, Iterable):
        return batches
    raise UserInputError(
        f"batches must be a batch, a list of batches or a DataLoader; got {type(batches).__name__}"
    )


def _batch_size(batch: Batch) -> int:
    """The number of samples of a batch: the length of its first tensor."""
    count = batching.sample_count(batch)
    if count is None:
        raise UserInputError(
            f"cannot tell the number of samples of a batch of type {type(batch).__name__}; "
            "its first tensor must have the samples along dimension 0"
        )
    return count
