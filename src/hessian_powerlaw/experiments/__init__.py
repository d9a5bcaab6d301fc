"""``hessian-powerlaw reproduce``: the paper's experiments as configurations of the library.

``EXPERIMENTS`` maps each experiment name (the CLI argument) to its
:class:`~hessian_powerlaw.experiments.base.Experiment`; :func:`run_experiment` runs one at a
scale ("quick", "cpu", "paper") and :func:`write_docs` turns the results into
``docs/reproduction.md``. The paper's published numbers live in
:mod:`hessian_powerlaw.experiments.paper`; :mod:`hessian_powerlaw.experiments.budget` counts
the spectra of each experiment at a scale and estimates its time (``reproduce --plan``).
"""

from __future__ import annotations

from hessian_powerlaw.errors import UserInputError
from hessian_powerlaw.experiments.base import (
    SCALES,
    Condition,
    Experiment,
    HessianSettings,
    Scale,
    Summary,
    get_scale,
)
from hessian_powerlaw.experiments.image import EXPERIMENTS_IMAGE
from hessian_powerlaw.experiments.llm import EXPERIMENTS_LLM
from hessian_powerlaw.experiments.runner import ExperimentResult, load_results, run_experiment

EXPERIMENTS: dict[str, Experiment] = {e.name: e for e in (*EXPERIMENTS_IMAGE, *EXPERIMENTS_LLM)}


def get_experiment(name: str) -> Experiment:
    """The experiment called ``name``; UserInputError listing the names otherwise."""
    if name not in EXPERIMENTS:
        raise UserInputError(
            f"unknown experiment {name!r}; choose one of {', '.join(EXPERIMENTS)} or 'all'"
        )
    return EXPERIMENTS[name]


__all__ = [
    "EXPERIMENTS",
    "SCALES",
    "Condition",
    "Experiment",
    "ExperimentResult",
    "HessianSettings",
    "Scale",
    "Summary",
    "get_experiment",
    "get_scale",
    "load_results",
    "run_experiment",
]
