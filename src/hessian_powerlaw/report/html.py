"""One self-contained ``report.html`` from the JSON results found under a folder.

``write_report(DIR)`` looks for ``spectrum.json`` (the ``spectrum`` command), ``track.json``
(``track``) and ``demo.json`` (``demo``) anywhere under ``DIR`` and renders each as a section:
tables of fits and measures, correlation tables, and figures embedded as base64 PNG. The page
loads nothing from the network (no scripts, fonts or style sheets from elsewhere), so it can be
mailed, archived or opened offline.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import json
import os
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from hessian_powerlaw.errors import UserInputError
from hessian_powerlaw.io import atomic_write_text
from hessian_powerlaw.report import plots
from hessian_powerlaw.report.outputs import demo_plot, spectrum_analyses
from hessian_powerlaw.report.tables import (
    CALIBRATED_COLUMNS,
    CONVERGENCE_COLUMNS,
    CORRELATION_COLUMNS,
    SCALE_COLUMNS,
    VERDICT_COLUMNS,
    correlation_rows,
    demo_summary,
    format_value,
    html_table,
    summary_row,
    track_rows,
    with_uncertainty,
)

RESULT_FILES: dict[str, str] = {
    "demo.json": "demo",
    "spectrum.json": "spectrum",
    "track.json": "track",
}

_CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2em auto;
       max-width: 1150px; color: #222; line-height: 1.45; padding: 0 1em; }
h1 { font-size: 1.7em; margin-bottom: 0.2em; }
h2 { border-bottom: 2px solid #ddd; padding-bottom: 0.2em; margin-top: 2em; }
h3 { margin-top: 1.4em; }
.meta { color: #555; font-size: 0.92em; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.92em; }
caption { text-align: left; font-weight: 600; padding-bottom: 0.3em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th { background: #f3f3f3; }
td:first-child, th:first-child { text-align: left; }
td.yes { color: #1a7f37; font-weight: 600; }
td.no { color: #b42318; font-weight: 600; }
.figures { display: flex; flex-wrap: wrap; gap: 1em; }
figure { margin: 0; flex: 1 1 520px; max-width: 560px; }
figure.wide { flex-basis: 100%; max-width: 100%; }
figure img { width: 100%; height: auto; border: 1px solid #eee; }
figcaption { font-size: 0.88em; color: #555; max-width: 620px; }
.note { background: #fff8e1; border-left: 4px solid #f0b400; padding: 0.4em 0.8em; }
"""

# the report's tables: the verdict columns of report.tables, with the fit's uncertainty
SPECTRUM_COLUMNS: tuple[tuple[str, str], ...] = (
    ("name", "parameters"),
    ("num_params", "n"),
    ("k", "k"),
    *CONVERGENCE_COLUMNS,
    *with_uncertainty(VERDICT_COLUMNS),
    *CALIBRATED_COLUMNS,
    *SCALE_COLUMNS,
    ("seconds", "seconds"),
)

TRACK_COLUMNS: tuple[tuple[str, str], ...] = (
    ("step", "step"),
    ("epoch", "epoch"),
    ("train_loss", "train loss"),
    ("test_loss", "test loss"),
    ("test_accuracy", "test acc."),
    ("gap", "gap"),
    *with_uncertainty(VERDICT_COLUMNS),
    *CALIBRATED_COLUMNS[:1],
    *SCALE_COLUMNS,
    CONVERGENCE_COLUMNS[0],
)

DEMO_COLUMNS: tuple[tuple[str, str], ...] = (
    ("model", "model"),
    ("state", "state"),
    ("test_accuracy", "test acc."),
    ("k", "k"),
    *CONVERGENCE_COLUMNS,
    *with_uncertainty(VERDICT_COLUMNS, k_fit=False),
    ("span_k", "power law to K"),
    *CALIBRATED_COLUMNS,
    *SCALE_COLUMNS,
)


@dataclass(frozen=True)
class ResultFile:
    """A result file found under the report folder, parsed (or the reason it could not be)."""

    path: Path
    kind: str
    data: Mapping[str, Any] | None
    error: str | None = None


def find_results(root: Path) -> list[ResultFile]:
    """All result files under ``root``, demo first, then spectra, then tracked runs.

    Hidden folders (such as the staging folders of a command still running) are skipped.
    A file that is not valid JSON is kept with its error so that the report says so.
    """
    found: list[ResultFile] = []
    for name, kind in RESULT_FILES.items():
        for path in sorted(root.rglob(name)):
            relative = path.relative_to(root).parts
            if any(part.startswith(".") for part in relative):
                continue
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                found.append(ResultFile(path, kind, None, f"{type(exc).__name__}: {exc}"))
                continue
            if not isinstance(data, dict):
                error = f"not a JSON object but a JSON {type(data).__name__}"
                found.append(ResultFile(path, kind, None, error))
                continue
            kind_found = str(data.get("kind", kind))
            error = _content_error(kind_found, data)
            found.append(ResultFile(path, kind_found, None if error else data, error))
    return found


def _eigenvalues_error(analysis: Any) -> str | None:
    spectrum = analysis.get("spectrum") if isinstance(analysis, Mapping) else None
    eigenvalues = spectrum.get("eigenvalues") if isinstance(spectrum, Mapping) else None
    return None if isinstance(eigenvalues, list) else "an analysis has no spectrum.eigenvalues"


def _content_error(kind: str, data: Mapping[str, Any]) -> str | None:
    """What a result file lacks for its section, or None.

    None when ``data`` has what its section needs, else what is missing (a file cut short,
    edited, or written by another tool under the same name).
    """
    if kind == "track":
        entries = data.get("entries")
        if not isinstance(entries, list) or not entries:
            return "no 'entries' list of analysed checkpoints"
        analyses = [e.get("analysis") if isinstance(e, Mapping) else None for e in entries]
    elif kind == "demo":
        states = data.get("states")
        if not isinstance(states, Mapping) or not states or not isinstance(data.get("table"), list):
            return "no 'states' and 'table' of a demo"
        analyses = [s.get("analysis") if isinstance(s, Mapping) else None for s in states.values()]
    else:
        try:
            analyses = list(spectrum_analyses(data).values())
        except (AttributeError, TypeError, ValueError):
            analyses = []
        if not analyses:
            return "no 'spectrum' or 'blocks' with eigenvalues"
    return next((e for e in map(_eigenvalues_error, analyses) if e is not None), None)


class SkippedResultWarning(UserWarning):
    """A result file under the report folder could not be read or rendered and was left out."""


def _img(fig: Figure, alt: str, caption: str) -> str:
    encoded = base64.b64encode(plots.png_bytes(fig)).decode("ascii")
    wide = ' class="wide"' if fig.get_figwidth() > 8 else ""  # multi-panel figures
    return (
        f'<figure{wide}><img alt="{html.escape(alt)}" src="data:image/png;base64,{encoded}">'
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
    )


def _figures(items: Iterable[str]) -> str:
    return '<div class="figures">' + "".join(items) + "</div>"


def _safe_figure(make: Callable[[], Figure], alt: str, caption: str) -> str:
    """Draw one figure; a figure that cannot be drawn becomes a visible note, not a crash."""
    try:
        return _img(make(), alt, caption)
    except (ValueError, KeyError, TypeError, IndexError) as exc:
        return f'<p class="note">Figure "{html.escape(alt)}" not drawn: {html.escape(str(exc))}</p>'


def _meta(items: Mapping[str, Any]) -> str:
    parts = [
        f"<b>{html.escape(k)}</b>: {html.escape(format_value(v))}"
        for k, v in items.items()
        if v is not None
    ]
    return '<p class="meta">' + " &middot; ".join(parts) + "</p>"


def _spectrum_figures(analysis: Mapping[str, Any], label: str) -> list[str]:
    """Rank plot with the fitted line, CDF against the fit, and the density when present."""
    eigenvalues = analysis["spectrum"]["eigenvalues"]
    fit = analysis.get("fit")
    out = [
        _safe_figure(
            lambda: plots.rank_plot(eigenvalues, fit, title=f"Rank plot: {label}"),
            f"rank plot {label}",
            "Top Hessian eigenvalues against their rank (log-log) with the maximum-likelihood "
            "power law lambda_k = lambda_cut (K/k)^s; the legend gives the KS verdict.",
        )
    ]
    if fit is not None:
        out.append(
            _safe_figure(
                lambda: plots.cdf_plot(eigenvalues, fit, title=f"CDF: {label}"),
                f"CDF {label}",
                "Empirical CDF of the fitted eigenvalues and the fitted power-law CDF; "
                "the black bar is the KS distance d_ks.",
            )
        )
    density = analysis.get("density")
    if density:
        out.append(
            _safe_figure(
                lambda: plots.density_plot(
                    density["grid"],
                    density["values"],
                    eigenvalues=eigenvalues,
                    title=f"Spectral density: {label}",
                ),
                f"density {label}",
                "Stochastic Lanczos quadrature estimate of the whole spectral density "
                "(Gaussian-broadened), with the computed top eigenvalues marked.",
            )
        )
    return out


def _fit_note(analysis: Mapping[str, Any]) -> str:
    if analysis.get("fit") is None and analysis.get("fit_error"):
        return f'<p class="note">No power-law fit: {html.escape(analysis["fit_error"])}</p>'
    return ""


def render_spectrum(result: ResultFile, root: Path) -> str:
    """The report section of a ``spectrum.json``."""
    data = result.data or {}
    title = f"Spectrum: {data.get('model')} on {data.get('data')}"
    parts = [f"<h2>{html.escape(title)}</h2>"]
    parts.append(
        _meta(
            {
                "file": str(result.path.relative_to(root)),
                "checkpoint": data.get("checkpoint"),
                "samples": data.get("num_samples"),
                "parameters": data.get("params"),
                "dtype": (data.get("config") or {}).get("dtype"),
                "seconds": data.get("seconds"),
            }
        )
    )
    analyses = spectrum_analyses(data)
    rows = [summary_row(a, name=name) for name, a in analyses.items()]
    parts.append(html_table(rows, SPECTRUM_COLUMNS, caption="Eigenvalues, fit and measures"))
    parts.extend(_fit_note(analysis) for analysis in analyses.values())
    if len(analyses) > 1:
        series = {
            name: (a["spectrum"]["eigenvalues"], a.get("fit")) for name, a in analyses.items()
        }
        parts.append(
            _figures(
                [
                    _safe_figure(
                        lambda: plots.overlay_rank_plot(
                            series, title="Per-block spectra", normalize=True
                        ),
                        "per-block rank plots",
                        "Each parameter group's spectrum divided by its own lambda_1, with its "
                        "fitted power law.",
                    )
                ]
            )
        )
    for name, analysis in analyses.items():
        if len(analyses) > 1:
            parts.append(f"<h3>{html.escape(name)}</h3>")
        parts.append(_figures(_spectrum_figures(analysis, name)))
    return "\n".join(parts)


def render_track(result: ResultFile, root: Path) -> str:
    """The report section of a ``track.json``."""
    data = result.data or {}
    # track.json keeps its options under "settings"
    config = data.get("settings") or data.get("config") or {}
    parts = [f"<h2>{html.escape('Tracked run: ' + str(data.get('run')))}</h2>"]
    parts.append(
        _meta(
            {
                "file": str(result.path.relative_to(root)),
                "model": data.get("model"),
                "data": data.get("data"),
                "k": config.get("k"),
                "samples": config.get("samples"),
                "parameters": config.get("params"),
                "checkpoints analysed": len(data.get("entries") or []),
            }
        )
    )
    rows = track_rows(data)
    parts.append(html_table(rows, TRACK_COLUMNS, caption="Per checkpoint"))
    correlations = data.get("correlations") or {}
    for target, table in correlations.items():
        rows_c = correlation_rows(table)
        columns = CORRELATION_COLUMNS
        if not any(r.get("reason") for r in rows_c):  # a note column only when there are notes
            columns = tuple(c for c in columns if c[0] != "reason")
        name = "test loss" if target == "test_loss" else target.replace("_", " ")
        parts.append(
            html_table(
                rows_c,
                columns,
                caption=f"Correlation of each Hessian measure with {name} across checkpoints",
            )
        )
    if len(rows) < 3:
        parts.append('<p class="note">Fewer than 3 checkpoints: correlations are undefined.</p>')
    figures = [
        _safe_figure(
            lambda: plots.measures_vs_step(rows),
            "measures vs step",
            "Power-law and sharpness measures, test loss and generalization gap along training.",
        )
    ]
    for target in ("test_loss", "gap"):
        if any(r.get(target) is not None for r in rows):
            figures.append(
                _safe_figure(
                    lambda target=target: plots.measures_vs_generalization(
                        rows, target, correlations=correlations.get(target)
                    ),
                    f"measures vs {target}",
                    f"Each Hessian measure against {target.replace('_', ' ')}, one point per "
                    "checkpoint (colour = step), with the Pearson correlation.",
                )
            )
    series = {
        f"step {e.get('step')}": (
            e["analysis"]["spectrum"]["eigenvalues"],
            e["analysis"].get("fit"),
        )
        for e in data.get("entries") or []
        if e.get("analysis")
    }
    if series:
        figures.append(
            _safe_figure(
                lambda: plots.overlay_rank_plot(
                    series, title="Spectra along training", normalize=True
                ),
                "spectra along training",
                "Rank plots of every checkpoint, each divided by its lambda_1.",
            )
        )
    parts.append(_figures(figures))
    return "\n".join(parts)


def render_demo(result: ResultFile, root: Path) -> str:
    """The report section of a ``demo.json``."""
    data = result.data or {}
    parts = ["<h2>Demo: random initialisation vs trained network</h2>"]
    training = data.get("training") or {}
    parts.append(
        _meta(
            {
                "file": str(result.path.relative_to(root)),
                "model": data.get("model"),
                "data": data.get("data"),
                "epochs": training.get("epochs"),
                "test accuracy (trained)": training.get("test_accuracy"),
                "Hessian samples": data.get("num_samples"),
                "seconds": data.get("seconds"),
            }
        )
    )
    parts.append(
        "<p>The paper's Table 1 contrast (LeNet on MNIST, K = 1000): the top Hessian "
        "eigenvalues of the randomly initialised network are not a power law (d_ks = 0.0796 "
        "&ge; d_c = 0.043), those of the trained network are (d_ks = 0.0090, s = 1.009). The "
        "table leads with that test and the paper's numbers; beside it stand two tests that go "
        "beyond it: the bootstrap p-value of the fit (Clauset et al.; small = not a power law) "
        "and the normalised log-likelihood ratio against an exponential law (&gt; 0 favours "
        "the power law).</p>"
    )
    parts.append(html_table(data.get("table") or [], DEMO_COLUMNS, caption="Power-law test"))
    lines = demo_summary(data.get("table") or []).splitlines()
    lines += [f"Note: {note}" for note in data.get("notes") or []]
    parts.append("<ul>" + "".join(f"<li>{html.escape(line)}</li>" for line in lines) + "</ul>")
    if data.get("finding"):
        verdict = "".join(f"<li>{html.escape(str(v))}</li>" for v in data.get("verdict") or [])
        parts.append(f"<p><strong>{html.escape(str(data['finding']))}</strong></p>"
                     + (f"<ul>{verdict}</ul>" if verdict else ""))  # fmt: skip
    states: Mapping[str, Any] = data.get("states") or {}
    figures = [
        _safe_figure(
            lambda: demo_plot(data),
            "random vs trained",
            "The paper's test (d_ks against d_c, with the paper's d_ks) and the top eigenvalues "
            "of the random-init and trained networks with their fitted power laws.",
        )
    ]
    parts.append(_figures(figures))
    for name, state in states.items():
        parts.append(f"<h3>{html.escape(name)}</h3>")
        parts.append(_fit_note(state["analysis"]))
        parts.append(_figures(_spectrum_figures(state["analysis"], name)))
    return "\n".join(parts)


_RENDERERS: dict[str, Callable[[ResultFile, Path], str]] = {
    "demo": render_demo,
    "spectrum": render_spectrum,
    "track": render_track,
}


def render_report(root: Path, results: list[ResultFile], title: str | None = None) -> str:
    """The whole page as a string (no file written); unreadable files get a note."""
    return _page(root, _render_sections(root, results)[0], len(results), title)


def _render_sections(root: Path, results: list[ResultFile]) -> tuple[list[str], list[ResultFile]]:
    """The sections of the page (a note for each file left out) and the files left out."""
    sections: list[str] = []
    skipped: list[ResultFile] = []
    for result in results:
        if result.data is not None:
            try:
                sections.append(_RENDERERS.get(result.kind, render_spectrum)(result, root))
                continue
            except (AttributeError, KeyError, TypeError, ValueError, IndexError) as exc:
                result = ResultFile(result.path, result.kind, None, f"{type(exc).__name__}: {exc}")
        skipped.append(result)
        sections.append(
            f'<p class="note">Could not read {html.escape(str(result.path.relative_to(root)))}'
            f": {html.escape(str(result.error))}</p>"
        )
    return sections, skipped


def _page(root: Path, sections: list[str], num_files: int, title: str | None) -> str:
    from hessian_powerlaw import __version__

    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    heading = title or f"Hessian power-law report: {root.resolve().name}"
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(heading)}</title><style>{_CSS}</style></head><body>"
        f"<h1>{html.escape(heading)}</h1>"
        f'<p class="meta">hessian-powerlaw {html.escape(__version__)} &middot; {stamp} &middot; '
        f"{num_files} result file(s). The power law lambda_k ~ k^-s is tested as in Tang et "
        "al. (ICML 2025): maximum-likelihood exponent, KS distance d_ks against the critical "
        "value d_c.</p>" + "\n".join(sections) + "</body></html>\n"
    )


def write_report(directory: str | os.PathLike[str], *, title: str | None = None) -> Path:
    """Build ``DIR/report.html`` from every result file under ``DIR``.

    A file that cannot be read or rendered (not JSON, cut short, missing the fields of its
    kind) gets a note in the page and a :class:`SkippedResultWarning` naming it and why.

    Args:
        directory: the folder ``DIR`` searched for ``demo.json``, ``spectrum.json`` and
            ``track.json``.
        title: the page's title.

    Returns:
        The path of ``report.html``.

    Raises:
        UserInputError: ``DIR`` is not a folder or holds no valid result file.
    """
    root = Path(directory)
    if not root.is_dir():
        raise UserInputError(f"report folder {str(root)!r} does not exist or is not a folder")
    results = find_results(root)
    if not results:
        names = ", ".join(RESULT_FILES)
        raise UserInputError(
            f"no result files ({names}) under {str(root)!r}; write some there first with "
            "`hessian-powerlaw spectrum --out DIR` or `demo --out DIR`, or point report at a "
            "run folder that `track RUN` has analysed"
        )
    if not os.access(root, os.W_OK | os.X_OK):
        raise UserInputError(f"cannot write report.html into {str(root)!r}: folder not writable")
    sections, skipped = _render_sections(root, results)
    # one line each, whatever the parser's message held
    reasons = [f"{r.path.relative_to(root)} ({' '.join(str(r.error).split())})" for r in skipped]
    if len(skipped) == len(results):
        raise UserInputError(
            f"no valid result file under {str(root)!r}, so no report: {'; '.join(reasons)}; "
            "rerun the command that wrote it"
        )
    for reason in reasons:
        warnings.warn(f"report: skipped {reason}", SkippedResultWarning, stacklevel=2)
    page = _page(root, sections, len(results), title)
    return atomic_write_text(root / "report.html", page)
