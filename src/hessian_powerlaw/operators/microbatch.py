"""Micro-batches: how many samples of a batch one vmapped product pass takes.

The batched product holds ``b`` tangent copies of a batch's activations. When that working
set is large, products are cheaper (fewer cache misses and page faults, no out-of-memory) if
a batch is applied in *micro-batches*: contiguous slices of its samples, each weighted by its
size. For a loss that is a mean over samples this is the same operator,

    H_b V = sum_c (m_c / m_b) H_c V,

the identity the data-parallel split (:mod:`hessian_powerlaw.distributed`) rests on too.
:class:`MicroBatchPlanner` chooses the slices and checks the identity
(:func:`split_mismatch`) on each batch before it first splits it; the operator hands it the
two measurements it needs (the bytes autograd saves for a slice, and a slice's loss and
gradient) as functions.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor

from hessian_powerlaw import batching
from hessian_powerlaw.errors import UserInputError
from hessian_powerlaw.protocols import Batch

__all__ = [
    "ACCELERATOR_PRODUCT_FRACTION",
    "CPU_PRODUCT_BYTES",
    "MicroBatchPlanner",
    "check_micro_batch_size",
    "check_rank_split",
    "product_budget",
    "split_mismatch",
]

# micro_batch_size="auto": the largest micro-batch whose saved activations, times the columns
# of one vmapped product, stay within this many bytes. On a CPU it is a cache-and-allocator
# effect: for a LeNet on 1,797 digits in float64 (14.5 kB of activations a sample), b = 16
# columns cost about 2 gradients each on the whole batch (420 MB) and 1.2-1.4 in the four
# slices this budget gives (see docs/benchmarks.md). On an accelerator it guards memory: a
# fraction of the device memory that is free when the operator first needs the budget.
CPU_PRODUCT_BYTES = 128 * 2**20
ACCELERATOR_PRODUCT_FRACTION = 0.125
_FEW_SAMPLES = 8  # batches this small are never split by "auto"; activations measured on 2, 8

#: ``loss_and_gradient(batch) -> (loss, gradient)`` at the operator's parameters.
LossAndGradient = Callable[[Batch], "tuple[float, Tensor]"]


def check_micro_batch_size(value: Any) -> None:
    """Check a ``micro_batch_size`` argument.

    Args:
        value: ``"auto"``, ``None`` or a positive int.

    Raises:
        UserInputError: anything else.
    """
    if value is None or value == "auto":
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UserInputError(
            f"micro_batch_size must be 'auto', None or a positive int, got {value!r}"
        )


def product_budget(device: torch.device) -> float:
    """Bytes of activations times columns that one vmapped product pass may hold.

    Args:
        device: where the products run.

    Returns:
        :data:`CPU_PRODUCT_BYTES` on a CPU; :data:`ACCELERATOR_PRODUCT_FRACTION` of the free
        (and cached but unused) memory of a CUDA device.
    """
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


def split_mismatch(
    batch: Batch, pieces: list[Batch], loss_and_gradient: LossAndGradient, dtype: torch.dtype
) -> str | None:
    """Whether a batch's loss is the size-weighted mean of its pieces' losses.

    Loss values alone can agree by accident (a class-weighted mean when the per-sample
    losses are all about equal, e.g. at a zero-initialised head); the gradient, a vector of
    n numbers, does not. Tolerance: ``sqrt(eps)`` relative to the size-weighted sum of the
    pieces' magnitudes (the scale of the rounding errors).

    Args:
        batch: the whole batch.
        pieces: its slices.
        loss_and_gradient: the loss and gradient of a batch (the model in eval mode).
        dtype: the precision they are computed in.

    Returns:
        None when the batch's loss and gradient are the size-weighted means of its pieces'
        losses and gradients, else what differs, in words.
    """
    size = batching.sample_count(batch) or 0
    try:
        whole_loss, whole_grad = loss_and_gradient(batch)
        parts = [((batching.sample_count(p) or 0) / size, *loss_and_gradient(p)) for p in pieces]
    except Exception as exc:  # e.g. batch statistics refuse a one-sample slice
        return f"a slice fails: {type(exc).__name__}: {exc}"
    loss = sum(w * value for w, value, _ in parts)
    grad = sum(w * g for w, _, g in parts)
    rtol = math.sqrt(torch.finfo(dtype).eps)
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


def check_rank_split(
    batches: list[Batch],
    world: int,
    to_device: Callable[[Batch], Batch],
    loss_and_gradient: LossAndGradient,
    dtype: torch.dtype,
) -> None:
    """Refuse a loss that ``world`` ranks cannot share slice by slice.

    Under ``W`` ranks every batch is cut into ``W`` slices, one per rank
    (:func:`hessian_powerlaw.distributed.shard`), which needs the loss of a batch to be the
    mean of its samples' losses; checked on every batch, so every rank reaches the same
    verdict. Batches without a sized tensor are dealt round robin instead, and pass.

    Args:
        batches: all ranks' batches, the same on every rank.
        world: the number of ranks.
        to_device: a batch moved to the operator's device and dtype.
        loss_and_gradient: a batch's loss and gradient (the model in eval mode).
        dtype: the products' precision.

    Raises:
        UserInputError: a batch whose loss is not the mean of its slices'.
    """
    sizes = [batching.sample_count(b) for b in batches]
    if any(size is None for size in sizes):
        return  # whole batches are dealt round robin instead (distributed.shard)
    for index, (batch, size) in enumerate(zip(batches, sizes)):
        if size < 2:
            continue
        batch = to_device(batch)
        why = split_mismatch(batch, batching.split(batch, size, world), loss_and_gradient, dtype)
        if why is not None:
            raise UserInputError(
                f"{world} ranks share every Hessian batch, slice by slice, which "
                "needs the loss of a batch to be the mean of its samples' losses "
                f"(batch {index}: {why}); make the loss a mean over samples or run "
                "in one process"
            )


class MicroBatchPlanner:
    """Cuts the batches of one operator into the slices each product pass takes.

    Args:
        micro_batch_size: ``"auto"`` (by the memory budget), an int (a cap on samples per
            pass) or ``None`` (never split); see
            :class:`~hessian_powerlaw.operators.HessianOperator`.
        device: where the products run (the budget depends on it).
        dtype: the products' precision (the split check's tolerance depends on it).
        saved_bytes: ``saved_bytes(batch)``, the bytes autograd saves in the loss's forward.
        loss_and_gradient: ``loss_and_gradient(batch)`` at the operator's parameters.

    Attributes:
        splits_batches: ``None`` until a batch first needed splitting, then whether the loss
            and the model allowed it.
        activation_bytes: bytes saved per sample, by batch shape (all dimensions but the
            first), measured once each.
    """

    def __init__(
        self,
        micro_batch_size: int | str | None,
        device: torch.device,
        dtype: torch.dtype,
        saved_bytes: Callable[[Batch], int],
        loss_and_gradient: LossAndGradient,
    ) -> None:
        check_micro_batch_size(micro_batch_size)
        self.micro_batch_size = micro_batch_size
        self.device = device
        self.dtype = dtype
        self._saved_bytes = saved_bytes
        self._loss_and_gradient = loss_and_gradient
        self.splits_batches: bool | None = None
        self.activation_bytes: dict[tuple[Any, ...], float] = {}
        self._budget: float | None = None
        self._checked: set[int] = set()  # batches whose loss was checked for splitting

    def pieces(self, index: int, batch: Batch, size: int, columns: int) -> list[Batch]:
        """Batch number ``index`` as the slices one product pass of ``columns`` takes.

        The first time a batch is split its loss is checked (:func:`split_mismatch`); one
        batch that fails keeps every batch whole from then on.

        Args:
            index: the batch's position in a pass.
            batch: the batch, on the operator's device.
            size: its number of samples.
            columns: columns of the product (tangent copies held at once).

        Returns:
            The slices, or ``[batch]``.

        Raises:
            UserInputError: an int ``micro_batch_size`` and a loss that is not a mean.
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
        if index not in self._checked:
            self.splits_batches = self._loss_splits(batch, pieces)
            self._checked.add(index)
            if not self.splits_batches:
                return [batch]
        return pieces

    def _auto_micro_batch(self, batch: Batch, size: int, columns: int) -> int:
        if self._budget is None:  # fixed once: products of as many columns cut the same slices
            self._budget = product_budget(self.device)
        try:
            per_sample = self._activation_bytes_per_sample(batch, size)
        except Exception:  # the model refuses small slices (e.g. batch statistics): keep whole
            self.splits_batches = False
            return size
        return max(1, int(self._budget // max(per_sample * columns, 1.0)))

    def _activation_bytes_per_sample(self, batch: Batch, size: int) -> float:
        """Bytes autograd saves per sample in the loss's forward, from two small slices.

        The difference of the totals on 2 and ``_FEW_SAMPLES`` samples leaves out whatever
        does not grow with the samples (parameters, buffers). Cached per batch shape.
        """
        key = _trailing_shapes(batch)
        if key not in self.activation_bytes:
            few = self._saved_bytes(batching.take(batch, size, 0, 2))
            more = self._saved_bytes(batching.take(batch, size, 0, _FEW_SAMPLES))
            grown = (more - few) / (_FEW_SAMPLES - 2)
            self.activation_bytes[key] = float(grown if grown > 0 else more / _FEW_SAMPLES)
        return self.activation_bytes[key]

    def _loss_splits(self, batch: Batch, pieces: list[Batch]) -> bool:
        """Whether micro-batches may cut ``batch`` into ``pieces``."""
        why = split_mismatch(batch, pieces, self._loss_and_gradient, self.dtype)
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
