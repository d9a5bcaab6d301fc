"""Figures of the reproductions, composed from ``report.plots`` where it has the figure.

The rank-plot overlays and the tracking figures are ``report.plots``' own; the sweep panels
(a measure against a swept setting), the labelled scatters (a measure against test error
across optimizers) and the eigengap plot are drawn here with the same conventions: a
``matplotlib.figure.Figure`` built without pyplot, from the JSON-ready result dicts.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from hessian_powerlaw.report import plots

SWEEP_MEASURES: tuple[str, ...] = ("s", "d_ks", "lambda_max", "test_accuracy")
LABELS: dict[str, str] = {
    **plots.MEASURE_LABELS,
    "test_accuracy": "test accuracy",
    "test_error": "test error",
}


def _number(value: Any) -> float:
    return float("nan") if value is None else float(value)


def overlay(results: Sequence[Mapping[str, Any]], title: str, *, normalize: bool = True) -> Figure:
    """All analysed spectra of an experiment on one log-log rank plot, each with its fit."""
    series = {}
    for result in results:
        analyses = result.get("analyses") or {}
        for group, analysis in analyses.items():
            name = result["label"] if len(analyses) == 1 else f"{result['label']} / {group}"
            series[name] = (analysis["spectrum"]["eigenvalues"], analysis.get("fit"))
    return legend_outside(plots.overlay_rank_plot(series, title=title, normalize=normalize))


def legend_outside(fig: Figure) -> Figure:
    """Move a one-panel figure's legend to the right of the axes.

    Move the legend of a one-panel figure to the right of the axes, so that with many
    spectra it does not cover the data; the figure is widened to make room.
    """
    ax = fig.axes[0]
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        ax.legend(handles, labels, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
        width, height = fig.get_size_inches()
        fig.set_size_inches(width + 3.5, height)
    return fig


def _figure(ncols: int, width: float = 3.7, height: float = 3.3) -> tuple[Figure, Any]:
    fig = Figure(figsize=(width * ncols, height), layout="constrained")
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    for ax in axes:
        ax.grid(True, alpha=0.3)
    return fig, axes


def sweep_plot(
    rows: Sequence[Mapping[str, Any]],
    x: str,
    *,
    xlabel: str,
    title: str,
    measures: Sequence[str] = SWEEP_MEASURES,
    log_x: bool = False,
) -> Figure:
    """One panel per measure against the swept setting ``x``, one line per row ``group``.

    The ``d_ks`` panel also draws each group's critical value ``d_c`` (dashed): below it the
    KS test accepts the power law.
    """
    fig, axes = _figure(len(measures))
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for row in rows:
        groups.setdefault(str(row.get("group") or ""), []).append(row)
    for gi, (group, members) in enumerate(groups.items()):
        members = sorted(members, key=lambda r: _number(r.get(x)))
        xs = np.array([_number(r.get(x)) for r in members])
        color = plots._COLORS[gi % len(plots._COLORS)]
        for ax, key in zip(axes, measures):
            ys = np.array([_number(r.get(key)) for r in members])
            ax.plot(xs, ys, "o-", color=color, label=group or None)
            if key == "d_ks":
                dc = np.array([_number(r.get("d_c")) for r in members])
                ax.plot(xs, dc, "--", color=color, alpha=0.6, label="$d_c$" if gi == 0 else None)
                ax.legend(fontsize=8)
    for ax, key in zip(axes, measures):
        if log_x:
            ax.set_xscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(LABELS.get(key, key))
    if len(groups) > 1:
        axes[0].legend(fontsize=8)
    fig.suptitle(title)
    return fig


def scatter_plot(
    rows: Sequence[Mapping[str, Any]],
    target: str,
    measures: Sequence[str],
    *,
    label: str = "setting",
    title: str,
    correlations: Mapping[str, Mapping[str, Any]] | None = None,
) -> Figure:
    """Each measure against ``target`` (e.g. test error), points labelled by ``label``.

    ``correlations[measure]`` may hold ``pearson_r``; it is shown in the panel title.
    """
    fig, axes = _figure(len(measures))
    xs = np.array([_number(r.get(target)) for r in rows])
    for ax, key in zip(axes, measures):
        ys = np.array([_number(r.get(key)) for r in rows])
        ax.scatter(xs, ys, color=plots._COLORS[0], zorder=3)
        for row, xv, yv in zip(rows, xs, ys):
            if math.isfinite(xv) and math.isfinite(yv):
                ax.annotate(str(row.get(label)), (xv, yv), fontsize=7, xytext=(3, 3),
                            textcoords="offset points")  # fmt: skip
        stats = (correlations or {}).get(key) or {}
        if stats.get("pearson_r") is not None:
            ax.set_title(f"Pearson r = {stats['pearson_r']:.2f}", fontsize=10)
        ax.set_xlabel(LABELS.get(target, target))
        ax.set_ylabel(LABELS.get(key, key))
    fig.suptitle(title)
    return fig


def eigengap_plot(eigenvalues: Sequence[float], gap_fit: Mapping[str, Any], title: str) -> Figure:
    """Eigengaps against their index, with the fitted and the predicted slopes.

    Eigengaps ``lambda_i - lambda_{i+1}`` against ``i`` on log-log axes, with the fitted
    index law ``i^-(index exponent)`` and the predicted slope ``-(s + 1)`` for comparison.
    """
    values = np.sort(np.asarray([v for v in eigenvalues if v is not None and v > 0]))[::-1]
    gaps = values[:-1] - values[1:]
    index = np.arange(1, gaps.size + 1, dtype=float)
    keep = gaps > 0
    fig, axes = _figure(1, width=6.0, height=4.4)
    ax = axes[0]
    ax.loglog(index[keep], gaps[keep], "o", ms=3, alpha=0.7, label="eigengaps")
    slope, predicted = gap_fit["index_exponent"], gap_fit["predicted_gap_exponent"]
    anchor_i = index[keep]
    # both lines pass through the geometric mean of the points, so only slopes are compared
    x0, y0 = np.exp(np.mean(np.log(anchor_i))), np.exp(np.mean(np.log(gaps[keep])))
    grid = np.geomspace(anchor_i.min(), anchor_i.max(), 50)
    ax.loglog(grid, y0 * (grid / x0) ** (-slope), "-", lw=2, label=f"fit: slope -{slope:.2f}")
    ax.loglog(grid, y0 * (grid / x0) ** (-predicted), "--", lw=2,
              label=f"predicted: -(s + 1) = -{predicted:.2f}")  # fmt: skip
    ax.set_xlabel("index $i$")
    ax.set_ylabel(r"$\lambda_i - \lambda_{i+1}$")
    ax.legend(fontsize=9)
    ax.set_title(title)
    return fig


def tracking_figures(track: Mapping[str, Any], target: str = "test_loss") -> dict[str, Any]:
    """``report.plots``' measures-vs-step and measures-vs-target figures of a tracked run."""
    from hessian_powerlaw.report.tables import track_rows

    rows = track_rows(track)
    correlations = (track.get("correlations") or {}).get(target)
    return {
        "measures-vs-step": lambda: plots.measures_vs_step(rows),
        f"measures-vs-{target}": lambda: plots.measures_vs_generalization(
            rows, target, correlations=correlations
        ),
    }
