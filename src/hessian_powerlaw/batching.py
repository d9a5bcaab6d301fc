"""Samples in a batch: how many there are, and how to cut a batch into slices of them.

A batch is whatever the loss takes: a tensor, a tuple or list of tensors (``(x, y)``), a
namedtuple or a mapping (a tokenizer's output). Its *samples* run along dimension 0 of its
first tensor (depth first, in iteration order). Both the data-parallel split (every rank takes
a slice of every batch) and the operator's micro-batches (a large batch applied slice by
slice) cut batches here, so they agree on what a sample is.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

__all__ = [
    "detached_copy",
    "is_single_batch",
    "sample_count",
    "slice_bounds",
    "split",
    "split_batches",
    "take",
    "to_device",
]


def _is_array(obj: Any) -> bool:
    return isinstance(obj, torch.Tensor) or hasattr(obj, "__array__")


def _first_array(batch: Any) -> Any | None:
    """The batch's first tensor or array, depth first."""
    if _is_array(batch):
        return batch
    values = batch.values() if isinstance(batch, Mapping) else batch
    if isinstance(values, Iterable) and not isinstance(values, (str, bytes)):
        for value in values:
            found = _first_array(value)
            if found is not None:
                return found
    return None


def is_single_batch(obj: Any) -> bool:
    """Whether ``obj`` is one batch rather than a collection of batches.

    A tensor, a mapping, or a non-empty tuple/list of tensors and arrays (``(x, y)``) is one
    batch; a list of such batches, a DataLoader or any other iterable is a collection.

    Args:
        obj: what a user passed as batches.

    Returns:
        True for one batch.
    """
    if isinstance(obj, (torch.Tensor, Mapping)):
        return True
    return (
        isinstance(obj, (tuple, list))
        and len(obj) > 0
        and all(isinstance(x, (torch.Tensor, np.ndarray)) for x in obj)
    )


def sample_count(batch: Any) -> int | None:
    """Length of the batch's first tensor (its samples), or None when it has none."""
    first = _first_array(batch)
    shape = getattr(first, "shape", ())
    return int(shape[0]) if len(shape) > 0 else None


def slice_bounds(size: int, pieces: int) -> list[tuple[int, int]]:
    """``[start, stop)`` of ``pieces`` contiguous slices of ``size`` samples.

    The sizes differ by at most one, larger first, as ``torch.tensor_split`` cuts; slices
    are empty when ``pieces > size``.
    """
    base, extra = divmod(size, pieces)
    bounds, start = [], 0
    for i in range(pieces):
        stop = start + base + (1 if i < extra else 0)
        bounds.append((start, stop))
        start = stop
    return bounds


def take(batch: Any, size: int, start: int, stop: int | None, step: int = 1) -> Any:
    """Samples ``start:stop:step`` of ``batch``, whose first tensor has ``size`` samples.

    Every tensor or array whose first dimension is ``size`` is sliced; anything else
    (broadcast tensors, scalars, strings) is kept whole. Containers keep their type.

    Args:
        batch: the batch.
        size: its number of samples (:func:`sample_count`).
        start: the first sample taken.
        stop: the end of the slice (``None``: the end of the batch).
        step: take every ``step``-th sample.

    Returns:
        The slice, a batch of the same structure.
    """
    if _is_array(batch):
        shape = getattr(batch, "shape", ())
        if len(shape) == 0 or int(shape[0]) != size:
            return batch
        return batch[start:stop:step] if step != 1 else batch[start:stop]
    if isinstance(batch, Mapping):
        taken = {k: take(v, size, start, stop, step) for k, v in batch.items()}
        return _same_mapping(batch, taken)
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):  # namedtuple
        return type(batch)(*(take(v, size, start, stop, step) for v in batch))
    if isinstance(batch, (tuple, list)):
        return type(batch)(take(v, size, start, stop, step) for v in batch)
    return batch


def split(batch: Any, size: int, pieces: int) -> list[Any]:
    """``batch`` cut into ``pieces`` non-empty contiguous slices (fewer when ``size`` is small)."""
    return [take(batch, size, a, b) for a, b in slice_bounds(size, pieces) if b > a]


def split_batches(batches: Sequence[Any]) -> tuple[list[Any], list[Any]]:
    """Two disjoint halves of a list of batches.

    Two or more batches: the even- and odd-numbered batches. One batch: its even- and
    odd-numbered samples (interleaving keeps both halves alike when the data are sorted,
    e.g. by class or writer).

    Args:
        batches: the batches.

    Returns:
        ``(half_a, half_b)``, two lists of batches.

    Raises:
        UserInputError: no batches, or one batch of one sample.
    """
    from hessian_powerlaw.errors import UserInputError

    batches = list(batches)
    if len(batches) >= 2:
        return batches[0::2], batches[1::2]
    if len(batches) == 1:
        (batch,) = batches
        size = sample_count(batch)
        if size is None or size < 2:
            raise UserInputError("one batch of one sample cannot be split into halves")
        return [take(batch, size, 0, None, 2)], [take(batch, size, 1, None, 2)]
    raise UserInputError("no batches to split; pass data with at least two samples")


def to_device(batch: Any, device: torch.device, dtype: torch.dtype | None = None) -> Any:
    """The batch with its tensors (and numpy arrays) on ``device``, floating ones in ``dtype``.

    Integer tensors (labels, token ids) keep their dtype. Containers keep their type: tuples,
    lists, namedtuples and mappings (a tokenizer's ``BatchEncoding`` stays one when its type
    can be rebuilt from a dict).
    """
    if isinstance(batch, np.ndarray):
        batch = torch.from_numpy(batch)
    if isinstance(batch, torch.Tensor):
        if dtype is not None and batch.is_floating_point():
            return batch.to(device=device, dtype=dtype)
        return batch.to(device=device)
    if isinstance(batch, Mapping):
        return _same_mapping(batch, {k: to_device(v, device, dtype) for k, v in batch.items()})
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):  # namedtuple
        return type(batch)(*(to_device(v, device, dtype) for v in batch))
    if isinstance(batch, (tuple, list)):
        return type(batch)(to_device(v, device, dtype) for v in batch)
    return batch


def detached_copy(batch: Any) -> Any:
    """A copy of the batch that later changes to the original do not reach.

    The batch with every tensor detached and copied (numpy arrays become tensors), so that
    later in-place changes to the original (a reused buffer, pinned memory) do not reach it.
    Containers keep their type, as in :func:`to_device`.
    """
    if isinstance(batch, np.ndarray):
        return torch.from_numpy(batch.copy())
    if isinstance(batch, torch.Tensor):
        return batch.detach().clone()
    if isinstance(batch, Mapping):
        return _same_mapping(batch, {k: detached_copy(v) for k, v in batch.items()})
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):  # namedtuple
        return type(batch)(*(detached_copy(v) for v in batch))
    if isinstance(batch, (tuple, list)):
        return type(batch)(detached_copy(v) for v in batch)
    return batch


def _same_mapping(original: Mapping, values: dict) -> Any:
    """``values`` as the original's mapping type when it can be built from a dict."""
    try:
        return type(original)(values)
    except TypeError:
        return values
