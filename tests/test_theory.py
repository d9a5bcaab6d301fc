"""theory.py: maximum entropy, rank law, overlaps, Davis-Kahan bounds, subspace stability.

Ground truths: closed forms for the maximum-entropy density; scipy's principal angles;
``numpy.linalg.eigh`` of explicit matrices for the synthetic operators; the explicit Hessian
(``torch.func.hessian``, tests/reference.py) for a small model on digits.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg
import torch

from hessian_powerlaw.errors import UserInputError
from hessian_powerlaw.operators import MatrixOperator
from hessian_powerlaw.report.plots import subspace_figure
from hessian_powerlaw.theory import (
    DifferenceOperator,
    compare_operators,
    davis_kahan_bounds,
    effective_dimension,
    eigenvector_angles,
    low_dimension_curves,
    max_entropy_density,
    overlap_curve,
    overlap_lower_bounds,
    power_law_bounds,
    power_law_density,
    predicted_rank_law,
    split_batches,
    subspace_overlap,
    subspace_stability,
)
from tests.reference import digits_mlp, explicit_hessian

# ---------------------------------------------------------------------------------------------
# maximum entropy


@pytest.mark.parametrize(
    "beta, lo, hi",
    [(2.0, 1e-3, 1.0), (1.0, 1.0, 10.0), (0.5, 1e-3, 10.0), (3.0, 1e-4, 1.0), (4.0, 1e-8, 1e4)],
)
def test_max_entropy_maximiser_is_the_power_law(beta: float, lo: float, hi: float) -> None:
    result = max_entropy_density(beta, lo, hi, grid_size=4096)
    assert result.converged and result.stationarity <= 1e-10
    # trapezoid error on 4096 log-spaced points is O(h^2): at most ~1e-4 over 12 decades
    assert result.max_relative_error < 1e-4
    np.testing.assert_allclose(result.density, power_law_density(beta, lo, hi, result.grid), 1e-4)
    assert result.fitted_exponent == pytest.approx(-beta, abs=1e-9)
    # the maximum of J is ln Z (J[p*] = beta E ln(lambda) + ln Z - beta E ln(lambda))
    assert result.objective == pytest.approx(result.log_normaliser, abs=1e-4)


def _objective(lam: np.ndarray, p: np.ndarray, beta: float) -> float:
    w = np.zeros_like(lam)
    h = np.diff(lam)
    w[:-1] += h / 2
    w[1:] += h / 2
    return float(-np.sum(w * p * np.log(p)) - beta * np.sum(w * p * np.log(lam)))


def test_max_entropy_beats_every_nearby_density() -> None:
    beta = 2.0
    result = max_entropy_density(beta, 1e-2, 10.0, grid_size=512)
    lam, p = result.grid, result.density
    best = _objective(lam, p, beta)
    rng = np.random.default_rng(0)
    for _ in range(20):
        q = p * np.exp(1e-2 * rng.standard_normal(lam.size))  # positive, nearby
        q /= _trapezoid_mass(lam, q)  # same normalisation as the maximiser's
        assert _objective(lam, q, beta) < best
    # and a uniform density (the starting point) is far worse
    uniform = np.full_like(lam, 1.0 / (lam[-1] - lam[0]))
    assert _objective(lam, uniform, beta) < best - 0.1


def _trapezoid_mass(lam: np.ndarray, p: np.ndarray) -> float:
    return float(np.sum(0.5 * (p[1:] + p[:-1]) * np.diff(lam)))


def test_max_entropy_rank_law_is_the_predicted_rank_law() -> None:
    # far from lambda_max the numerical density's quantiles follow i^(-s), s = 1/(beta - 1)
    for beta, k in [(2.0, 100), (1.8, 200), (3.0, 50)]:
        result = max_entropy_density(beta, 1e-4, 1e8)
        np.testing.assert_allclose(result.rank_law(k), predicted_rank_law(beta, k), rtol=1e-4)


def test_predicted_rank_law_values_and_errors() -> None:
    np.testing.assert_allclose(predicted_rank_law(2.0, 4), [1, 1 / 2, 1 / 3, 1 / 4])
    np.testing.assert_allclose(predicted_rank_law(3.0, 4), np.arange(1, 5) ** -0.5)
    with pytest.raises(UserInputError, match="beta"):
        predicted_rank_law(1.0, 5)
    with pytest.raises(UserInputError, match="k must"):
        predicted_rank_law(2.0, 0)
    with pytest.raises(UserInputError, match="lambda_min < lambda_max"):
        max_entropy_density(2.0, 1.0, 0.5)
    with pytest.raises(UserInputError, match="grid_size"):
        max_entropy_density(2.0, 0.1, 1.0, grid_size=3)


# ---------------------------------------------------------------------------------------------
# overlaps and angles


def test_subspace_overlap_matches_scipy_and_ignores_the_basis() -> None:
    rng = np.random.default_rng(1)
    U = rng.standard_normal((40, 5))
    V = U + 0.3 * rng.standard_normal((40, 5))
    result = subspace_overlap(U, V)
    expected = np.sort(scipy.linalg.subspace_angles(U, V))
    np.testing.assert_allclose(result.principal_angles, expected, atol=1e-10)
    assert result.overlap == pytest.approx(np.mean(np.cos(expected) ** 2), abs=1e-12)
    R = rng.standard_normal((5, 5))  # another basis of the same span
    assert subspace_overlap(U @ R, V).overlap == pytest.approx(result.overlap, abs=1e-10)
    assert subspace_overlap(U, U @ R).overlap == pytest.approx(1.0, abs=1e-12)
    E = np.eye(6)
    assert subspace_overlap(E[:, :3], E[:, 3:]).overlap == pytest.approx(0.0, abs=1e-15)
    with pytest.raises(UserInputError, match="linearly dependent"):
        subspace_overlap(np.ones((6, 2)), E[:, :2])


def test_overlap_curve_and_eigenvector_angles() -> None:
    rng = np.random.default_rng(2)
    U, _ = np.linalg.qr(rng.standard_normal((30, 8)))
    V, _ = np.linalg.qr(U + 0.2 * rng.standard_normal((30, 8)))
    curve = overlap_curve(U, V)
    for m in range(1, 9):
        assert curve[m - 1] == pytest.approx(
            subspace_overlap(U[:, :m], V[:, :m]).overlap, abs=1e-12
        )
    signs = np.where(rng.random(8) < 0.5, -1.0, 1.0)
    angles = eigenvector_angles(U, V * signs)  # eigenvectors have no sign
    expected = np.arccos(np.clip(np.abs(np.sum(U * V, axis=0)), 0, 1))
    np.testing.assert_allclose(angles, expected, atol=1e-12)


# ---------------------------------------------------------------------------------------------
# bounds


def test_davis_kahan_bounds_by_hand() -> None:
    # gaps 1, 2, 0.5: min adjacent gap per index = 1, 1, 0.5 (lambda_0 = +inf)
    np.testing.assert_allclose(davis_kahan_bounds([4.0, 3.0, 1.0, 0.5], 0.1), [0.2, 0.2, 0.4])
    np.testing.assert_array_equal(davis_kahan_bounds([2.0, 1.0, 1.0], 0.1), [0.2, np.inf])
    np.testing.assert_allclose(overlap_lower_bounds([4.0, 3.0, 1.0, 0.5], 0.1), [0.96, 0.99, 0.84])
    np.testing.assert_allclose(power_law_bounds(2.0, 1.0, 0.1, 2), [0.4, 0.9])
    with pytest.raises(UserInputError, match="e_norm"):
        davis_kahan_bounds([2.0, 1.0], -1.0)


def test_paper_bound_dominates_davis_kahan_for_an_exact_rank_law_with_s_at_least_1() -> None:
    for s in (1.0, 1.3):
        lam = np.arange(1, 52, dtype=np.float64) ** -s
        dk = davis_kahan_bounds(lam, 1e-3)
        paper = power_law_bounds(1.0, s, 1e-3, 50)
        assert np.all(paper >= dk)


def _synthetic(n: int, s: float, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A = Q diag(i^-s) Q^T with a random orthogonal Q: a known power-law spectrum."""
    rng = np.random.default_rng(seed)
    lam = np.arange(1, n + 1, dtype=np.float64) ** -s
    Q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    return (Q * lam) @ Q.T, Q, lam


def _random_perturbation(n: int, norm: float, seed: int) -> np.ndarray:
    G = np.random.default_rng(seed).standard_normal((n, n))
    G = (G + G.T) / 2
    return norm * G / np.linalg.norm(G, 2)


def _pair_coupling(Q: np.ndarray, norm: float) -> np.ndarray:
    """Couples eigenvectors (1,2), (3,4), ...: the rotation Davis-Kahan is nearly tight for."""
    E = np.zeros((Q.shape[0], Q.shape[0]))
    for i in range(0, Q.shape[1] - 1, 2):
        E += np.outer(Q[:, i], Q[:, i + 1]) + np.outer(Q[:, i + 1], Q[:, i])
    return norm * E / np.linalg.norm(E, 2)


def _exact_top(M: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    values, vectors = np.linalg.eigh(M)
    return values[::-1][:k], vectors[:, ::-1][:, :k]


@pytest.mark.parametrize("case", ["random-small", "random-large", "pair-coupling"])
def test_synthetic_angles_never_exceed_the_davis_kahan_bound(case: str) -> None:
    n, k = 160, 20
    A, Q, lam = _synthetic(n, 1.0, seed=3)
    if case == "random-small":
        E = _random_perturbation(n, 1e-4, seed=4)
    elif case == "random-large":
        E = _random_perturbation(n, 3e-3, seed=5)  # the tail's gaps fall below 2 ||E||
    else:
        E = _pair_coupling(Q, 1e-4)
    result = compare_operators(MatrixOperator(A), MatrixOperator(A + E), k, tol=1e-10)

    exact_norm = np.linalg.norm(E, 2)
    # the Ritz value converges quadratically in the residual (norm_tol = 1e-4): ~1e-8 relative
    assert result.e_norm.ritz_value == pytest.approx(exact_norm, rel=1e-8)
    # the value used by the bounds adds the residual: never below ||E||, at most norm_tol above
    assert exact_norm * (1 - 1e-12) <= result.e_norm.value <= exact_norm * (1 + 1e-4)
    _, Ua = _exact_top(A, k)
    _, Ub = _exact_top(A + E, k)
    exact_angles = eigenvector_angles(Ua, Ub)
    np.testing.assert_allclose(result.angles, exact_angles, atol=1e-6)

    assert result.bound_violations == 0
    assert np.all(result.sin_angles <= result.davis_kahan_bound)
    np.testing.assert_allclose(
        result.davis_kahan_ratio, result.sin_angles / result.davis_kahan_bound
    )
    assert np.all(result.davis_kahan_ratio <= 1.0)
    assert np.all(result.overlap >= result.overlap_lower_bound - 1e-12)
    # the bound uses the measured gaps of A and of B (the smaller bound): the exact gaps agree
    lam_b, _ = _exact_top(A + E, k + 1)
    exact_dk = np.minimum(
        davis_kahan_bounds(lam[: k + 1], result.e_norm.value),
        davis_kahan_bounds(lam_b, result.e_norm.value),
    )
    np.testing.assert_allclose(result.davis_kahan_bound, exact_dk, rtol=1e-6)
    if case == "pair-coupling":
        # a 2x2 rotation: sin(theta) ~ ||E||/gap against 2 ||E||/gap, ratio near 1/2
        assert np.max(result.davis_kahan_ratio) > 0.4
    if case == "random-large":
        assert np.any(result.davis_kahan_bound > 1)  # the tail is not protected
        assert result.angles[-1] > 10 * result.angles[0]  # ... and it does move more
    assert result.to_dict()["k"] == k and "eigenvectors_a" not in result.to_dict()


def test_davis_kahan_holds_for_exact_eigenvectors_over_the_whole_spectrum() -> None:
    # independent of any solver: eigh on both matrices, every index except the last
    n = 120
    A, _, lam = _synthetic(n, 1.2, seed=6)
    for seed, norm in [(7, 1e-5), (8, 1e-3), (9, 1e-1)]:
        E = _random_perturbation(n, norm, seed)
        _, Ua = _exact_top(A, n)
        _, Ub = _exact_top(A + E, n)
        sines = np.sin(eigenvector_angles(Ua, Ub))[:-1]
        bounds = davis_kahan_bounds(lam, norm)
        assert np.all(sines <= bounds * (1 + 1e-9) + 1e-12)


def test_difference_operator_and_mismatch() -> None:
    rng = np.random.default_rng(10)
    A = _random_perturbation(12, 1.0, 11)
    B = _random_perturbation(12, 2.0, 12)
    op = DifferenceOperator(MatrixOperator(A), MatrixOperator(B))
    V = torch.as_tensor(rng.standard_normal((12, 3)))
    np.testing.assert_allclose(op.matmat(V).numpy(), (B - A) @ V.numpy(), atol=1e-12)
    assert op.num_matvecs == 3
    with pytest.raises(UserInputError, match="differ in size"):
        DifferenceOperator(MatrixOperator(A), MatrixOperator(np.eye(5)))


# ---------------------------------------------------------------------------------------------
# low dimension


def test_low_dimension_curves_against_explicit_projections() -> None:
    rng = np.random.default_rng(13)
    A, Q, lam = _synthetic(50, 1.0, seed=13)
    g = Q[:, :3] @ rng.standard_normal(3) + 1e-3 * rng.standard_normal(50)
    ld = low_dimension_curves(lam[:10], Q[:, :10], trace=float(np.trace(A)), gradient=g)
    np.testing.assert_allclose(ld.trace_fraction, np.cumsum(lam[:10]) / lam.sum(), rtol=1e-12)
    expected = np.cumsum((Q[:, :10].T @ g) ** 2) / (g @ g)
    np.testing.assert_allclose(ld.gradient_fraction, expected, rtol=1e-12)
    assert ld.gradient_fraction[2] > 0.999  # the gradient lives in the top-3 space
    assert effective_dimension([1.0, 1.0, 0.0, -2.0], 1.0) == pytest.approx(1.0)
    assert ld.effective_dimension[0] == pytest.approx(np.sum(lam[:10] / (lam[:10] + 0.1)))


# ---------------------------------------------------------------------------------------------
# a real model: two halves of digits, against explicit Hessians


def test_split_batches_is_disjoint_and_complete() -> None:
    x = torch.arange(10.0)[:, None]
    y = torch.arange(10)
    a, b = split_batches([(x, y)])
    assert a[0][1].tolist() == [0, 2, 4, 6, 8] and b[0][1].tolist() == [1, 3, 5, 7, 9]
    a, b = split_batches([(x[:4], y[:4]), (x[4:7], y[4:7]), (x[7:], y[7:])])
    assert len(a) == 2 and len(b) == 1
    with pytest.raises(UserInputError):
        split_batches([])


def test_subspace_stability_on_digits_matches_explicit_hessians() -> None:
    model, criterion, batches = digits_mlp(hidden=8, n_samples=300, train_steps=150)
    k = 8
    result = subspace_stability(model, criterion, batches, k, tol=1e-10, trace_matvecs=60)
    half_a, half_b = split_batches(batches)
    Ha = explicit_hessian(model, criterion, half_a).numpy()
    Hb = explicit_hessian(model, criterion, half_b).numpy()
    va, Ua = _exact_top(Ha, k + 1)
    vb, Ub = _exact_top(Hb, k + 1)
    np.testing.assert_allclose(result.eigenvalues_a, va, rtol=1e-8)
    np.testing.assert_allclose(result.eigenvalues_b, vb, rtol=1e-8)
    assert result.e_norm.ritz_value == pytest.approx(np.linalg.norm(Hb - Ha, 2), rel=1e-7)
    np.testing.assert_allclose(result.angles, eigenvector_angles(Ua[:, :k], Ub[:, :k]), atol=1e-6)
    assert result.bound_violations == 0
    assert result.info["num_samples_a"] == 150 and result.info["num_samples_b"] == 150

    ld = result.low_dimension
    assert ld is not None and ld.trace_std_error is not None
    # a Hutch++ estimate: within 4 standard errors of the exact trace (seeded, deterministic)
    assert abs(ld.trace - np.trace(Ha)) <= 4 * ld.trace_std_error
    np.testing.assert_allclose(ld.trace_fraction, np.cumsum(va[:k]) / ld.trace, rtol=1e-7)
    x = torch.cat([b[0] for b in half_a])
    y = torch.cat([b[1] for b in half_a])
    model.zero_grad()
    criterion(model(x), y).backward()
    g = torch.cat([p.grad.reshape(-1) for p in model.parameters()]).numpy()
    model.zero_grad(set_to_none=True)
    expected = np.cumsum((Ua[:, :k].T @ g) ** 2) / (g @ g)
    np.testing.assert_allclose(ld.gradient_fraction, expected, rtol=1e-5, atol=1e-10)
    fig = subspace_figure(result.to_dict())
    assert len(fig.axes) == 2


def test_subspace_stability_input_errors() -> None:
    model, criterion, batches = digits_mlp(hidden=4, n_samples=20)
    with pytest.raises(UserInputError, match="splits"):
        subspace_stability(model, criterion, batches, 3, splits="thirds")
    with pytest.raises(UserInputError, match="data bundle"):
        subspace_stability(model, criterion, batches, 3, splits="seeds")
    with pytest.raises(UserInputError, match="k must be below"):
        subspace_stability(model, criterion, batches, 10_000, trace_matvecs=0)
    a, b = split_batches(batches)
    result = subspace_stability(model, criterion, None, 3, splits=(a, b), trace_matvecs=0)
    assert result.split == "given batches A vs B" and math.isfinite(result.e_norm.value)
