"""Correlations of Hessian measures with generalization, checked on data of known association."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
from scipy import stats

from hessian_powerlaw.errors import UserInputError
from hessian_powerlaw.measures import (
    EXACT_SPEARMAN_MAX_N,
    correlate,
    correlation_table,
    format_correlation_table,
)


def test_monotone_nonlinear_relation_is_rank_perfect_but_not_linear() -> None:
    x = np.linspace(0.0, 4.0, 25)
    c = correlate(x, np.exp(x))
    assert c.n == 25 and c.n_dropped == 0 and c.reason is None
    assert c.spearman_rho == pytest.approx(1.0, abs=1e-12)
    assert c.kendall_tau == pytest.approx(1.0, abs=1e-12)
    assert c.pearson_r is not None and 0.7 < c.pearson_r < 0.95
    # a decreasing relation flips every sign
    d = correlate(x, -(x**3))
    assert d.spearman_rho == pytest.approx(-1.0) and d.kendall_tau == pytest.approx(-1.0)
    assert d.pearson_r is not None and d.pearson_r < -0.9


def test_bivariate_normal_matches_the_population_coefficients() -> None:
    # for a bivariate normal with correlation rho: Spearman = (6/pi) asin(rho/2),
    # Kendall = (2/pi) asin(rho); with n = 4000 the standard errors are about 0.01
    rho, n = 0.8, 4000
    rng = np.random.default_rng(1)
    z = rng.multivariate_normal([0.0, 0.0], [[1.0, rho], [rho, 1.0]], size=n)
    c = correlate(z[:, 0], z[:, 1])
    assert c.pearson_r == pytest.approx(rho, abs=0.03)
    assert c.spearman_rho == pytest.approx(6 / math.pi * math.asin(rho / 2), abs=0.03)
    assert c.kendall_tau == pytest.approx(2 / math.pi * math.asin(rho), abs=0.03)
    assert max(c.pearson_p, c.spearman_p, c.kendall_p) < 1e-100  # type: ignore[type-var]


def test_independent_samples_give_roughly_uniform_p_values() -> None:
    rng = np.random.default_rng(2)
    pvalues: dict[str, list[float]] = {"pearson_p": [], "spearman_p": [], "kendall_p": []}
    for _ in range(300):
        c = correlate(rng.normal(size=20), rng.normal(size=20))
        for key in pvalues:
            pvalues[key].append(getattr(c, key))
    for key, ps in pvalues.items():
        ps_arr = np.array(ps)
        # 300 draws: the 5% rejection rate has a standard error of 1.3%
        assert 0.01 <= np.mean(ps_arr < 0.05) <= 0.10, key
        assert stats.kstest(ps_arr, "uniform").pvalue > 1e-3, key


def test_non_finite_pairs_are_dropped_and_counted() -> None:
    x = [1.0, 2.0, float("nan"), 4.0, 5.0, None, 7.0]
    y = [2.0, 4.1, 6.0, float("inf"), 10.2, 12.0, 13.9]
    c = correlate(x, y)
    assert (c.n, c.n_dropped) == (4, 3)
    ref = stats.pearsonr([1.0, 2.0, 5.0, 7.0], [2.0, 4.1, 10.2, 13.9])
    assert c.pearson_r == pytest.approx(ref.statistic, rel=1e-12)
    assert c.pearson_p == pytest.approx(ref.pvalue, rel=1e-12)


@pytest.mark.parametrize(
    ("x", "y", "reason"),
    [
        ([1.0, 2.0], [3.0, 4.0], "only 2 finite pair(s)"),
        ([1.0, float("nan"), 3.0, None], [1.0, 2.0, float("nan"), 4.0], "only 1 finite pair(s)"),
        ([1.0, 1.0, 1.0, 1.0], [1.0, 2.0, 3.0, 4.0], "x is constant"),
        ([1.0, 2.0, 3.0, 4.0], [5.0, 5.0, 5.0, 5.0], "y is constant"),
    ],
)
def test_undefined_correlations_say_why(x: list, y: list, reason: str) -> None:
    c = correlate(x, y)
    assert c.reason is not None and c.reason.startswith(reason)
    assert c.pearson_r is None and c.spearman_p is None and c.kendall_tau is None


def test_three_pairs_is_enough() -> None:
    c = correlate([1.0, 2.0, 3.0], [1.0, 3.0, 2.0])
    assert c.n == 3 and c.reason is None
    assert c.spearman_rho == pytest.approx(0.5) and c.kendall_tau == pytest.approx(1 / 3)


def test_bad_input_is_a_user_error() -> None:
    with pytest.raises(UserInputError, match="same length"):
        correlate([1.0, 2.0, 3.0], [1.0, 2.0])
    with pytest.raises(UserInputError, match="x must be a sequence of numbers"):
        correlate(["a", "b", "c"], [1.0, 2.0, 3.0])


def test_correlation_table_rows_and_formatting() -> None:
    steps = np.arange(1.0, 9.0)
    test_loss = 1.0 / steps
    measures = {"d_ks": 0.1 / steps**2, "lambda_max": [2.0] * 8, "trace": steps}
    rows = correlation_table(measures, {"test_loss": test_loss, "gap": steps * 0.01})
    assert [(r.measure, r.target) for r in rows] == [
        ("d_ks", "test_loss"),
        ("d_ks", "gap"),
        ("lambda_max", "test_loss"),
        ("lambda_max", "gap"),
        ("trace", "test_loss"),
        ("trace", "gap"),
    ]
    assert rows[0].spearman_rho == pytest.approx(1.0)
    assert rows[1].kendall_tau == pytest.approx(-1.0)
    assert rows[2].reason == "lambda_max is constant"
    json.dumps([r.to_dict() for r in rows], allow_nan=False)  # strict JSON

    text = format_correlation_table(rows)
    lines = text.splitlines()
    assert len(lines) == 2 + len(rows)
    assert lines[0].startswith("| measure") and set(lines[1]) <= {"|", "-"}
    assert len({len(line) for line in lines}) == 1  # aligned columns
    assert "lambda_max is constant" in lines[4] and "n/a" in lines[4]
    assert "| 1.000 " in lines[2]  # d_ks vs test_loss: spearman rho


def _brute_force_spearman_p(x: list[float], y: list[float]) -> float:
    """Two-sided permutation p-value of Spearman's rho, by pairing y with x in all n! orders."""
    rho_obs = abs(stats.spearmanr(x, y).statistic)
    perms = list(itertools.permutations(y))
    hits = sum(abs(stats.spearmanr(x, perm).statistic) >= rho_obs - 1e-12 for perm in perms)
    return hits / len(perms)


def test_spearman_p_is_exact_for_four_anti_monotone_pairs() -> None:
    # scipy's t approximation gives p = 0 here; only the two perfect orders reach |rho| = 1
    c = correlate([1.0, 2.0, 3.0, 4.0], [0.9, 0.5, 0.3, 0.1])
    assert c.spearman_rho == pytest.approx(-1.0, abs=1e-12)
    assert c.spearman_p == pytest.approx(2 / 24, abs=1e-12)
    assert c.kendall_p == pytest.approx(2 / 24, abs=1e-12)  # scipy's Kendall p is exact here


def test_spearman_p_matches_a_brute_force_permutation_count() -> None:
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=6).tolist(), rng.normal(size=6).tolist()
    c = correlate(x, y)
    assert c.spearman_p == pytest.approx(_brute_force_spearman_p(x, y), abs=1e-12)


def test_spearman_p_is_scipys_beyond_the_exact_bound() -> None:
    assert EXACT_SPEARMAN_MAX_N < 30
    rng = np.random.default_rng(4)
    x = rng.normal(size=30)
    y = 0.3 * x + rng.normal(size=30)
    c = correlate(x, y)
    assert c.spearman_p == pytest.approx(stats.spearmanr(x, y).pvalue, rel=1e-12)


@pytest.mark.parametrize(
    ("x", "y"),
    [
        ([1.0, 1.0, 2.0, 3.0, 4.0], [5.0, 3.0, 4.0, 1.0, 2.0]),
        ([1.0, 2.0, 2.0, 3.0, 4.0, 5.0], [1.0, 2.0, 3.0, 3.0, 5.0, 4.0]),
        ([1.0, 1.0, 2.0, 2.0], [1.0, 2.0, 3.0, 4.0]),  # monotone, but ties: p = 1/3, not 2/24
    ],
)
def test_spearman_p_with_ties_uses_average_ranks(x: list[float], y: list[float]) -> None:
    c = correlate(x, y)
    assert c.spearman_p is not None and 0.0 < c.spearman_p <= 1.0
    assert c.spearman_p == pytest.approx(_brute_force_spearman_p(x, y), abs=1e-12)
