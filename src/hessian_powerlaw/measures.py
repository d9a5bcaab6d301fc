r"""How Hessian measures relate to generalization: rank and linear correlations with p-values.

The paper reports Pearson correlations between a spectral measure (``d_ks``, ``s``,
``lambda_max``, trace) and test loss across checkpoints or optimizers. With a handful of
checkpoints a single coefficient says little, so :func:`correlate` gives all three usual ones,
each with its two-sided p-value for the null of no association:

- Pearson :math:`r = \mathrm{cov}(x, y) / (\sigma_x \sigma_y)`: linear association;
- Spearman :math:`\rho`: Pearson's r of the ranks, any monotone association;
- Kendall :math:`\tau` (tau-b, handles ties): concordant minus discordant pairs over all pairs.

With so few pairs an asymptotic p-value can badly overstate the evidence (for n = 4 and a
perfect rank order, the t approximation behind :func:`scipy.stats.spearmanr` gives p = 0),
so the Spearman p-value is exact, by enumerating all n! permutations, for
n <= :data:`EXACT_SPEARMAN_MAX_N`; see :func:`correlate` for which p-values are exact.

Non-finite pairs (a measure that failed on a checkpoint) are dropped and counted; with fewer
than 3 finite pairs, or a constant series, the coefficients are ``None`` with the reason.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats

from hessian_powerlaw._results import ResultMixin
from hessian_powerlaw.errors import UserInputError

__all__ = [
    "Correlation",
    "CorrelationRow",
    "correlate",
    "correlation_table",
    "format_correlation_table",
]

#: Fewest finite pairs for which a correlation is reported.
MIN_PAIRS = 3

#: Largest number of pairs for which the Spearman p-value is the exact permutation p-value
#: (all n! rank orders enumerated: 362,880 for n = 9); beyond it scipy's t approximation is used.
EXACT_SPEARMAN_MAX_N = 9


@dataclass(frozen=True)
class Correlation(ResultMixin):
    """Pearson, Spearman and Kendall correlations of ``n`` finite pairs, with p-values.

    ``n_dropped`` pairs had a non-finite (or missing) value. When no coefficient can be
    computed, all six are ``None`` and ``reason`` says why.
    """

    n: int
    n_dropped: int
    pearson_r: float | None
    pearson_p: float | None
    spearman_rho: float | None
    spearman_p: float | None
    kendall_tau: float | None
    kendall_p: float | None
    reason: str | None = None


@dataclass(frozen=True, kw_only=True)
class CorrelationRow(Correlation):
    """One row of a correlation table: a measure against a target.

    One row of a correlation table: a measure against a target, and its :class:`Correlation`
    fields (keyword-only construction).
    """

    measure: str
    target: str


def _as_series(values: Sequence[float | None], label: str) -> np.ndarray:
    """Floats with ``None`` as NaN; anything that is not a number is a UserInputError."""
    try:
        return np.array([math.nan if v is None else float(v) for v in values], dtype=np.float64)
    except (TypeError, ValueError):
        raise UserInputError(f"{label} must be a sequence of numbers (None for missing)") from None


def _undefined(n: int, n_dropped: int, reason: str) -> Correlation:
    return Correlation(n, n_dropped, None, None, None, None, None, None, reason)


def _spearman_exact_p(xs: np.ndarray, ys: np.ndarray) -> float:
    """Two-sided exact permutation p-value of Spearman's rho (``n <= EXACT_SPEARMAN_MAX_N``).

    Under the null every pairing of the ranks of ``y`` with those of ``x`` is equally likely,
    so the p-value is the fraction of the ``n!`` pairings whose ``|rho|`` is at least the
    observed one: :func:`scipy.stats.permutation_test` over all pairings
    (``n_resamples=inf``) of the statistic ``|rho|``. Ties keep their average ranks, and rho
    is computed on those ranks for every pairing (the tie-corrected rho, as scipy reports).
    Twice a centred average rank is an integer, so equal numerators give equal statistics.
    """
    n = xs.size
    a = np.rint(2.0 * stats.rankdata(xs) - (n + 1))  # 2 * (rank - mean rank)
    b = np.rint(2.0 * stats.rankdata(ys) - (n + 1))
    scale = math.sqrt(float(a @ a) * float(b @ b))

    def abs_rho(paired: np.ndarray, axis: int = -1) -> np.ndarray:
        return np.abs(np.moveaxis(paired, axis, -1) @ a) / scale

    result = stats.permutation_test(
        (b,),
        abs_rho,
        permutation_type="pairings",
        vectorized=True,
        n_resamples=np.inf,
        alternative="greater",
    )
    return float(result.pvalue)


def correlate(
    x: Sequence[float | None],
    y: Sequence[float | None],
    labels: tuple[str, str] = ("x", "y"),
) -> Correlation:
    """Pearson, Spearman and Kendall correlations of ``x`` and ``y`` with two-sided p-values.

    Pairs where either value is NaN, infinite or None are dropped (``n_dropped``). Which
    p-values are exact:

    - Spearman: exact permutation p-value (all ``n!`` pairings of the ranks, ties at their
      average ranks) for ``n <= EXACT_SPEARMAN_MAX_N``; above that, scipy's asymptotic
      t approximation. The smallest exact p-value is ``2 / n!`` (1/12 for n = 4), never 0.
    - Kendall: scipy's default (``method="auto"``) is exact when there are no ties in either
      series and ``n <= 33``; with ties, or larger ``n``, it is the asymptotic normal
      approximation (tie-corrected variance).
    - Pearson: scipy's p-value is exact under its model (x and y bivariate normal), where
      ``|r| = 1`` honestly gives p = 0; it is not a permutation p-value, so for data far from
      normal, read it as approximate and prefer the rank correlations.

    Args:
        x: one series (None for a missing value).
        y: the other, of the same length.
        labels: the names of the series, for the reason when a coefficient is undefined.

    Returns:
        The :class:`Correlation`; fewer than 3 finite pairs or a constant series give ``None``
        coefficients and a ``reason``.

    Raises:
        UserInputError: series of different lengths or values that are not numbers.
    """
    xs, ys = _as_series(x, labels[0]), _as_series(y, labels[1])
    if xs.shape != ys.shape:
        raise UserInputError(
            f"{labels[0]} and {labels[1]} must have the same length; got {xs.size} and {ys.size}"
        )
    finite = np.isfinite(xs) & np.isfinite(ys)
    n, n_dropped = int(finite.sum()), int((~finite).sum())
    xs, ys = xs[finite], ys[finite]
    if n < MIN_PAIRS:
        return _undefined(n, n_dropped, f"only {n} finite pair(s); need at least {MIN_PAIRS}")
    for label, series in zip(labels, (xs, ys)):
        if np.all(series == series[0]):
            return _undefined(n, n_dropped, f"{label} is constant")
    with warnings.catch_warnings():  # n = 3 makes scipy note that p-values are approximate
        warnings.simplefilter("ignore")
        pearson = stats.pearsonr(xs, ys)
        spearman = stats.spearmanr(xs, ys)
        kendall = stats.kendalltau(xs, ys)
    return Correlation(
        n=n,
        n_dropped=n_dropped,
        pearson_r=float(pearson.statistic),
        pearson_p=float(pearson.pvalue),
        spearman_rho=float(spearman.statistic),
        spearman_p=(
            _spearman_exact_p(xs, ys) if n <= EXACT_SPEARMAN_MAX_N else float(spearman.pvalue)
        ),
        kendall_tau=float(kendall.statistic),
        kendall_p=float(kendall.pvalue),
    )


def correlation_table(
    measures: Mapping[str, Sequence[float | None]],
    targets: Mapping[str, Sequence[float | None]],
) -> list[CorrelationRow]:
    """Every measure against every target (e.g. ``d_ks`` vs test loss), measures first.

    Args:
        measures: ``{name: series}`` of Hessian measures, one value per checkpoint, run or
            optimizer.
        targets: ``{name: series}`` of what they are correlated with, of the same length.

    Returns:
        One :class:`CorrelationRow` per pair.

    Raises:
        UserInputError: series of different lengths.
    """
    rows: list[CorrelationRow] = []
    for measure, x in measures.items():
        for target, y in targets.items():
            corr = correlate(x, y, labels=(measure, target))
            rows.append(CorrelationRow(measure=measure, target=target, **asdict(corr)))
    return rows


def _number(value: float | None, fmt: str) -> str:
    return "n/a" if value is None else format(value, fmt)


def format_correlation_table(rows: Sequence[CorrelationRow]) -> str:
    """A Markdown table (aligned, so it reads as plain text too) of correlation rows.

    Coefficients have 3 decimals, p-values 2 significant digits; a ``note`` column gives the
    reason wherever a correlation is undefined.
    """
    header = ["measure", "target", "n", "pearson r", "p", "spearman rho", "p", "kendall tau", "p"]
    with_notes = any(row.reason for row in rows)
    if with_notes:
        header.append("note")
    table = [header]
    for row in rows:
        cells = [
            row.measure,
            row.target,
            str(row.n),
            _number(row.pearson_r, ".3f"),
            _number(row.pearson_p, ".2g"),
            _number(row.spearman_rho, ".3f"),
            _number(row.spearman_p, ".2g"),
            _number(row.kendall_tau, ".3f"),
            _number(row.kendall_p, ".2g"),
        ]
        if with_notes:
            cells.append(row.reason or "")
        table.append(cells)
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]

    def render(cells: list[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"

    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([render(table[0]), rule, *(render(cells) for cells in table[1:])])
