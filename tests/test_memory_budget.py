"""The memory budget of ``top_eigenpairs``: which method it picks, and that the lean method
(the basis without its products) certifies the same eigenpairs against the explicit Hessian."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hessian_powerlaw.errors import UserInputError
from hessian_powerlaw.operators import HessianOperator
from hessian_powerlaw.solvers import top_eigenpairs
from hessian_powerlaw.solvers.memory import block_lanczos_bytes, parse_bytes
from tests.reference import digits_mlp, explicit_hessian


@pytest.fixture(scope="module")
def problem() -> tuple[HessianOperator, torch.Tensor, np.ndarray]:
    model, criterion, batches = digits_mlp(hidden=16, n_samples=200, num_batches=2, train_steps=100)
    H = explicit_hessian(model, criterion, batches)
    return HessianOperator(model, criterion, batches), H, torch.linalg.eigvalsh(H).flip(0).numpy()


def _budgets(n: int, k: int, p: int = 4) -> tuple[int, int]:
    """(full, lean) bytes of the default basis for k, as top_eigenpairs plans them."""
    k_want = k + max(p, int(np.ceil(0.1 * k)))
    capacity = min(max(2 * k_want, k_want + 4 * p) + p, n)
    return (
        block_lanczos_bytes(n, capacity, k_want, p, 8, lean=False),
        block_lanczos_bytes(n, capacity, k_want, p, 8, lean=True),
    )


def test_default_budget_keeps_the_products(problem) -> None:
    op, _, _ = problem
    spec = top_eigenpairs(op, k=10)
    assert spec.method == "block-lanczos"
    assert spec.memory_bytes is not None and spec.memory_bytes > 0


@pytest.mark.parametrize("shrink", [False, True])
def test_lean_solve_is_certified_by_true_residuals(problem, shrink: bool) -> None:
    op, H, evals = problem
    k = 40
    full, lean = _budgets(op.n, k)
    # between lean and full: the basis alone; below lean: a smaller basis as well
    budget = (lean + full) // 2 if not shrink else lean - (full - lean) // 4
    spec = top_eigenpairs(op, k=k, tol=1e-9, return_vectors=True, memory_budget=budget)
    assert spec.method == "block-lanczos-lean"
    assert spec.memory_bytes <= budget
    assert spec.all_converged
    assert np.abs(spec.eigenvalues - evals[:k]).max() / abs(evals[0]) <= 1e-8
    # the reported residuals are the true ones: from products of the returned vectors
    V = torch.as_tensor(spec.eigenvectors)
    true = torch.linalg.vector_norm(H @ V - V * torch.as_tensor(spec.eigenvalues), dim=0)
    assert np.allclose(spec.residuals * spec.scale, true.numpy(), rtol=1e-6, atol=1e-13)
    # the certificates cost k products more than the iteration's own
    full_spec = top_eigenpairs(op, k=k, tol=1e-9)
    assert spec.num_matvecs >= full_spec.num_matvecs


def test_lean_solve_reports_unconverged_pairs_when_the_budget_runs_out(problem) -> None:
    op, _, _ = problem
    _, lean = _budgets(op.n, 30)
    spec = top_eigenpairs(op, k=30, tol=1e-12, max_matvecs=60, memory_budget=lean)
    assert spec.method == "block-lanczos-lean"
    assert spec.num_matvecs <= 60 and spec.eigenvalues.size == 30
    assert not spec.all_converged


def test_a_budget_nothing_fits_is_one_clear_error_before_any_product(problem) -> None:
    op, _, _ = problem
    before = op.num_matvecs
    with pytest.raises(UserInputError, match=r"memory_budget of .* too small.*--memory"):
        top_eigenpairs(op, k=40, memory_budget="10KiB")
    assert op.num_matvecs == before


@pytest.mark.parametrize(
    ("text", "value"),
    [("4GiB", 4 * 2**30), ("512M", 512 * 2**20), ("1.5 GB", int(1.5 * 2**30)), (1000, 1000)],
)
def test_parse_bytes(text: str | int, value: int) -> None:
    assert parse_bytes(text) == value


@pytest.mark.parametrize("bad", ["lots", "-1GiB", 0, True, "1e3 parsecs"])
def test_parse_bytes_refuses_what_is_not_a_size(bad: object) -> None:
    with pytest.raises(UserInputError, match="memory_budget"):
        parse_bytes(bad)  # type: ignore[arg-type]


def test_a_budget_below_the_basis_falls_back_to_eigenvalues_only(capsys, tmp_path) -> None:
    """n = 100,000, k = 100 in 40 MiB (the smallest lean basis needs 144 MiB): the
    eigenvalues-only mode serves a values-only request, announced before any product; all of
    the top 100 are found once, each within its bound. Asked for eigenvectors, the same
    budget is one clear error before any product."""
    from tests.test_eigenvalues_only import Diagonal, power_law

    n, k, budget = 100_000, 100, 40 * 2**20
    values = power_law(n, top=200)
    op = Diagonal(values)
    spec = top_eigenpairs(op, k=k, tol=1e-8, memory_budget=budget, progress=True)
    assert spec.method == "lanczos-eigenvalues-only"
    assert spec.memory_bytes is not None and spec.memory_bytes <= budget
    assert spec.eigenvectors is None and spec.eigenvalues.size == k
    assert spec.all_converged
    truth = np.sort(values)[::-1][:k]
    bounds = spec.residuals * spec.scale
    assert np.all(np.abs(spec.eigenvalues - truth) <= bounds)
    assert "memory budget: lanczos-eigenvalues-only" in capsys.readouterr().err
    with pytest.raises(UserInputError, match="eigenvalues-only mode.*cannot give eigenvectors"):
        top_eigenpairs(op, k=k, memory_budget=budget, return_vectors=True)
    with pytest.raises(UserInputError, match="eigenvalues-only mode more than that budget"):
        top_eigenpairs(op, k=k, memory_budget="4MiB")
    assert op.num_matvecs == spec.num_matvecs  # the refusals took no product
    # a checkpoint (the spectrum command always asks for one) does not stop the fallback
    state = tmp_path / "state.pt"
    with pytest.warns(UserWarning, match="runs without its checkpoint"):
        again = top_eigenpairs(op, k=20, tol=1e-8, memory_budget=budget, checkpoint=state)
    assert again.method == "lanczos-eigenvalues-only" and not state.exists()
    np.testing.assert_allclose(again.eigenvalues, truth[:20], rtol=1e-7)


def test_spectrum_command_under_a_budget_below_the_basis(tmp_path, capsys) -> None:
    """``spectrum --memory`` too small for any basis: the eigenvalues-only mode runs, says so
    on stderr before the first product, and the JSON records the method and its memory."""
    import json

    from hessian_powerlaw.cli import main

    out = tmp_path / "out"
    argv = ["spectrum", "--model", "fcn:2x100", "--data", "digits", "--k", "10",
            "--samples", "200", "--dtype", "float64", "--memory", "10MiB", "--tol", "1e-4",
            "--trace-matvecs", "0", "--n-boot", "0", "--no-density", "--out", str(out),
            "--json"]  # fmt: skip
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert "memory budget: lanczos-eigenvalues-only" in captured.err
    assert "runs without its checkpoint" in captured.err  # one line, not a Python warning
    spectrum = json.loads((out / "spectrum.json").read_text())
    found = json.dumps(spectrum)
    assert '"method": "lanczos-eigenvalues-only"' in found
    assert '"memory_bytes": ' in found


def test_the_guard_beyond_k_stops_at_a_dense_bulk_edge() -> None:
    """k = 40 at the edge of a dense bulk (20,000 values in [1e-3, 2e-3]): the guard values
    beyond k sit in the bulk and cannot converge to 1e-8. Both solvers stop once the guard
    took 25 % more products than the k values (without that cap: 2,000 and 965 products,
    measured); all k are certified and exact."""
    from hessian_powerlaw.solvers.eigenvalues_only import lanczos_eigenvalues
    from tests.test_eigenvalues_only import Diagonal

    head = 10.0 / np.arange(1, 41)
    values = np.concatenate([head, np.random.default_rng(0).uniform(1e-3, 2e-3, 20_000)])
    block = top_eigenpairs(Diagonal(values), k=40, tol=1e-8)
    values_only = lanczos_eigenvalues(Diagonal(values), k=40, tol=1e-8, memory_budget=40 << 20)
    assert block.num_matvecs <= 200 and values_only.num_matvecs <= 500  # 80 and 351
    for spec in (block, values_only):
        assert spec.all_converged
        np.testing.assert_allclose(spec.eigenvalues, head, rtol=1e-12, atol=0)


def test_eigenvalues_only_needs_float64_products(capsys) -> None:
    """float32 products put the mode's bounds at 1e-5 |lambda_1|, above most of a long top-k
    (fcn:2x1000, K = 1000 under 4 GiB: 142 of 1000 converged after 58 minutes): a float32
    request that only this mode could serve is one clear error before any product."""
    from tests.test_eigenvalues_only import Diagonal, power_law

    op = Diagonal(power_law(100_000, top=200), torch.float32)
    with pytest.raises(UserInputError, match=r"leaves only the eigenvalues-only mode.*need "
                       r"float64 products, not float32; use a float64 operator \(--dtype"):
        top_eigenpairs(op, k=100, memory_budget=40 * 2**20)
    assert op.num_matvecs == 0


def test_spectrum_with_a_memory_budget_defaults_to_float64() -> None:
    """spectrum's dtype: float32 on a CPU, but float64 when --memory is given (the budget may
    leave the eigenvalues-only mode); an explicit --dtype wins."""
    import argparse

    from hessian_powerlaw.options import AnalysisOptions

    def dtype(**flags: object) -> str:
        args = argparse.Namespace(**{"dtype": None, "memory_budget": None, "device": None,
                                     **flags})  # fmt: skip
        return str(AnalysisOptions.from_args(args).dtype)

    assert dtype() == "float32"
    assert dtype(memory_budget="4GiB") == "float64"
    assert dtype(memory_budget="4GiB", dtype="float32") == "float32"
    assert dtype(device="cuda") == "float64"
