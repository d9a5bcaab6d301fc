"""Conditions of several experiments computed side by side, in worker processes.

``reproduce all`` at the cpu scale computes about fifty K = 1000 spectra. One after the
other they would take most of a day on a 2-core machine; two workers with one torch thread
each finish them in a little over half the time of one process with two threads (a LeNet
spectrum: 952 s on one thread, 660 s on two; docs/benchmarks.md). :func:`compute_pending`
computes every condition whose result is not stored yet and stores it where
:func:`~hessian_powerlaw.experiments.runner.run_experiment` finds it, which then only
summarises.

The unit of work is a *group*: the conditions of one experiment that share a training run
(the run folder is written by one process only), or one untrained condition. A condition with
the same settings as one stored or pending for another experiment is left out: the runner
copies its result (:class:`~hessian_powerlaw.experiments.runner.StoredResults`). Groups start
longest first by the budget's estimate (:mod:`hessian_powerlaw.experiments.budget`), so the
long tracked runs do not start last and leave one worker idle at the end.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass
from pathlib import Path

from hessian_powerlaw.experiments import budget
from hessian_powerlaw.experiments.base import Condition, Experiment, Scale
from hessian_powerlaw.experiments.runner import (
    DataCache,
    StoredResults,
    compute_condition,
    condition_dirs,
    condition_key,
)


@dataclass(frozen=True)
class Group:
    """Conditions of one experiment that one worker computes in order."""

    experiment: str
    conditions: tuple[Condition, ...]
    runs_dir: Path
    cache_dir: Path
    minutes: float

    @property
    def name(self) -> str:
        """``experiment: label, label`` for the log."""
        return f"{self.experiment}: {', '.join(c.label for c in self.conditions)}"


def pending_groups(
    jobs: Sequence[tuple[Experiment, Path]], scale: Scale, shared: Sequence[Path] = ()
) -> list[Group]:
    """The groups with a condition to compute, longest first.

    Args:
        jobs: each experiment with its output folder (as given to ``run_experiment``).
        scale: the scale they run at.
        shared: more analyses folders whose results stand in for conditions of equal settings.

    Returns:
        One :class:`Group` per training run (or untrained condition) whose conditions are not
        all stored; its ``minutes`` is the budget's estimate of what is left of it. A
        condition stored for another job, or pending in an earlier group, is in no group.
    """
    stored = StoredResults([*(condition_dirs(folder, scale)[1] for _, folder in jobs), *shared])
    claimed: set[str] = set()
    groups: list[Group] = []
    for experiment, folder in jobs:
        runs_dir, cache_dir = condition_dirs(folder, scale)
        members: dict[str, list[Condition]] = {}
        for condition in experiment.conditions_at(scale):
            key = condition_key(condition)
            if key in claimed or key in stored:
                continue
            claimed.add(key)
            run = f"run:{condition.run_name}" if condition.trained else f"init:{condition.label}"
            members.setdefault(run, []).append(condition)
        for conditions in members.values():
            groups.append(Group(experiment.name, tuple(conditions), runs_dir, cache_dir,
                                _minutes(conditions)))  # fmt: skip
    return sorted(groups, key=lambda g: -g.minutes)


def _minutes(conditions: Sequence[Condition]) -> float:
    """The budget's mid estimate of a group: its one training run (if any) and its spectra."""
    first = conditions[0]
    training = budget.train_minutes(first.config) if first.trained else 0.0
    return training + sum(sum(budget.spectrum_minutes(c)) / 2 for c in conditions)


def compute_group(group: Group, device: str | None = None) -> float:
    """Compute and store each condition of ``group`` (in a worker); its seconds."""
    start = time.perf_counter()
    data_cache = DataCache()
    for condition in group.conditions:
        compute_condition(condition, group.runs_dir, group.cache_dir, data_cache=data_cache,
                          device=device)  # fmt: skip
    return time.perf_counter() - start


def compute_pending(
    jobs: Sequence[tuple[Experiment, Path]],
    scale: Scale,
    *,
    workers: int,
    threads: int,
    device: str | None = None,
    log: Callable[[str], None] | None = None,
    shared: Sequence[Path] = (),
) -> int:
    """Compute every condition of ``jobs`` not stored yet, ``workers`` groups at a time.

    Each worker is a spawned process with ``threads`` torch threads and no progress bars
    (two bars on one terminal garble each other); ``log`` hears a line when a group starts
    and when it ends, with its time. ``shared``: as for :func:`pending_groups`. The first
    error in a worker stops the others' queued groups (those running finish, and what they
    stored stays stored) and is raised here.

    Returns:
        The number of groups computed.
    """
    from hessian_powerlaw._processes import spawn_pool

    groups = pending_groups(jobs, scale, shared)
    say = log or (lambda line: None)
    if not groups:
        return 0
    say(f"{len(groups)} groups of conditions to compute, {workers} at a time with "
        f"{threads} torch thread{'s' * (threads != 1)} each")  # fmt: skip
    queue = list(groups)
    running: dict[Future[float], Group] = {}
    done = 0
    with spawn_pool(workers, threads) as pool:
        try:
            while queue or running:
                while queue and len(running) < workers:
                    group = queue.pop(0)
                    say(f"[start] {group.name} (estimate {group.minutes:.0f} min)")
                    running[pool.submit(compute_group, group, device)] = group
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in finished:
                    group = running.pop(future)
                    seconds = future.result()
                    done += 1
                    say(f"[{done}/{len(groups)}] {group.name} done ({seconds:.0f} s)")
        except BaseException:
            for future in running:
                future.cancel()
            raise
    return done
