"""Hessian analyses along a training run's checkpoints (``track``).

:func:`track_run` analyses each checkpoint of a training run (see ``training.py``), records
its train/test loss and accuracy and the generalization gap (test loss - train loss), and
correlates every Hessian measure with test loss and with the gap across checkpoints
(Pearson, Spearman, Kendall and their p-values, from ``measures.correlate``). ``RUN/track.json``
is rewritten atomically after every checkpoint, so an interruption (Ctrl-C) keeps every
finished checkpoint, and a second call skips the checkpoints already analysed with the same
settings.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from hessian_powerlaw import distributed
from hessian_powerlaw._results import ResultMixin, to_jsonable
from hessian_powerlaw.analysis import analyze, hessian_batches, parameter_groups, versions
from hessian_powerlaw.errors import UserInputError, check_int
from hessian_powerlaw.io import atomic_write_json
from hessian_powerlaw.options import AnalysisOptions
from hessian_powerlaw.protocols import DataBundle

# Hessian measures correlated with generalization, and the targets they are correlated with
TRACKED_MEASURES: tuple[str, ...] = ("s", "d_ks", "lambda_max", "trace", "beta")
TARGETS: tuple[str, ...] = ("test_loss", "gap")
TRACK_FILE = "track.json"


@dataclass(frozen=True)
class TrackResult(ResultMixin):
    """``RUN/track.json``: one entry per analysed checkpoint, and the correlations.

    Each entry holds ``checkpoint``, ``step``, ``epoch``, ``train_loss``, ``train_accuracy``,
    ``test_loss``, ``test_accuracy``, ``gap``, ``measures`` (the flat measure dictionary of
    :class:`~hessian_powerlaw.analysis.Analysis`) and ``analysis`` (the whole analysis).
    ``correlations[target][measure]`` is a ``measures.Correlation`` as a dict: ``n``,
    ``n_dropped``, ``pearson_r``, ``pearson_p``, ``spearman_rho``, ``spearman_p``,
    ``kendall_tau``, ``kendall_p`` and ``reason`` (coefficients ``None`` when undefined).
    """

    kind: str = field(default="track", init=False)  # first key of the JSON file
    run: str
    model: str
    data: str
    settings: dict[str, Any]
    entries: list[dict[str, Any]]
    correlations: dict[str, dict[str, dict[str, Any]]]
    complete: bool
    versions: dict[str, str]
    seconds: float

    @property
    def config(self) -> dict[str, Any]:
        """The settings (what ``config`` is in the other results)."""
        return self.settings


def select_checkpoints(checkpoints: Sequence[tuple[int, str]], every: int) -> list[tuple[int, str]]:
    """Every ``every``-th checkpoint in step order, always with the last one."""
    ordered = sorted(checkpoints)
    chosen = ordered[::every]
    if ordered and chosen[-1] != ordered[-1]:
        chosen.append(ordered[-1])
    return chosen


def _metrics_by_step(metrics: Sequence[Mapping[str, Any]]) -> dict[int, Mapping[str, Any]]:
    """The last metrics record of each step (the training loop writes one per evaluation)."""
    return {int(m["step"]): m for m in metrics if "step" in m}


def _generalization(
    metrics: Mapping[str, Any] | None, data: DataBundle, model: nn.Module
) -> dict[str, Any]:
    """Train/test loss and accuracy at a checkpoint, and the gap test loss - train loss.

    Taken from the run's own ``metrics.jsonl`` when it evaluated at that step; otherwise
    evaluated here with the data bundle's ``evaluate``.
    """
    keys = ("train_loss", "train_accuracy", "test_loss", "test_accuracy")
    if metrics is not None and all(metrics.get(key) is not None for key in keys):
        values = {key: float(metrics[key]) for key in keys}
    else:
        train, test = data.evaluate(model, "train"), data.evaluate(model, "test")
        values = {
            "train_loss": float(train["loss"]),
            "train_accuracy": float(train["accuracy"]),
            "test_loss": float(test["loss"]),
            "test_accuracy": float(test["accuracy"]),
        }
    values["gap"] = values["test_loss"] - values["train_loss"]
    return values


def correlations_of(entries: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """``{target: {measure: Correlation.to_dict()}}`` across ``entries`` (checkpoints).

    ``measures.correlation_table`` gives Pearson, Spearman and Kendall with p-values; a
    checkpoint where a measure is undefined (no fit) is dropped from that pair and counted,
    and fewer than 3 points give ``None`` coefficients with the reason.
    """
    from hessian_powerlaw.measures import correlation_table

    measures = {
        name: [(e.get("measures") or {}).get(name) for e in entries] for name in TRACKED_MEASURES
    }
    targets = {name: [e.get(name) for e in entries] for name in TARGETS}
    table: dict[str, dict[str, dict[str, Any]]] = {target: {} for target in TARGETS}
    for row in correlation_table(measures, targets):
        record = row.to_dict()
        table[record.pop("target")][record.pop("measure")] = record
    return table


def _read_previous(path: Path, settings: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Entries of an earlier ``track.json`` made with the same settings (resumption)."""
    if not path.is_file():
        return []
    try:
        previous = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []  # a damaged file is recomputed, never trusted
    if previous.get("settings") != to_jsonable(dict(settings)):
        return []
    return [e for e in previous.get("entries") or [] if e.get("analysis") and e.get("checkpoint")]


def track_run(
    run_dir: str | os.PathLike[str],
    options: AnalysisOptions | None = None,
    *,
    every: int = 1,
    params: Any = None,
    device: str | None = None,
    progress: bool = False,
    figures: bool = True,
    on_entry: Callable[[dict[str, Any]], None] | None = None,
    tensorboard: str | os.PathLike[str] | None = None,
    **option_values: Any,
) -> TrackResult:
    """Analyse the checkpoints of the training run in ``run_dir``; write ``RUN/track.json``.

    The Hessian of every checkpoint is taken on the same fixed ``options.samples`` training
    samples (the run's own training data, label noise included). Checkpoints already in
    ``track.json`` with the same settings are reused.

    Under ``torch.distributed`` (``torchrun ... track``) every rank takes part in every
    Hessian product (:mod:`hessian_powerlaw.distributed`); the ranks check that they resume
    from the same finished checkpoints, and only rank 0 writes ``track.json`` and figures.

    Args:
        run_dir: a run folder written by :func:`~hessian_powerlaw.training.train`.
        options: the analysis options (``samples``, ``batch_size``, ``k``, ...).
        every: analyse every N-th checkpoint (and always the last).
        params: one parameter selection (not ``"per-block"``).
        device: where the products run.
        progress: progress bars on stderr.
        figures: also write the figures next to ``track.json``.
        on_entry: called with each newly finished entry.
        tensorboard: a folder that receives every entry's measures and rank plot as
            TensorBoard event files at the checkpoint's step
            (:mod:`hessian_powerlaw.report.tensorboard`).
        **option_values: fields of :class:`~hessian_powerlaw.options.AnalysisOptions` that
            replace those of ``options``.

    Returns:
        The :class:`TrackResult` written to ``track.json``.

    Raises:
        UserInputError: bad options, a run folder that cannot be read or written, or one
            without checkpoints.
    """
    from hessian_powerlaw.training import load_config_data, load_model_state, load_run

    chosen = AnalysisOptions.of(options, **option_values)
    check_int(every, "every")
    if params == "per-block":
        raise UserInputError("track analyses one parameter selection; per-block is for spectrum")
    start = time.perf_counter()
    run = load_run(run_dir)
    if not os.access(run.path, os.W_OK | os.X_OK):
        raise UserInputError(f"cannot write track.json into the run folder {run.path!r}")
    checkpoints = run_checkpoints(run)
    if not checkpoints:
        raise UserInputError(f"run folder {str(run_dir)!r} has no checkpoints to track")
    chosen_checkpoints = select_checkpoints(checkpoints, every)
    data = load_config_data(run.config)
    batches, num_samples = hessian_batches(data, chosen)
    settings = {**chosen.to_dict(), "samples": min(num_samples, data.num_train),
                "every": every, "params": params}  # fmt: skip
    path = Path(run.path) / TRACK_FILE
    done = {e["checkpoint"]: e for e in _read_previous(path, settings)}
    # every rank must skip the same checkpoints, or their products would pair up wrongly
    distributed.check_consistent(resumed_checkpoints=",".join(sorted(done)))
    metrics = _metrics_by_step(run.metrics)
    entries: list[dict[str, Any]] = []

    def save(complete: bool) -> TrackResult:
        entries.sort(key=lambda e: e["step"])
        result = TrackResult(
            run=str(run.path),
            model=run.config.model,
            data=run.config.data,
            settings=settings,
            entries=list(entries),
            correlations=correlations_of(entries),
            complete=complete,
            versions=versions(),
            seconds=time.perf_counter() - start,
        )
        if distributed.is_primary():
            atomic_write_json(path, result)
        return result

    board = None
    if tensorboard is not None and distributed.is_primary():
        from hessian_powerlaw.report.tensorboard import TensorBoardWriter

        board = TensorBoardWriter(tensorboard)
    try:
        for step, ckpt in chosen_checkpoints:
            name = Path(ckpt).name
            if name in done:
                entries.append(done[name])
                if board is not None:
                    board.write(done[name])
                continue
            model = load_model_state(run.config.model, data, ckpt, run.config.seed)
            (group,) = parameter_groups(model, params).values()
            analysis = analyze(model, data.loss, batches, chosen, params=group, device=device,
                               progress=progress)  # fmt: skip
            record = analysis.to_dict()
            entry = {
                "checkpoint": name,
                "step": int(step),
                "epoch": (metrics.get(int(step)) or {}).get("epoch"),
                **_generalization(metrics.get(int(step)), data, model),
                "measures": record["measures"],
                "analysis": record,
            }
            entries.append(entry)
            save(complete=False)  # finished checkpoints survive an interruption
            if board is not None:
                board.write(entry)
            if on_entry is not None:
                on_entry(entry)
    finally:
        if board is not None:
            board.close()
    result = save(complete=True)
    if figures and distributed.is_primary():
        from hessian_powerlaw.report.outputs import write_track_figures

        write_track_figures(result.to_dict(), Path(run.path))
    return result


def run_checkpoints(run: Any) -> list[tuple[int, str]]:
    """``(step, path)`` of a run's ``ckpt-*.pt``, plus ``final.pt`` when it is a later step."""
    from hessian_powerlaw.io import load_checkpoint

    checkpoints = [(int(step), str(path)) for step, path in run.checkpoints]
    if run.final:
        payload = load_checkpoint(run.final)
        final_step = int(payload["step"]) if isinstance(payload, Mapping) else -1
        if final_step not in {step for step, _ in checkpoints}:
            checkpoints.append((final_step, str(run.final)))
    return sorted(checkpoints)
