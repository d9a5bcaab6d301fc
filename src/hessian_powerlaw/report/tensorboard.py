"""Hessian measures as TensorBoard scalars and the rank plot as an image.

One definition of what is logged, for every path that logs: ``track --tensorboard DIR``, the
training-loop hook's ``tensorboard=DIR`` (:mod:`hessian_powerlaw.hooks`) and the Hugging Face
and Lightning callbacks, which hand the same scalars and image to the trainer's own loggers.

Scalars (tag ``hessian/<name>``): ``lambda_max``, ``trace``, ``s``, ``d_ks``, ``d_c``, ``beta``
and the bootstrap ``p_value`` of a record's measures, and ``train_loss``, ``test_loss`` and
``gap`` when the record has them; a measure that is undefined (no power-law fit) is left out,
never logged as a number. Image: ``hessian/rank_plot``, the top eigenvalues against their rank
with the fitted power law.

Event files are written with ``torch.utils.tensorboard.SummaryWriter``, which needs the
optional package ``tensorboard`` (``pip install 'hessian-powerlaw[tensorboard]'``).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from hessian_powerlaw.errors import UserInputError

TAG_PREFIX = "hessian/"
# the record's measures logged as scalars, and its losses (see the module docstring)
SCALAR_MEASURES: tuple[str, ...] = ("lambda_max", "trace", "s", "d_ks", "d_c", "beta", "p_value")
SCALAR_LOSSES: tuple[str, ...] = ("train_loss", "test_loss", "gap")
RANK_PLOT_TAG = TAG_PREFIX + "rank_plot"
TENSORBOARD_HINT = "pip install 'hessian-powerlaw[tensorboard]'"


def _finite(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def record_scalars(record: Mapping[str, Any], prefix: str = TAG_PREFIX) -> dict[str, float]:
    """``{"hessian/s": ..., ...}`` of one tracked record (a ``track.json`` entry)."""
    measures = record.get("measures") or {}
    values = {key: measures.get(key) for key in SCALAR_MEASURES}
    values.update({key: record.get(key) for key in SCALAR_LOSSES})
    return {
        prefix + key: number
        for key, value in values.items()
        if (number := _finite(value)) is not None
    }


def rank_plot_image(record: Mapping[str, Any], title: str | None = None) -> np.ndarray | None:
    """The record's rank plot with its fit, as an image.

    The record's rank plot with its fit as an ``(H, W, 3)`` uint8 image; None without
    eigenvalues.
    """
    from hessian_powerlaw.report import plots

    analysis = record.get("analysis") or {}
    eigenvalues = (analysis.get("spectrum") or {}).get("eigenvalues")
    if not eigenvalues:
        return None
    step = record.get("step")
    label = title or (f"Hessian rank plot, step {step}" if step is not None else None)
    return plots.rgb_array(plots.rank_plot(eigenvalues, analysis.get("fit"), title=label))


def require_summary_writer() -> Any:
    """``torch.utils.tensorboard.SummaryWriter``, or one line saying how to install it."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise UserInputError(
            "writing TensorBoard event files needs the optional package 'tensorboard'; "
            f"install it with: {TENSORBOARD_HINT}"
        ) from None
    return SummaryWriter


class TensorBoardWriter:
    """Writes tracked records to TensorBoard event files in ``logdir``.

    Each :meth:`write` logs :func:`record_scalars` and the rank plot at the record's step
    and flushes, so TensorBoard shows a record as soon as it is written.
    """

    def __init__(self, logdir: str | os.PathLike[str], *, images: bool = True) -> None:
        from hessian_powerlaw.io import ensure_writable_dir

        writer_class = require_summary_writer()
        self.logdir = ensure_writable_dir(logdir, "TensorBoard folder")
        self.images = images
        self._writer = writer_class(log_dir=str(Path(self.logdir)))

    def write(self, record: Mapping[str, Any], step: int | None = None) -> None:
        """Log one record at ``step`` (default: the record's own ``step``)."""
        at = int(record.get("step", 0) if step is None else step)
        for tag, value in record_scalars(record).items():
            self._writer.add_scalar(tag, value, at)
        if self.images:
            image = rank_plot_image(record)
            if image is not None:
                self._writer.add_image(RANK_PLOT_TAG, image, at, dataformats="HWC")
        self._writer.flush()

    def close(self) -> None:
        """Flush and close the event files."""
        self._writer.close()

    def __enter__(self) -> TensorBoardWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
