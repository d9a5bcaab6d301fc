"""The Hessian of a model's loss as a linear operator: :class:`HessianOperator`.

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
Large batches are applied in micro-batches (:mod:`.microbatch`); what is cheap to check about
the data and the products is checked (:mod:`.determinism`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch
from torch import Tensor, nn

from hessian_powerlaw import batching, distributed
from hessian_powerlaw.errors import UserInputError
from hessian_powerlaw.operators import determinism, microbatch
from hessian_powerlaw.operators.base import OperatorBase, check_float_dtype
from hessian_powerlaw.operators.params import select_params
from hessian_powerlaw.protocols import Batch

__all__ = ["HessianOperator"]

_BACKENDS = ("auto", "vmap", "autograd")


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
            float32, 0.031 in float32 with CUDA's TF32 when ``allow_tf32``; rounding
            differs by ~1e-14 and ~1e-6 without TF32). It costs one column product,
            once, counted in neither ``num_matvecs`` nor ``num_data_passes``. Pass ``False``
            only for an operator that is random on purpose.
        allow_tf32: let float32 products on CUDA use TF32 where torch's flags allow it
            (``torch.backends.cudnn.allow_tf32`` is on by default). Off by default: products
            then run in full float32 whatever the flags (restored afterwards), because TF32
            products differ from float32 ones by ~1e-3 relative and no eigenpair can be
            certified below that (:func:`~.determinism.without_tf32`).

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
        allow_tf32: bool = False,
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
        check_float_dtype(dtype)
        microbatch.check_micro_batch_size(micro_batch_size)
        self.model = model
        self.loss = loss
        self.dtype = dtype
        self.device = _resolve_device(model, device)
        self.backend = backend
        # how many samples of a batch one product pass takes (operators.microbatch)
        self.planner = microbatch.MicroBatchPlanner(
            micro_batch_size, self.device, dtype, self._saved_bytes, self._batch_loss_and_gradient
        )
        self.last_pass_samples: list[int] = []  # samples of each pass of the last product
        self.num_data_passes = 0
        self._active_backend: str | None = None if backend == "auto" else backend
        self._train_mode_seen: list[str] = []
        self.check_reproducible = bool(check_reproducible)
        self.allow_tf32 = bool(allow_tf32)
        self._repeat_checked = False  # whether the first product has been repeated

        self.param_names = select_params(model, params)
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
        self._first_pass: determinism.DataSummary | None = None
        self._passes = 1
        if not isinstance(self.batches, list):
            self._first_pass = determinism.DataSummary()
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

    @property
    def micro_batch_size(self) -> int | str | None:
        """``"auto"``, a cap on the samples of one pass, or ``None`` (see the class)."""
        return self.planner.micro_batch_size

    @property
    def splits_batches(self) -> bool | None:
        """``None`` until a batch first needed splitting, then whether that was allowed."""
        return self.planner.splits_batches

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
        (:class:`~hessian_powerlaw.operators.determinism.DataSummary`); the check runs when
        the pass ends, before its products are used.
        """
        summary = None if self._first_pass is None else determinism.DataSummary()
        for batch in self.batches:
            size = _batch_size(batch)
            if summary is not None:
                summary.add(batch, size)
            yield size / self.num_samples, batching.to_device(batch, self.device, self.dtype)
        if summary is not None and self._first_pass is not None:
            self._passes += 1
            error = determinism.data_change_error(
                summary, self._first_pass, self._passes, self.batches
            )
            if error is not None:
                raise error

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
        with self._precision():
            out = self._product(V)
            # the reductions are over the all-reduced product: every rank raises alike
            if not bool(torch.isfinite(out).all()):
                raise self._not_finite_error()
            if self.check_reproducible and not self._repeat_checked:
                self._repeat_checked = True
                self._check_repeat(V[:, :1], out[:, :1])
        return out

    def _precision(self) -> contextlib.AbstractContextManager[None]:
        """Full float32 on CUDA for the products, unless ``allow_tf32``."""
        if self.allow_tf32:
            return contextlib.nullcontext()
        return determinism.without_tf32(self.dtype, self.device)

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
        diff = determinism.relative_difference(first, second)
        if not diff <= rtol:
            raise self._not_reproducible_error(diff, rtol)

    def repeat_rtol(self) -> float:
        """The relative difference two products of the same vector may have: ``sqrt(eps)``.

        ``eps`` is the dtype's (1.5e-8 in float64, 3.5e-4 in float32), except for float32 on
        CUDA with TF32 allowed (``torch.backends.cudnn.allow_tf32``, on by default, or
        ``torch.backends.cuda.matmul.allow_tf32``) and ``allow_tf32``: TF32 keeps 10
        mantissa bits, and a product of one column may take other kernels than one of ``b``
        columns, so there ``eps = 2^-10`` and the tolerance is 0.031.
        """
        tf32 = self.allow_tf32 and determinism.uses_tf32(self.dtype, self.device)
        return determinism.repeat_rtol(self.dtype, self.device, tf32)

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
        """``batch`` number ``index`` as the slices one product pass takes (the planner's)."""
        return self.planner.pieces(index, batch, size, columns)

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

    def _batch_loss_and_gradient(self, batch: Batch) -> tuple[float, Tensor]:
        theta = self._theta.detach().requires_grad_(True)
        with torch.enable_grad():
            loss = self._loss_at(theta, batch)
            (grad,) = torch.autograd.grad(loss, theta, allow_unused=True)
        return float(loss.detach()), torch.zeros_like(theta) if grad is None else grad.detach()

    def _check_rank_split(self, batches: list[Batch]) -> None:
        """Refuse a loss that ranks cannot share (:func:`~.microbatch.check_rank_split`).

        Called by :func:`distributed.shard_checked` once the ranks agree on the data.
        """
        with self._eval_mode():
            microbatch.check_rank_split(
                batches,
                distributed.world_size(),
                lambda batch: batching.to_device(batch, self.device, self.dtype),
                self._batch_loss_and_gradient,
                self.dtype,
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
        diff = determinism.relative_difference(first, second)
        if not diff <= rtol:
            raise self._not_reproducible_error(diff, rtol)
        return diff

    def _not_reproducible_error(self, diff: float, rtol: float) -> UserInputError:
        return determinism.not_reproducible_error(diff, rtol, self._nondeterminism_causes())

    def _nondeterminism_causes(self) -> list[str]:
        """The likely causes of irreproducible products.

        The likely causes of irreproducible products, from one extra look at the loss:
        evaluated twice on the first batch, does it draw random numbers, does it change?
        """
        draws_random = loss_varies = False
        batch = next(iter(self.batches), None)
        if batch is not None:
            batch = batching.to_device(batch, self.device, self.dtype)
            with self._eval_mode(), torch.no_grad():
                draws_random, loss_varies = determinism.probe_loss(
                    lambda: self._loss_at(self._theta, batch), self.device, self.dtype
                )
        return determinism.nondeterminism_causes(
            self.model, self.batches, self._train_mode_seen, draws_random, loss_varies
        )

    def _not_finite_error(self) -> UserInputError:
        """What made a product NaN or Inf (:func:`~.determinism.not_finite_error`)."""
        tensors = {**self._unflatten(self._theta), **self._fixed}
        with self._eval_mode():
            batches = (batch for _, batch in self._iter_batches())
            return determinism.not_finite_error(
                tensors, batches, self._batch_loss_and_gradient, self.dtype
            )

    def __repr__(self) -> str:
        return (
            f"HessianOperator(n={self.n}, params={len(self.param_names)} tensors, "
            f"num_samples={self.num_samples}, dtype={self.dtype}, device={self.device})"
        )


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
