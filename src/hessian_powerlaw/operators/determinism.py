"""Determinism checks of the Hessian operator: the same data and the same product every pass.

The solvers assume that every product applies the same matrix. A user's batches or model can
break that silently: an iterable that is empty after its first pass (every product is zero,
every eigenvalue "converges" to 0), a loader that draws other samples each pass, dropout or
noise in the forward pass (residuals never fall; the tolerance gets the blame). What is cheap
to check is checked here, for :class:`hessian_powerlaw.operators.HessianOperator`:

- :class:`DataSummary`: the samples and a checksum of the data of one pass. For a user's
  re-iterable (a DataLoader, anything but a list) each pass is compared with the first, at the
  cost of one weighted sum per tensor. The checksum adds up per-sample sums, so it does not
  depend on the order of the samples (shuffling is allowed: it only reorders a sum of
  per-sample Hessians), but it does depend on the order of values *within* a sample (a random
  flip or crop changes it).
- :func:`rng_snapshot`: the state of the global random generators (torch on CPU and on the
  operator's CUDA device, numpy, Python). A forward pass that changes it draws random numbers.
- :func:`data_change_cause` and :func:`nondeterminism_causes`: the likely cause in words,
  from the loader's sampler and dataset and from the model's modules.
- :func:`without_tf32`: full float32 on a GPU while products run (TF32 breaks certification).
- :func:`repeat_rtol`, :func:`relative_difference` and :func:`probe_loss`: how far two
  products of one vector may differ, how far they do, and what one extra look at the loss
  says about why.
- :func:`data_change_error`, :func:`not_reproducible_error` and :func:`not_finite_error`:
  the one error a user sees for each failure, naming the cause.
"""

from __future__ import annotations

import contextlib
import math
import random
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from hessian_powerlaw.errors import UserInputError
from hessian_powerlaw.operators.params import abbreviate
from hessian_powerlaw.protocols import Batch

__all__ = [
    "DataSummary",
    "data_change_cause",
    "data_change_error",
    "leaves",
    "nondeterminism_causes",
    "not_finite_error",
    "not_reproducible_error",
    "probe_loss",
    "relative_difference",
    "repeat_rtol",
    "rng_snapshot",
    "shuffles",
    "uses_tf32",
    "without_tf32",
]

# Two passes over the same samples, in any order, give checksums that differ by the rounding
# of float64 sums: about (log2(values) + batches) * 1.1e-16 of the sum of magnitudes; 1e-9
# leaves a margin of 1e4 or more for up to a million batches, while replacing one sample in a
# million changes the checksum by ~1e-6 of it.
CHECKSUM_RTOL = 1e-9


def leaves(obj: Any) -> Iterable[Any]:
    """Every tensor or numeric array of a batch, depth first, in iteration order."""
    if isinstance(obj, Tensor):
        yield obj
    elif isinstance(obj, np.ndarray):
        if obj.dtype.kind in "biuf":
            yield obj
    elif isinstance(obj, Mapping):
        for value in obj.values():
            yield from leaves(value)
    elif isinstance(obj, (tuple, list)):
        for value in obj:
            yield from leaves(value)


_WEIGHTS: dict[tuple[int, str], Tensor] = {}


def _weights(length: int, device: torch.device) -> Tensor:
    """Fixed, uneven, positive weights ``1 + cos(j)`` of a sample's values.

    ``1 + cos(j)``, j = 0 .. length-1: fixed, uneven, positive weights of a sample's values,
    so that moving values within a sample changes the weighted sum.
    """
    key = (length, str(device))
    if key not in _WEIGHTS:
        j = torch.arange(length, dtype=torch.float64, device=device)
        _WEIGHTS[key] = 1.0 + torch.cos(j)
    return _WEIGHTS[key]


class DataSummary:
    """Samples, batches and per-tensor checksums of one pass over the batches."""

    def __init__(self) -> None:
        self.samples = 0
        self.batches = 0
        self._sums: list[Tensor] = []  # per tensor position: [weighted sum, weighted |sum|]

    def add(self, batch: Any, size: int) -> None:
        """Count ``batch`` (``size`` samples) and add its tensors to the checksums."""
        self.samples += size
        self.batches += 1
        for index, leaf in enumerate(leaves(batch)):
            t = torch.as_tensor(leaf).detach()
            rows = t.reshape(size, -1) if t.ndim > 0 and t.shape[0] == size else t.reshape(1, -1)
            x = rows.to(torch.float64)
            w = _weights(x.shape[1], x.device)
            sums = torch.stack([(x @ w).sum(), (x.abs() @ w).sum()]).cpu()
            if index < len(self._sums):
                self._sums[index] += sums
            else:
                self._sums.append(sums)

    def difference(self, first: DataSummary) -> str | None:
        """What differs from the first pass, or None.

        None when this pass holds the same data as ``first`` (up to sample order), else
        what differs, in words.
        """
        if self.samples != first.samples:
            return f"{self.samples} samples in {self.batches} batches"
        if len(self._sums) != len(first._sums):
            return f"batches of {len(self._sums)} tensors instead of {len(first._sums)}"
        for now, then in zip(self._sums, first._sums):
            (s1, a1), (s0, a0) = now.tolist(), then.tolist()
            if not all(math.isfinite(v) for v in (s1, a1, s0, a0)):
                continue  # NaN or Inf data: the products' finiteness check names them
            if abs(s1 - s0) > CHECKSUM_RTOL * max(a0, a1, 1e-300):
                return "different data"
        return None


def rng_snapshot(device: torch.device) -> tuple[Any, ...]:
    """The states of the global random generators a forward pass may draw from."""
    cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    return (torch.random.get_rng_state(), cuda, np.random.get_state()[1].copy(), random.getstate())


def rng_changed(before: tuple[Any, ...], after: tuple[Any, ...]) -> bool:
    """Whether any generator of :func:`rng_snapshot` moved between the two snapshots."""
    torch_cpu = not torch.equal(before[0], after[0])
    cuda = before[1] is not None and not torch.equal(before[1], after[1])
    return torch_cpu or cuda or not np.array_equal(before[2], after[2]) or before[3] != after[3]


def _samplers(batches: Any) -> list[Any]:
    """The sampler and the batch sampler's sampler of a DataLoader (none for other objects)."""
    found = [getattr(batches, "sampler", None)]
    found.append(getattr(getattr(batches, "batch_sampler", None), "sampler", None))
    return [s for s in found if s is not None]


def shuffles(batches: Any) -> bool:
    """Whether ``batches`` is a DataLoader whose sampler draws samples at random."""
    random_samplers = (
        torch.utils.data.RandomSampler,
        torch.utils.data.SubsetRandomSampler,
        torch.utils.data.WeightedRandomSampler,
    )
    return any(isinstance(s, random_samplers) for s in _samplers(batches))


def data_change_cause(batches: Any, empty: bool) -> str:
    """Why a re-iterable gave other data (``empty``: no data at all) on a later pass."""
    kind = type(batches).__name__
    if empty:
        return (
            f"the batches ({kind}) can be iterated only once (an iterator behind __iter__, a "
            "streaming dataset)"
        )
    dataset = getattr(batches, "dataset", None)
    for sampler in _samplers(batches):
        if isinstance(sampler, torch.utils.data.RandomSampler):
            size = len(dataset) if dataset is not None and hasattr(dataset, "__len__") else None
            if sampler.replacement or (size is not None and sampler.num_samples < size):
                return (
                    "the DataLoader's RandomSampler draws a random subset each pass "
                    f"(replacement={sampler.replacement}, num_samples={sampler.num_samples})"
                )
            if getattr(batches, "drop_last", False):
                return "the DataLoader shuffles with drop_last=True, so each pass drops others"
        if isinstance(sampler, torch.utils.data.WeightedRandomSampler):
            return "the DataLoader's WeightedRandomSampler draws a random subset each pass"
    if isinstance(dataset, torch.utils.data.IterableDataset):
        return f"the IterableDataset ({type(dataset).__name__}) yields other data each pass"
    if dataset is not None:
        return (
            "the DataLoader's dataset gives other values each pass (random transforms or "
            "augmentation)"
        )
    return f"the batches ({kind}) yield other data each pass"


def _names(model: nn.Module, kind: type | tuple[type, ...]) -> list[str]:
    return [name or type(m).__name__ for name, m in model.named_modules() if isinstance(m, kind)]


def nondeterminism_causes(
    model: nn.Module,
    batches: Any,
    train_mode_seen: Sequence[str],
    draws_random: bool,
    loss_varies: bool,
) -> list[str]:
    """The likely causes of products that differ between two passes, most specific first.

    ``train_mode_seen``: modules a callable loss left in train mode; ``draws_random``: a loss
    evaluation moved a global random generator; ``loss_varies``: two evaluations of the loss
    on the same batch differ.
    """
    causes: list[str] = []
    seen = set(train_mode_seen)
    dropout = _names(model, nn.modules.dropout._DropoutNd)
    norms = _names(model, nn.modules.batchnorm._NormBase)
    batch_stats = [
        name or type(m).__name__
        for name, m in model.named_modules()
        if isinstance(m, nn.modules.batchnorm._NormBase)
        and ((name or type(m).__name__) in seen or m.running_mean is None)
    ]
    if draws_random or loss_varies:
        what = (
            "the forward pass or loss draws random numbers"
            if draws_random
            else "the loss differs between two evaluations on the same batch"
        )
        active = [name for name in dropout if name in seen]
        if active:
            causes.append(
                f"{what}: dropout modules in train mode ({abbreviate(active, 6)}) because the "
                "loss calls model.train(); keep the model in eval mode inside the loss"
            )
        elif dropout:
            causes.append(
                f"{what}: dropout modules present ({abbreviate(dropout, 6)}) and active despite "
                "eval mode (e.g. F.dropout(training=True)); disable dropout (p=0) for the Hessian"
            )
        else:
            causes.append(
                f"{what} (noise such as torch.randn_like, random augmentation or sampling in "
                "forward); make the forward deterministic, e.g. draw the noise once"
            )
    in_train = [name for name in norms if name in seen]
    if in_train:
        causes.append(
            f"BatchNorm in train mode ({abbreviate(in_train, 6)}) normalises with batch "
            "statistics; keep it in eval mode (do not call model.train() inside the loss)"
        )
    if shuffles(batches):
        if batch_stats:
            causes.append(
                f"BatchNorm ({abbreviate(batch_stats, 6)}) normalises with batch statistics and "
                "the DataLoader shuffles (shuffle=True), so each pass groups the samples "
                "differently; use shuffle=False"
            )
        else:
            causes.append(
                "the DataLoader shuffles (shuffle=True) and the loss depends on which samples "
                "share a batch; use shuffle=False"
            )
    others = [name for name in train_mode_seen if name not in set(in_train) | set(dropout)]
    if others:
        causes.append(
            f"the loss switches modules to train mode ({abbreviate(others, 6)}); do not call "
            "model.train() inside it"
        )
    if not causes:
        causes.append(
            "randomness the global generators do not show (a torch.Generator of the model's "
            "own, nondeterministic kernels) or a loss that changes between calls; make the "
            "forward and loss deterministic"
        )
    return causes


# ---------------------------------------------------------------------------------------------
# products that differ


def uses_tf32(dtype: torch.dtype, device: torch.device) -> bool:
    """Whether float32 work on ``device`` may run in TF32 under torch's current flags.

    ``torch.backends.cudnn.allow_tf32`` (convolutions; on by default) or
    ``torch.backends.cuda.matmul.allow_tf32`` (matrix products; off by default).
    """
    tf32 = torch.backends.cudnn.allow_tf32 or torch.backends.cuda.matmul.allow_tf32
    return dtype == torch.float32 and device.type == "cuda" and tf32


@contextlib.contextmanager
def without_tf32(dtype: torch.dtype, device: torch.device) -> Iterator[None]:
    """Run float32 CUDA work in full float32: TF32 off for convolutions and matrix products.

    TF32 keeps 10 mantissa bits. Hessian products in TF32 differ from float32 ones by about
    1e-3 relative, and not symmetrically, so an eigensolver cannot reach a residual below
    that: on an H200, LeNet's K = 1000 with the "norm" criterion at 1e-5 had 963 of 1000
    pairs converged after 20,320 products with TF32 (docs/benchmarks.md). Both flags are
    restored on exit; elsewhere (CPU, float64) this does nothing.

    Args:
        dtype: the work's dtype.
        device: where it runs.
    """
    if not (dtype == torch.float32 and device.type == "cuda"):
        yield
        return
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def repeat_rtol(dtype: torch.dtype, device: torch.device, tf32: bool | None = None) -> float:
    """The relative difference two products of the same vector may have: ``sqrt(eps)``.

    ``eps`` is the dtype's (a tolerance of 1.5e-8 in float64, 3.5e-4 in float32),
    except for float32 in TF32: TF32 keeps 10 mantissa bits, and a product of one column
    may take other kernels than one of ``b`` columns, so there ``eps = 2^-10`` and the
    tolerance is 0.031.

    Args:
        dtype: the products' dtype.
        device: where they run.
        tf32: whether the products run in TF32; ``None``: as torch's flags allow
            (:func:`uses_tf32`).

    Returns:
        The tolerance.
    """
    eps = torch.finfo(dtype).eps
    tf32 = uses_tf32(dtype, device) if tf32 is None else tf32
    if dtype == torch.float32 and device.type == "cuda" and tf32:
        eps = 2.0**-10
    return math.sqrt(eps)


def relative_difference(a: Tensor, b: Tensor) -> float:
    """``||a - b|| / max(||a||, ||b||)``, 0 for two zero vectors, NaN for non-finite ones.

    Args:
        a: one product.
        b: the other.

    Returns:
        The relative difference.
    """
    scale = max(float(torch.linalg.vector_norm(a)), float(torch.linalg.vector_norm(b)))
    diff = float(torch.linalg.vector_norm(a - b))
    return diff / scale if scale > 0 else diff


def probe_loss(
    loss_fn: Callable[[], Tensor], device: torch.device, dtype: torch.dtype
) -> tuple[bool, bool]:
    """Evaluate the loss twice: does it draw random numbers, does its value change?

    Args:
        loss_fn: the loss on one batch (no gradient needed).
        device: where it runs (its CUDA generator is watched too).
        dtype: its precision (changes beyond ``sqrt(eps)`` count).

    Returns:
        ``(draws_random, loss_varies)``; both False when the loss raises (a diagnosis must
        not hide the error it explains).
    """
    loss_varies = False
    before = rng_snapshot(device)
    try:
        first = loss_fn()
        after = rng_snapshot(device)
        second = loss_fn()
    except Exception:
        after = before
    else:
        # beyond rounding, as for the products (a GPU may sum in any order)
        gap = float((first - second).abs())
        loss_varies = not gap <= math.sqrt(torch.finfo(dtype).eps) * float(first.abs())
    return rng_changed(before, after), loss_varies


def not_reproducible_error(diff: float, rtol: float, causes: Sequence[str]) -> UserInputError:
    """The error for two products of one vector that differ beyond rounding.

    Args:
        diff: their relative difference.
        rtol: what rounding allows.
        causes: the likely causes (:func:`nondeterminism_causes`).

    Returns:
        The error, naming the causes.
    """
    return UserInputError(
        f"Hessian-vector products are not reproducible: the same product computed twice "
        f"differs by {diff:.3g} relative (rounding stays below {rtol:.2g}), so every "
        f"eigenvalue would be wrong; likely cause: {'; '.join(causes)}"
    )


# ---------------------------------------------------------------------------------------------
# data that differ between passes


def data_change_error(
    summary: DataSummary, first: DataSummary, passes: int, batches: Any
) -> UserInputError | None:
    """The error for a pass over the batches that did not give the first pass's data.

    Args:
        summary: this pass.
        first: the first pass.
        passes: the number of this pass.
        batches: the user's batches (a DataLoader says more about the cause).

    Returns:
        None when the two passes hold the same data, else the error.
    """
    differs = summary.difference(first)
    if differs is None:
        return None
    empty = summary.samples == 0
    where = f"on pass {passes} over them"
    first_pass = f"the first pass gave {first.samples} samples in {first.batches} batches"
    if empty or summary.samples != first.samples:
        seen = f"{summary.samples or 'no'} samples {where}, but {first_pass}"
    else:
        seen = f"different data {where} than on the first (the same {first.samples} samples)"
    cause = data_change_cause(batches, empty)
    return UserInputError(
        f"the Hessian batches gave {seen}: {cause}. "
        "The operator needs the same data on every pass: pass a list of batches (e.g. "
        "list(loader)), or a DataLoader with shuffle=False and no random transforms"
    )


# ---------------------------------------------------------------------------------------------
# products that are not finite


def _finite(t: Tensor) -> bool:
    return bool(torch.isfinite(t).all())


def float_tensors(batch: Batch) -> list[Tensor]:
    """The floating-point tensors of a batch (its data, not its labels or token ids).

    Args:
        batch: the batch.

    Returns:
        Its floating-point tensors, depth first.
    """
    return [t for t in leaves(batch) if isinstance(t, Tensor) and t.is_floating_point()]


def not_finite_error(
    tensors: Mapping[str, Tensor],
    batches: Iterable[Batch],
    loss_and_gradient: Callable[[Batch], tuple[float, Tensor]],
    dtype: torch.dtype,
) -> UserInputError:
    """What made a product NaN or Inf, checked in order.

    The parameters and buffers, each batch's data, its loss, its gradient; else the second
    derivatives themselves.

    Args:
        tensors: the model's parameters and buffers by name, as the operator holds them.
        batches: the batches, on the operator's device (the model in eval mode).
        loss_and_gradient: a batch's loss and gradient.
        dtype: the products' dtype.

    Returns:
        The error, naming what is not finite.
    """
    bad = [name for name, t in tensors.items() if t.is_floating_point() and not _finite(t)]
    if bad:
        names = abbreviate([name.removeprefix("model.") for name in bad])
        return UserInputError(
            f"the Hessian-vector product is not finite because the model's parameters or "
            f"buffers are not finite ({names}); load weights from before training diverged"
        )
    for index, batch in enumerate(batches):
        if not all(_finite(t) for t in float_tensors(batch)):
            return UserInputError(
                f"the Hessian-vector product is not finite because batch {index} holds "
                "NaN or Inf values; clean the data"
            )
        loss, grad = loss_and_gradient(batch)
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
    hint = "; try dtype=torch.float64" if dtype == torch.float32 else ""
    return UserInputError(
        "the Hessian-vector product is not finite, although the loss and gradient of every "
        "batch are: the second derivatives overflow or are infinite at these weights (e.g. "
        f"|w|^1.5 at 0){hint}"
    )
