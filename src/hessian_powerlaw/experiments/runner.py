"""The shared runner: train, analyse and summarize the conditions of an experiment.

For an experiment at a scale, written to ``OUT``::

    OUT/runs/<scale>/<run>/          training runs (training.train: resumable, checkpointed)
    OUT/analyses/<scale>/<label>.json one condition's result, reused when its settings match
    OUT/results.json                  every condition's result, the summary and the verdict
    OUT/table.md                      our numbers next to the paper's
    OUT/<figure>.png                  the experiment's figures

Rerunning skips finished work: a finished run is not retrained (``train`` returns it as is),
a condition whose analysis file holds the same settings is not recomputed, and tracked runs
reuse the checkpoints already in their ``track.json``. ``results.json``, ``table.md`` and the
figures appear together when the experiment finishes (``io.staged_dir``).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hessian_powerlaw._results import ResultMixin, to_jsonable
from hessian_powerlaw.errors import UserInputError
from hessian_powerlaw.experiments.base import Condition, Experiment, Scale, Summary
from hessian_powerlaw.io import (
    atomic_write_json,
    atomic_write_text,
    ensure_writable_dir,
    staged_dir,
)
from hessian_powerlaw.protocols import DataBundle

if TYPE_CHECKING:
    from torch import nn

RESULTS_FILE = "results.json"
TABLE_FILE = "table.md"


@dataclass(frozen=True)
class ExperimentResult(ResultMixin):
    """``OUT/results.json``: the experiment, its scale, every condition and the summary.

    ``seconds`` is this call's wall time (short when earlier results were reused);
    ``compute_seconds`` the time the numbers took to compute: the recorded time of every
    condition (training and analysis, whenever it ran) plus this call's summary and figures.
    ``agreement`` is the verdict's computed headline ("agrees", "partly agrees", "disagrees",
    "not compared"); ``settings`` says what ran (models, data, training, Hessian, spectra),
    computed from the conditions; ``notes`` are the experiment's notes on where this scale
    departs from the paper's settings and why.
    """

    experiment: str
    title: str
    claim: str
    scale: str
    scale_settings: Scale
    command: str
    out: str
    conditions: list[dict[str, Any]]
    rows: list[dict[str, Any]]
    columns: list[list[str]]
    correlations: list[dict[str, Any]]
    findings: dict[str, Any]
    verdict: str
    figures: list[str]
    paper: list[dict[str, Any]]
    seconds: float
    compute_seconds: float
    versions: dict[str, str]
    kind: str = field(default="reproduce")
    agreement: str = "not compared"
    settings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def command_for(name: str, scale: str) -> str:
    """The command line that reproduces ``name`` at ``scale``."""
    option = {"quick": " --quick", "cpu": "", "paper": " --scale paper"}[scale]
    return f"hessian-powerlaw reproduce {name}{option}"


# --------------------------------------------------------------------------------------
# One condition
# --------------------------------------------------------------------------------------


class DataCache:
    """Data bundles loaded once per experiment, keyed by the fields that define them."""

    def __init__(self) -> None:
        self._bundles: dict[str, Any] = {}

    def get(self, condition: Condition) -> Any:
        """The data bundle of ``condition``, loaded on first use."""
        from hessian_powerlaw.training import load_config_data

        c = condition.config
        key = json.dumps(
            [c.data, c.data_dir, c.subset, c.label_noise, c.random_labels, c.gaussian_inputs,
             c.normalize, c.seed, c.model if c.data.partition(":")[0] in ("shakespeare", "text")
             else None]
        )  # fmt: skip
        if key not in self._bundles:
            self._bundles[key] = load_config_data(c)
        return self._bundles[key]


def _fingerprint(condition: Condition) -> dict[str, Any]:
    """What a condition's result depends on: reusing a result needs the same fingerprint."""
    return to_jsonable(
        {
            "config": condition.config.identity(),
            "hessian": condition.hessian,
            "trained": condition.trained,
            "track": condition.track,
        }
    )


def _read_cached(path: Path, fingerprint: dict[str, Any]) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        stored = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # a damaged file is recomputed, never trusted
    if stored.get("fingerprint") != fingerprint:
        return None
    return stored.get("result")


def cached_result(condition: Condition, cache_dir: Path) -> dict[str, Any] | None:
    """The condition's stored result under ``cache_dir``, or ``None`` when it must be computed.

    A result is reused only when it was computed with the same settings (its fingerprint).
    """
    return _read_cached(cache_dir / f"{condition.label}.json", _fingerprint(condition))


def compute_condition(
    condition: Condition,
    runs_dir: Path,
    cache_dir: Path,
    *,
    data_cache: DataCache | None = None,
    device: str | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """:func:`run_condition`, its result stored under ``cache_dir`` for :func:`cached_result`."""
    result = run_condition(
        condition, runs_dir, data_cache=data_cache, device=device, progress=progress
    )
    atomic_write_json(
        cache_dir / f"{condition.label}.json",
        {"fingerprint": _fingerprint(condition), "result": result},
    )
    return result


def condition_dirs(folder: Path, scale: Scale) -> tuple[Path, Path]:
    """(runs folder, analyses folder) of an experiment's output ``folder`` at ``scale``."""
    return folder / "runs" / scale.name, folder / "analyses" / scale.name


def _analyse_state(
    condition: Condition, model: nn.Module, data: DataBundle, device: str | None, progress: bool
) -> dict[str, dict[str, Any]]:
    """``{group label: Analysis dict}`` of one model state (one group, or one per block)."""
    from hessian_powerlaw.analysis import analyze_groups

    h = condition.hessian
    batches = data.hessian_batches(h.samples, h.batch_size, h.seed, split=h.split)
    if device is not None:
        model = model.to(device)
    analyses = analyze_groups(model, data.loss, batches, h.params, h.options(), device=device,
                              progress=progress)  # fmt: skip
    return {label: a.to_dict() for label, a in analyses.items()}


def _num_samples(data: DataBundle, condition: Condition) -> int:
    h = condition.hessian
    batches = data.hessian_batches(h.samples, h.batch_size, h.seed, split=h.split)
    return sum(int(b[1].shape[0]) for b in batches)


def run_condition(
    condition: Condition,
    runs_dir: Path,
    *,
    data_cache: DataCache | None = None,
    device: str | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Train (unless ``trained=False``) and analyse one condition; a JSON-ready dict.

    The dict holds ``label``, ``group``, ``values``, ``paper``, ``config``, ``hessian``,
    ``trained``, ``training`` (final metrics, steps, seconds; ``None`` for random init),
    ``evaluation`` (train/test loss and accuracy of the analysed state), ``num_samples``,
    ``analyses`` (``{group: Analysis dict}``; one entry unless per-block), ``track`` (the
    ``track.json`` dict for tracked conditions) and ``seconds``.
    """
    from hessian_powerlaw.analysis import evaluate_model
    from hessian_powerlaw.training import load_model_state, train

    start = time.perf_counter()
    cache = data_cache or DataCache()
    data = cache.get(condition)
    config = condition.config
    run_dir = runs_dir / condition.run_name
    training = None
    if condition.trained:
        result = train(config, run_dir, progress=progress, data=data, device=device)
        training = {"steps": result.steps, "epochs": result.epochs, "seconds": result.seconds,
                    **result.final_metrics}  # fmt: skip
    record: dict[str, Any] = {
        "label": condition.label,
        "group": condition.group,
        "values": dict(condition.values),
        "paper": condition.paper,
        "config": config.to_dict(),
        "hessian": condition.hessian.to_dict(),
        "trained": condition.trained,
        "run": str(run_dir) if condition.trained else None,
        "training": training,
        "num_samples": _num_samples(data, condition),
        "analyses": {},
        "track": None,
    }
    if condition.track:
        record["track"] = _track(condition, run_dir, progress)
        last = record["track"]["entries"][-1]
        record["analyses"] = {last["analysis"]["params"]: last["analysis"]}
        record["evaluation"] = {
            "train": {"loss": last["train_loss"], "accuracy": last["train_accuracy"]},
            "test": {"loss": last["test_loss"], "accuracy": last["test_accuracy"]},
        }
    else:
        weights = run_dir / "final.pt" if condition.trained else None
        model = load_model_state(config.model, data, weights, config.seed)
        record["analyses"] = _analyse_state(condition, model, data, device, progress)
        record["evaluation"] = evaluate_model(model.cpu(), data)
    record["seconds"] = time.perf_counter() - start
    return record


def _track(condition: Condition, run_dir: Path, progress: bool) -> dict[str, Any]:
    from hessian_powerlaw.tracking import track_run

    h = condition.hessian
    result = track_run(run_dir, h.options(), params=h.params, progress=progress, figures=False)
    return result.to_dict()


# --------------------------------------------------------------------------------------
# One experiment
# --------------------------------------------------------------------------------------


def run_experiment(
    experiment: Experiment,
    scale: Scale,
    out: str | os.PathLike[str],
    *,
    device: str | None = None,
    progress: bool = False,
    log: Any = None,
) -> ExperimentResult:
    """Run every condition of ``experiment`` at ``scale`` into ``out`` and write the outputs.

    ``log`` (a callable taking a string) hears one line per finished condition.
    """
    from hessian_powerlaw.analysis import versions
    from hessian_powerlaw.experiments.paper import PAPER_ROWS
    from hessian_powerlaw.experiments.tables import markdown_report, settings_lines

    start = time.perf_counter()
    folder = ensure_writable_dir(out)
    conditions = experiment.conditions_at(scale)
    runs_dir, cache_dir = condition_dirs(folder, scale)
    data_cache = DataCache()
    results: list[dict[str, Any]] = []
    for condition in conditions:
        result = cached_result(condition, cache_dir)
        if result is None:
            result = compute_condition(condition, runs_dir, cache_dir, data_cache=data_cache,
                                       device=device, progress=progress)  # fmt: skip
        results.append(result)
        if log is not None:
            log(f"{experiment.name}: {condition.label} done ({result['seconds']:.1f} s)")
    summary_start = time.perf_counter()
    summary: Summary = experiment.summarize(scale, results)
    paper_rows = [to_jsonable(row) for row in PAPER_ROWS.get(experiment.name, ())]
    with staged_dir(folder) as stage:
        figures = _write_figures(summary, stage)
        result_obj = ExperimentResult(
            experiment=experiment.name,
            title=experiment.title,
            claim=experiment.claim,
            scale=scale.name,
            scale_settings=scale,
            command=command_for(experiment.name, scale.name),
            out=str(folder),
            conditions=results,
            rows=summary.rows,
            columns=[list(c) for c in summary.columns],
            correlations=summary.correlations,
            findings=summary.findings,
            verdict=summary.verdict,
            figures=figures,
            paper=paper_rows,
            seconds=time.perf_counter() - start,
            compute_seconds=sum(float(r["seconds"]) for r in results)
            + time.perf_counter()
            - summary_start,
            versions=versions(),
            agreement=summary.agreement,
            settings=settings_lines(results),
            notes=list(experiment.notes_at(scale)),
        )
        record = result_obj.to_dict()
        atomic_write_json(stage / RESULTS_FILE, record)
        atomic_write_text(stage / TABLE_FILE, markdown_report(record))
    return result_obj


def _write_figures(summary: Summary, stage: Path) -> list[str]:
    from hessian_powerlaw.report.plots import save_png

    names = []
    for stem, draw in summary.figures.items():
        save_png(draw(), stage / f"{stem}.png")
        names.append(f"{stem}.png")
    return names


def load_results(out: str | os.PathLike[str]) -> dict[str, Any]:
    """Read ``OUT/results.json`` back (UserInputError when it is missing or damaged)."""
    path = Path(out) / RESULTS_FILE
    if not path.is_file():
        raise UserInputError(
            f"{str(path)!r} does not exist; run `hessian-powerlaw reproduce NAME --out {out}`"
        )
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise UserInputError(f"{str(path)!r} is not valid JSON: {exc}") from None
