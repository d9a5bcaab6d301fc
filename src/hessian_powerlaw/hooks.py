"""Hessian measures inside any training loop: :class:`HessianHook`.

``track`` analyses the checkpoints of a finished run. The hook does the same while a run is
going, in the user's own loop (or inside a Hugging Face ``Trainer`` or a Lightning
``Trainer`` through :mod:`hessian_powerlaw.callbacks`)::

    hook = HessianHook(model, loss, hessian_batch, every=100, out="runs/hessian",
                       held_out=test_batch, k=50)
    for batch in loader:
        ...; optimizer.step()
        hook.step()            # every 100th call: measure, append to runs/hessian/track.json
    hook.close()

Every ``every`` steps it computes, on the fixed Hessian batch taken once when the hook is made,
what :func:`~hessian_powerlaw.analysis.analyze` computes for a checkpoint (the top-``k``
eigenvalues with their residuals, the power-law fit with ``s``, ``d_ks`` and ``d_c``,
``lambda_max``, the trace), the loss on that batch and on the held-out data when given, and
appends the record to ``OUT/track.json``: the same file ``track`` writes, so ``report OUT``
renders it and its correlations with test loss and the gap are ``track``'s.

The user's run is left exactly as it was: the model's modes (train/eval), the random number
generators (torch, CUDA, numpy, Python), the parameters' gradients and the grad mode are
restored after every measurement, so a seeded run ends with the same weights, bit for bit,
with or without the hook.
"""

from __future__ import annotations

import contextlib
import os
import random
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from hessian_powerlaw import batching, distributed
from hessian_powerlaw._results import to_jsonable
from hessian_powerlaw.analysis import PER_BLOCK, analyze, parameter_groups, versions
from hessian_powerlaw.errors import UserInputError, check_int
from hessian_powerlaw.options import AnalysisOptions, parse_dtype
from hessian_powerlaw.protocols import Loss
from hessian_powerlaw.tracking import TRACK_FILE, TrackResult, correlations_of

#: The hook's analysis defaults where they differ from :class:`AnalysisOptions`'s: inside a
#: training loop speed matters (float32 products, fewer eigenvalues and trace products), and
#: every eigenvalue still reports its residual.
HOOK_DEFAULTS: dict[str, Any] = {"k": 50, "dtype": "float32", "trace_matvecs": 60}

__all__ = [
    "HOOK_DEFAULTS",
    "HessianHook",
    "check_hook_options",
    "dataset_batch",
    "mean_loss",
    "preserved_rng_state",
    "preserved_training_state",
    "take_batches",
]


@contextlib.contextmanager
def preserved_rng_state() -> Iterator[None]:
    """Put the global random generators back after the body.

    Run the body, then put back the state of torch's CPU and (initialised) CUDA generators
    and of numpy's and Python's global generators.
    """
    cpu_rng = torch.get_rng_state()
    cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
    numpy_rng = np.random.get_state()
    python_rng = random.getstate()
    try:
        yield
    finally:
        torch.set_rng_state(cpu_rng)
        if cuda_rng is not None:
            torch.cuda.set_rng_state_all(cuda_rng)
        np.random.set_state(numpy_rng)
        random.setstate(python_rng)


@contextlib.contextmanager
def preserved_training_state(model: nn.Module) -> Iterator[None]:
    """Run the body, then put back what a training run depends on.

    Restored: the train/eval mode of every module of ``model``, each parameter's ``.grad``
    (the same tensor object), whether grad mode is on, and the random generators
    (:func:`preserved_rng_state`).
    """
    modes = [(m, m.training) for m in model.modules()]
    grads = [(p, p.grad) for p in model.parameters()]
    grad_enabled = torch.is_grad_enabled()
    try:
        with preserved_rng_state():
            yield
    finally:
        # parents first: train(mode) recurses, and each child then gets its own mode back
        for module, mode in modes:
            module.train(mode)
        for param, grad in grads:
            param.grad = grad
        torch.set_grad_enabled(grad_enabled)


def take_batches(batches: Any, what: str = "Hessian batch") -> list[Any]:
    """A fixed list of detached copies of ``batches``.

    A fixed list of detached copies of ``batches``: one batch, a list of batches, or any
    iterable (a DataLoader is read once, in full). Reading a shuffling loader draws from the
    global generator; that draw is undone (:func:`preserved_rng_state`).
    """
    if batches is None:
        raise UserInputError(f"the {what} is None; pass a batch (x, y), a dict or a list of them")
    if batching.is_single_batch(batches):
        taken = [batches]
    elif isinstance(batches, Iterable) and not isinstance(batches, (str, bytes)):
        with preserved_rng_state():
            taken = list(batches)
    else:
        raise UserInputError(
            f"the {what} must be a batch, a list of batches or a DataLoader; "
            f"got {type(batches).__name__}"
        )
    if not taken:
        raise UserInputError(f"the {what} is empty; pass at least one batch")
    return [batching.detached_copy(batch) for batch in taken]


def dataset_batch(
    dataset: Any, collate_fn: Callable[[list[Any]], Any] | None, samples: int, seed: int = 0
) -> Any:
    """A seeded batch of ``samples`` items of a map-style data set.

    One batch of ``samples`` items of a map-style ``dataset`` (``len`` and ``[i]``), chosen
    by a permutation from its own generator seeded with ``seed`` (not the global one, which
    the user's run owns), in index order, collated by ``collate_fn`` (default: torch's).

    A seeded random subset rather than the first items: data sets are often sorted (by class,
    by document), and the first items would then be one class or one text.
    """
    check_int(samples, "samples")
    try:
        size = len(dataset)
    except TypeError:
        raise UserInputError(
            f"cannot take a Hessian batch from a {type(dataset).__name__}: it has no length "
            "(an iterable data set); pass the batch yourself (batch=...)"
        ) from None
    if size == 0:
        raise UserInputError("the data set is empty; there is nothing to take a Hessian batch from")
    generator = torch.Generator().manual_seed(seed)
    chosen = sorted(torch.randperm(size, generator=generator)[: min(samples, size)].tolist())
    collate = collate_fn or torch.utils.data.default_collate
    return collate([dataset[i] for i in chosen])


def check_hook_options(options: Mapping[str, Any], taken: Iterable[str] = ()) -> None:
    """Check keyword options meant for :class:`HessianHook` before it is built.

    Callbacks build the hook only when training starts, so that a mistake would otherwise
    fail minutes later.

    Args:
        options: the keyword options: the hook's own and :class:`AnalysisOptions` fields.
        taken: the hook's arguments the caller sets itself, which ``options`` may not hold.

    Raises:
        UserInputError: an unknown option or an invalid value.
    """
    import inspect

    parameters = inspect.signature(HessianHook).parameters
    own = {name for name, p in parameters.items() if p.kind is p.KEYWORD_ONLY}
    allowed = (own | set(AnalysisOptions.names())) - {*taken}
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise UserInputError(
            f"unknown option(s) {', '.join(unknown)}; the Hessian measurement takes "
            f"{', '.join(sorted(allowed))}"
        )
    values = {name: v for name, v in options.items() if name in AnalysisOptions.names()}
    AnalysisOptions.of(options.get("options"), defaults=HOOK_DEFAULTS, **values)


def mean_loss(
    model: nn.Module,
    loss: Loss,
    batches: Any,
    *,
    params: Any = None,
    dtype: str | torch.dtype = torch.float64,
    device: str | torch.device | None = None,
) -> float:
    """The sample-weighted mean loss the Hessian of a ``HessianOperator`` is taken of.

    One forward pass per batch in eval mode, no gradient.

    Args:
        model: the model.
        loss: its loss.
        batches: the batches.
        params: only limits what the operator copies.
        dtype: the precision of the forward passes.
        device: where they run.

    Returns:
        The mean loss.
    """
    from hessian_powerlaw.operators import HessianOperator

    op = HessianOperator(model, loss, batches, params=params, dtype=parse_dtype(dtype),
                         device=device)  # fmt: skip
    return op.loss_value()


class HessianHook:
    """Hessian measures of a model every ``every`` steps of a training loop (module docstring).

    Args:
        model: the model being trained (a DDP wrapper is unwrapped); never modified.
        loss: an ``nn.Module`` criterion called as ``loss(model(x), y)``, or a callable
            ``(model, batch) -> scalar`` (dict batches, language models), as for
            :class:`~hessian_powerlaw.operators.HessianOperator`.
        batches: the fixed Hessian batch: a batch, a list of batches or a DataLoader, taken
            once now (detached copies), so every measurement sees the same samples.
        every: measure at every ``every``-th step (:meth:`step`).
        out: folder of the records file ``track.json`` (rewritten atomically after each
            measurement); ``None`` keeps the records in memory only (:attr:`records`).
            Records of an earlier run in ``out`` with the same settings are kept up to the
            first step measured now (a resumed run continues its file).
        held_out: batches of held-out data; their mean loss is recorded as ``test_loss``
            and the gap ``test_loss - train_loss``, which ``track``'s correlations use.
        options: the analysis options; ``None``: :class:`AnalysisOptions` with the hook's
            defaults (``HOOK_DEFAULTS``: float32 products, ``k = 50``, 60 trace products):
            inside a training loop speed matters, and every eigenvalue still reports its
            residual.
        params: the model's own parameter names, globs or ``"last"``, as for
            :func:`~hessian_powerlaw.analysis.analyze`.
        device: where the products run.
        tensorboard: a folder that also receives every record as TensorBoard scalars and a
            rank-plot image (:mod:`hessian_powerlaw.report.tensorboard`).
        name: the model's label in the records file.
        data: the data's label in the records file.
        progress: progress of each measurement on stderr.
        **option_values: fields of :class:`AnalysisOptions` (``k``, ``dtype``, ``tol``,
            ``trace_matvecs``, ``n_boot``, ...) that replace those of ``options``.

    Each record (a ``track.json`` entry) holds ``step``, ``epoch``, ``train_loss`` (the mean
    loss on the Hessian batch, eval mode), ``test_loss`` and ``gap`` (``None`` without
    ``held_out``), ``measures`` (``lambda_max``, ``trace``, ``s``, ``d_ks``, ``d_c``, ...) and
    ``analysis`` (the whole :class:`~hessian_powerlaw.analysis.Analysis` as a dict).
    """

    def __init__(
        self,
        model: nn.Module,
        loss: Loss,
        batches: Any,
        *,
        every: int,
        out: str | os.PathLike[str] | None = None,
        held_out: Any = None,
        options: AnalysisOptions | None = None,
        params: Any = None,
        device: str | torch.device | None = None,
        tensorboard: str | os.PathLike[str] | None = None,
        name: str | None = None,
        data: str = "training loop",
        progress: bool = False,
        **option_values: Any,
    ) -> None:
        self.options = AnalysisOptions.of(options, defaults=HOOK_DEFAULTS, **option_values)
        self.every = check_int(every, "every")
        if params == PER_BLOCK:
            raise UserInputError(
                "the hook measures one parameter selection; per-block is for `spectrum`"
            )
        if not callable(loss):
            raise UserInputError(
                "loss must be an nn.Module criterion or a callable (model, batch) -> scalar"
            )
        self.model = distributed.unwrap_model(model)
        self.loss = loss
        self.batches = take_batches(batches)
        self.held_out = None if held_out is None else take_batches(held_out, "held-out data")
        self.params = params
        self.device = device
        self.progress = progress
        self.name = name or type(self.model).__name__
        self.data = data
        samples = sum(batching.sample_count(b) or 0 for b in self.batches)
        self.settings: dict[str, Any] = {
            **self.options.to_dict(), "every": self.every, "samples": samples,
            "batch_size": None, "params": params,
            "held_out_samples": None if self.held_out is None
            else sum(batching.sample_count(b) or 0 for b in self.held_out),
        }  # fmt: skip
        self.out = None if out is None else Path(out)
        self.records: list[dict[str, Any]] = []
        self._previous: list[dict[str, Any]] = []
        self._steps = 0
        self._start = time.perf_counter()
        self._board: Any = None
        if self.out is not None and distributed.is_primary():
            from hessian_powerlaw.io import ensure_writable_dir

            ensure_writable_dir(self.out, "records folder")
            self._previous = self._read_previous()
        if tensorboard is not None and distributed.is_primary():
            from hessian_powerlaw.report.tensorboard import TensorBoardWriter

            self._board = TensorBoardWriter(tensorboard)

    # ------------------------------------------------------------------ the loop's calls

    def step(self, step: int | None = None, *, epoch: float | None = None) -> dict[str, Any] | None:
        """Call after each optimizer step; measures every ``every`` steps.

        Call after each optimizer step. ``step``: the number of steps done (default: count
        the calls). Measures and returns the record when ``step`` is a multiple of ``every``,
        else returns None.
        """
        self._steps = self._steps + 1 if step is None else check_int(step, "step", minimum=0)
        if self._steps % self.every:
            return None
        return self.measure(self._steps, epoch=epoch)

    def measure(self, step: int, *, epoch: float | None = None) -> dict[str, Any]:
        """Measure now, record the result at ``step`` and return the record."""
        check_int(step, "step", minimum=0)
        start = time.perf_counter()
        with preserved_training_state(self.model):
            (group,) = parameter_groups(self.model, self.params).values()
            analysis = analyze(self.model, self.loss, self.batches, self.options, params=group,
                               device=self.device, progress=self.progress)  # fmt: skip
            losses = {"dtype": self.options.dtype, "device": self.device, "params": group}
            train_loss = mean_loss(self.model, self.loss, self.batches, **losses)
            test_loss = (
                None if self.held_out is None
                else mean_loss(self.model, self.loss, self.held_out, **losses)
            )  # fmt: skip
        record_of_analysis = analysis.to_dict()
        record = {
            "checkpoint": None,  # measured in memory, not from a file
            "step": int(step),
            "epoch": None if epoch is None else float(epoch),
            "train_loss": train_loss,
            "train_accuracy": None,
            "test_loss": test_loss,
            "test_accuracy": None,
            "gap": None if test_loss is None else test_loss - train_loss,
            "measures": record_of_analysis["measures"],
            "analysis": record_of_analysis,
            "seconds": time.perf_counter() - start,
        }
        self._add(record)
        return record

    def close(self) -> TrackResult:
        """Mark the records file complete and close the TensorBoard writer; returns the result."""
        result = self._save(complete=True)
        if self._board is not None:
            self._board.close()
            self._board = None
        return result

    def __enter__(self) -> HessianHook:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ records

    @property
    def result(self) -> TrackResult:
        """The records so far as ``track.json`` holds them, with their correlations."""
        return self._result(complete=False)

    def _entries(self) -> list[dict[str, Any]]:
        first = min((r["step"] for r in self.records), default=None)
        # an earlier run's records from the first step measured now on are superseded
        kept = [e for e in self._previous if first is None or e["step"] < first]
        return sorted(kept + self.records, key=lambda e: e["step"])

    def _result(self, complete: bool) -> TrackResult:
        entries = self._entries()
        return TrackResult(
            run=str(self.out) if self.out is not None else "",
            model=self.name,
            data=self.data,
            settings=self.settings,
            entries=entries,
            correlations=correlations_of(entries),
            complete=complete,
            versions=versions(),
            seconds=time.perf_counter() - self._start,
        )

    def _save(self, complete: bool) -> TrackResult:
        result = self._result(complete)
        if self.out is not None and distributed.is_primary():
            from hessian_powerlaw.io import atomic_write_json

            atomic_write_json(self.out / TRACK_FILE, result)
        return result

    def _add(self, record: dict[str, Any]) -> None:
        # a step measured twice (a repeated call) keeps its latest record
        self.records = [r for r in self.records if r["step"] != record["step"]] + [record]
        self._save(complete=False)
        if self._board is not None:
            self._board.write(record)

    def _read_previous(self) -> list[dict[str, Any]]:
        """Entries of an earlier records file in ``out`` written with the same settings."""
        import json

        assert self.out is not None
        path = self.out / TRACK_FILE
        if not path.is_file():
            return []
        try:
            previous = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return []  # a damaged file is replaced, never trusted
        if previous.get("settings") != to_jsonable(dict(self.settings)):
            return []
        return [e for e in previous.get("entries") or [] if isinstance(e.get("step"), int)]
