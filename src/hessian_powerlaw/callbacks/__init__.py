"""Hessian measures inside the trainers people already use, built on :mod:`hessian_powerlaw.hooks`.

- :class:`HessianTrainerCallback` (:mod:`.hf`): a Hugging Face ``transformers.TrainerCallback``
  (extra ``[hf]``);
- :class:`HessianLightningCallback` (:mod:`.lightning`): a ``lightning.pytorch.Callback``
  (extra ``[lightning]``).

Both take the Hessian batch once when training starts (a seeded subset of the training set,
or the batch given), measure every ``every`` optimizer steps with a :class:`~hessian_powerlaw.
hooks.HessianHook`, append the records to ``OUT/track.json`` (``report OUT`` renders them) and
log the measures through the trainer's own loggers (TensorBoard, W&B, ... as configured), with
the rank plot as an image for loggers that take images (TensorBoard).

The frameworks are optional and imported only when a callback is asked for; without them the
import raises one :class:`~hessian_powerlaw.errors.UserInputError` naming the extra to install.
"""

from __future__ import annotations

from hessian_powerlaw._lazy import lazy_exports

_EXPORTS = {
    "HessianTrainerCallback": "hessian_powerlaw.callbacks.hf",
    "HessianLightningCallback": "hessian_powerlaw.callbacks.lightning",
}

__all__ = list(_EXPORTS)


__getattr__, __dir__ = lazy_exports("hessian_powerlaw.callbacks", _EXPORTS, globals())
