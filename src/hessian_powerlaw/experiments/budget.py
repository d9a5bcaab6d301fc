"""What an experiment costs at a scale: its spectra counted from its conditions, time estimated.

``reproduce NAME --plan`` prints :func:`plan_rows` for the chosen scale without running
anything. The budget of the ``cpu`` scale is ``reproduce all`` in at most 4 hours on a
2-core machine with two workers side by side (:data:`WORKERS`); the tests check that the
cpu scale's docstring shows what this model computes, and the plan says whether it fits.

The cost model (minutes of one worker with one torch thread, a second worker beside it):

- a spectrum of K = 1000 on 1,000 Hessian samples, float32 products: LeNet 20-22 min
  (measured by ``reproduce trained-vs-random`` at the cpu scale: 1,243-1,318 s for the
  trained and random LeNets on MNIST and Fashion-MNIST, 3,880-4,056 products); FCN 2x100
  4.5-6 min (measured 257 s trained, 296 s random; the narrower FCNs of ``width`` are
  charged the same, an overestimate); linear networks as FCNs; a char-GPT parameter group
  1-3 min (not measured at K = 1000: products of the last layer on 32 sequences 0.10 s, of
  one block on 8 sequences 0.2-0.4 s, per 4 columns). Other K and sample counts scale the
  time linearly (samples only above 1,000).
- training 28x28 images: LeNet 4,700 training images/s and 12,000 evaluated images/s, FCNs
  50,000 and 150,000 (measured: 18.7 s and 1.7 s per MNIST epoch of 60,000 images including
  the per-epoch evaluation of the training set and the 10,000 test images); char-GPT
  6 steps/s. Smaller images (digits) cost less; the estimate does not credit that.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from hessian_powerlaw._results import ResultMixin
from hessian_powerlaw.experiments import tables
from hessian_powerlaw.experiments.base import Condition, Experiment, Scale
from hessian_powerlaw.training import TrainConfig

#: (low, high) minutes of one K = 1000 spectrum on 1,000 samples, by model family: one
#: worker with one torch thread while a second worker runs beside it
SPECTRUM_MINUTES: dict[str, tuple[float, float]] = {
    "lenet": (20.0, 22.0),
    "fcn": (4.5, 6.0),
    "linear-net": (4.5, 6.0),
    "chargpt": (1.0, 3.0),
}
#: images per second: (training, evaluation), by model family (28x28 inputs)
IMAGE_RATES: dict[str, tuple[float, float]] = {
    "lenet": (4700.0, 12000.0),
    "fcn": (50000.0, 150000.0),
    "linear-net": (50000.0, 150000.0),
}
GPT_STEPS_PER_SECOND = 6.0
BUDGET_MINUTES = {"cpu": 240.0}
#: conditions ``reproduce`` computes side by side at the cpu scale, one per core
#: (:mod:`hessian_powerlaw.experiments.parallel`); the minutes above are one worker's
WORKERS = 2


def wall_minutes(minutes: float, workers: int = WORKERS) -> float:
    """Wall-clock minutes of ``minutes`` of one worker's work shared by ``workers``.

    The work splits into groups (a training run with its spectra, or one untrained
    condition) that start longest first, so the workers stay busy until the last group or
    two; the estimate ignores that tail.

    Args:
        minutes: the sum of the groups' estimates.
        workers: workers side by side.

    Returns:
        ``minutes / workers``.
    """
    return minutes / max(1, workers)


def family(model: str) -> str:
    """``lenet``, ``fcn``, ``linear-net``, ``chargpt``, ``resnet18``, ... of a model spec."""
    return model.partition(":")[0]


def train_size(config: TrainConfig) -> tuple[int, int]:
    """(training images, test images) of a run's image data, after ``:N`` or ``subset``."""
    name = tables.data_name(config.data)
    n_test = tables.DATA_SIZES.get(name, (0, 10000))[1]
    return tables.train_size(config.to_dict()) or 60000, n_test


def spectra_of(condition: Condition) -> int:
    """Spectra one condition computes: one per tracked checkpoint, per block, or one."""
    config = condition.config
    if condition.track:
        if config.checkpoint_epochs:
            return len(set(config.checkpoint_epochs) | {config.epochs})
        steps = config.steps or 1
        every = config.checkpoint_every or steps
        return len(range(0, steps, every)) + 1
    if condition.hessian.params == "per-block":
        layers = config.model.split(":")[1].partition("x")[0] if ":" in config.model else "0"
        return int(layers) + 2 if layers.isdigit() else 1  # embeddings, blocks, head
    return 1


def train_minutes(config: TrainConfig) -> float:
    """Estimated minutes of one training run (per-epoch evaluation included)."""
    kind = family(config.model)
    if kind == "chargpt":
        return (config.steps or 0) / GPT_STEPS_PER_SECOND / 60
    n, n_test = train_size(config)
    train_rate, eval_rate = IMAGE_RATES.get(kind, IMAGE_RATES["lenet"])
    epochs = config.epochs if config.epochs is not None else (
        (config.steps or 0) * config.batch_size / n)  # fmt: skip
    return (epochs * n / train_rate + (epochs + 1) * (n + n_test) / eval_rate) / 60


def spectrum_minutes(condition: Condition) -> tuple[float, float]:
    """(low, high) estimated minutes of a condition's spectra."""
    h = condition.hessian
    low, high = SPECTRUM_MINUTES.get(family(condition.config.model), SPECTRUM_MINUTES["lenet"])
    factor = h.k / 1000 * max(1.0, (h.samples or 1000) / 1000) * spectra_of(condition)
    return low * factor, high * factor


@dataclass(frozen=True)
class Estimate(ResultMixin):
    """One experiment at one scale: what it computes and about how long it takes."""

    experiment: str
    data: list[str]
    models: list[str]
    k: list[int]
    samples: list[int | None]
    epochs: list[int]
    runs: int
    spectra: int
    train_minutes: float
    spectrum_minutes: tuple[float, float]
    reused: int = 0

    @property
    def minutes(self) -> tuple[float, float]:
        """The estimate's range in minutes."""
        low, high = self.spectrum_minutes
        return self.train_minutes + low, self.train_minutes + high


def estimate(experiment: Experiment, scale: Scale, seen: set[str] | None = None) -> Estimate:
    """Count the runs and spectra of ``experiment`` at ``scale`` and estimate their time.

    ``seen`` holds the keys (:func:`~hessian_powerlaw.experiments.runner.condition_key`) of
    conditions that experiments estimated before this one compute; a condition among them is
    copied, not computed (``reused``), and this experiment's keys are added.
    """
    from hessian_powerlaw.experiments.runner import condition_key

    conditions = experiment.conditions_at(scale)
    computed = []
    for condition in conditions:
        key = condition_key(condition)
        if seen is None or key not in seen:
            computed.append(condition)
        if seen is not None:
            seen.add(key)
    runs: dict[str, TrainConfig] = {c.run_name: c.config for c in computed if c.trained}
    spectra = [spectrum_minutes(c) for c in computed]
    return Estimate(
        experiment=experiment.name,
        data=_data_sizes(c.config for c in conditions),
        models=_unique(c.config.model for c in conditions),
        k=_unique(c.hessian.k for c in conditions),
        samples=_unique(c.hessian.samples for c in conditions),
        epochs=_unique(c.config.epochs for c in conditions if c.config.epochs is not None),
        runs=len(runs),
        spectra=sum(spectra_of(c) for c in computed),
        train_minutes=sum(train_minutes(config) for config in runs.values()),
        spectrum_minutes=(sum(s[0] for s in spectra), sum(s[1] for s in spectra)),
        reused=len(conditions) - len(computed),
    )


def estimate_all(experiments: Iterable[Experiment], scale: Scale) -> list[Estimate]:
    """:func:`estimate` of each experiment, each reusing its predecessors' conditions.

    That is what ``reproduce`` does for experiments written beside each other.
    """
    seen: set[str] = set()
    return [estimate(experiment, scale, seen) for experiment in experiments]


def _data_sizes(configs: Any) -> list[str]:
    """``mnist 600/1000/6000``: each data set with its training-set sizes."""
    sizes: dict[str, list[int]] = {}
    for config in configs:
        n = train_size(config)[0] if family(config.model) != "chargpt" else None
        sizes.setdefault(config.data.partition(":")[0], [])
        if n is not None and n not in sizes[config.data.partition(":")[0]]:
            sizes[config.data.partition(":")[0]].append(n)
    return [f"{name} {'/'.join(map(str, ns))}".strip() for name, ns in sizes.items()]


def _unique(values: Any) -> list[Any]:
    return list(dict.fromkeys(values))


PLAN_COLUMNS: tuple[tuple[str, str], ...] = (
    ("experiment", "experiment"),
    ("data", "data"),
    ("models", "models"),
    ("k", "K"),
    ("samples", "samples"),
    ("epochs", "epochs"),
    ("runs", "runs"),
    ("spectra", "spectra"),
    ("reused", "reused"),
    ("train", "train min"),
    ("spectrum", "spectra min"),
    ("total", "total min"),
)


def plan_rows(estimates: Sequence[Estimate]) -> list[dict[str, Any]]:
    """Table rows of :func:`estimate` results, with a total row."""

    def span(low: float, high: float) -> str:
        return f"{math.ceil(low)}-{math.ceil(high)}"

    def words(values: Sequence[Any]) -> str:
        return ", ".join("-" if v is None else str(v) for v in values)

    rows = [
        {"experiment": e.experiment, "data": words(e.data), "models": words(e.models),
         "k": words(e.k), "samples": words(e.samples), "epochs": words(e.epochs),
         "runs": e.runs, "spectra": e.spectra, "reused": e.reused,
         "train": f"{math.ceil(e.train_minutes)}",
         "spectrum": span(*e.spectrum_minutes), "total": span(*e.minutes)}
        for e in estimates
    ]  # fmt: skip
    low = sum(e.minutes[0] for e in estimates)
    high = sum(e.minutes[1] for e in estimates)
    rows.append({
        "experiment": "total", "runs": sum(e.runs for e in estimates),
        "spectra": sum(e.spectra for e in estimates),
        "reused": sum(e.reused for e in estimates),
        "train": f"{math.ceil(sum(e.train_minutes for e in estimates))}",
        "spectrum": span(sum(e.spectrum_minutes[0] for e in estimates),
                         sum(e.spectrum_minutes[1] for e in estimates)),
        "total": span(low, high),
    })  # fmt: skip
    return rows
