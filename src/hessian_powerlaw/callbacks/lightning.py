"""Hessian measures inside a Lightning ``Trainer``: :class:`HessianLightningCallback`.

::

    callback = HessianLightningCallback(every=50, loss=nn.CrossEntropyLoss(), out="runs/hessian")
    trainer = L.Trainer(max_steps=1000, callbacks=[callback])
    trainer.fit(module, train_loader, val_loader)

Every ``every`` optimizer steps (``trainer.global_step``) the callback measures the Hessian of
``loss`` (a criterion applied as ``loss(module(x), y)``, or a callable ``(module, batch) ->
scalar``) over the LightningModule's parameters, on a fixed batch of training samples; appends
the record to ``OUT/track.json``; and hands the scalars to every logger of the trainer
(``logger.log_metrics``, as Lightning's own ``LearningRateMonitor`` does), and the rank plot
to loggers whose experiment takes images (TensorBoard's ``add_image``).

Parameter names are the module's own (``net.0.weight`` for ``self.net = nn.Sequential(...)``),
for ``params=`` and in the records.

``loss`` is required: a module's ``training_step`` logs and may do more than compute a loss,
so it cannot be differentiated twice inside a measurement.
"""

from __future__ import annotations

import os
from typing import Any

from hessian_powerlaw.callbacks._core import CallbackCore, loader_batch
from hessian_powerlaw.errors import UserInputError
from hessian_powerlaw.protocols import Loss

LIGHTNING_EXTRA_HINT = "pip install 'hessian-powerlaw[lightning]'"

try:
    import lightning.pytorch as pl
except ImportError:
    raise UserInputError(
        "HessianLightningCallback needs the optional package 'lightning'; install it with: "
        f"{LIGHTNING_EXTRA_HINT}"
    ) from None

__all__ = ["HessianLightningCallback"]


def _one_loader(loaders: Any, what: str) -> Any:
    """The DataLoader among what Lightning holds (one loader, or the first of a list or dict)."""
    if isinstance(loaders, (list, tuple)):
        loaders = loaders[0] if loaders else None
    elif isinstance(loaders, dict):
        loaders = next(iter(loaders.values()), None)
    if loaders is None:
        raise UserInputError(f"the trainer has no data loader to take the {what} from; pass it")
    return loaders


class HessianLightningCallback(CallbackCore, pl.Callback):
    """Hessian measures every ``every`` steps of a Lightning ``Trainer`` (module docstring).

    Args:
        every: measure every ``every`` optimizer steps.
        loss: a criterion (``loss(module(x), y)`` on ``(x, y)`` batches) or a callable
            ``(module, batch) -> scalar``; required.
        out, samples, held_out_samples, batch, held_out, at_start, tensorboard, **options: see
            :class:`hessian_powerlaw.callbacks._core.CallbackCore`. By default the Hessian
            batch is ``samples`` items of the training loader's data set (seeded, collated by
            the loader) and the held-out loss is taken on ``held_out_samples`` items of the
            validation loader's, when the trainer has one.
    """

    def __init__(
        self,
        *,
        every: int,
        loss: Loss | None,
        out: str | os.PathLike[str] | None = None,
        samples: int = 256,
        held_out_samples: int = 256,
        batch: Any = None,
        held_out: Any = None,
        at_start: bool = False,
        tensorboard: str | os.PathLike[str] | None = None,
        **options: Any,
    ) -> None:
        if loss is None:
            raise UserInputError(
                "HessianLightningCallback needs loss=: a criterion such as nn.CrossEntropyLoss() "
                "(applied as loss(module(x), y)) or a callable (module, batch) -> scalar"
            )
        self._configure(every=every, out=out, samples=samples, held_out_samples=held_out_samples,
                        batch=batch, held_out=held_out, loss=loss, at_start=at_start,
                        tensorboard=tensorboard, options=options)  # fmt: skip

    # ------------------------------------------------------------------ Lightning events

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        """Take the Hessian batch and held-out data; measure step 0 with ``at_start``."""
        batch = self.batch
        if batch is None:
            loader = _one_loader(trainer.train_dataloader, "Hessian batch")
            batch = loader_batch(loader, self.samples, self.seed, "Hessian batch")
        held_out = self.held_out
        if held_out is None and self.held_out_samples and trainer.val_dataloaders is not None:
            loader = _one_loader(trainer.val_dataloaders, "held-out batch")
            held_out = loader_batch(loader, self.held_out_samples, self.seed, "held-out batch")
        self._start(pl_module, self.loss, batch, held_out,
                    name=type(pl_module).__name__, data="lightning.Trainer")  # fmt: skip
        if self.at_start and trainer.global_step == 0:
            self._log(trainer, self._measure(0, float(trainer.current_epoch)))

    def on_train_batch_end(
        self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        """Measure at every ``every``-th optimizer step."""
        step = int(trainer.global_step)
        if self._due(step):
            self._log(trainer, self._measure(step, float(trainer.current_epoch)))

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        """Mark the records complete."""
        self._close()

    # ------------------------------------------------------------------ logging

    def _log(self, trainer: Any, record: dict[str, Any]) -> None:
        """Log a record through the trainer's loggers.

        Scalars to every logger; the rank plot to the loggers whose experiment has
        ``add_image`` (TensorBoard).
        """
        from hessian_powerlaw.report.tensorboard import (
            RANK_PLOT_TAG,
            rank_plot_image,
            record_scalars,
        )

        scalars = record_scalars(record)
        step = int(record["step"])
        for logger in trainer.loggers:
            logger.log_metrics(scalars, step=step)
        if not trainer.is_global_zero:
            return
        experiments = [
            experiment
            for logger in trainer.loggers
            if callable(getattr(experiment := logger.experiment, "add_image", None))
        ]
        image = rank_plot_image(record) if experiments else None
        if image is not None:
            for experiment in experiments:
                experiment.add_image(RANK_PLOT_TAG, image, step, dataformats="HWC")
