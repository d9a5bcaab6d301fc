"""The eigenvalues-only mode (#15) against operators with known spectra.

Stated checks: on diagonal operators (a power law ``10 / k`` over a dense bulk, clusters,
exact double eigenvalues, an indefinite spectrum) with a memory budget far below a basis of
``k`` vectors, every wanted eigenvalue is returned, none spurious, and every value flagged
converged lies within its reported bound of a true eigenvalue; the same on the explicit
Hessian of a trained digits MLP; eigenvectors of the second pass have certified residuals;
the memory plan stays within the budget and the measured peak RSS within 10 % of it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import Tensor

from hessian_powerlaw.errors import UserInputError
from hessian_powerlaw.operators import HessianOperator
from hessian_powerlaw.solvers.eigenvalues_only import (
    METHOD,
    _solve,
    lanczos_eigenvalues,
    memory_plan,
)
from tests.reference import digits_mlp, explicit_hessian


class Diagonal:
    """``diag(values)``, duck-typed: only ``n``, ``dtype``, ``device`` and ``matmat``."""

    def __init__(
        self, values: np.ndarray, dtype: torch.dtype = torch.float64, device: str = "cpu"
    ) -> None:
        self.device = torch.device(device)
        self.d = torch.as_tensor(np.asarray(values), dtype=dtype, device=self.device)
        self.n, self.dtype = int(self.d.numel()), dtype
        self.num_matvecs = 0

    def matmat(self, V: Tensor) -> Tensor:
        self.num_matvecs += V.shape[1]
        return self.d[:, None] * V


def power_law(n: int, top: int = 400, seed: int = 0) -> np.ndarray:
    """``10 / k`` for ``k <= top`` over ``n - top`` values uniform in ``[-1e-3, 9e-3]``."""
    rng = np.random.default_rng(seed)
    return np.concatenate([10.0 / np.arange(1, top + 1), rng.uniform(-1e-3, 9e-3, n - top)])


def rows_budget(
    n: int, k: int, rows: int, dtype=torch.float64, vectors: int = 0, max_matvecs=None
) -> int:
    """A budget that leaves ``rows`` vectors for locking beside the working memory."""
    plan = memory_plan(n, k, dtype, memory_budget=1 << 50, vectors=vectors, max_matvecs=max_matvecs)
    isz = torch.empty((), dtype=dtype).element_size()
    return plan.work_bytes + plan.fixed_bytes + (rows + vectors) * n * isz


def solve(op, k, **kwargs):
    kwargs.setdefault("tol", 1e-8)
    kwargs.setdefault("which", "largest")
    kwargs.setdefault("max_matvecs", None)
    kwargs.setdefault("memory_budget", None)
    kwargs.setdefault("seed", 0)
    kwargs.setdefault("progress", False)
    kwargs.setdefault("criterion", "relative")
    kwargs.setdefault("vectors", 0)
    return _solve(op, k, **kwargs)


def assert_bounds_hold(spec, spectrum: np.ndarray) -> None:
    """Each value flagged converged is within its bound of some true eigenvalue."""
    bounds = spec.residuals * spec.scale
    for value, bound, ok in zip(spec.eigenvalues, bounds, spec.converged):
        if ok:
            assert np.min(np.abs(spectrum - value)) <= bound, (value, bound)


def test_power_law_over_a_bulk_within_a_small_budget() -> None:
    """n = 20,000, k = 300, a budget of 40 vectors (a basis of k would need 600+): all 300
    found to 1e-8 relative, none spurious, bounds hold; phase 1 locked the top ones."""
    n, k = 20_000, 300
    values = power_law(n)
    budget = rows_budget(n, k, 40)
    spec, stats = solve(Diagonal(values), k, memory_budget=budget)
    truth = np.sort(values)[::-1][:k]
    assert spec.method == METHOD and spec.eigenvectors is None and spec.k == k
    assert spec.all_converged
    np.testing.assert_allclose(spec.eigenvalues, truth, rtol=1e-8, atol=0)
    assert_bounds_hold(spec, values)
    assert np.all(spec.relative_residuals <= 1e-8)
    assert stats["peak_bytes"] <= budget
    assert 20 <= stats["locked"] <= 40 and stats["phase2_steps"] > 0
    assert spec.num_matvecs <= 12 * k  # measured 6.6 a value
    json.dumps(spec.to_dict(), allow_nan=False)


def test_without_a_budget_ghosts_are_merged_and_spurious_values_removed() -> None:
    """Plain Lanczos (three vectors): the top eigenvalues come back as copies and spurious
    values appear; the result still holds each of the top 60 once, within its bound."""
    values = power_law(10_000, top=200, seed=1)
    # tol 1e-6: a value that grows copies early keeps the first-order bound of its last
    # simple step (module docstring), 2.5e-8 relative for 10/11 here
    spec, stats = solve(Diagonal(values), 60, memory_budget=None, tol=1e-6)
    assert stats["locked"] == 0 and stats["plan"].rows == 0
    assert spec.all_converged
    np.testing.assert_allclose(spec.eigenvalues, np.sort(values)[::-1][:60], rtol=1e-8)
    assert_bounds_hold(spec, values)
    assert stats["ghost_copies"] > 60  # many copies of the top values were merged
    assert stats["spurious_removed"] > 0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_bounds_hold_for_every_converged_value_while_converging(seed: int) -> None:
    """Stopped early by the product budget: the values flagged converged are within their
    bounds, the others are flagged, bounds are finite (JSON-able)."""
    values = power_law(10_000, top=300, seed=seed)
    budget = rows_budget(10_000, 150, 15, max_matvecs=600)
    spec, _ = solve(Diagonal(values), 150, memory_budget=budget, max_matvecs=600)
    assert 0 < spec.num_converged < 150
    assert_bounds_hold(spec, values)
    assert np.all(np.isfinite(spec.residuals))
    json.dumps(spec.to_dict(), allow_nan=False)


def test_clusters_give_every_member_once() -> None:
    """Clusters of four eigenvalues 1e-4 apart (relative) across the top 300."""
    values = power_law(20_000, top=400, seed=2)
    for c in range(10, 300, 30):
        values[c : c + 4] = values[c] * (1 + 1e-4 * np.arange(4))
    spec, _ = solve(Diagonal(values), 300, memory_budget=rows_budget(20_000, 300, 30))
    assert spec.all_converged
    np.testing.assert_allclose(spec.eigenvalues, np.sort(values)[::-1][:300], rtol=1e-8)
    assert_bounds_hold(spec, values)


def test_an_exact_double_eigenvalue() -> None:
    """What happens to a multiple eigenvalue (module docstring): in phase 2 (one Krylov
    vector, no locked copy) it is reported once, so the list is the top k of the distinct
    values; a copy locked in phase 1 leaves the other to phase 2, and both are reported.
    Every reported value is a true eigenvalue within its bound either way."""
    n, k = 20_000, 150
    base = power_law(n, top=300, seed=3)
    late = base.copy()
    late[120] = late[119]  # a double eigenvalue deep in the wanted range: phase 2
    spec, stats = solve(Diagonal(late), k, memory_budget=rows_budget(n, k, 20))
    assert stats["locked"] < 119 and spec.all_converged
    assert_bounds_hold(spec, late)
    assert np.sum(np.abs(spec.eigenvalues - late[119]) <= 1e-12) == 1
    distinct = np.unique(late)[::-1][:k]
    np.testing.assert_allclose(spec.eigenvalues, distinct, rtol=1e-8)

    early = base.copy()
    early[5] = early[4]  # among the first locked vectors: phase 1 finds both
    spec, stats = solve(Diagonal(early), k, memory_budget=rows_budget(n, k, 40))
    assert stats["locked"] > 5 and spec.all_converged
    assert_bounds_hold(spec, early)
    assert np.sum(np.abs(spec.eigenvalues - early[4]) <= 1e-12) == 2
    np.testing.assert_allclose(spec.eigenvalues, np.sort(early)[::-1][:k], rtol=1e-8)


def test_smallest_of_an_indefinite_operator() -> None:
    values = -np.concatenate([power_law(15_000, top=200, seed=4), -0.5 * 10.0 / np.arange(1, 51)])
    spec, _ = solve(
        Diagonal(values), 100, which="smallest", memory_budget=rows_budget(values.size, 100, 30)
    )
    assert spec.which == "smallest" and spec.all_converged
    np.testing.assert_allclose(spec.eigenvalues, np.sort(values)[:100][::-1], rtol=1e-8)
    assert_bounds_hold(spec, values)


def test_explicit_hessian_of_a_trained_digits_mlp() -> None:
    """The top 60 of a 1,210-parameter Hessian (HessianOperator) with room for 10 vectors,
    against torch.linalg.eigvalsh of the explicit Hessian."""
    model, criterion, batches = digits_mlp(hidden=16, n_samples=200, num_batches=2, train_steps=100)
    exact = torch.linalg.eigvalsh(explicit_hessian(model, criterion, batches)).numpy()
    op = HessianOperator(model, criterion, batches)
    spec = lanczos_eigenvalues(
        op,
        60,
        tol=1e-6,
        memory_budget=rows_budget(op.n, 60, 10, max_matvecs=4000),
        max_matvecs=4000,
    )
    assert spec.num_converged >= 55 and spec.num_data_passes is not None
    assert_bounds_hold(spec, exact)
    top = np.sort(exact)[::-1][:60]
    ok = spec.converged
    np.testing.assert_allclose(spec.eigenvalues[ok], top[ok], rtol=1e-6, atol=1e-12)


def test_eigenvectors_from_the_second_pass() -> None:
    """vectors=25 with 10 locked: 10 vectors are at hand, 15 are rebuilt by regenerating the
    Lanczos vectors; all have certified residuals and match the exact eigenvectors."""
    n, k, j = 20_000, 100, 25
    values = power_law(n, top=200, seed=5)
    budget = rows_budget(n, k, 10, vectors=j)
    spec, stats = solve(Diagonal(values), k, memory_budget=budget, vectors=j, tol=1e-7)
    V = spec.eigenvectors
    assert V is not None and V.shape == (n, j) and spec.all_converged
    assert stats["locked"] <= 10 and stats["vectors_matvecs"] > 15
    assert stats["rebuild_deviation"] == 0.0  # the same products: the same vectors
    order = np.argsort(values)[::-1][:j]
    overlap = np.abs(V[order, np.arange(j)])
    assert overlap.min() >= 1 - 1e-10
    assert np.abs(np.linalg.norm(V, axis=0) - 1).max() <= 1e-12
    residuals = np.linalg.norm(values[:, None] * V - V * spec.eigenvalues[:j], axis=0)
    assert np.all(residuals <= spec.residuals[:j] * spec.scale + 1e-15)


def test_smallest_eigenvectors_are_aligned_with_their_values() -> None:
    values = -power_law(10_000, top=200, seed=6)
    spec, _ = solve(
        Diagonal(values), 40, which="smallest", vectors=5, tol=1e-7,
        memory_budget=rows_budget(10_000, 40, 3, vectors=5),
    )  # fmt: skip
    V = spec.eigenvectors
    assert V.shape == (10_000, 5)
    for col, value in zip(range(5), spec.eigenvalues[-5:]):
        assert abs(V[int(np.argmin(np.abs(values - value))), col]) >= 1 - 1e-10


def test_float32_values_are_never_falsely_converged() -> None:
    """float32 products: the rounding floor keeps the tail unconverged, and the solve stops
    once more products cannot help; what is flagged converged holds."""
    values = power_law(10_000, top=200, seed=7)
    spec, stats = solve(
        Diagonal(values, torch.float32), 100, tol=1e-3,
        memory_budget=rows_budget(10_000, 100, 20, dtype=torch.float32),
    )  # fmt: skip
    assert spec.num_converged >= 5 and not spec.all_converged
    assert_bounds_hold(spec, values.astype(np.float32).astype(np.float64))
    assert stats["stopped_at_floor"] and spec.num_matvecs < 4000


def test_memory_plan_and_validation() -> None:
    n, k = 100_000, 1000
    small = memory_plan(n, k, torch.float64).peak_bytes
    assert small <= 7 * n * 8 + (12 << 20)  # no budget: a few vectors and the coefficients
    for budget in (small + 10 * n * 8, 200 * n * 8, 2000 * n * 8):
        used = memory_plan(n, k, torch.float64, memory_budget=budget).peak_bytes
        assert used <= budget
    huge = memory_plan(n, k, torch.float64, memory_budget=10**13)
    assert huge.rows <= k + 200 and huge.locked_capacity <= huge.rows  # no more than useful
    with pytest.raises(UserInputError, match="below the minimum"):
        memory_plan(n, k, torch.float64, memory_budget=n * 8)
    op = Diagonal(power_law(2_000, top=100))
    for kwargs, match in [
        ({"k": 0}, "k must be"),
        ({"k": 10, "which": "both"}, "which"),
        ({"k": 10, "tol": 0.0}, "tol"),
        ({"k": 10, "vectors": 11}, "vectors"),
        ({"k": 10, "criterion": "absolute"}, "criterion"),
        ({"k": 10, "memory_budget": -1}, "memory_budget"),
        ({"k": 10, "max_matvecs": 0}, "max_matvecs"),
    ]:
        with pytest.raises(UserInputError, match=match):
            lanczos_eigenvalues(op, **kwargs)


def test_progress_bar(capsys) -> None:
    op = Diagonal(power_law(5_000, top=100))
    lanczos_eigenvalues(op, 20, progress=True)
    assert "top-20 eigenvalues" in capsys.readouterr().err


_RSS_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import numpy as np, torch
    from hessian_powerlaw.solvers.eigenvalues_only import lanczos_eigenvalues

    class Diagonal:
        def __init__(self, d):
            self.d = torch.as_tensor(d)
            self.n, self.dtype, self.device = self.d.numel(), torch.float64, torch.device("cpu")
        def matmat(self, V):
            return self.d[:, None] * V

    def rss(field):
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field):
                    return int(line.split()[1]) * 1024

    n, k, budget = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    rng = np.random.default_rng(0)
    d = np.concatenate([10.0 / np.arange(1, k + 101), rng.uniform(-1e-3, 9e-3, n - k - 100)])
    op = Diagonal(d)
    lanczos_eigenvalues(Diagonal(d[:3000]), 5)  # libraries' one-time allocations
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")  # reset the peak
    base = rss("VmRSS:")
    spec = lanczos_eigenvalues(op, k, memory_budget=budget, vectors=5)
    print(json.dumps({"peak": rss("VmHWM:") - base, "converged": spec.num_converged}))
    """
)


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc")
def test_measured_peak_memory_is_within_the_budget(tmp_path: Path) -> None:
    """A fresh process, n = 400,000: the peak resident memory of the solve (including the
    eigenvector pass) is within the budget + 10 %."""
    n, k = 400_000, 100
    budget = rows_budget(n, k, 30, vectors=5)
    script = tmp_path / "rss.py"
    script.write_text(_RSS_SCRIPT)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    out = subprocess.run(
        [sys.executable, str(script), str(n), str(k), str(budget)],
        capture_output=True, text=True, env=env, timeout=120, check=True,
    )  # fmt: skip
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["converged"] == k
    assert result["peak"] <= 1.1 * budget, (result["peak"] / budget, budget)
