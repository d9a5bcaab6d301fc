"""AnalysisOptions: one validated set of options from the command line to the solver."""

from __future__ import annotations

import dataclasses
import inspect
import json

import numpy as np
import pytest
import torch

from hessian_powerlaw import AnalysisOptions, analyze
from hessian_powerlaw.cli import build_parser
from hessian_powerlaw.errors import UserInputError
from hessian_powerlaw.operators import HessianOperator
from hessian_powerlaw.solvers import top_eigenpairs
from tests.reference import digits_mlp


def test_defaults_are_analyzes_and_values_are_normalised() -> None:
    options = AnalysisOptions(dtype=torch.float32, criterion=None)
    assert options.dtype == "float32" and options.criterion == "relative"
    assert options.torch_dtype is torch.float32
    assert AnalysisOptions().k == 100 and AnalysisOptions().trace_matvecs == 100
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.k = 3  # type: ignore[misc]


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"k": 0}, "k must be an integer >= 1"),
        ({"trace_matvecs": 3}, r"trace_matvecs must be 0 \(no trace\) or >= 6"),
        ({"tol": 2.0}, r"tol must be a number in \(0, 1\)"),
        ({"alpha": 0}, "alpha must be a significance level"),
        ({"dtype": "float16"}, "dtype must be one of"),
        ({"criterion": "absolute"}, "criterion must be one of"),
        ({"which": "middle"}, "which must be one of"),
        ({"samples": 0}, "samples must be an integer >= 1"),
        ({"n_boot": -1}, "n_boot must be an integer >= 0"),
        ({"n_bootstrap": 10}, "unknown option.*n_bootstrap"),
    ],
)
def test_every_option_is_checked_once_with_its_name(values: dict, message: str) -> None:
    with pytest.raises(UserInputError, match=message):
        AnalysisOptions.of(None, **values)


def test_solver_and_operator_options_are_what_they_are_passed_to() -> None:
    """A field marked "solver" or "operator" must be a parameter of what it is passed to:
    adding an option is one field, and this test says where it went wrong."""
    options = AnalysisOptions(k=7, tol=1e-4, block_size=2, seed=3, dtype="float32")
    solver = options.solver_kwargs()
    marked = {f.name for f in dataclasses.fields(options) if f.metadata.get("to") == "solver"}
    assert set(solver) == marked and {"k", "tol", "criterion", "seed", "max_matvecs"} <= marked
    assert (solver["k"], solver["tol"], solver["block_size"], solver["seed"]) == (7, 1e-4, 2, 3)
    assert set(solver) <= set(inspect.signature(top_eigenpairs).parameters)
    assert options.operator_kwargs() == {"dtype": torch.float32}
    assert set(options.operator_kwargs()) <= set(inspect.signature(HessianOperator).parameters)
    assert options.solver_kwargs(criterion="norm")["criterion"] == "norm"


def test_of_replaces_and_keeps_defaults_apart() -> None:
    base = AnalysisOptions(k=20, dtype="float32")
    assert AnalysisOptions.of(base) is base
    assert AnalysisOptions.of(base, k=5) == dataclasses.replace(base, k=5)
    # the caller's defaults only apply when no options are given
    assert AnalysisOptions.of(None, defaults={"density": True}).density is True
    assert AnalysisOptions.of(base, defaults={"density": True}).density is False
    assert AnalysisOptions.of(None, defaults={"k": 50}, k=9).k == 9


def test_the_command_line_builds_the_options_from_its_flags() -> None:
    parser = build_parser()
    args = parser.parse_args(["spectrum", "--model", "lenet", "--data", "digits", "--k", "12",
                              "--tol", "1e-4", "--criterion", "norm", "--no-density",
                              "--samples", "300", "--trace-matvecs", "0"])  # fmt: skip
    options = AnalysisOptions.from_args(args)
    # spectrum's one default of its own: float32 products (the paper-scale benchmark's choice)
    assert options == AnalysisOptions(k=12, tol=1e-4, criterion="norm", density=False,
                                      samples=300, trace_matvecs=0, dtype="float32")  # fmt: skip
    # flags and library share their defaults: no flag given is the library's default
    args = parser.parse_args(["track", "RUN"])
    assert AnalysisOptions.from_args(args) == AnalysisOptions()


def test_every_analysis_records_its_options() -> None:
    model, criterion, batches = digits_mlp(n_samples=100, num_batches=1)
    options = AnalysisOptions(k=10, trace_matvecs=0, n_boot=0, block_size=3)
    result = analyze(model, criterion, batches, options)
    record = json.loads(json.dumps(result.to_dict()))
    assert record["config"] == {**options.to_dict(), "tol": 1e-3}  # the solver's default tol
    # the keyword form builds the same options
    again = analyze(model, criterion, batches, k=10, trace_matvecs=0, n_boot=0, block_size=3)
    np.testing.assert_array_equal(again.eigenvalues, result.eigenvalues)
    assert again.config == result.config


@pytest.mark.parametrize(
    ("device", "dtype"),
    [(None, "float32"), ("cpu", "float32"), ("cuda", "float64"), ("cuda:1", "float64")],
)
def test_spectrum_products_are_float32_on_a_cpu_and_float64_on_a_gpu(device, dtype) -> None:
    from hessian_powerlaw.options import spectrum_dtype

    assert spectrum_dtype(device) == dtype
    argv = ["spectrum", "--model", "lenet", "--data", "digits"]
    argv += ["--device", device] if device else []
    args = build_parser().parse_args(argv)
    assert args.dtype is None and AnalysisOptions.from_args(args).dtype == dtype
