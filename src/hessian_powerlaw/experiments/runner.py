"""The shared runner: train, analyse and summarize the conditions of an experiment.

For an experiment at a scale, written to ``OUT``::

    OUT/runs/<scale>/<run>/          training runs (training.train: resumable, checkpointed)
    OUT/analyses/<scale>/<label>.json one condition's result, reused when its settings match
    OUT/results.json                  every condition's result, the summary and the verdict
    OUT/table.md                      our numbers next to the paper's
    OUT/<figure>.png                  the experiment's figures

Rerunning skips finished work: a finished run is not retrained (``train`` returns it as is),
a condition whose analysis file holds the same settings is not recomputed, and tracked runs
reuse the checkpoints already in their ``track.json``. Experiments share conditions too: the
FCN of Table 1 is also the optimizer sweep's SGD run, the batch-size sweep's batch 128, width
100 and depth 2. A condition with the same settings as one already stored for another
experiment (:class:`StoredResults`) is copied from it, not computed again. ``results.json``,
``table.md`` and the figures appear together when the experiment finishes (``io.staged_dir``).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable
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
    ``machine`` says where the conditions were computed (``"NVIDIA H200 GPU"``, ``"2-core
    CPU"``; several, comma-separated, when they were computed in different places).
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
    machine: str = ""


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


def _read_stored(path: Path) -> dict[str, Any] | None:
    """A stored ``{"fingerprint", "result"}`` file, or ``None`` when missing or damaged."""
    if not path.is_file():
        return None
    try:
        stored = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # a damaged file is recomputed, never trusted
    if not isinstance(stored, dict) or not isinstance(stored.get("fingerprint"), dict):
        return None
    result = stored.get("result")
    return stored if isinstance(result, dict) and "seconds" in result else None


def _read_cached(path: Path, fingerprint: dict[str, Any]) -> dict[str, Any] | None:
    stored = _read_stored(path)
    if stored is None or stored.get("fingerprint") != fingerprint:
        return None
    return stored["result"]


def cached_result(condition: Condition, cache_dir: Path) -> dict[str, Any] | None:
    """The condition's stored result under ``cache_dir``, or ``None`` when it must be computed.

    A result is reused only when it was computed with the same settings (its fingerprint).
    """
    return _read_cached(result_path(condition, cache_dir), _fingerprint(condition))


def _key(fingerprint: dict[str, Any]) -> str:
    return json.dumps(fingerprint, sort_keys=True)


def condition_key(condition: Condition) -> str:
    """Equal for two conditions exactly when one's result can stand for the other's."""
    return _key(_fingerprint(condition))


class StoredResults:
    """Every condition result stored in some analyses folders, found by its settings.

    Built from the folders' files once; :meth:`add` records what is computed afterwards.
    Only a file whose fingerprint equals the condition's is ever used.
    """

    def __init__(self, cache_dirs: Iterable[Path] = ()) -> None:
        self._paths: dict[str, Path] = {}
        copies: dict[str, Path] = {}
        for folder in cache_dirs:
            for path in sorted(Path(folder).glob("*.json")):
                stored = _read_stored(path)
                if stored is None:
                    continue
                # a copy stands in only where the original is gone
                copied = bool(stored["result"].get("reused_from"))
                (copies if copied else self._paths).setdefault(_key(stored["fingerprint"]), path)
        for key, path in copies.items():
            self._paths.setdefault(key, path)

    def __contains__(self, key: str) -> bool:
        return key in self._paths

    def add(self, condition: Condition, path: Path) -> None:
        """Record that ``condition``'s result (an original, not a copy) is stored at ``path``."""
        self._paths[condition_key(condition)] = path

    def reuse(self, condition: Condition, cache_dir: Path) -> dict[str, Any] | None:
        """A stored result of ``condition``'s settings, or ``None`` when there is none.

        The result is relabelled as ``condition``'s and stored under ``cache_dir``. The copy
        keeps the numbers and the training record, takes the condition's own label, group,
        swept values and paper row, and counts no seconds (``reused_from`` names the source,
        ``reused_seconds`` its time), so no experiment's time counts a spectrum twice.
        """
        path = self._paths.get(condition_key(condition))
        if path is None:
            return None
        source = _read_cached(path, _fingerprint(condition))
        if source is None:  # changed on disk since it was indexed
            return None
        result = {
            **source,
            "label": condition.label,
            "group": condition.group,
            "values": dict(condition.values),
            "paper": condition.paper,
            "seconds": 0.0,
            "reused_from": source.get("reused_from") or str(path),
            "reused_seconds": float(source.get("reused_seconds") or work_seconds(source)),
        }
        _store(condition, cache_dir, result)
        return result


def result_path(condition: Condition, cache_dir: Path) -> Path:
    """Where ``condition``'s result is stored under the analyses folder ``cache_dir``."""
    return cache_dir / f"{condition.label}.json"


def _store(condition: Condition, cache_dir: Path, result: dict[str, Any]) -> None:
    atomic_write_json(
        result_path(condition, cache_dir),
        {"fingerprint": _fingerprint(condition), "result": result},
    )


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
    _store(condition, cache_dir, result)
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
    ``track.json`` dict for tracked conditions), ``seconds`` and ``machine`` (where it ran).
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
        record["track"] = _track(condition, run_dir, device, progress)
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
    record["machine"] = describe_machine(device)
    return record


def _track(
    condition: Condition, run_dir: Path, device: str | None, progress: bool
) -> dict[str, Any]:
    from hessian_powerlaw.tracking import track_run

    h = condition.hessian
    result = track_run(run_dir, h.options(), params=h.params, device=device, progress=progress,
                       figures=False)  # fmt: skip
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
    stored: StoredResults | None = None,
) -> ExperimentResult:
    """Run every condition of ``experiment`` at ``scale`` into ``out`` and write the outputs.

    ``log`` (a callable taking a string) hears one line per finished condition. A condition
    not stored under ``out`` yet is copied from ``stored`` when that holds one of the same
    settings (another experiment's), else computed and added to ``stored``.
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
    stored = stored if stored is not None else StoredResults()
    for condition in conditions:
        result = cached_result(condition, cache_dir)
        if result is not None and not result.get("reused_from"):
            stored.add(condition, result_path(condition, cache_dir))
        result = result or stored.reuse(condition, cache_dir)
        if result is None:
            result = compute_condition(condition, runs_dir, cache_dir, data_cache=data_cache,
                                       device=device, progress=progress)  # fmt: skip
            stored.add(condition, result_path(condition, cache_dir))
        results.append(result)
        if log is not None:
            done = (f"reused {result['reused_from']}" if result.get("reused_from")
                    else f"{result['seconds']:.1f} s")  # fmt: skip
            log(f"{experiment.name}: {condition.label} done ({done})")
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
            compute_seconds=experiment_seconds(results)
            + time.perf_counter()
            - summary_start,
            versions=versions(),
            agreement=summary.agreement,
            settings=settings_lines(results),
            notes=list(experiment.notes_at(scale)),
            machine=", ".join(
                dict.fromkeys(str(r.get("machine") or "an unrecorded machine") for r in results)
            ),
        )
        record = result_obj.to_dict()
        atomic_write_json(stage / RESULTS_FILE, record)
        atomic_write_text(stage / TABLE_FILE, markdown_report(record))
    return result_obj


def work_seconds(result: dict[str, Any], *, training: bool = True) -> float:
    """The seconds a condition's numbers took to compute, whenever that was.

    A rerun that finds the training finished, or a tracked run that resumes from its
    ``track.json``, takes less time than the work did: then the recorded training time plus
    each analysis' time counts. ``training=False``: the analyses alone (the run's training
    is counted with another condition of the run). A copy of another experiment's condition
    counts 0.
    """
    if result.get("reused_from"):
        return 0.0
    if result.get("track"):
        analyses = [entry["analysis"] for entry in result["track"]["entries"]]
    else:
        analyses = list((result.get("analyses") or {}).values())
    analysed = sum(float(a.get("seconds") or 0.0) for a in analyses)
    if not training:
        return analysed or float(result["seconds"])
    trained = float((result.get("training") or {}).get("seconds") or 0.0)
    return max(float(result["seconds"]), trained + analysed)


def experiment_seconds(results: list[dict[str, Any]]) -> float:
    """:func:`work_seconds` of every condition, each training run counted once."""
    runs: set[str] = set()
    total = 0.0
    for result in results:
        run = result.get("run") if result.get("training") else None
        total += work_seconds(result, training=run not in runs)
        if run is not None:
            runs.add(run)
    return total


def describe_machine(device: str | None) -> str:
    """``"NVIDIA H200 GPU"`` for a CUDA device, else ``"2-core CPU"`` (the cores allowed)."""
    import torch

    if device is not None and torch.device(device).type == "cuda":
        return f"{torch.cuda.get_device_name(torch.device(device))} GPU"
    if device is not None and torch.device(device).type != "cpu":
        return str(device)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{cores}-core CPU"


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
