"""The contracts between the layers, as ``typing.Protocol`` s: an operator and a data bundle.

Anything with these members plugs in; nothing has to inherit from a class of ours. The
solvers take an :class:`Operator` (:func:`~hessian_powerlaw.operators.as_operator` checks the
members at run time and wraps matrices); ``analyze_spec``, ``track_run``, ``train`` and the
experiments take a :class:`DataBundle` (``zoo.load_data`` makes the image and text ones).
docs/architecture.md describes both.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Protocol, Union, runtime_checkable

if TYPE_CHECKING:
    import torch
    from numpy.typing import ArrayLike
    from scipy.sparse.linalg import LinearOperator
    from torch import nn

__all__ = ["Batch", "DataBundle", "Loss", "Operator", "OperatorLike"]

#: One batch: a tensor, a tuple/list ``(x, y, ...)`` or a mapping (a tokenizer's output). Its
#: samples run along dimension 0 of its first tensor (:mod:`hessian_powerlaw.batching`).
Batch = Any

#: A loss: an ``nn.Module`` criterion called as ``loss(model(x), y)`` on ``(x, y)`` batches, or
#: a callable ``(model, batch) -> scalar tensor``; a mean over the batch's samples.
Loss = Union["nn.Module", Callable[..., "torch.Tensor"]]


@runtime_checkable
class Operator(Protocol):
    """A symmetric linear operator of size ``n``: what the solvers take.

    Attributes:
        n: its size.
        dtype: ``torch.float64`` or ``torch.float32``; products come back in it.
        device: where its products live.
    """

    n: int
    dtype: torch.dtype
    device: torch.device

    def matmat(self, V: torch.Tensor) -> torch.Tensor:
        """``H V`` for a block ``V`` of shape ``(n, b)``; the result has shape ``(n, b)``."""
        ...


@runtime_checkable
class DataBundle(Protocol):
    """A data set with what the analyses and the training loops need (``zoo.load_data``).

    Attributes:
        spec: the spec string it was built from.
        kind: ``"image"`` or ``"text"``.
        input_shape: the shape of one input, what a model is built for.
        num_classes: classes, or the vocabulary size of text.
        num_train: training samples (sequences for text).
        num_test: test samples.
        loss: the loss a model is trained and analysed with (:data:`Loss`).
    """

    spec: str
    kind: str
    input_shape: tuple[int, ...]
    num_classes: int
    num_train: int
    num_test: int
    loss: Loss

    def hessian_batches(
        self, num_samples: int | None = None, batch_size: int | None = None, seed: int = 0
    ) -> list[Batch]:
        """A fixed, deterministic list of batches of ``num_samples`` training samples."""
        ...

    def train_batches(self, batch_size: int, seed: int = 0, epoch: int = 0) -> Iterable[Batch]:
        """One epoch of seeded, shuffled training batches."""
        ...

    def steps_per_epoch(self, batch_size: int) -> int:
        """Batches in one epoch of :meth:`train_batches`."""
        ...

    def evaluate(self, model: nn.Module, split: str = "test") -> Mapping[str, float]:
        """``{"loss": ..., "accuracy": ...}`` of ``model`` on ``"train"`` or ``"test"``."""
        ...


#: What the solvers take: an operator, or a symmetric matrix (numpy, torch, nested list) or a
#: scipy ``LinearOperator``, which :func:`~hessian_powerlaw.operators.as_operator` wraps.
OperatorLike = Union[Operator, "ArrayLike", "LinearOperator"]
