"""Hessian measures inside a Hugging Face ``Trainer``: :class:`HessianTrainerCallback`.

::

    trainer = Trainer(model=model, args=args, train_dataset=train, eval_dataset=test)
    trainer.add_callback(HessianTrainerCallback(trainer, every=50, out="runs/hessian", k=50))
    trainer.train()

Every ``every`` optimizer steps the callback measures the Hessian of the model's own loss (the
``loss`` a Hugging Face model returns for a batch with labels) on a fixed batch of training
samples, appends the record to ``OUT/track.json`` and logs the measures with
``trainer.log``: every integration of ``report_to`` (TensorBoard, W&B, MLflow, ...) receives
them as it receives the training loss, and they land in ``trainer.state.log_history``.
TensorBoard, which takes images, also gets the rank plot.

The callback needs the trainer itself: a ``TrainerCallback`` is not handed the trainer, and a
callback's ``on_log`` runs after the reporting integrations, too late to add values to what
they write.

Fused attention kernels (SDPA, FlashAttention) have no second derivatives; during a
measurement the model runs eager attention, and its own implementation is switched back
afterwards (training itself is untouched).
"""

from __future__ import annotations

import contextlib
import inspect
import os
from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch import nn

from hessian_powerlaw.callbacks._core import CallbackCore, loader_batch
from hessian_powerlaw.errors import UserInputError
from hessian_powerlaw.protocols import Loss

HF_EXTRA_HINT = "pip install 'hessian-powerlaw[hf]'"

try:
    from transformers import TrainerCallback
except ImportError:
    raise UserInputError(
        "HessianTrainerCallback needs the optional package 'transformers' (and 'accelerate' "
        f"for its Trainer); install them with: {HF_EXTRA_HINT}"
    ) from None

__all__ = ["HessianTrainerCallback", "eager_attention", "model_loss"]


def _takes_use_cache(model: nn.Module) -> bool:
    try:
        return "use_cache" in inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False


def model_loss(model: nn.Module, batch: Mapping[str, Any]) -> torch.Tensor:
    """The loss a Hugging Face model computes itself for a batch with ``labels``.

    The loss a Hugging Face model computes itself for a batch with ``labels`` (what the
    Trainer minimises). No key-value cache is built: it is not needed and vmap cannot batch
    its bookkeeping.
    """
    if not isinstance(batch, Mapping):
        raise UserInputError(
            f"a Hugging Face model takes dict batches; got {type(batch).__name__} (pass loss= "
            "for other batches)"
        )
    outputs = model(**batch, use_cache=False) if _takes_use_cache(model) else model(**batch)
    loss = outputs.get("loss") if isinstance(outputs, Mapping) else outputs[0]
    if loss is None:
        raise UserInputError(
            "the model returned no loss for the Hessian batch: the batch needs 'labels' "
            "(e.g. DataCollatorForLanguageModeling(tokenizer, mlm=False) adds them), or pass "
            "loss=(model, batch) -> scalar"
        )
    return loss


@contextlib.contextmanager
def eager_attention(model: nn.Module) -> Iterator[None]:
    """Eager attention inside the body, the model's own implementation afterwards.

    A Hessian-vector product differentiates attention twice; fused kernels (SDPA, FlashAttention)
    have no second derivatives, the eager implementation (matmuls and a softmax) does.
    """
    config = getattr(model, "config", None)
    current = getattr(config, "_attn_implementation", None)
    switch = getattr(model, "set_attn_implementation", None)
    if current in (None, "eager") or not callable(switch):
        yield
        return
    switch("eager")
    try:
        yield
    finally:
        switch(current)


class HessianTrainerCallback(CallbackCore, TrainerCallback):
    """Hessian measures every ``every`` steps of a Hugging Face ``Trainer`` (module docstring).

    Args:
        trainer: the ``transformers.Trainer`` to measure and log through; add the callback
            with ``trainer.add_callback(...)``.
        every, out, samples, held_out_samples, batch, held_out, at_start, tensorboard,
        **options: see :class:`hessian_powerlaw.callbacks._core.CallbackCore`. By default the
            Hessian batch is ``samples`` items of the trainer's training set (seeded, collated
            by its data collator) and the held-out loss is taken on ``held_out_samples`` items
            of its ``eval_dataset`` when it has one.
        loss: default :func:`model_loss`, the model's own loss.

    The scalars go to ``trainer.log`` as ``hessian/s``, ``hessian/d_ks``, ... (the TensorBoard
    integration files them under ``train/``); see
    :func:`hessian_powerlaw.report.tensorboard.record_scalars`.
    """

    def __init__(
        self,
        trainer: Any,
        *,
        every: int,
        out: str | os.PathLike[str] | None = None,
        samples: int = 32,
        held_out_samples: int = 32,
        batch: Any = None,
        held_out: Any = None,
        loss: Loss | None = None,
        at_start: bool = False,
        tensorboard: str | os.PathLike[str] | None = None,
        **options: Any,
    ) -> None:
        if not callable(getattr(trainer, "log", None)) or not hasattr(trainer, "model"):
            raise UserInputError(
                f"HessianTrainerCallback needs the transformers.Trainer as its first argument, "
                f"got {type(trainer).__name__}: HessianTrainerCallback(trainer, every=...)"
            )
        self.trainer = trainer
        self._configure(every=every, out=out, samples=samples, held_out_samples=held_out_samples,
                        batch=batch, held_out=held_out, loss=loss, at_start=at_start,
                        tensorboard=tensorboard, options=options)  # fmt: skip

    # ------------------------------------------------------------------ Trainer events

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """Take the Hessian batch and held-out data; measure step 0 with ``at_start``."""
        model = kwargs.get("model")
        model = self.trainer.model if model is None else model
        batch = self.batch
        if batch is None:
            loader = kwargs.get("train_dataloader")
            loader = self.trainer.get_train_dataloader() if loader is None else loader
            batch = loader_batch(loader, self.samples, self.seed, "Hessian batch")
        held_out = self.held_out
        if held_out is None and self.held_out_samples and self.trainer.eval_dataset is not None:
            loader = self.trainer.get_eval_dataloader()
            held_out = loader_batch(loader, self.held_out_samples, self.seed, "held-out batch")
        self._start(model, self.loss or model_loss, batch, held_out,
                    name=type(model).__name__, data="transformers.Trainer")  # fmt: skip
        if self.at_start and state.global_step == 0:
            self._log(self._measured(0, state))

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """Measure at every ``every``-th optimizer step."""
        if self._due(state.global_step):
            self._log(self._measured(state.global_step, state))

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """Mark the records complete."""
        self._close()

    # ------------------------------------------------------------------ measuring, logging

    def _measured(self, step: int, state: Any) -> dict[str, Any]:
        assert self.hook is not None
        with eager_attention(self.hook.model):
            return self._measure(step, state.epoch)

    def _log(self, record: dict[str, Any]) -> None:
        """Log a record through the trainer.

        Scalars through ``trainer.log`` (every ``report_to`` integration); the rank plot to
        the TensorBoard writers of the trainer's callbacks.
        """
        from hessian_powerlaw.report.tensorboard import (
            RANK_PLOT_TAG,
            rank_plot_image,
            record_scalars,
        )

        self.trainer.log(record_scalars(record))
        writers = [
            writer
            for callback in self.trainer.callback_handler.callbacks
            if callable(getattr(writer := getattr(callback, "tb_writer", None), "add_image", None))
        ]
        if writers and self.trainer.is_world_process_zero():
            image = rank_plot_image(record)
            if image is not None:
                for writer in writers:
                    writer.add_image(RANK_PLOT_TAG, image, record["step"], dataformats="HWC")
                    writer.flush()
