"""The embedded default (``hessian-powerlaw demo``, ``make demo``): the paper's Table 1 contrast.

A LeNet is trained on real MNIST (10,000 training images, the paper's SGD set-up), and the top
K = 1000 Hessian eigenvalues of its random initialisation and of the trained network are
computed on the same 1,000 training images and tested by the paper's method: the
maximum-likelihood power-law fit and its KS distance ``d_ks`` against the critical value
``d_c = 1.36 / sqrt(K)``. Beside that test stand two that go beyond the paper (the fit's
bootstrap p-value, the likelihood ratio against an exponential law). Whether the paper's
finding holds here (random init: not a power law; trained: a power law) is computed from the
numbers, and said.

``quick`` (what CI runs) trains on scikit-learn's 8x8 digits and takes K = 60: there the KS
critical value is larger than the ``d_ks`` of the paper's own random-init LeNet, so the paper's
test cannot tell the two states apart, and the demo says so and reads the calibrated tests.

The solver tolerance and the product dtype are the library's defaults (``None`` here), so the
demo runs with whatever the library makes its fastest adequate setting.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from hessian_powerlaw._results import ResultMixin
from hessian_powerlaw.analysis import analyze, versions
from hessian_powerlaw.io import atomic_write_json
from hessian_powerlaw.options import AnalysisOptions

if TYPE_CHECKING:
    from hessian_powerlaw.training import TrainConfig

STATES: tuple[str, ...] = ("random init", "trained")
PAPER_K = 1000
# the paper's rows (experiments.paper) that the two states stand for: LeNet on MNIST, Table 1
PAPER_SETTINGS: dict[str, str] = {
    "random init": "LeNet MNIST, random init",
    "trained": "LeNet MNIST, SGD-trained",
}


@dataclass(frozen=True)
class DemoSettings(ResultMixin):
    """Scale of the demo (see :data:`DEMO_PRESETS`).

    Training is the paper's SGD (momentum 0.9, lr 0.1, weight decay 5e-4, step schedule) with
    the learning rate warmed up linearly over the first ``warmup_epochs`` (from the first step
    at lr 0.1, LeNet collapsed to chance level on some seeds; see experiments.base.cpu_scale).
    ``dtype`` and ``tol`` left at ``None`` take the library's defaults (those of
    :func:`~hessian_powerlaw.analysis.analyze`): every eigenvalue still reports its residual.
    """

    model: str
    data: str
    epochs: int
    batch_size: int
    k: int
    samples: int | None
    dtype: str | None
    tol: float | None
    trace_matvecs: int
    density: bool
    seed: int = 0
    warmup_epochs: int = 1
    criterion: str | None = None

    def options(self) -> AnalysisOptions:
        """The analysis options of the demo's two spectra (``None`` keeps the library's).

        Returns:
            The :class:`~hessian_powerlaw.options.AnalysisOptions`.
        """
        values = {"k": self.k, "samples": self.samples, "dtype": self.dtype, "tol": self.tol,
                  "criterion": self.criterion, "trace_matvecs": self.trace_matvecs,
                  "density": self.density, "alpha": 0.05, "seed": self.seed}  # fmt: skip
        return AnalysisOptions(**{k: v for k, v in values.items() if k != "dtype" or v})


# default: the paper's K and a LeNet on real MNIST (measured on 2 CPU cores: training 25 s,
# then the two K = 1000 spectra side by side in 22 minutes; docs/benchmarks.md); quick:
# digits and K = 60, about a minute (CI)
DEMO_PRESETS: dict[str, DemoSettings] = {
    # float32 products: 3-10x faster than float64 for convolutions on a CPU; with the "norm"
    # criterion at its float32 default (1e-5 |lambda_1|), which float32 residuals reach (the
    # tail's relative residuals can sit at the products' rounding floor)
    "default": DemoSettings("lenet", "mnist:10000", epochs=15, batch_size=128, k=1000,
                            samples=1000, dtype="float32", tol=None, trace_matvecs=30,
                            density=False, criterion="norm"),
    # digits trains stably from the first step (12 steps per epoch): the paper's recipe as is
    "quick": DemoSettings("lenet", "digits", epochs=20, batch_size=128, k=60, samples=600,
                          dtype=None, tol=None, trace_matvecs=30, density=False,
                          warmup_epochs=0),
}  # fmt: skip


@dataclass(frozen=True)
class DemoResult(ResultMixin):
    """``demo.json``: the training run, the analysis of each state, the table and the verdict.

    ``table`` has one row per state with the paper's numbers beside ours (``paper_d_ks``,
    ``paper_power_law``, ``paper_s``); ``agreement`` is "agrees", "partly agrees" or
    "disagrees" with the paper, ``finding`` says so in one line, ``verdict`` holds the
    sentences it is computed from and ``notes`` what limits the comparison (a K at which the
    paper's test is not decisive).
    """

    kind: str = field(default="demo", init=False)  # first key of the JSON file
    out: str
    model: str
    data: str
    num_samples: int
    training: dict[str, Any]
    states: dict[str, dict[str, Any]]
    table: list[dict[str, Any]]
    settings: DemoSettings
    versions: dict[str, str]
    seconds: float
    paper: dict[str, dict[str, Any]] = field(default_factory=dict)
    agreement: str = "not compared"
    finding: str = ""
    verdict: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def paper_cells(state: str) -> dict[str, Any]:
    """The paper's d_ks, verdict and s for a demo state (Table 1, LeNet on MNIST, K = 1000)."""
    from hessian_powerlaw.experiments.tables import paper_cells as cells

    return cells("trained-vs-random", PAPER_SETTINGS.get(state))


def demo_table(
    states: Mapping[str, Mapping[str, Any]], model: str, alpha: float = 0.05
) -> list[dict[str, Any]]:
    """The demo's table, one row per state.

    One row per state: the paper's test (k, d_ks, d_c, verdict, s) with the paper's numbers
    beside it, the calibrated tests, test accuracy, lambda_max and trace, and the largest top
    K on a grid of K / 10 that passes the paper's test (``span_k``; None: none does).
    """
    from hessian_powerlaw.report.tables import summary_row

    rows = []
    for name, state in states.items():
        row = summary_row(state["analysis"], model=model, state=name)
        row["test_accuracy"] = state["evaluation"]["test"]["accuracy"]
        row.update(paper_cells(name))
        row.update(_span_cells(state["analysis"], alpha))
        rows.append(row)
    return rows


SPAN_CELLS = ("span_k", "span_d_ks", "span_d_c", "span_s")


def _span_cells(analysis: Mapping[str, Any], alpha: float) -> dict[str, Any]:
    """How far down the paper's test holds: ``span_k``, and that fit's d_ks, d_c and s.

    :func:`~hessian_powerlaw.powerlaw.power_law_span` in steps of K / 10 (at least 10).
    """
    from hessian_powerlaw.powerlaw import MIN_POINTS, power_law_span

    values = [v for v in (analysis.get("spectrum") or {}).get("eigenvalues") or [] if v > 0]
    if len(values) < MIN_POINTS:
        return dict.fromkeys(SPAN_CELLS)
    span = power_law_span(values, step=max(len(values) // 10, MIN_POINTS), alpha=alpha)
    if span is None:
        return dict.fromkeys(SPAN_CELLS)
    return dict(zip(SPAN_CELLS, (span.k, span.ks_distance, span.critical_value, span.s)))


def paper_random_d_ks() -> float:
    """d_ks of the paper's random-init LeNet on MNIST (0.0796): the contrast to resolve."""
    value = paper_cells("random init")["paper_d_ks"]
    return float(value)


def ks_decisive(k: int, alpha: float = 0.05) -> bool:
    """Whether the paper's KS test is decisive at ``k``.

    Whether the paper's KS test at ``k`` can reject the paper's own random-init spectrum:
    ``d_c(k) < 0.0796`` (K >= 293 at alpha 0.05; the paper's K = 1000 gives d_c = 0.043).
    """
    from hessian_powerlaw.powerlaw import critical_value

    return critical_value(k, alpha) < paper_random_d_ks()


def _is_power_law(row: Mapping[str, Any]) -> bool:
    return bool(row.get("power_law")) if row.get("d_ks") is not None else False


def _ks_words(row: Mapping[str, Any]) -> str:
    if row.get("d_ks") is None:
        return f"no power-law fit ({row.get('fit_note')})"
    relation = "<" if row.get("power_law") else ">="
    return f"d_ks = {row['d_ks']:.4f} {relation} d_c = {row['d_c']:.4f}"


def demo_verdict(
    table: Sequence[Mapping[str, Any]], k: int, alpha: float = 0.05
) -> tuple[str, list[str], list[str]]:
    """(agreement, verdict sentences, notes): does the paper's finding hold in this demo?

    At a K where the paper's KS test is decisive (:func:`ks_decisive`) the finding holds when
    the random initialisation is not a power law and the trained network is, by that test.
    Below it, the KS verdicts cannot separate the states, a note says so, and the finding is
    read from what can: the trained ``d_ks`` below the random one and the likelihood ratio
    against an exponential law favouring the power law for the trained network only.
    """
    from hessian_powerlaw.experiments.tables import agreement
    from hessian_powerlaw.powerlaw import critical_value

    rows = {row["state"]: row for row in table}
    if not set(STATES) <= set(rows):
        return "not compared", [], []
    random, trained = rows["random init"], rows["trained"]
    paper = {name: paper_cells(name)["paper_d_ks"] for name in STATES}
    agree: list[str] = []
    disagree: list[str] = []
    notes: list[str] = []
    d_c, paper_d_c = critical_value(k, alpha), critical_value(PAPER_K, alpha)
    if ks_decisive(k, alpha):
        for name, row, expected in (("random init", random, False), ("trained", trained, True)):
            ours = _is_power_law(row)
            words = "a power law" if ours else "not a power law"
            text = (f"{name}: {words} by the paper's KS test ({_ks_words(row)}; paper "
                    f"d_ks = {paper[name]:.4f})")  # fmt: skip
            (agree if ours == expected else disagree).append(text)
        span = trained.get("span_k")
        if span is not None and not _is_power_law(trained):  # how far the power law reaches
            notes.append(
                f"trained: the paper's test passes on the top {span} eigenvalues (d_ks = "
                f"{trained['span_d_ks']:.4f} < d_c = {trained['span_d_c']:.4f}, s = "
                f"{trained.get('span_s', float('nan')):.3f}) but not on all {trained['k']}: "
                f"below rank {span} the spectrum falls away from the power law."
            )
        if k < PAPER_K:
            notes.append(
                f"K = {k} instead of the paper's {PAPER_K}: d_c = {d_c:.3f} instead of "
                f"{paper_d_c:.3f}, a weaker KS test than the paper's."
            )
    else:
        notes.append(
            f"At K = {k} the paper's KS test is not decisive: d_c = 1.36/sqrt({k}) = {d_c:.3f} "
            f"is larger than the d_ks of the paper's own random-init LeNet "
            f"({paper['random init']:.4f}), so it cannot reject a spectrum that the paper calls "
            f"not a power law. Its verdicts are shown but not counted; the finding is read "
            f"from d_ks and the likelihood ratio. The paper uses K = {PAPER_K} "
            f"(d_c = {paper_d_c:.3f}): run the demo without --quick."
        )
        r_d, t_d = random.get("d_ks"), trained.get("d_ks")
        if r_d is not None and t_d is not None:
            text = (f"d_ks of the trained network {t_d:.4f} vs {r_d:.4f} at random init "
                    f"(paper {paper['trained']:.4f} vs {paper['random init']:.4f})")  # fmt: skip
            (agree if t_d < r_d else disagree).append(text)
        for name, row, sign in (("random init", random, -1), ("trained", trained, 1)):
            ratio, p = row.get("lr_exponential"), row.get("lr_exponential_p")
            if ratio is None:
                continue
            favours = "the power law" if ratio > 0 else "an exponential law"
            text = f"{name}: the likelihood ratio favours {favours} (R = {ratio:+.2f}, p = {p:.2g})"
            (agree if ratio * sign > 0 else disagree).append(text)
    return agreement(agree, disagree), agree + disagree, notes


def finding_line(agreement: str) -> str:
    """One line on whether the paper's finding holds, from :func:`demo_verdict`'s headline."""
    from hessian_powerlaw.experiments.tables import AGREEMENT_HEADLINES

    headline = AGREEMENT_HEADLINES.get(agreement, agreement).removeprefix("the finding ")
    if agreement == "not compared":
        headline = "is not compared here (a state is missing)"
    return (
        "The paper's finding (Table 1: random init not a power law, trained network a power "
        f"law) {headline}."
    )


def demo_checkpoints(epochs: int) -> tuple[int, ...]:
    """Epochs 0, 1, 2, 4, 8, ... and the last: the demo's run is ready for ``track``."""
    marks = {0, epochs}
    mark = 1
    while mark < epochs:
        marks.add(mark)
        mark *= 2
    return tuple(sorted(marks))


def analyze_state(
    config: TrainConfig,
    checkpoint: str | os.PathLike[str],
    settings: DemoSettings,
    data: Any = None,
    progress: bool = False,
) -> dict[str, Any]:
    """One state of the demo: its analysis and its train / test evaluation, as plain data.

    Args:
        config: the training run's configuration (model, data, seed).
        checkpoint: the state's weights.
        settings: the demo's settings (samples and analysis options).
        data: the run's data bundle; None: loaded from ``config`` (in a second process).
        progress: progress bars on stderr.

    Returns:
        ``{"analysis": Analysis.to_dict(), "evaluation": {"train": ..., "test": ...}}``.
    """
    from hessian_powerlaw.training import load_config_data, load_model_state

    if data is None:
        data = load_config_data(config)
    batches = data.hessian_batches(settings.samples, None, settings.seed)
    model = load_model_state(config.model, data, checkpoint, config.seed)
    analysis = analyze(model, data.loss, batches, settings.options(), progress=progress)
    evaluation = {split: dict(data.evaluate(model, split)) for split in ("train", "test")}
    return {"analysis": analysis.to_dict(), "evaluation": evaluation}


def analyze_states(
    config: TrainConfig,
    files: Mapping[str, str | os.PathLike[str]],
    settings: DemoSettings,
    data: Any,
    progress: bool = False,
) -> dict[str, dict[str, Any]]:
    """:func:`analyze_state` of each state, side by side when torch has a thread for each.

    With ``t >= 2`` torch threads, the first state runs in a spawned process with ``t // 2``
    threads while this process takes the second with the rest, and the others follow in
    this process. Two single-thread solves on two cores finish sooner than the same solves one
    after the other with two threads each: a LeNet's products (small convolutions) and the
    solver's memory-bound Gram-Schmidt gain less than 2x from a second thread (measured in
    docs/benchmarks.md, "The demo's two spectra": 1.44x). The second process has no progress
    bar; a line says which state runs there, and another when this process waits for it.
    """
    import torch

    names = list(files)
    threads = torch.get_num_threads()
    if threads < 2 or len(names) < 2:
        return {
            name: analyze_state(config, files[name], settings, data, progress=progress)
            for name in names
        }
    from hessian_powerlaw._processes import spawn_pool

    aside = names[0]
    if progress:
        print(f"{aside}: analysed in a second process beside the others", file=sys.stderr)
    states: dict[str, dict[str, Any]] = {}
    with spawn_pool(1, threads // 2) as pool:
        future = pool.submit(analyze_state, config, str(files[aside]), settings)
        torch.set_num_threads(threads - threads // 2)
        try:
            for name in names[1:]:
                states[name] = analyze_state(config, files[name], settings, data, progress)
        finally:
            torch.set_num_threads(threads)
        if progress and not future.done():
            print(f"waiting for {aside} (second process)", file=sys.stderr)
        states[aside] = future.result()
    return {name: states[name] for name in names}


def run_demo(
    out: str | os.PathLike[str] = "results/demo",
    *,
    quick: bool = False,
    settings: DemoSettings | None = None,
    progress: bool = False,
) -> DemoResult:
    """Train a LeNet, analyse its random-init and trained Hessians, write the outputs.

    ``OUT`` receives ``demo.json``, ``demo.png`` (the paper's test: both rank plots with their
    fits, and d_ks against d_c with the paper's values), one rank plot per state,
    ``report.html`` and the training run folder ``run/``; everything appears at once when the
    demo finishes (``io.staged_dir``), nothing if it fails or is interrupted: not even ``OUT``
    itself when this call created it.

    With two or more torch threads the two states are analysed side by side, the first in a
    spawned process (:func:`analyze_states`): a script that calls this needs the usual
    ``if __name__ == "__main__":`` guard of :mod:`multiprocessing`.

    Args:
        out: the output folder ``OUT``.
        quick: the quick preset (digits, K = 60) instead of the default (MNIST, K = 1000).
        settings: a preset of one's own (:class:`DemoSettings`), instead of either.
        progress: progress bars on stderr.

    Returns:
        The :class:`DemoResult` written to ``demo.json``.

    Raises:
        UserInputError: the data is missing or ``OUT`` cannot be written.
    """
    from hessian_powerlaw.io import staged_dir
    from hessian_powerlaw.report.html import write_report
    from hessian_powerlaw.report.outputs import write_demo_figures
    from hessian_powerlaw.training import TrainConfig, load_config_data, train

    chosen = settings or DEMO_PRESETS["quick" if quick else "default"]
    start = time.perf_counter()
    with staged_dir(out, remove_new_on_failure=True) as stage:
        config = TrainConfig(
            model=chosen.model, data=chosen.data, epochs=chosen.epochs,
            batch_size=chosen.batch_size, seed=chosen.seed,
            checkpoint_epochs=demo_checkpoints(chosen.epochs),
        )  # fmt: skip
        data = load_config_data(config)
        if chosen.warmup_epochs:
            steps = chosen.warmup_epochs * data.steps_per_epoch(chosen.batch_size)
            config = dataclasses.replace(config, warmup_steps=steps)
        trained = train(config, stage / "run", progress=progress, data=data)
        batches = data.hessian_batches(chosen.samples, None, chosen.seed)
        num_samples = sum(int(b[1].shape[0]) for b in batches)
        # the run's own step 0 (its initial weights) and its end
        files = {"random init": stage / "run" / "ckpt-0.pt", "trained": stage / "run" / "final.pt"}
        states = analyze_states(config, files, chosen, data, progress=progress)
        training = {
            "epochs": config.epochs, "steps": trained.steps, "batch_size": config.batch_size,
            "optimizer": config.optimizer, "lr": config.lr, "seconds": trained.seconds,
            "warmup_steps": config.warmup_steps,
            # final metrics, less their "lr" (the last scheduled rate, not the base rate)
            **{k: v for k, v in trained.final_metrics.items() if k != "lr"},
        }  # fmt: skip
        table = demo_table(states, chosen.model)
        agreement, verdict, notes = demo_verdict(table, chosen.k)
        result = DemoResult(
            out=str(out), model=chosen.model, data=chosen.data, num_samples=num_samples,
            training=training, states=states, table=table, settings=chosen,
            versions=versions(), seconds=time.perf_counter() - start,
            paper={name: paper_cells(name) for name in STATES},
            agreement=agreement, finding=finding_line(agreement), verdict=verdict, notes=notes,
        )  # fmt: skip
        record = result.to_dict()
        atomic_write_json(stage / "demo.json", record)
        write_demo_figures(record, stage)
        write_report(stage, title="hessian-powerlaw demo: random init vs trained LeNet")
    return result
