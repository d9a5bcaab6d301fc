"""Solvers against exact spectra: the explicit Hessian of a digits MLP, and known matrices.

Stated tolerances (issue 2): top-50 eigenvalues within 1e-8 relative in float64 and 1e-4 in
float32; eigenvectors orthonormal to 1e-8 and within 1e-6 of the exact ones (up to sign) where
the Davis-Kahan bound residual/gap guarantees it; trace within 3 standard errors; SLQ weights
sum to 1 and the density's mean is within 3 standard errors of trace/n.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch import Tensor

from hessian_powerlaw.errors import UserInputError
from hessian_powerlaw.operators import HessianOperator, MatrixOperator
from hessian_powerlaw.solvers import (
    DENSE_MAX_N,
    broadened_density,
    dense_eigenpairs,
    hutchinson_trace,
    spectral_density,
    top_eigenpairs,
)
from tests.reference import digits_mlp, explicit_hessian


@pytest.fixture(scope="module")
def problem() -> tuple[HessianOperator, Tensor, np.ndarray, np.ndarray]:
    """A trained 1,210-parameter MLP on 200 digits (2 batches): operator, exact H, eigenvalues
    (descending) and eigenvectors. Trained, so its spectrum decays as in real use."""
    model, criterion, batches = digits_mlp(hidden=16, n_samples=200, num_batches=2, train_steps=100)
    H = explicit_hessian(model, criterion, batches)
    evals, evecs = torch.linalg.eigh(H)
    op = HessianOperator(model, criterion, batches)
    return op, H, evals.flip(0).numpy(), evecs.flip(1).numpy()


@pytest.fixture(scope="module")
def indefinite() -> tuple[HessianOperator, Tensor, np.ndarray]:
    """A random-init 610-parameter MLP: a strongly indefinite Hessian (negative curvature)."""
    model, criterion, batches = digits_mlp(hidden=8, n_samples=200)
    H = explicit_hessian(model, criterion, batches)
    op = HessianOperator(model, criterion, batches)
    return op, H, torch.linalg.eigvalsh(H).flip(0).numpy()


def explicit_residuals(H: Tensor, values: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    V = torch.as_tensor(vectors, dtype=torch.float64)
    R = H @ V - V * torch.as_tensor(values)
    return torch.linalg.vector_norm(R, dim=0).numpy()


def test_top50_float64_eigenvalues_vectors_and_residuals(problem) -> None:
    op, H, evals, evecs = problem
    spec = top_eigenpairs(op, k=50, tol=1e-10, return_vectors=True)
    assert spec.all_converged and spec.k == 50
    assert np.all(np.diff(spec.eigenvalues) <= 0)
    rel = np.abs(spec.eigenvalues - evals[:50]) / np.abs(evals[:50])
    assert rel.max() <= 1e-8
    V = spec.eigenvectors
    assert np.abs(V.T @ V - np.eye(50)).max() <= 1e-8
    # reported residuals are the true ones, relative to |lambda_1|
    assert spec.scale == pytest.approx(abs(evals[0]), rel=1e-12)
    true = explicit_residuals(H, spec.eigenvalues, V) / abs(evals[0])
    assert np.allclose(spec.residuals, true, rtol=0, atol=1e-12)
    # eigenvectors: sin(angle) <= ||r|| / gap (Davis-Kahan); check where that is <= 1e-7
    gaps = np.minimum(
        np.abs(np.diff(evals, prepend=np.inf)), np.abs(np.diff(evals, append=-np.inf))
    )
    bound = true * abs(evals[0]) / gaps[:50]
    checked = np.flatnonzero(bound <= 1e-7)
    assert checked.size >= 25  # the test is not vacuous
    for i in checked:
        dist = min(np.linalg.norm(V[:, i] - evecs[:, i]), np.linalg.norm(V[:, i] + evecs[:, i]))
        assert dist <= 1e-6, (i, dist)
    assert spec.num_matvecs > 0
    assert spec.num_data_passes is not None and spec.num_data_passes > 0


def test_top50_float32(problem) -> None:
    _, _, evals, _ = problem
    model, criterion, batches = digits_mlp(hidden=16, n_samples=200, num_batches=2, train_steps=100)
    op32 = HessianOperator(model, criterion, batches, dtype=torch.float32)
    spec = top_eigenpairs(op32, k=50, tol=1e-5)
    assert spec.all_converged
    assert (np.abs(spec.eigenvalues - evals[:50]) / np.abs(evals[:50])).max() <= 1e-4


@pytest.mark.parametrize("which", ["smallest", "both"])
def test_negative_curvature(indefinite, which: str) -> None:
    op, H, evals = indefinite
    assert evals[-1] < -0.1  # the premise: the Hessian is strongly indefinite
    spec = top_eigenpairs(op, k=6, tol=1e-10, which=which, return_vectors=True)
    expected = evals[-6:] if which == "smallest" else np.concatenate([evals[:3], evals[-3:]])
    assert spec.all_converged and spec.which == which
    assert np.abs(spec.eigenvalues - expected).max() <= 1e-8 * np.abs(expected).min()
    true = explicit_residuals(H, spec.eigenvalues, spec.eigenvectors) / np.abs(evals).max()
    assert true.max() <= 1e-10


def test_budget_exhaustion_is_flagged_not_hidden(problem) -> None:
    op, H, evals, _ = problem
    spec = top_eigenpairs(op, k=50, tol=1e-10, max_matvecs=64, return_vectors=True)
    assert spec.num_matvecs <= 64
    assert not spec.all_converged
    assert np.array_equal(spec.converged, spec.residuals <= 1e-10)
    true = explicit_residuals(H, spec.eigenvalues, spec.eigenvectors) / spec.scale
    assert np.allclose(spec.residuals, true, rtol=1e-9, atol=1e-14)
    assert spec.scale <= abs(evals[0]) * (1 + 1e-12)  # a Ritz value: never above |lambda_1|
    # the largest one converges first and is then exact to its residual
    assert abs(spec.eigenvalues[0] - evals[0]) <= spec.residuals[0] * abs(evals[0])


def known_matrix(eigenvalues: np.ndarray, seed: int = 0) -> MatrixOperator:
    rng = np.random.default_rng(seed)
    Q, _ = np.linalg.qr(rng.standard_normal((eigenvalues.size, eigenvalues.size)))
    return MatrixOperator((Q * eigenvalues) @ Q.T)


@pytest.mark.parametrize("block_size", [1, 3, 8])
def test_restarts_and_block_sizes_on_a_power_law(block_size: int) -> None:
    lam = np.arange(1, 401, dtype=np.float64) ** -1.0  # lambda_k = k^-1
    op = known_matrix(lam)
    # basis_size at its minimum forces many thick restarts
    extra = max(block_size, 2)
    spec = top_eigenpairs(op, k=20, tol=1e-9, block_size=block_size, basis_size=20 + extra + 8)
    assert spec.all_converged
    assert np.abs(spec.eigenvalues - lam[:20]).max() <= 1e-9
    assert spec.num_matvecs == op.num_matvecs


def test_repeated_eigenvalues_within_a_block() -> None:
    lam = np.concatenate([[5.0, 5.0, 5.0, 4.0], np.linspace(1.0, 0.0, 196)])
    spec = top_eigenpairs(known_matrix(lam, seed=1), k=4, tol=1e-10, block_size=4)
    assert spec.all_converged
    assert np.allclose(spec.eigenvalues, [5.0, 5.0, 5.0, 4.0], rtol=0, atol=1e-9)


@pytest.mark.parametrize("block_size", [1, 4])
def test_rank_deficient_hessian_gives_all_k_eigenvalues(block_size: int) -> None:
    """A Hessian of rank 20 (e.g. softmax regression on images with constant pixels): the
    Krylov space of the start block is exhausted after about 20 columns, where every
    residual estimate is ~0. The solver must go on to k = 30 (ten zeros), not stop at 20."""
    g = torch.Generator().manual_seed(0)
    U, _ = torch.linalg.qr(torch.randn(60, 60, generator=g, dtype=torch.float64))
    values = torch.zeros(60, dtype=torch.float64)
    values[:20] = torch.logspace(0, -2, 20, dtype=torch.float64)
    spec = top_eigenpairs(MatrixOperator(U @ torch.diag(values) @ U.T), k=30, block_size=block_size)
    assert len(spec.eigenvalues) == 30 and spec.converged.all()
    np.testing.assert_allclose(spec.eigenvalues[:20], values[:20].numpy(), rtol=1e-10)
    assert np.abs(spec.eigenvalues[20:]).max() <= 1e-12


def test_whole_space_and_users_own_operator() -> None:
    lam = np.linspace(-1.0, 2.0, 12)

    class Diagonal:  # duck-typed: only n, dtype, device, matmat
        n, dtype, device = 12, torch.float64, torch.device("cpu")

        def matmat(self, V: Tensor) -> Tensor:
            return torch.as_tensor(lam)[:, None] * V

    spec = top_eigenpairs(Diagonal(), k=12, tol=1e-12, block_size=5)
    assert spec.all_converged and spec.num_data_passes is None
    assert np.allclose(spec.eigenvalues, lam[::-1], rtol=0, atol=1e-13)
    for n in (1, 2):
        one = top_eigenpairs(MatrixOperator(np.diag(np.arange(1.0, n + 1))), k=1)
        assert one.all_converged and one.eigenvalues[0] == pytest.approx(float(n), abs=1e-14)


def test_progress_bar_and_to_dict(capsys) -> None:
    op = known_matrix(np.arange(50, 0, -1, dtype=np.float64))
    spec = top_eigenpairs(op, k=5, return_vectors=True, progress=True)
    assert "top-5 eigenpairs" in capsys.readouterr().err
    d = spec.to_dict()
    assert "eigenvectors" not in d and d["eigenvalues"][0] == pytest.approx(50.0)
    json.dumps(d, allow_nan=False)
    top_eigenpairs(op, k=5, progress=False)
    assert capsys.readouterr().err == ""


def test_solver_validates_arguments() -> None:
    op = known_matrix(np.arange(10, dtype=np.float64))
    for kwargs, match in [
        ({"k": 11}, "k must be"),
        ({"k": 0}, "k must be"),
        ({"k": 2, "which": "LA"}, "which"),
        ({"k": 2, "tol": 0.0}, "tol"),
        ({"k": 2, "block_size": 0}, "block_size"),
    ]:
        with pytest.raises(UserInputError, match=match):
            top_eigenpairs(op, **kwargs)


def test_dense_eigenpairs(indefinite) -> None:
    op, H, evals = indefinite
    spec = dense_eigenpairs(op, return_vectors=True)
    assert spec.k == op.n == 610 and spec.method == "dense"
    assert np.abs(spec.eigenvalues - evals).max() <= 1e-12 * abs(evals[0])
    assert spec.residuals.max() <= 1e-12 and spec.num_matvecs == 610

    class Huge:
        n, dtype, device = DENSE_MAX_N + 1, torch.float64, torch.device("cpu")

        def matmat(self, V: Tensor) -> Tensor:
            raise AssertionError("must refuse before any product")

    with pytest.raises(UserInputError, match="refuses n = 20,001"):
        dense_eigenpairs(Huge())


@pytest.mark.parametrize("method", ["hutch++", "hutchinson"])
def test_trace_within_three_standard_errors(problem, method: str) -> None:
    op, H, _, _ = problem
    exact = float(torch.trace(H))
    est = hutchinson_trace(op, num_matvecs=120, method=method, seed=0)
    assert est.num_matvecs == 120 and est.method == method
    assert 0 < est.std_error < abs(exact)
    assert abs(est.estimate - exact) <= 3 * est.std_error


def test_trace_standard_error_is_calibrated() -> None:
    # z = (estimate - trace) / std_error over 40 seeds: mean ~ 0 and spread ~ 1
    lam = np.arange(1, 301, dtype=np.float64) ** -0.8 - 0.05
    op = known_matrix(lam)
    for method in ("hutch++", "hutchinson"):
        runs = [hutchinson_trace(op, 30, method=method, seed=s) for s in range(40)]
        z = np.array([(r.estimate - lam.sum()) / r.std_error for r in runs])
        assert abs(z.mean()) < 0.6 and 0.6 < z.std() < 1.6, (method, z.mean(), z.std())
    # Hutch++ beats Hutchinson on a decaying spectrum at the same budget
    pp = hutchinson_trace(op, 90, method="hutch++").std_error
    plain = hutchinson_trace(op, 90, method="hutchinson").std_error
    assert pp < plain


def test_slq_weights_mean_and_second_moment(problem) -> None:
    op, H, evals, _ = problem
    sd = spectral_density(op, num_probes=8, lanczos_steps=30, seed=0)
    assert sd.num_matvecs == 240 and sd.nodes.shape == (8, 30)
    assert math.isclose(sd.weights.sum(), 1.0, abs_tol=1e-12)
    assert np.allclose(sd.weights.sum(axis=1), 1 / 8, atol=1e-12)
    n = op.n
    assert abs(sd.mean - float(torch.trace(H)) / n) <= 3 * sd.mean_std_error
    # Gauss quadrature is exact for degree < 2m: second moment per probe vs tr(H^2)/n
    second = (sd.weights * sd.nodes**2).sum(axis=1) * 8
    exact2 = float((evals**2).sum()) / n
    assert abs(second.mean() - exact2) <= 3 * second.std(ddof=1) / math.sqrt(8)
    assert sd.nodes.min() >= evals[-1] - 1e-10 and sd.nodes.max() <= evals[0] + 1e-10


def test_slq_is_exact_with_full_length_runs() -> None:
    lam = np.array([3.0, 1.0, 0.5, -0.25, -2.0])
    sd = spectral_density(known_matrix(lam), num_probes=3, lanczos_steps=50)
    assert sd.lanczos_steps == 5
    for p in range(3):
        assert np.allclose(np.sort(sd.nodes[p]), np.sort(lam), atol=1e-12)
    grid = np.linspace(-5.0, 6.0, 4001)
    dens = broadened_density(sd, grid, sigma=0.05)
    step = grid[1] - grid[0]
    assert math.isclose(dens.sum() * step, 1.0, rel_tol=1e-9)
    assert math.isclose((dens * grid).sum() * step, sd.mean, rel_tol=1e-9, abs_tol=1e-12)
    with pytest.raises(UserInputError, match="sigma"):
        broadened_density(sd, grid, sigma=0.0)


def test_default_tolerance_follows_the_operator_dtype() -> None:
    """float32 products stall at residuals of a few 1e-6 |lambda_1|, so under the "norm"
    criterion float32 defaults to 1e-5; the "relative" default, 1e-3, is the same for both."""
    A = torch.diag(torch.linspace(1.0, 0.01, 50, dtype=torch.float64))
    assert top_eigenpairs(MatrixOperator(A), k=3, criterion="norm").tol == 1e-6
    spec32 = top_eigenpairs(MatrixOperator(A.float()), k=3, criterion="norm")
    assert spec32.tol == 1e-5 and spec32.converged.all()
    assert top_eigenpairs(MatrixOperator(A), k=3, tol=1e-9).tol == 1e-9
    relative = top_eigenpairs(MatrixOperator(A.float()), k=3)
    assert relative.criterion == "relative" and relative.tol == 1e-3
    assert relative.converged.all()


# ------------------------------------------------------------------ convergence criteria


def test_relative_criterion_on_the_explicit_hessian(problem) -> None:
    """criterion="relative": each pair's explicit residual is within tol of |theta|, so each
    eigenvalue is within tol relative of the explicit Hessian's (the residual bound)."""
    op, H, evals, _ = problem
    for tol in (1e-3, 1e-7):
        spec = top_eigenpairs(op, k=50, tol=tol, criterion="relative", return_vectors=True)
        assert spec.criterion == "relative" and spec.all_converged
        explicit = explicit_residuals(H, spec.eigenvalues, spec.eigenvectors)
        assert np.all(explicit <= tol * np.abs(spec.eigenvalues) * (1 + 1e-6))
        np.testing.assert_allclose(spec.relative_residuals, explicit / np.abs(spec.eigenvalues),
                                   rtol=1e-6, atol=1e-12)  # fmt: skip
        np.testing.assert_allclose(spec.eigenvalues, evals[:50], rtol=tol, atol=0)
    # "norm" bounds residuals by tol |lambda_1| instead
    spec = top_eigenpairs(op, k=50, tol=1e-8, criterion="norm")
    assert spec.criterion == "norm" and spec.all_converged and spec.residuals.max() <= 1e-8


def test_relative_criterion_reaches_the_tail_of_a_power_law_through_restarts(monkeypatch) -> None:
    """lambda_k = k^-1.5 over 600 dimensions, k = 60 with the smallest basis: thick restarts
    lock converged pairs (they leave the Rayleigh-Ritz problem) and the tail, 1/465 of
    lambda_1, is still certified to 1e-8 relative."""
    from hessian_powerlaw.solvers import lanczos

    locked: list[int] = []
    restart = lanczos._BlockLanczos._restart

    def spy(self: lanczos._BlockLanczos) -> None:
        restart(self)
        locked.append(self.nl)

    monkeypatch.setattr(lanczos._BlockLanczos, "_restart", spy)
    lam = np.arange(1, 601, dtype=np.float64) ** -1.5
    op = known_matrix(lam, seed=3)
    spec = top_eigenpairs(op, k=60, tol=1e-8, criterion="relative", basis_size=60 + 6 + 4 + 8)
    assert spec.all_converged and spec.relative_residuals.max() <= 1e-8
    np.testing.assert_allclose(spec.eigenvalues, lam[:60], rtol=1e-8, atol=0)
    assert locked and max(locked) > 0, "no restart locked a pair"


def test_clustered_spectrum_gives_every_member_once() -> None:
    """Eight clusters of five eigenvalues 1e-7 apart: all 40 are found, none twice."""
    centres = np.logspace(0, -2, 8)
    lam = np.sort(np.concatenate([c * (1 + 1e-7 * np.arange(5)) for c in centres]))[::-1]
    rest = np.linspace(0.5e-2, -0.5e-2, 260)
    op = known_matrix(np.concatenate([lam, rest]), seed=4)
    spec = top_eigenpairs(op, k=40, tol=1e-10, criterion="relative", basis_size=64)
    assert spec.all_converged
    np.testing.assert_allclose(spec.eigenvalues, lam, rtol=1e-9, atol=0)


@pytest.mark.parametrize("block_size", [1, 4])
def test_exact_multiple_eigenvalues_are_found_with_every_copy(block_size: int) -> None:
    """A triple and a six-fold eigenvalue (more copies than the block has columns): a Krylov
    space holds one vector per eigenspace and block, so the further copies enter through the
    random vectors of restarts and rounding; every copy is found, to 1e-12 relative."""
    head = 10.0 / np.arange(1, 41)
    head[5:8] = head[5]  # ranks 6-8
    head[20:26] = head[20]  # ranks 21-26
    rest = np.random.default_rng(0).uniform(-1e-3, 0.05, 1000)
    op = known_matrix(np.concatenate([head, rest]), seed=5)
    spec = top_eigenpairs(op, k=40, block_size=block_size, tol=1e-10)
    assert spec.all_converged
    np.testing.assert_allclose(spec.eigenvalues, head, rtol=1e-12, atol=0)


def test_relative_criterion_accepts_the_float32_rounding_floor() -> None:
    """A rank-deficient float32 operator: its exact zeros cannot be resolved relatively; a
    residual at the products' rounding level (100 eps |lambda_1|) counts as converged."""
    g = torch.Generator().manual_seed(1)
    U, _ = torch.linalg.qr(torch.randn(80, 80, generator=g, dtype=torch.float64))
    values = torch.zeros(80, dtype=torch.float64)
    values[:10] = torch.logspace(0, -1, 10, dtype=torch.float64)
    op = MatrixOperator((U @ torch.diag(values) @ U.T).float())
    spec = top_eigenpairs(op, k=15, criterion="relative")
    assert spec.all_converged and spec.tol == 1e-3
    np.testing.assert_allclose(spec.eigenvalues[:10], values[:10].numpy(), rtol=1e-3)
    assert np.abs(spec.eigenvalues[10:]).max() <= 100 * torch.finfo(torch.float32).eps
    with pytest.raises(UserInputError, match="criterion must be one of"):
        top_eigenpairs(op, k=3, criterion="absolute")
