"""The figure files written next to each JSON result (``spectrum``, ``track``, ``demo``).

Every function takes the JSON-ready dictionary of a result (``to_dict()`` or the parsed file),
so figures can be redrawn from the files alone. Files go through ``hessian_powerlaw.io``
(atomic); callers that write several files at once wrap them in ``io.staged_dir``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hessian_powerlaw.report import plots
from hessian_powerlaw.report.tables import track_rows


def safe_name(label: str) -> str:
    """A file-name-safe version of a parameter-group label (``blocks.3`` -> ``blocks.3``)."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in label) or "group"


def spectrum_analyses(result: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    """``{label: analysis dict}`` of a ``spectrum.json``: the one selection or each block."""
    if result.get("spectrum"):
        return {str(result.get("params") or "all"): result}
    return dict(result.get("blocks") or {})


def write_spectrum_figures(result: Mapping[str, Any], folder: Path) -> list[Path]:
    """``spectrum.png`` (rank plot with fit, or the per-block overlay), CDF and density.

    Per-block results also get one ``spectrum-<block>.png`` per group.
    """
    analyses = spectrum_analyses(result)
    title = f"{result.get('model')} on {result.get('data')}"
    written: list[Path] = []
    if len(analyses) == 1:
        ((label, analysis),) = analyses.items()
        eigenvalues = analysis["spectrum"]["eigenvalues"]
        fit = analysis.get("fit")
        written.append(
            plots.save_png(plots.rank_plot(eigenvalues, fit, title=title), folder / "spectrum.png")
        )
        if fit is not None:
            written.append(
                plots.save_png(
                    plots.cdf_plot(eigenvalues, fit, title=title), folder / "spectrum-cdf.png"
                )
            )
        density = analysis.get("density")
        if density:
            figure = plots.density_plot(
                density["grid"], density["values"], eigenvalues=eigenvalues, title=title
            )
            written.append(plots.save_png(figure, folder / "spectrum-density.png"))
        return written
    series = {label: (a["spectrum"]["eigenvalues"], a.get("fit")) for label, a in analyses.items()}
    overlay = plots.overlay_rank_plot(series, title=f"Per-block spectra: {title}", normalize=True)
    written.append(plots.save_png(overlay, folder / "spectrum.png"))
    for label, analysis in analyses.items():
        figure = plots.rank_plot(
            analysis["spectrum"]["eigenvalues"], analysis.get("fit"), title=f"{label}: {title}"
        )
        written.append(plots.save_png(figure, folder / f"spectrum-{safe_name(label)}.png"))
    return written


def write_track_figures(track: Mapping[str, Any], folder: Path) -> list[Path]:
    """Measures vs step, vs test loss and vs generalization gap, and the spectra overlay."""
    rows = track_rows(track)
    if not rows:
        return []
    correlations = track.get("correlations") or {}
    written = [plots.save_png(plots.measures_vs_step(rows), folder / "track-measures.png")]
    for target in ("test_loss", "gap"):
        if any(r.get(target) is not None for r in rows):
            figure = plots.measures_vs_generalization(
                rows, target, correlations=correlations.get(target)
            )
            written.append(plots.save_png(figure, folder / f"track-vs-{target}.png"))
    series = {
        f"step {e.get('step')}": (
            e["analysis"]["spectrum"]["eigenvalues"],
            e["analysis"].get("fit"),
        )
        for e in track.get("entries") or []
        if e.get("analysis")
    }
    overlay = plots.overlay_rank_plot(series, title="Spectra along training", normalize=True)
    written.append(plots.save_png(overlay, folder / "track-spectra.png"))
    return written


def demo_plot(demo: Mapping[str, Any]) -> Any:
    """The demo's figure (:func:`plots.demo_figure`) from a ``demo.json`` dict."""
    states: Mapping[str, Any] = demo.get("states") or {}
    series = {
        name: (s["analysis"]["spectrum"]["eigenvalues"], s["analysis"].get("fit"))
        for name, s in states.items()
    }
    paper = {name: (cells or {}).get("paper_d_ks") for name, cells in
             (demo.get("paper") or {}).items()}  # fmt: skip
    title = f"{demo.get('model')} on {demo.get('data')}: random init vs trained"
    return plots.demo_figure(series, paper_d_ks=paper, title=title)


def write_demo_figures(demo: Mapping[str, Any], folder: Path) -> list[Path]:
    """Write the demo's figures.

    The demo's figure (``demo.png``: the paper's test and both rank plots) and each
    state's rank plot.
    """
    states: Mapping[str, Any] = demo.get("states") or {}
    written = [plots.save_png(demo_plot(demo), folder / "demo.png")]
    for name, state in states.items():
        analysis = state["analysis"]
        eigenvalues = analysis["spectrum"]["eigenvalues"]
        written.append(
            plots.save_png(
                plots.rank_plot(
                    eigenvalues, analysis.get("fit"), title=f"{demo.get('model')}, {name}"
                ),
                folder / f"demo-{safe_name(name)}.png",
            )
        )
    return written
