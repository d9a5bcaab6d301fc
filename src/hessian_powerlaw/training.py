"""Training runs with checkpoints that resume bit for bit.

A run is described by a :class:`TrainConfig` and lives in a run folder (docs/architecture.md)::

    RUN/config.json      the configuration (TrainConfig.to_dict())
    RUN/metrics.jsonl    one JSON object per evaluation: step, epoch, lr, train_loss,
                         train_accuracy, test_loss, test_accuracy, seconds
    RUN/ckpt-<step>.pt   model, optimizer, scheduler and RNG state, step, epoch, config
    RUN/final.pt         the same at the last step

Every file is written atomically. Determinism: the initial weights depend on (model, seed);
the batch order of epoch e depends only on (seed, e); checkpoints hold the optimizer,
scheduler and RNG state. A run killed between checkpoints and started again with the same
configuration therefore resumes from its last checkpoint and ends with exactly the weights of
an uninterrupted run.

Learning-rate schedules, for update t = 0 .. T-1 with base rate eta and W warm-up updates:
``constant`` eta; ``step`` (the paper's) eta, eta/10 from t >= 0.4 T, eta/100 from t >= 0.8 T;
``cosine`` eta (1 + cos(pi p)) / 2 with p = (t - W) / (T - W). During warm-up (t < W) the
rate is further multiplied by (t + 1) / W.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import os
import random
import re
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from hessian_powerlaw import batching
from hessian_powerlaw._results import ResultMixin
from hessian_powerlaw.errors import UserInputError
from hessian_powerlaw.io import (
    atomic_torch_save,
    atomic_write_json,
    atomic_write_text,
    check_target_dir,
    ensure_writable_dir,
    load_checkpoint,
)
from hessian_powerlaw.progress import progress_bar
from hessian_powerlaw.protocols import Batch, DataBundle, Loss

# name -> (torch.optim class name, extra keyword arguments)
OPTIMIZERS: dict[str, tuple[str, dict[str, Any]]] = {
    "sgd": ("SGD", {}),
    "sgd-momentum": ("SGD", {}),
    "adam": ("Adam", {}),
    "adamw": ("AdamW", {}),
    "amsgrad": ("Adam", {"amsgrad": True}),
    "radam": ("RAdam", {}),
    "adagrad": ("Adagrad", {}),
    "rmsprop": ("RMSprop", {}),
}
SGD_LR, ADAPTIVE_LR = 0.1, 1e-3
SCHEDULES = ("step", "constant", "cosine")
DEFAULT_EPOCHS = 50  # the paper's MNIST set-up
# Fields that do not change the run's results: a resumed run may differ in these.
_NON_IDENTITY_FIELDS = ("data_dir",)
_CKPT_RE = re.compile(r"^ckpt-(\d+)\.pt$")


def _optimizer_class(name: str) -> tuple[type[torch.optim.Optimizer], dict[str, Any]]:
    """The torch optimizer class and extra arguments for a name (ours or torch.optim's)."""
    key = name.lower()
    if key in OPTIMIZERS:
        cls_name, extra = OPTIMIZERS[key]
        return getattr(torch.optim, cls_name), dict(extra)
    for attr in dir(torch.optim):
        cls = getattr(torch.optim, attr)
        if (
            attr.lower() == key
            and isinstance(cls, type)
            and issubclass(cls, torch.optim.Optimizer)
            and cls is not torch.optim.Optimizer
        ):
            return cls, {}
    raise UserInputError(
        f"unknown optimizer {name!r}; use one of {', '.join(OPTIMIZERS)} or a torch.optim "
        "class name (e.g. Adamax, NAdam)"
    )


def _is_sgd_family(name: str) -> bool:
    return name.lower() in ("sgd", "sgd-momentum")


# ---------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainConfig(ResultMixin):
    """Everything that determines a training run.

    ``lr=None`` means 0.1 for sgd / sgd-momentum and 1e-3 for the other optimizers.
    Give ``epochs`` or ``steps`` (optimizer updates), not both; with neither, 50 epochs.
    ``momentum`` is used by sgd-momentum (and by torch optimizers that take it, when not 0).
    ``checkpoint_epochs`` saves after those epochs (0 = the initial weights);
    ``checkpoint_every`` saves every N steps, starting with step 0. ``eval_every=None``
    evaluates after every epoch; metrics are also written at step 0, at every checkpoint
    and at the end. ``eval_batches`` caps the batches of each evaluation (big text sets).
    ``seq_len``: tokens per sequence of text data (``None``: 128, or an ``hf:PATH`` model's
    shorter context); a chargpt model's context is this length.
    """

    model: str
    data: str
    data_dir: str | None = None
    subset: int | None = None
    label_noise: float = 0.0
    random_labels: bool = False
    gaussian_inputs: bool = False
    normalize: bool = True
    seq_len: int | None = None
    optimizer: str = "sgd-momentum"
    lr: float | None = None
    weight_decay: float = 5e-4
    momentum: float = 0.9
    batch_size: int = 128
    epochs: int | None = None
    steps: int | None = None
    schedule: str = "step"
    warmup_steps: int = 0
    grad_clip: float | None = None
    checkpoint_epochs: tuple[int, ...] = ()
    checkpoint_every: int | None = None
    eval_every: int | None = None
    eval_batches: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        _optimizer_class(self.optimizer)  # validates the name
        if self.lr is None:
            lr = SGD_LR if _is_sgd_family(self.optimizer) else ADAPTIVE_LR
            object.__setattr__(self, "lr", lr)
        if self.epochs is None and self.steps is None:
            object.__setattr__(self, "epochs", DEFAULT_EPOCHS)
        object.__setattr__(self, "checkpoint_epochs", tuple(sorted(set(self.checkpoint_epochs))))
        self._validate()

    def _validate(self) -> None:
        def need(ok: bool, message: str) -> None:
            if not ok:
                raise UserInputError(message)

        need(isinstance(self.model, str) and bool(self.model), "model must be a model spec")
        need(isinstance(self.data, str) and bool(self.data), "data must be a data spec")
        need(self.epochs is None or self.steps is None, "give epochs or steps, not both")
        need(self.epochs is None or self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}")
        need(self.steps is None or self.steps >= 1, f"steps must be >= 1, got {self.steps}")
        need(
            self.lr is not None and math.isfinite(self.lr) and self.lr > 0,
            f"lr must be > 0, got {self.lr}",
        )
        need(self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}")
        need(0 <= self.momentum < 1, f"momentum must be in [0, 1), got {self.momentum}")
        need(self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}")
        need(
            self.seq_len is None or self.seq_len >= 1,
            f"seq_len must be >= 1 or None, got {self.seq_len}",
        )
        need(
            self.schedule in SCHEDULES,
            f"schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}",
        )
        need(self.warmup_steps >= 0, f"warmup_steps must be >= 0, got {self.warmup_steps}")
        need(
            self.grad_clip is None or self.grad_clip > 0,
            f"grad_clip must be a positive max norm or None, got {self.grad_clip}",
        )
        need(
            all(e >= 0 for e in self.checkpoint_epochs),
            f"checkpoint epochs must be >= 0, got {list(self.checkpoint_epochs)}",
        )
        for name in ("checkpoint_every", "eval_every", "eval_batches", "subset"):
            value = getattr(self, name)
            need(value is None or value >= 1, f"{name} must be >= 1 or None, got {value}")
        need(0 <= self.label_noise <= 1, f"label_noise must be in [0, 1], got {self.label_noise}")

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """Inverse of ``to_dict()``; unknown keys are a UserInputError."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise UserInputError(f"unknown training config keys {unknown}; known: {sorted(names)}")
        values = dict(values)
        if values.get("checkpoint_epochs") is not None:
            values["checkpoint_epochs"] = tuple(int(e) for e in values["checkpoint_epochs"])
        return cls(**values)

    def identity(self) -> dict[str, Any]:
        """The fields that determine the results (what a resumed run must match)."""
        d = self.to_dict()
        for name in _NON_IDENTITY_FIELDS:
            d.pop(name, None)
        return d


# ---------------------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainResult(ResultMixin):
    """What :func:`train` did: the run folder, its final metrics and checkpoints."""

    out: str
    config: TrainConfig
    steps: int
    epochs: float
    final_metrics: dict[str, float]
    seconds: float
    checkpoints: tuple[str, ...]
    resumed_from_step: int | None

    @property
    def test_accuracy(self) -> float:
        """The last evaluation's test accuracy."""
        return float(self.final_metrics["test_accuracy"])

    @property
    def test_loss(self) -> float:
        """The last evaluation's test loss."""
        return float(self.final_metrics["test_loss"])


@dataclass(frozen=True)
class RunInfo(ResultMixin):
    """A run folder read back: its config, metrics and checkpoints (sorted by step)."""

    path: str
    config: TrainConfig
    metrics: tuple[dict[str, Any], ...]
    checkpoints: tuple[tuple[int, str], ...]
    final: str | None


# ---------------------------------------------------------------------------------------
# Plan: the step counts derived from a config and a data bundle
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Plan:
    steps_per_epoch: int
    total_steps: int
    num_epochs: int  # epochs iterated (the last may be partial in steps mode)
    checkpoint_steps: frozenset[int]
    eval_steps: frozenset[int]


def _steps_per_epoch(data: DataBundle, batch_size: int) -> int:
    if hasattr(data, "steps_per_epoch"):
        return int(data.steps_per_epoch(batch_size))
    return math.ceil(int(data.num_train) / batch_size)


def _make_plan(config: TrainConfig, data: DataBundle) -> _Plan:
    spe = _steps_per_epoch(data, config.batch_size)
    if spe < 1:
        raise UserInputError(f"data {config.data!r} gives no training batches")
    total = config.steps if config.steps is not None else spe * int(config.epochs or 0)
    ckpts = set()
    for epoch in config.checkpoint_epochs:
        if epoch * spe > total:
            raise UserInputError(
                f"checkpoint epoch {epoch} is after the end of training "
                f"({total} steps = {total / spe:g} epochs)"
            )
        ckpts.add(epoch * spe)
    if config.checkpoint_every is not None:
        ckpts.update(range(0, total + 1, config.checkpoint_every))
    every = config.eval_every if config.eval_every is not None else spe
    evals = set(range(0, total + 1, every)) | ckpts | {total}
    return _Plan(spe, total, math.ceil(total / spe), frozenset(ckpts), frozenset(evals))


def lr_factor(step: int, total: int, schedule: str, warmup: int) -> float:
    """Multiplier of the base learning rate for update ``step`` (0-based) of ``total``."""
    if schedule == "step":
        factor = 1.0 if step < 0.4 * total else 0.1 if step < 0.8 * total else 0.01
    elif schedule == "cosine":
        progress = min(max((step - warmup) / max(1, total - warmup), 0.0), 1.0)
        factor = 0.5 * (1.0 + math.cos(math.pi * progress))
    else:
        factor = 1.0
    if step < warmup:
        factor *= (step + 1) / warmup
    return factor


# ---------------------------------------------------------------------------------------
# Building blocks
# ---------------------------------------------------------------------------------------


def load_config_data(config: TrainConfig, data_dir: str | None = None) -> Any:
    """The data bundle a config trains on (``data_dir`` overrides the config's)."""
    from hessian_powerlaw.zoo import load_data

    return load_data(
        config.data,
        data_dir=data_dir if data_dir is not None else config.data_dir,
        seed=config.seed,
        model_spec=config.model,
        label_noise=config.label_noise,
        random_labels=config.random_labels,
        gaussian_inputs=config.gaussian_inputs,
        normalize=config.normalize,
        subset=config.subset,
        seq_len=config.seq_len,
    )


def make_optimizer(config: TrainConfig, params: Iterable[nn.Parameter]) -> torch.optim.Optimizer:
    """The optimizer named in ``config`` with its lr, weight decay and momentum."""
    cls, kwargs = _optimizer_class(config.optimizer)
    kwargs.update(lr=config.lr, weight_decay=config.weight_decay)
    if config.optimizer.lower() == "sgd-momentum":
        kwargs["momentum"] = config.momentum
    elif config.optimizer.lower() not in OPTIMIZERS and config.momentum:
        # a torch.optim class given by name: pass momentum only when it takes one
        import inspect

        if "momentum" in inspect.signature(cls.__init__).parameters:
            kwargs["momentum"] = config.momentum
    try:
        return cls(params, **kwargs)
    except (TypeError, ValueError) as exc:
        raise UserInputError(f"cannot build optimizer {config.optimizer!r}: {exc}") from None


def compute_loss(loss: Loss, model: nn.Module, batch: Batch) -> torch.Tensor:
    """``loss(model(x), y)`` for an nn.Module criterion, else ``loss(model, batch)``."""
    if isinstance(loss, nn.Module):
        x, y = batch
        return loss(model(x), y)
    return loss(model, batch)


def _rng_state() -> dict[str, Any]:
    """Torch (CPU and CUDA), numpy and Python RNG state, as weights_only-loadable data."""
    keys, pos, has_gauss, cached = np.random.get_state()[1:]
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "python": _python_state_to_data(random.getstate()),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _python_state_to_data(state: tuple[Any, ...]) -> list[Any]:
    version, internal, gauss = state
    return [int(version), [int(v) for v in internal], gauss]


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np_state = state["numpy"]
    np.random.set_state(
        (
            "MT19937",
            np_state["keys"].numpy().astype(np.uint32),
            np_state["pos"],
            np_state["has_gauss"],
            np_state["cached_gaussian"],
        )
    )
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed & 0xFFFFFFFF)
    random.seed(seed)


def _model_dtype(model: nn.Module) -> torch.dtype | None:
    for p in model.parameters():
        if p.is_floating_point():
            return p.dtype
    return None


def _evaluate(data: DataBundle, model: nn.Module, split: str, max_batches: int | None) -> dict:
    if max_batches is None:
        return data.evaluate(model, split)
    return data.evaluate(model, split, max_batches=max_batches)


# ---------------------------------------------------------------------------------------
# Run folder
# ---------------------------------------------------------------------------------------


def _checkpoint_files(folder: Path) -> list[tuple[int, Path]]:
    found = []
    for path in folder.iterdir() if folder.is_dir() else []:
        match = _CKPT_RE.match(path.name)
        if match:
            found.append((int(match.group(1)), path))
    return sorted(found)


def _read_metrics(folder: Path) -> list[dict[str, Any]]:
    path = folder / "metrics.jsonl"
    if not path.is_file():
        return []
    lines = path.read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def _write_metrics(folder: Path, metrics: list[dict[str, Any]]) -> None:
    text = "".join(json.dumps(m, allow_nan=False) + "\n" for m in metrics)
    atomic_write_text(folder / "metrics.jsonl", text)


def _read_config(folder: Path) -> TrainConfig | None:
    path = folder / "config.json"
    if not path.is_file():
        return None
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise UserInputError(f"{str(path)!r} is not valid JSON: {exc}") from None
    return TrainConfig.from_dict(values)


def _check_same_run(stored: TrainConfig, config: TrainConfig, folder: Path) -> None:
    old, new = stored.identity(), config.identity()
    if old != new:
        diff = ", ".join(
            f"{k}: {old.get(k)!r} -> {new.get(k)!r}"
            for k in sorted(set(old) | set(new))
            if old.get(k) != new.get(k)
        )
        raise UserInputError(
            f"{str(folder)!r} holds a run with a different configuration ({diff}); choose "
            "another --out, or restart it (resume=False / --restart) to discard it"
        )


def _clear_run(folder: Path) -> None:
    """Remove the files of an earlier run (only the ones train() writes)."""
    for _, path in _checkpoint_files(folder):
        path.unlink()
    for name in ("final.pt", "metrics.jsonl", "config.json"):
        (folder / name).unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------
# train
# ---------------------------------------------------------------------------------------


@dataclass
class _State:
    """Mutable state of a run in progress."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    step: int
    elapsed: float
    metrics: list[dict[str, Any]]


def _checkpoint_payload(state: _State, config: TrainConfig, plan: _Plan) -> dict[str, Any]:
    return {
        "model": state.model.state_dict(),
        "optimizer": state.optimizer.state_dict(),
        "scheduler": state.scheduler.state_dict(),
        "rng": _rng_state(),
        "step": state.step,
        "epoch": state.step / plan.steps_per_epoch,
        "elapsed": state.elapsed,
        "config": config.to_dict(),
    }


def _new_state(config: TrainConfig, data: DataBundle, plan: _Plan, device: torch.device) -> _State:
    from hessian_powerlaw.zoo import build_model

    _seed_everything(config.seed)
    model = build_model(config.model, data, seed=config.seed).to(device)
    optimizer = make_optimizer(config, [p for p in model.parameters() if p.requires_grad])
    total, schedule, warmup = plan.total_steps, config.schedule, config.warmup_steps

    def factor(step: int) -> float:  # a plain function: LambdaLR keeps it out of state_dict
        return lr_factor(step, total, schedule, warmup)

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    return _State(model, optimizer, scheduler, 0, 0.0, [])


def _restore(state: _State, checkpoint: dict[str, Any], path: Path) -> None:
    try:
        state.model.load_state_dict(checkpoint["model"])
        state.optimizer.load_state_dict(checkpoint["optimizer"])
        state.scheduler.load_state_dict(checkpoint["scheduler"])
    except (KeyError, RuntimeError, ValueError) as exc:
        raise UserInputError(f"checkpoint {str(path)!r} does not fit this run: {exc}") from None
    _set_rng_state(checkpoint["rng"])
    state.step = int(checkpoint["step"])
    state.elapsed = float(checkpoint["elapsed"])


def train(
    config: TrainConfig,
    out: str | os.PathLike[str],
    *,
    progress: bool = True,
    resume: bool = True,
    device: str | torch.device | None = None,
    data: DataBundle | None = None,
) -> TrainResult:
    """Train ``config.model`` on ``config.data`` and write the run folder ``out``.

    The global RNGs are seeded from ``config.seed``. The run folder is created only once the
    configuration and the data have been checked: a mistake (a bad spec, a checkpoint epoch
    after the end) leaves no folder behind.

    Args:
        config: what to train and how.
        out: the run folder.
        progress: a progress bar on stderr.
        resume: a folder that holds the same run (same config up to ``data_dir``) continues
            from its last checkpoint (a finished run is returned as is); ``False`` discards an
            earlier run in ``out``.
        device: where to train.
        data: a data bundle already loaded for ``config`` (the one :func:`load_config_data`
            gives).

    Returns:
        The :class:`TrainResult`: steps, final metrics, checkpoints.

    Raises:
        UserInputError: a bad configuration, or ``out`` holds a different run.
    """
    folder = check_target_dir(out, "run folder")
    stored = _read_config(folder) if folder.is_dir() else None
    if stored is not None and resume:
        _check_same_run(stored, config, folder)

    # Build everything before touching the folder: a bad spec leaves no half-made run.
    device = torch.device(device) if device is not None else torch.device("cpu")
    if data is not None and getattr(data, "spec", config.data) != config.data:
        raise UserInputError(
            f"the data bundle passed in is {data.spec!r} but the config trains on {config.data!r}"
        )
    data = data if data is not None else load_config_data(config)
    plan = _make_plan(config, data)
    state = _new_state(config, data, plan, device)

    folder = ensure_writable_dir(folder, "run folder")
    if stored is None or not resume:  # a fresh start: leftovers must not be resumed from
        _clear_run(folder)
    atomic_write_json(folder / "config.json", config.to_dict())
    resumed_from = _resume_point(folder, resume)
    if resumed_from is not None:
        step, path = resumed_from
        _restore(state, load_checkpoint(path), path)
        state.metrics = [m for m in _read_metrics(folder) if m["step"] <= state.step]
    _run_loop(config, data, plan, state, folder, device, progress)
    return _result(config, folder, plan, state, resumed_from)


def _resume_point(folder: Path, resume: bool) -> tuple[int, Path] | None:
    """The checkpoint to resume from: final.pt if present, else the last ckpt-<step>.pt."""
    if not resume:
        return None
    if (folder / "final.pt").is_file():
        final = load_checkpoint(folder / "final.pt")
        return int(final["step"]), folder / "final.pt"
    checkpoints = _checkpoint_files(folder)
    return checkpoints[-1] if checkpoints else None


def _run_loop(
    config: TrainConfig,
    data: DataBundle,
    plan: _Plan,
    state: _State,
    folder: Path,
    device: torch.device,
    progress: bool,
) -> None:
    dtype = _model_dtype(state.model)
    started = time.perf_counter() - state.elapsed
    if state.step == 0 and not state.metrics:
        _at_step_end(config, data, plan, state, folder, started)
    if state.step >= plan.total_steps:
        return
    params = [p for p in state.model.parameters() if p.requires_grad]
    state.model.train()
    for epoch in range(state.step // plan.steps_per_epoch, plan.num_epochs):
        first = state.step - epoch * plan.steps_per_epoch
        last = min(plan.steps_per_epoch, plan.total_steps - epoch * plan.steps_per_epoch)
        batches = _epoch_batches(data, config, epoch, first, last, plan.steps_per_epoch)
        bar = progress_bar(last - first, f"epoch {epoch + 1}/{plan.num_epochs}", progress)
        with bar:
            for batch in batches:
                loss = _update(
                    config, state, params, data.loss, batching.to_device(batch, device, dtype)
                )
                state.step += 1
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
                _at_step_end(config, data, plan, state, folder, started)


def _epoch_batches(
    data: DataBundle, config: TrainConfig, epoch: int, first: int, last: int, per_epoch: int
) -> Iterator[Any]:
    """Batches ``first .. last-1`` of the epoch's fixed order (skipping those already done)."""
    batches = data.train_batches(config.batch_size, seed=config.seed, epoch=epoch)
    count = first
    for batch in itertools.islice(batches, first, last):
        count += 1
        yield batch
    if count != last:
        raise RuntimeError(
            f"data bundle {config.data!r} gave {count} batches in epoch {epoch}, expected "
            f"{last} (steps_per_epoch = {per_epoch})"
        )


def _update(
    config: TrainConfig, state: _State, params: list[nn.Parameter], criterion: Any, batch: Any
) -> float:
    """One optimizer update; returns the batch loss."""
    state.optimizer.zero_grad(set_to_none=True)
    loss = compute_loss(criterion, state.model, batch)
    if not torch.isfinite(loss):
        raise UserInputError(
            f"training diverged at step {state.step} (loss {float(loss)}); lower the learning "
            f"rate (now {config.lr}) or set a gradient clip"
        )
    loss.backward()
    if config.grad_clip is not None:
        nn.utils.clip_grad_norm_(params, config.grad_clip)
    state.optimizer.step()
    state.scheduler.step()
    return float(loss.detach())


def _at_step_end(
    config: TrainConfig,
    data: DataBundle,
    plan: _Plan,
    state: _State,
    folder: Path,
    started: float,
) -> None:
    """Evaluate and checkpoint when the plan says so."""
    step = state.step
    if step in plan.eval_steps:
        state.elapsed = time.perf_counter() - started
        state.metrics.append(_measure(config, data, plan, state))
        _write_metrics(folder, state.metrics)
    if step in plan.checkpoint_steps:
        state.elapsed = time.perf_counter() - started
        atomic_torch_save(folder / f"ckpt-{step}.pt", _checkpoint_payload(state, config, plan))
    if step == plan.total_steps:
        atomic_torch_save(folder / "final.pt", _checkpoint_payload(state, config, plan))


def _measure(config: TrainConfig, data: DataBundle, plan: _Plan, state: _State) -> dict[str, Any]:
    train_m = _evaluate(data, state.model, "train", config.eval_batches)
    test_m = _evaluate(data, state.model, "test", config.eval_batches)
    last_update = max(state.step - 1, 0)
    lr = config.lr * lr_factor(last_update, plan.total_steps, config.schedule, config.warmup_steps)
    return {
        "step": state.step,
        "epoch": state.step / plan.steps_per_epoch,
        "lr": lr,
        "train_loss": train_m["loss"],
        "train_accuracy": train_m["accuracy"],
        "test_loss": test_m["loss"],
        "test_accuracy": test_m["accuracy"],
        "seconds": round(state.elapsed, 3),
    }


def _result(
    config: TrainConfig,
    folder: Path,
    plan: _Plan,
    state: _State,
    resumed_from: tuple[int, Path] | None,
) -> TrainResult:
    final = state.metrics[-1] if state.metrics else {}
    return TrainResult(
        out=str(folder),
        config=config,
        steps=state.step,
        epochs=state.step / plan.steps_per_epoch,
        final_metrics={k: v for k, v in final.items() if k not in ("step", "epoch")},
        seconds=state.elapsed,
        checkpoints=tuple(str(p) for _, p in _checkpoint_files(folder)),
        resumed_from_step=None if resumed_from is None else resumed_from[0],
    )


# ---------------------------------------------------------------------------------------
# Reading runs back
# ---------------------------------------------------------------------------------------


def load_run(path: str | os.PathLike[str]) -> RunInfo:
    """Read a run folder: config, metrics (by step) and checkpoints sorted by step."""
    folder = Path(path)
    if not folder.is_dir():
        raise UserInputError(f"run folder {str(folder)!r} does not exist")
    config = _read_config(folder)
    if config is None:
        raise UserInputError(
            f"{str(folder)!r} is not a run folder (no config.json); create one with "
            "`hessian-powerlaw train ... --out FOLDER`"
        )
    final = folder / "final.pt"
    return RunInfo(
        path=str(folder),
        config=config,
        metrics=tuple(_read_metrics(folder)),
        checkpoints=tuple((step, str(p)) for step, p in _checkpoint_files(folder)),
        final=str(final) if final.is_file() else None,
    )


def checkpoint_path(path: str | os.PathLike[str]) -> Path:
    """The checkpoint file that ``path`` names.

    Args:
        path: a checkpoint file (a run's ``ckpt-<step>.pt`` or ``final.pt``, or a bare
            ``state_dict``), or a run folder.

    Returns:
        ``path`` itself for a file; for a folder its ``final.pt``, or, when the run has not
        finished, its last ``ckpt-<step>.pt``.

    Raises:
        UserInputError: a folder without any checkpoint.
    """
    folder = Path(path)
    if not folder.is_dir():
        return folder
    if (folder / "final.pt").is_file():
        return folder / "final.pt"
    checkpoints = _checkpoint_files(folder)
    if not checkpoints:
        raise UserInputError(
            f"run folder {str(folder)!r} has no checkpoint (final.pt, ckpt-<step>.pt); "
            "pass a checkpoint file"
        )
    return checkpoints[-1][1]


def load_model_state(
    model_spec: str,
    data: DataBundle,
    checkpoint: str | os.PathLike[str] | dict[str, Any] | None,
    seed: int,
) -> nn.Module:
    """The zoo model of ``model_spec`` at random init, or with a checkpoint's weights.

    Args:
        model_spec: a model spec (``zoo.build_model``).
        data: the data bundle the model is built for.
        checkpoint: ``None`` (random init, seeded by ``seed``); a checkpoint file or run
            folder (:func:`checkpoint_path`), loaded weights-only; or a loaded checkpoint
            dict (:func:`load_weights`).
        seed: the seed of the initial weights.

    Returns:
        The model, in eval mode.

    Raises:
        UserInputError: the spec is unknown or the weights do not fit the model.
    """
    from hessian_powerlaw.zoo import build_model

    model = build_model(model_spec, data, seed=seed)
    if checkpoint is not None:
        source = checkpoint if isinstance(checkpoint, dict) else checkpoint_path(checkpoint)
        load_weights(model, source)
    return model.eval()


def load_weights(model: nn.Module, checkpoint: str | os.PathLike[str] | dict[str, Any]) -> None:
    """Load weights into ``model`` from a checkpoint file or dict, weights-only.

    Accepted: a bare state dict (every value a tensor), or a dict holding one under
    ``"model"`` (this tool's run checkpoints) or ``"state_dict"`` (PyTorch Lightning's
    convention). A ``"model."`` prefix is stripped from the keys only when every key of the
    checkpoint has it and not every key of ``model`` does (a Lightning module that wraps the
    network as ``self.model``, or an ``hf:PATH`` model saved by a version that prefixed its
    names with ``model.``); then the unstripped keys could not fit anyway. Weights that
    do not fit are a UserInputError saying so.
    """
    where = "checkpoint" if isinstance(checkpoint, dict) else f"checkpoint {str(checkpoint)!r}"
    payload = checkpoint if isinstance(checkpoint, dict) else load_checkpoint(checkpoint)
    state = _state_dict_in(payload, where)
    own = model.state_dict()
    prefix = "model."
    if (
        state
        and all(k.startswith(prefix) for k in state)
        and not all(k.startswith(prefix) for k in own)
    ):
        state = {k[len(prefix) :]: v for k, v in state.items()}
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [
        f"{k}: {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in sorted(set(own) & set(state))
        if state[k].shape != own[k].shape
    ]
    if missing or unexpected or shapes:
        parts = [
            f"missing {_short(missing)}" if missing else "",
            f"unexpected {_short(unexpected)}" if unexpected else "",
            f"shape mismatch {_short(shapes)}" if shapes else "",
        ]
        raise UserInputError(
            f"the weights in {where} do not fit the model ({'; '.join(p for p in parts if p)}); "
            "check --model matches the checkpoint (and, for text data, --seq-len matches the "
            "length it was trained with)"
        )
    model.load_state_dict(state)


def _is_state_dict(value: Any) -> bool:
    return isinstance(value, dict) and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in value.items()
    )


def _state_dict_in(payload: Any, where: str) -> dict[str, torch.Tensor]:
    """The model state dict in a loaded checkpoint.

    The model state dict in a loaded checkpoint: the payload itself, or the one under
    ``"model"`` or ``"state_dict"``.
    """
    if _is_state_dict(payload):
        return payload
    if isinstance(payload, dict):
        for key in ("model", "state_dict"):
            if _is_state_dict(payload.get(key)):
                return payload[key]
        found = f"; its keys are {_short([repr(k) for k in payload])}" if payload else ""
    else:
        found = f"; it holds a {type(payload).__name__}"
    raise UserInputError(
        f"{where} holds no model state dict (a dict of tensors, or one under 'model' or "
        f"'state_dict'){found}"
    )


def _short(items: list[str], limit: int = 3) -> str:
    more = f" and {len(items) - limit} more" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


def load_model(
    path: str | os.PathLike[str],
    *,
    data_dir: str | None = None,
    data: DataBundle | None = None,
    device: str | torch.device | None = None,
) -> tuple[nn.Module, Any, TrainConfig]:
    """Rebuild (model, data, config) from a checkpoint file or a run folder.

    Model and data are rebuilt from the config stored in the checkpoint (or the folder's
    config.json), the weights loaded weights-only (:func:`load_model_state`).

    Args:
        path: a checkpoint file or a run folder (:func:`checkpoint_path`: its ``final.pt``,
            else its last checkpoint).
        data_dir: where the config's data set lies, when not where it was trained.
        data: a data bundle already loaded for this config, reused.
        device: where to move the model.

    Returns:
        ``(model, data, config)``, the model in eval mode.

    Raises:
        UserInputError: no checkpoint, no config, or weights that do not fit.
    """
    ckpt_path = checkpoint_path(path)
    payload = load_checkpoint(ckpt_path)
    values = payload.get("config") if isinstance(payload, dict) else None
    config = TrainConfig.from_dict(values) if values else _read_config(ckpt_path.parent)
    if config is None:
        raise UserInputError(
            f"checkpoint {str(ckpt_path)!r} carries no training config and its folder has no "
            "config.json; pass --model and --data explicitly"
        )
    data = data if data is not None else load_config_data(config, data_dir)
    model = load_model_state(config.model, data, payload, config.seed)
    if device is not None:
        model.to(device)
    return model, data, config


__all__ = [
    "OPTIMIZERS",
    "RunInfo",
    "TrainConfig",
    "TrainResult",
    "checkpoint_path",
    "compute_loss",
    "load_model",
    "load_model_state",
    "load_run",
    "load_weights",
    "lr_factor",
    "make_optimizer",
    "train",
]
