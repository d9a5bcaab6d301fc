"""Shared test helpers: an independent explicit Hessian and a small real model on digits.

``explicit_hessian`` does not use ``hessian_powerlaw`` at all: it builds the loss as a
function of one flat parameter vector and differentiates it twice with ``torch.func``
(reverse over reverse, ``jacrev(grad)``; ``method="hessian"`` gives ``torch.func.hessian``'s
forward over reverse, equal on models without layer_norm), so tests compare the library's
Hessian-vector products against an independent ground truth.

Import from tests as ``from tests.reference import digits_mlp, explicit_hessian``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

__all__ = ["digits_data", "digits_mlp", "explicit_hessian", "flat_params"]


@functools.lru_cache(maxsize=1)
def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    return digits.data.astype(np.float64) / 16.0, digits.target.astype(np.int64)


def digits_data(n_samples: int = 200, dtype: torch.dtype = torch.float64) -> tuple[Tensor, Tensor]:
    """The first ``n_samples`` scikit-learn digits: inputs (n, 64) scaled to [0, 1], labels."""
    X, y = _digits_arrays()
    if not 1 <= n_samples <= len(X):
        raise ValueError(f"n_samples must be in [1, {len(X)}], got {n_samples}")
    return torch.as_tensor(X[:n_samples], dtype=dtype), torch.as_tensor(y[:n_samples])


def digits_mlp(
    hidden: int | Sequence[int] = 16,
    seed: int = 0,
    n_samples: int = 200,
    num_batches: int = 1,
    dtype: torch.dtype = torch.float64,
    train_steps: int = 0,
) -> tuple[nn.Module, nn.Module, list[tuple[Tensor, Tensor]]]:
    """A small tanh MLP 64 -> hidden... -> 10 on digits, its criterion, and its batches.

    ``hidden=16`` gives 1,210 parameters, ``hidden=32`` gives 2,410 (the acceptance tests'
    limit is 3,000). The data are split into ``num_batches`` contiguous batches of nearly
    equal size (``torch.tensor_split``), so unequal batch sizes occur when ``num_batches``
    does not divide ``n_samples``. tanh keeps the loss smooth, so the Hessian is well defined.
    ``train_steps > 0`` first trains the model with that many full-batch Adam steps
    (lr 0.01, deterministic): a trained model has the decaying spectrum of real use, a
    random one a flat, strongly indefinite one.
    """
    sizes = [hidden] if isinstance(hidden, int) else list(hidden)
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    width = 64
    for h in sizes:
        layers += [nn.Linear(width, h), nn.Tanh()]
        width = h
    layers.append(nn.Linear(width, 10))
    model = nn.Sequential(*layers).to(dtype)
    X, y = digits_data(n_samples, dtype)
    criterion = nn.CrossEntropyLoss()
    if train_steps > 0:
        optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
        for _ in range(train_steps):
            optimizer.zero_grad()
            criterion(model(X), y).backward()
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    batches = list(zip(torch.tensor_split(X, num_batches), torch.tensor_split(y, num_batches)))
    return model, criterion, batches


def flat_params(model: nn.Module, param_names: Sequence[str] | None = None) -> Tensor:
    """The chosen parameters (default: all trainable) flattened in named_parameters order."""
    names = _names(model, param_names)
    named = dict(model.named_parameters())
    return torch.cat([named[n].detach().reshape(-1) for n in names])


def _names(model: nn.Module, param_names: Sequence[str] | None) -> list[str]:
    if param_names is None:
        return [n for n, p in model.named_parameters() if p.requires_grad]
    wanted = set(param_names)
    return [n for n, _ in model.named_parameters() if n in wanted]


class _Wrapped(nn.Module):
    def __init__(self, model: nn.Module, fn: Callable[[nn.Module, Any], Tensor]) -> None:
        super().__init__()
        self.model = model
        self.fn = fn

    def forward(self, batch: Any) -> Tensor:
        return self.fn(self.model, batch)


def explicit_hessian(
    model: nn.Module,
    loss: Callable[..., Tensor],
    batches: Any,
    param_names: Sequence[str] | None = None,
    chunk_size: int | None = None,
    method: str = "jacrev",
) -> Tensor:
    """The explicit Hessian ``sum_b (m_b / M) d^2 loss_b / dtheta^2`` as an (n, n) tensor.

    ``theta`` is the chosen parameters (default: all trainable) flattened in
    ``named_parameters`` order; ``loss`` is a criterion ``loss(model(x), y)`` (an nn.Module)
    or a callable ``(model, batch)``; ``batches`` is a list of batches (or one (x, y) tuple);
    ``m_b`` is the length of the batch's first tensor. Computed in the model's own dtype by
    torch.func reverse mode over ``torch.func.grad`` (``jacrev(grad)``; ``chunk_size`` bounds
    its memory), with the model in eval mode (restored afterwards).

    Not ``torch.func.hessian`` (forward over reverse): in torch 2.13 it gets the mixed second
    derivatives of ``layer_norm`` wrong (tests/test_gpt.py shows it), which would make every
    transformer check compare against a wrong reference.
    """
    if isinstance(batches, tuple):
        batches = [batches]
    names = _names(model, param_names)
    named = dict(model.named_parameters())
    shapes = [named[n].shape for n in names]
    numels = [named[n].numel() for n in names]
    theta0 = flat_params(model, names)

    if isinstance(loss, nn.Module):

        def fn(m: nn.Module, batch: Any) -> Tensor:
            return loss(m(batch[0]), batch[1])

    else:
        fn = loss
    wrapped = _Wrapped(model, fn)

    def batch_loss(theta: Tensor, batch: Any) -> Tensor:
        pieces = torch.split(theta, numels)
        params = {f"model.{n}": p.view(s) for n, p, s in zip(names, pieces, shapes)}
        return torch.func.functional_call(wrapped, params, (batch,), strict=False)

    def size(batch: Any) -> int:
        first = next(iter(batch.values())) if isinstance(batch, dict) else batch[0]
        return int(first.shape[0])

    total = sum(size(b) for b in batches)
    was_training = model.training
    model.eval()
    try:
        H = torch.zeros(theta0.numel(), theta0.numel(), dtype=theta0.dtype)
        for batch in batches:
            if method == "hessian":
                hess = torch.func.hessian(batch_loss)
            else:
                hess = torch.func.jacrev(torch.func.grad(batch_loss), chunk_size=chunk_size)
            H += (size(batch) / total) * hess(theta0, batch)
    finally:
        model.train(was_training)
    return ((H + H.T) / 2).detach()
