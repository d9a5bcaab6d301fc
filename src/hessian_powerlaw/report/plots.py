"""Publication-quality matplotlib figures of Hessian spectra and their power-law fits.

Every function takes plain data (arrays, and fits either as ``PowerLawFit`` objects or as the
dictionaries their ``to_dict()`` gives) and returns a :class:`matplotlib.figure.Figure` built
without ``pyplot``: no global state, no GUI backend, safe in tests and threads. Save with
:func:`save_png` (atomic) or embed with :func:`png_bytes`.

The fitted rank line
--------------------
The fit (the paper's, Tang et al., ICML 2025) models the top ``K`` eigenvalues as samples of
the density ``p(x) ~ x^-beta`` above ``lambda_cut``. Its survival function is ``P(X > x) =
(x / lambda_cut)^(1 - beta)``, so among ``K`` samples the expected rank of the value ``x`` is
``r(x) = K (x / lambda_cut)^(1 - beta)``. Inverting gives the rank law the fit predicts,

    lambda_r = lambda_cut * (K / r)^s,    s = 1 / (beta - 1),

a straight line of slope ``-s`` on log-log axes through ``(K, lambda_cut)``. That is the
line the rank plot draws: the maximum-likelihood fit itself, not a regression on the plot.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
from matplotlib import ticker
from matplotlib.figure import Figure

from hessian_powerlaw.io import atomic_write_bytes

# legible when the figure is shown at ~600 px wide in the report or a paper column
_RC = {"font": 11, "title": 12, "legend": 9, "tick": 10}
_COLORS = (
    "#1f77b4",
    "#d62728",
    "#2ca02c",
    "#9467bd",
    "#ff7f0e",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
)

_SEQUENTIAL = matplotlib.colormaps["viridis"]

MEASURE_LABELS: dict[str, str] = {
    "s": "rank exponent $s$",
    "d_ks": "KS distance $d_{ks}$",
    "lambda_max": r"$\lambda_{\max}$",
    "trace": r"trace $\mathrm{tr}(H)$",
    "beta": r"density exponent $\beta$",
    "test_loss": "test loss",
    "train_loss": "train loss",
    "gap": "gap (test - train loss)",
}


@dataclass(frozen=True)
class FitView:
    """The fields of a power-law fit that the figures need, from an object or a dict."""

    k: int
    lambda_cut: float
    beta: float
    s: float
    sigma_s: float
    d_ks: float
    d_c: float
    is_power_law: bool

    @classmethod
    def of(cls, fit: Any) -> FitView | None:
        """Read a ``PowerLawFit`` or its ``to_dict()``; ``None`` stays ``None``."""
        if fit is None:
            return None
        get = fit.get if isinstance(fit, Mapping) else lambda name: getattr(fit, name, None)
        return cls(
            k=int(get("k")),
            lambda_cut=float(get("lambda_cut")),
            beta=float(get("beta")),
            s=float(get("s")),
            sigma_s=_float_or_nan(get("sigma_s")),
            d_ks=float(get("ks_distance")),
            d_c=float(get("critical_value")),
            is_power_law=bool(get("is_power_law")),
        )

    def verdict(self) -> str:
        """``d_ks = 0.009 < d_c = 0.043: power law`` (the KS decision, as the paper states it)."""
        if self.is_power_law:
            return f"$d_{{ks}}$ = {self.d_ks:.3g} < $d_c$ = {self.d_c:.3g}: power law"
        return f"$d_{{ks}}$ = {self.d_ks:.3g} $\\geq$ $d_c$ = {self.d_c:.3g}: not power law"

    def exponent(self) -> str:
        """The rank exponent ``s`` as text for a legend."""
        if math.isfinite(self.sigma_s):
            return f"$s$ = {self.s:.3f} $\\pm$ {self.sigma_s:.3f}"
        return f"$s$ = {self.s:.3f}"

    def rank_line(self, ranks: np.ndarray) -> np.ndarray:
        """``lambda_r = lambda_cut (K / r)^s``: the rank law implied by the fitted density."""
        return self.lambda_cut * (self.k / ranks) ** self.s

    def cdf(self, x: np.ndarray) -> np.ndarray:
        """Fitted CDF ``F(x) = 1 - (x / lambda_cut)^(1 - beta)`` for ``x >= lambda_cut``."""
        ratio = np.maximum(np.asarray(x, dtype=float) / self.lambda_cut, 1.0)
        return 1.0 - ratio ** (1.0 - self.beta)


def _float_or_nan(value: Any) -> float:
    return float("nan") if value is None else float(value)


def _new_figure(width: float = 6.4, height: float = 4.4, ncols: int = 1, nrows: int = 1) -> Any:
    fig = Figure(figsize=(width, height), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for ax in axes.flat:
        ax.tick_params(labelsize=_RC["tick"])
        ax.grid(True, which="major", alpha=0.3)
    return fig, axes


def _label(ax: Any, xlabel: str, ylabel: str, title: str | None = None) -> None:
    ax.set_xlabel(xlabel, fontsize=_RC["font"])
    ax.set_ylabel(ylabel, fontsize=_RC["font"])
    if title:
        ax.set_title(title, fontsize=_RC["title"])


def _readable_log_ticks(ax: Any, axis: str = "y") -> None:
    """Plain tick labels on a log axis that spans less than two decades.

    Plain numbers (``0.5``, ``2``) instead of ``5 x 10^-1`` on a log axis spanning less
    than about two decades, where matplotlib labels the minor ticks in scientific form.
    """
    low, high = ax.get_ylim() if axis == "y" else ax.get_xlim()
    if low <= 0 or high / low > 100:
        return
    target = ax.yaxis if axis == "y" else ax.xaxis
    plain = ticker.FuncFormatter(lambda value, _: f"{value:g}")
    target.set_major_formatter(plain)
    target.set_minor_formatter(plain)


def _positive_descending(eigenvalues: Sequence[float] | np.ndarray) -> np.ndarray:
    values = np.asarray(eigenvalues, dtype=float)
    values = values[np.isfinite(values)]
    return np.sort(values[values > 0])[::-1]


def _draw_rank(
    ax: Any, eigenvalues: Any, fit: FitView | None, color: Any, name: str, compact: bool = False
) -> None:
    """Eigenvalues as points and the fitted rank law as a line, in one colour.

    ``compact`` (many spectra on one plot): one legend entry per spectrum with ``s`` and
    ``d_ks`` instead of two entries with the full verdict.
    """
    values = _positive_descending(eigenvalues)
    ranks = np.arange(1, values.size + 1)
    if compact:
        label = name if fit is None else f"{name}: s = {fit.s:.2f}, $d_{{ks}}$ = {fit.d_ks:.3f}"
        ax.loglog(ranks, values, "o", ms=2.5, color=color, alpha=0.8, label=label)
    else:
        ax.loglog(ranks, values, "o", ms=3, color=color, alpha=0.75, label=f"{name} eigenvalues")
    if fit is not None:
        fit_ranks = np.geomspace(1, fit.k, 200)
        label = None if compact else f"fit: {fit.exponent()}\n{fit.verdict()}"
        ax.loglog(fit_ranks, fit.rank_line(fit_ranks), "-", lw=1.2 if compact else 2,
                  color=color, label=label)  # fmt: skip


def rank_plot(
    eigenvalues: Sequence[float] | np.ndarray,
    fit: Any = None,
    *,
    title: str | None = None,
    name: str = "top",
) -> Figure:
    """Log-log plot of ``lambda_k`` against ``k`` with the fitted rank law ``k^-s``.

    Only positive eigenvalues can appear on log axes; how many were left out is said in the
    title so that a spectrum with negative curvature is not misread.
    """
    values = np.asarray(eigenvalues, dtype=float)
    dropped = int(np.sum(~(values > 0)))
    fig, axes = _new_figure()
    ax = axes[0, 0]
    _draw_rank(ax, values, FitView.of(fit), _COLORS[0], name)
    full_title = title or "Hessian rank plot"
    if dropped:
        full_title += f" ({dropped} non-positive not shown)"
    _label(ax, "rank $k$", r"eigenvalue $\lambda_k$", full_title)
    _readable_log_ticks(ax)
    ax.legend(fontsize=_RC["legend"], loc="lower left")
    return fig


def overlay_rank_plot(
    series: Mapping[str, tuple[Any, Any]],
    *,
    title: str = "Hessian rank plots",
    normalize: bool = False,
) -> Figure:
    """Several spectra on one log-log rank plot: ``{name: (eigenvalues, fit or None)}``.

    Used for random-init vs trained (the paper's Table 1 contrast) and for per-block spectra.
    With ``normalize`` every spectrum is divided by its own ``lambda_1`` so that the slopes,
    which carry the power-law information, can be compared across scales.
    """
    compact = len(series) > 3
    fig, axes = _new_figure(width=9.5 if compact else 7.0, height=4.8)
    ax = axes[0, 0]
    # many spectra (checkpoints, blocks) are an ordered family: a sequential colour map
    colors = (
        [_SEQUENTIAL(i / max(len(series) - 1, 1)) for i in range(len(series))]
        if compact
        else [_COLORS[i % len(_COLORS)] for i in range(len(series))]
    )
    for color, (name, (eigenvalues, fit)) in zip(colors, series.items()):
        values = _positive_descending(eigenvalues)
        view = FitView.of(fit)
        if normalize and values.size:
            scale = values[0]
            values = values / scale
            if view is not None:
                view = FitView(**{**view.__dict__, "lambda_cut": view.lambda_cut / scale})
        _draw_rank(ax, values, view, color, name, compact)
    ylabel = r"$\lambda_k / \lambda_1$" if normalize else r"eigenvalue $\lambda_k$"
    _label(ax, "rank $k$", ylabel, title)
    _readable_log_ticks(ax)
    if compact:  # beside the axes, where it hides no data
        ax.legend(fontsize=_RC["legend"] - 1, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    else:
        ax.legend(fontsize=_RC["legend"] - 1, loc="lower left")
    return fig


def demo_figure(
    series: Mapping[str, tuple[Any, Any]],
    *,
    paper_d_ks: Mapping[str, float | None] | None = None,
    paper_k: int = 1000,
    title: str | None = None,
) -> Figure:
    """The demo's figure, the paper's test first: ``{state: (eigenvalues, fit or None)}``.

    Left: each state's KS distance ``d_ks`` against the critical value ``d_c`` of its K
    (dashed; below it = power law by the paper's test), the paper's ``d_ks`` for the same
    state (diamonds, ``paper_d_ks``) and, when our K is not the paper's, the paper's ``d_c``
    at ``paper_k`` (dotted). Right: the rank plots, each divided by its ``lambda_1``, with the
    fitted power laws.
    """
    from hessian_powerlaw.powerlaw import critical_value

    fig, axes = _new_figure(width=11.0, height=4.6, ncols=2)
    test_ax, rank_ax = axes[0, 0], axes[0, 1]
    names = list(series)
    views = [FitView.of(fit) for _, fit in series.values()]
    colors = [_COLORS[i % len(_COLORS)] for i in range(len(names))]
    x = np.arange(len(names))
    heights = [v.d_ks if v is not None else np.nan for v in views]
    test_ax.bar(x, heights, color=colors, alpha=0.8, width=0.55)
    for xi, height in zip(x, heights):
        if math.isfinite(height):
            test_ax.annotate(
                f"{height:.3f}",
                (xi, height),
                ha="center",
                va="bottom",
                fontsize=_RC["legend"],
                xytext=(0, 2),
                textcoords="offset points",
            )
    fitted = [v for v in views if v is not None]
    if fitted:
        k = fitted[0].k
        d_c = fitted[0].d_c
        test_ax.axhline(d_c, color="black", ls="--", lw=1.5, label=f"$d_c$ = {d_c:.3f} at K = {k}")
        if k != paper_k:
            paper_d_c = critical_value(paper_k)
            test_ax.axhline(
                paper_d_c,
                color="grey",
                ls=":",
                lw=1.5,
                label=f"$d_c$ = {paper_d_c:.3f} at the paper's K = {paper_k}",
            )
    if paper_d_ks:
        paper = [paper_d_ks.get(name) for name in names]
        if any(p is not None for p in paper):
            test_ax.plot(
                x,
                [np.nan if p is None else p for p in paper],
                "D",
                color="black",
                ms=7,
                label=f"paper's $d_{{ks}}$ (K = {paper_k})",
            )
    labels = []
    for name, view in zip(names, views):
        verdict = (
            "no fit" if view is None else ("power law" if view.is_power_law else "not power law")
        )
        labels.append(f"{name}\n(KS test: {verdict})")
    test_ax.set_xticks(x, labels, fontsize=_RC["tick"])
    test_ax.set_xlim(-0.6, len(names) - 0.4)
    top = np.nanmax([*heights, *(v.d_c for v in fitted), 0.0]) if names else 1.0
    test_ax.set_ylim(0, 1.25 * top if top > 0 else 1.0)
    _label(test_ax, "", "KS distance $d_{ks}$", "The paper's test: $d_{ks} < d_c$ means power law")
    test_ax.legend(fontsize=_RC["legend"] - 1, loc="upper right")
    for color, name, (eigenvalues, _), view in zip(colors, names, series.values(), views):
        values = _positive_descending(eigenvalues)
        if values.size:
            scale = values[0]
            values = values / scale
            if view is not None:
                view = FitView(**{**view.__dict__, "lambda_cut": view.lambda_cut / scale})
        _draw_rank(rank_ax, values, view, color, name, compact=True)
    _label(
        rank_ax,
        "rank $k$",
        r"$\lambda_k / \lambda_1$",
        "Top Hessian eigenvalues and fitted power laws",
    )
    _readable_log_ticks(rank_ax)
    rank_ax.legend(fontsize=_RC["legend"] - 1, loc="lower left")
    if title:
        fig.suptitle(title, fontsize=_RC["title"])
    return fig


def ks_location(values: np.ndarray, fit: FitView) -> tuple[float, float, float]:
    """Where the KS distance is attained: ``(x, F_emp(x) side, F_fit(x))``.

    The supremum of ``|F_emp - F|`` over a step function is reached at a jump, on one of its
    two sides; both sides are checked, as the fit does.
    """
    x = np.sort(values)
    n = x.size
    fitted = fit.cdf(x)
    above = np.arange(1, n + 1) / n - fitted  # right limit of each jump
    below = fitted - np.arange(0, n) / n  # left limit
    i_above, i_below = int(np.argmax(above)), int(np.argmax(below))
    if above[i_above] >= below[i_below]:
        return float(x[i_above]), (i_above + 1) / n, float(fitted[i_above])
    return float(x[i_below]), i_below / n, float(fitted[i_below])


def cdf_plot(
    eigenvalues: Sequence[float] | np.ndarray, fit: Any, *, title: str | None = None
) -> Figure:
    """Empirical CDF of the fitted eigenvalues against the fitted power-law CDF.

    The vertical bar marks where the KS distance ``d_ks`` is attained.
    """
    view = FitView.of(fit)
    if view is None:
        raise ValueError("cdf_plot needs a fit; there is none for this spectrum")
    values = _positive_descending(eigenvalues)[: view.k]
    x = np.sort(values)
    fig, axes = _new_figure()
    ax = axes[0, 0]
    ax.step(
        x,
        np.arange(1, x.size + 1) / x.size,
        where="post",
        color=_COLORS[0],
        lw=1.5,
        label=f"empirical CDF (top {x.size})",
    )
    grid = np.geomspace(x[0], x[-1], 400)
    ax.plot(
        grid, view.cdf(grid), color=_COLORS[1], lw=2, label=rf"power law, $\beta$ = {view.beta:.3f}"
    )
    at, emp, fitted = ks_location(x, view)
    ax.plot([at, at], [emp, fitted], color="black", lw=2.5, label=view.verdict())
    ax.set_xscale("log")
    _readable_log_ticks(ax, "x")
    ax.set_ylim(-0.02, 1.02)
    _label(ax, r"eigenvalue $\lambda$", "cumulative probability", title or "CDF: data vs fit")
    ax.legend(fontsize=_RC["legend"], loc="lower right")
    return fig


def density_plot(
    grid: Sequence[float] | np.ndarray,
    density: Sequence[float] | np.ndarray,
    *,
    eigenvalues: Sequence[float] | np.ndarray | None = None,
    title: str | None = None,
) -> Figure:
    """Spectral density (stochastic Lanczos quadrature, Gaussian-broadened) on a log y-axis.

    The computed top eigenvalues, when given, are marked as a rug under the curve: the bulk
    near zero and the outliers the power law describes are visible together.
    """
    grid = np.asarray(grid, dtype=float)
    values = np.asarray(density, dtype=float)
    fig, axes = _new_figure()
    ax = axes[0, 0]
    floor = max(values.max(), 1e-300) * 1e-8  # keep the log axis from collapsing on zeros
    ax.semilogy(grid, np.maximum(values, floor), color=_COLORS[0], lw=1.8, label="SLQ density")
    if eigenvalues is not None and len(eigenvalues):
        top = np.asarray(eigenvalues, dtype=float)
        ax.plot(
            top,
            np.full(top.shape, floor * 10),
            "|",
            color=_COLORS[1],
            ms=12,
            label="computed top eigenvalues",
        )
    ax.set_ylim(bottom=floor)
    _label(ax, r"eigenvalue $\lambda$", r"density $\phi(\lambda)$", title or "Spectral density")
    ax.legend(fontsize=_RC["legend"], loc="upper right")
    return fig


def _column(rows: Sequence[Mapping[str, Any]], key: str) -> np.ndarray:
    return np.array([_float_or_nan(r.get(key)) for r in rows], dtype=float)


def measures_vs_step(
    rows: Sequence[Mapping[str, Any]],
    measures: Sequence[str] = ("s", "d_ks", "lambda_max", "trace", "test_loss", "gap"),
    *,
    title: str = "Hessian measures along training",
) -> Figure:
    """One panel per measure against the training step, for the rows of a tracked run.

    Each row maps ``step`` and the measure names to numbers (``None`` for missing, e.g. ``s``
    when a checkpoint had too few positive eigenvalues). The ``d_ks`` panel also draws the
    critical value ``d_c`` so that the power-law verdict can be read off.
    """
    ncols = 3 if len(measures) > 4 else 2
    nrows = math.ceil(len(measures) / ncols)
    fig, axes = _new_figure(width=4.0 * ncols, height=3.2 * nrows, ncols=ncols, nrows=nrows)
    steps = _column(rows, "step")
    for ax, key in zip(axes.flat, measures):
        ax.plot(steps, _column(rows, key), "o-", color=_COLORS[0], lw=1.8, ms=5)
        if key == "d_ks" and any(r.get("d_c") is not None for r in rows):
            ax.plot(steps, _column(rows, "d_c"), "--", color=_COLORS[1], label="$d_c$")
            ax.legend(fontsize=_RC["legend"])
        _label(ax, "training step", MEASURE_LABELS.get(key, key))
    for ax in list(axes.flat)[len(measures) :]:
        ax.set_visible(False)
    fig.suptitle(title, fontsize=_RC["title"])
    return fig


def measures_vs_generalization(
    rows: Sequence[Mapping[str, Any]],
    target: str = "test_loss",
    measures: Sequence[str] = ("s", "d_ks", "lambda_max", "trace"),
    *,
    correlations: Mapping[str, Mapping[str, Any]] | None = None,
    title: str | None = None,
) -> Figure:
    """Scatter of each Hessian measure against ``target`` (test loss or gap), coloured by step.

    ``correlations[measure]`` may hold ``pearson_r`` and ``pearson_p`` (as computed by
    ``measures.correlate``); they are printed in each panel's title. The figure shows the
    numbers, it does not compute them.
    """
    fig, axes = _new_figure(width=3.6 * len(measures), height=3.6, ncols=len(measures))
    x = _column(rows, target)
    steps = _column(rows, "step")
    scatter = None
    for ax, key in zip(axes.flat, measures):
        scatter = ax.scatter(x, _column(rows, key), c=steps, cmap="viridis", s=40, zorder=3)
        stats = (correlations or {}).get(key) or {}
        subtitle = None
        if stats.get("pearson_r") is not None:
            subtitle = f"Pearson r = {stats['pearson_r']:.2f}"
            if stats.get("pearson_p") is not None:
                subtitle += f" (p = {stats['pearson_p']:.2g})"
        _label(ax, MEASURE_LABELS.get(target, target), MEASURE_LABELS.get(key, key), subtitle)
    if scatter is not None:
        fig.colorbar(scatter, ax=list(axes.flat), label="training step", shrink=0.85)
    fig.suptitle(
        title or f"Hessian measures vs {MEASURE_LABELS.get(target, target)}", fontsize=_RC["title"]
    )
    return fig


def subspace_figure(result: Any) -> Figure:
    """Two panels: sin(angle) per index with both bounds; top-m overlap with its lower bound.

    Takes the result or its ``to_dict()``; built without pyplot (no global state).
    """
    get = result.get if isinstance(result, dict) else lambda name: getattr(result, name)
    sines = np.asarray(get("sin_angles"), dtype=np.float64)
    dk = np.asarray([_float_or_nan(v) for v in get("davis_kahan_bound")], dtype=np.float64)
    pl = np.asarray([_float_or_nan(v) for v in get("power_law_bound")], dtype=np.float64)
    overlap = np.asarray(get("overlap"), dtype=np.float64)
    lower = np.asarray(get("overlap_lower_bound"), dtype=np.float64)
    index = np.arange(1, sines.size + 1)

    fig = Figure(figsize=(11.0, 4.2), layout="constrained")
    ax1, ax2 = fig.subplots(1, 2)
    floor = max(float(np.min(sines[sines > 0])) / 2 if np.any(sines > 0) else 1e-6, 1e-12)
    ax1.semilogy(index, np.maximum(sines, floor), "o-", ms=3, label=r"measured $\sin\theta_i$")
    ax1.semilogy(index, dk, "--", label="Davis-Kahan bound (measured gaps)")
    if np.any(np.isfinite(pl)):
        ax1.semilogy(index, pl, ":", label=r"paper: $2\|E\|(i+1)^{s+1}/\lambda_1$")
    ax1.axhline(1.0, color="0.6", lw=0.8)
    top = max(10.0, float(np.nanmax(np.where(np.isfinite(dk), dk, np.nan), initial=1.0)))
    ax1.set_ylim(floor / 2, min(top * 2, 1e6))
    ax1.set_xlabel("eigenvector index i")
    ax1.set_ylabel(r"$\sin\theta(a_i, b_i)$")
    ax1.set_title("eigenvector angles between the two Hessians")
    ax1.legend(fontsize=8)
    m = np.arange(1, overlap.size + 1)
    ax2.plot(m, overlap, "o-", ms=3, label=r"overlap $\|U_m^T V_m\|_F^2/m$")
    ax2.plot(m, lower, "--", label="Davis-Kahan lower bound")
    ax2.set_ylim(-0.02, 1.02)
    ax2.set_xlabel("subspace dimension m")
    ax2.set_ylabel("overlap of the top-m subspaces")
    ax2.set_title("top-m subspace overlap")
    ax2.legend(fontsize=8)
    return fig


def png_bytes(fig: Figure, dpi: int = 110) -> bytes:
    """The figure as PNG bytes (what the HTML report embeds as base64)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def rgb_array(fig: Figure, dpi: int = 80) -> np.ndarray:
    """The figure rendered as an ``(H, W, 3)`` uint8 array (what image loggers take)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    fig.set_dpi(dpi)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def save_png(fig: Figure, path: str | os.PathLike[str], dpi: int = 150) -> Path:
    """Write the figure as a PNG atomically (temporary file + rename)."""
    return atomic_write_bytes(path, png_bytes(fig, dpi=dpi))
