"""What the framework callbacks share: their options, the Hessian batch, the hook, the steps."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

from torch import nn

from hessian_powerlaw.errors import UserInputError, check_int
from hessian_powerlaw.hooks import (
    HessianHook,
    check_hook_options,
    dataset_batch,
    preserved_rng_state,
)
from hessian_powerlaw.protocols import Loss

# the hook's arguments a callback sets itself (the rest of its keyword options go through)
_SET_BY_CALLBACK = ("every", "out", "held_out", "tensorboard")


def loader_batch(loader: Any, samples: int, seed: int, what: str) -> Any:
    """The Hessian batch from a trainer's DataLoader.

    A seeded subset of ``samples`` items of a DataLoader's data set, collated by the loader's
    own ``collate_fn`` (what the trainer feeds the model), taken without touching the global
    random generators. UserInputError when the loader has no map-style data set.
    """
    dataset = getattr(loader, "dataset", None)
    if dataset is None:
        raise UserInputError(
            f"cannot take the {what} from the trainer's {type(loader).__name__}: it has no "
            "data set; pass the batch yourself"
        )
    with preserved_rng_state():
        return dataset_batch(dataset, getattr(loader, "collate_fn", None), samples, seed)


class CallbackCore:
    """Options and state of a Hessian callback; the framework classes add the event methods.

    Args (keyword-only in the framework classes):
        every: measure every ``every`` optimizer steps (``global_step % every == 0``).
        out: folder of the records file ``track.json`` (``report OUT`` renders it).
        samples: how many training samples form the Hessian batch (a seeded subset, taken
            once when training starts) when ``batch`` is not given.
        held_out_samples: how many samples of the validation data give the held-out loss
            (0: none) when ``held_out`` is not given and the trainer has validation data.
        batch, held_out: the Hessian batch and the held-out batches, given explicitly.
        loss: ``(model, batch) -> scalar`` or an ``nn.Module`` criterion for ``(x, y)``
            batches.
        at_start: also measure when training starts (step 0 of a fresh run).
        tensorboard: a folder for the hook's own TensorBoard event files, besides the
            trainer's loggers.
        **options: the measurement's options, as for :class:`~hessian_powerlaw.hooks.
            HessianHook`: ``options`` (an :class:`~hessian_powerlaw.options.AnalysisOptions`)
            or its fields (``k``, ``dtype``, ``tol``, ``max_matvecs``, ``trace_matvecs``,
            ``alpha``, ``n_boot``, ``seed``, ...), ``params`` (the model's own names),
            ``device``, ``name``, ``data``, ``progress``.
    """

    def _configure(
        self,
        *,
        every: int,
        out: str | os.PathLike[str] | None,
        samples: int,
        held_out_samples: int,
        batch: Any,
        held_out: Any,
        loss: Loss | None,
        at_start: bool,
        tensorboard: str | os.PathLike[str] | None,
        options: Mapping[str, Any],
    ) -> None:
        self.every = check_int(every, "every")
        check_int(samples, "samples")
        check_int(held_out_samples, "held_out_samples", minimum=0)
        check_hook_options(options, taken=_SET_BY_CALLBACK)
        if loss is not None and not callable(loss):
            raise UserInputError(
                "loss must be an nn.Module criterion or a callable (model, batch) -> scalar"
            )
        self.out = out
        self.samples = samples
        self.held_out_samples = held_out_samples
        self.batch = batch
        self.held_out = held_out
        self.loss = loss
        self.at_start = at_start
        self.tensorboard = tensorboard
        self.options = dict(options)
        self.hook: HessianHook | None = None
        self.last_step: int | None = None  # the last step measured

    @property
    def seed(self) -> int:
        return int(self.options.get("seed", 0))

    def _start(
        self,
        model: nn.Module,
        loss: Callable[..., Any] | nn.Module,
        batch: Any,
        held_out: Any,
        name: str,
        data: str,
    ) -> HessianHook:
        options = {"name": name, "data": data, **self.options}
        self.hook = HessianHook(model, loss, batch, every=self.every, out=self.out,
                                held_out=held_out, tensorboard=self.tensorboard,
                                **options)  # fmt: skip
        return self.hook

    def _due(self, step: int) -> bool:
        """Whether ``step`` is to be measured now.

        Whether ``step`` is one to measure and not measured yet (gradient accumulation
        calls the batch-end events several times per optimizer step).
        """
        return self.hook is not None and step % self.every == 0 and step != self.last_step

    def _measure(self, step: int, epoch: float | None) -> dict[str, Any]:
        assert self.hook is not None, "training has not started"
        record = self.hook.measure(step, epoch=epoch)
        self.last_step = step
        return record

    def _close(self) -> None:
        if self.hook is not None:
            self.hook.close()
