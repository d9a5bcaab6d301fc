"""Figures, tables and the self-contained HTML report, on spectra with known structure.

The analyses here are real (``analyze_operator`` on explicit symmetric matrices whose
eigenvalues we choose), so the report is tested on exactly the data the tool produces.
"""

from __future__ import annotations

import base64
import io
import json
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from hessian_powerlaw.analysis import Analysis, ModelAnalysis, analyze_operator, versions
from hessian_powerlaw.cli import main
from hessian_powerlaw.errors import UserInputError
from hessian_powerlaw.io import atomic_write_json, load_eigenvalues
from hessian_powerlaw.operators import MatrixOperator
from hessian_powerlaw.powerlaw import fit_power_law
from hessian_powerlaw.report import plots
from hessian_powerlaw.report.html import SkippedResultWarning, write_report
from hessian_powerlaw.report.outputs import write_spectrum_figures
from hessian_powerlaw.report.tables import format_value, summary_row, text_table
from hessian_powerlaw.tracking import TrackResult, correlations_of

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def rotated(eigenvalues: np.ndarray, seed: int = 0) -> MatrixOperator:
    """``Q diag(eigenvalues) Q^T`` with a random orthogonal ``Q``: a dense operator whose
    spectrum we know exactly."""
    gen = torch.Generator().manual_seed(seed)
    n = len(eigenvalues)
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=gen, dtype=torch.float64))
    d = torch.as_tensor(eigenvalues, dtype=torch.float64)
    return MatrixOperator(q @ torch.diag(d) @ q.T)


def power_law_spectrum(n: int = 120, s: float = 1.0, scale: float = 10.0) -> np.ndarray:
    """``scale * k^-s`` for the top half, then a bulk of small values of both signs."""
    top = scale * np.arange(1, n // 2 + 1, dtype=float) ** -s
    bulk = np.linspace(-0.05, 0.05, n - n // 2) * top[-1]
    return np.concatenate([top, bulk])


def linear_spectrum(n: int = 120) -> np.ndarray:
    """Evenly spaced top eigenvalues (a uniform density): far from a power law."""
    return np.concatenate([np.linspace(10.0, 1.0, 50), np.linspace(0.5, 0.01, n - 50)])


@pytest.fixture(scope="module")
def analyses() -> dict[str, Analysis]:
    """Three analyses: a power law, a linear spectrum, and a power law with a density."""
    out = {
        "power": analyze_operator(rotated(power_law_spectrum()), k=50, trace_matvecs=0),
        "linear": analyze_operator(rotated(linear_spectrum()), k=50, trace_matvecs=0),
    }
    out["with density"] = analyze_operator(
        rotated(power_law_spectrum(s=1.2)), k=50, trace_matvecs=0, density=True
    )
    return out


def model_result(analysis: Analysis, model: str = "synthetic") -> ModelAnalysis:
    return ModelAnalysis(
        model=model,
        data="matrix",
        checkpoint=None,
        num_samples=0,
        params="all",
        analysis=analysis,
        blocks={},
        evaluation={},
        config={"k": 50},
        versions=versions(),
        seconds=analysis.seconds,
    )


# ---------------------------------------------------------------------------- plots


def test_rank_line_is_the_fitted_law() -> None:
    """The drawn line passes through (K, lambda_cut) with log-log slope exactly -s."""
    values = 3.0 * np.arange(1, 201, dtype=float) ** -1.0
    view = plots.FitView.of(fit_power_law(values))
    assert view is not None
    assert view.rank_line(np.array([view.k]))[0] == pytest.approx(view.lambda_cut, rel=1e-12)
    r = np.array([2.0, 50.0])
    line = view.rank_line(r)
    slope = np.log(line[1] / line[0]) / np.log(r[1] / r[0])
    assert slope == pytest.approx(-view.s, rel=1e-12)
    # the exact rank law k^-1 is fitted with s within 2% of 1 (PAPER.md), so the line is close
    assert view.s == pytest.approx(1.0, rel=0.02)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ks_location_attains_the_fit_distance(seed: int) -> None:
    """The bar drawn on the CDF plot has exactly the length d_ks that the fit reports
    (two independent computations of the same supremum)."""
    rng = np.random.default_rng(seed)
    values = (1 - rng.random(300)) ** (-1.0 / 1.3)  # Pareto, beta = 2.3
    fit = fit_power_law(values)
    view = plots.FitView.of(fit)
    _, empirical, fitted = plots.ks_location(np.sort(values)[::-1][: fit.k], view)
    assert abs(empirical - fitted) == pytest.approx(fit.ks_distance, abs=1e-12)


def test_fit_view_reads_objects_and_dicts() -> None:
    fit = fit_power_law(np.arange(1, 101, dtype=float) ** -1.0)
    assert plots.FitView.of(fit) == plots.FitView.of(fit.to_dict())
    assert plots.FitView.of(None) is None
    assert "power law" in plots.FitView.of(fit).verdict()


def _png_ok(fig: Figure) -> bytes:
    data = plots.png_bytes(fig)
    assert data.startswith(PNG_MAGIC) and len(data) > 5000
    return data


def test_rank_plot_draws_the_positive_eigenvalues(analyses: dict[str, Analysis]) -> None:
    analysis = analyses["power"]
    fig = plots.rank_plot(analysis.eigenvalues, analysis.fit, title="power")
    ax = fig.axes[0]
    points = ax.lines[0].get_ydata()
    expected = np.sort(analysis.eigenvalues[analysis.eigenvalues > 0])[::-1]
    np.testing.assert_allclose(points, expected)
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    assert ax.get_xlabel() and ax.get_ylabel()
    legend = " ".join(t.get_text() for t in ax.get_legend().get_texts())
    assert "power law" in legend and f"{analysis.fit.s:.3f}" in legend
    _png_ok(fig)


def test_all_figures_render(analyses: dict[str, Analysis]) -> None:
    power, expo, dens = analyses["power"], analyses["linear"], analyses["with density"]
    _png_ok(plots.cdf_plot(power.eigenvalues, power.fit))
    _png_ok(
        plots.density_plot(dens.density.grid, dens.density.values, eigenvalues=dens.eigenvalues)
    )
    _png_ok(
        plots.overlay_rank_plot(
            {"power": (power.eigenvalues, power.fit), "exp": (expo.eigenvalues, expo.fit)},
            normalize=True,
        )
    )
    rows = [
        {"step": 10 * i, "s": 1 + 0.1 * i, "d_ks": 0.1 / (i + 1), "d_c": 0.19,
         "lambda_max": 5.0 + i, "trace": None if i == 0 else 20.0 + i,
         "test_loss": 2.0 / (i + 1), "gap": 0.05 * i}
        for i in range(4)
    ]  # fmt: skip
    _png_ok(plots.measures_vs_step(rows))
    fig = plots.measures_vs_generalization(
        rows, "test_loss", correlations={"s": {"pearson_r": -0.93, "pearson_p": 0.07}}
    )
    assert "Pearson r = -0.93" in fig.axes[0].get_title()
    _png_ok(fig)


def test_linear_spectrum_is_not_called_power_law(analyses: dict[str, Analysis]) -> None:
    """Sanity of the inputs the report shows: the KS test separates the two spectra."""
    assert analyses["power"].measures["is_power_law"] is True
    assert analyses["power"].measures["s"] == pytest.approx(1.0, abs=0.1)
    assert analyses["linear"].measures["is_power_law"] is False


# ---------------------------------------------------------------------------- tables


def test_format_value_and_text_table() -> None:
    assert format_value(None) == "-" and format_value(float("nan")) == "-"
    assert format_value(True) == "yes" and format_value(3) == "3"
    assert format_value(0.0123456) == "0.01235"
    table = text_table([{"model": "lenet", "state": "trained", "k": 100, "s": 1.01234,
                         "power_law": True}])  # fmt: skip
    header, rule, row = table.splitlines()
    assert header.split()[:4] == ["model", "state", "k", "s"]
    assert "1.012" in row and "yes" in row and set(rule.replace(" ", "")) == {"-"}


def test_summary_row_reports_convergence(analyses: dict[str, Analysis]) -> None:
    analysis = analyses["power"]
    row = summary_row(analysis.to_dict(), state="x")
    assert row["k"] == 50 and row["state"] == "x"
    assert row["converged"] == f"{analysis.spectrum.num_converged}/50"
    assert row["max_residual"] == pytest.approx(float(np.max(analysis.spectrum.residuals)))
    assert row["d_ks"] == analysis.fit.ks_distance


# ---------------------------------------------------------------------------- html


class _Collector(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.images: list[dict[str, Any]] = []
        self.links: list[str] = []
        self.tags: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        values = dict(attrs)
        if tag == "img":
            self.images.append(values)
        for key in ("src", "href"):
            if values.get(key) and tag != "img":
                self.links.append(str(values[key]))


def _write_results(root: Path, analyses: dict[str, Analysis]) -> None:
    spectrum = model_result(analyses["with density"], model="<b>fcn</b>")
    atomic_write_json(root / "a" / "spectrum.json", spectrum)
    entries = []
    for step, name in enumerate(["linear", "power", "with density"]):
        analysis = analyses[name]
        record = analysis.to_dict()
        entries.append({"checkpoint": f"ckpt-{step}.pt", "step": step, "epoch": step,
                        "train_loss": 1.0 / (step + 1), "train_accuracy": 0.5 + 0.1 * step,
                        "test_loss": 1.2 / (step + 1), "test_accuracy": 0.5,
                        "gap": 0.2 / (step + 1), "measures": record["measures"],
                        "analysis": record})  # fmt: skip
    track = TrackResult(run="run", model="m", data="d", settings={"k": 50}, entries=entries,
                        correlations=correlations_of(entries), complete=True,
                        versions=versions(), seconds=1.0)  # fmt: skip
    atomic_write_json(root / "run" / "track.json", track)


def test_report_is_self_contained(tmp_path: Path, analyses: dict[str, Analysis]) -> None:
    _write_results(tmp_path, analyses)
    path = write_report(tmp_path)
    assert path == tmp_path / "report.html"
    text = path.read_text(encoding="utf-8")
    parser = _Collector()
    parser.feed(text)
    # spectrum: rank, CDF, density; track: vs step, vs test loss, vs gap, spectra overlay
    assert len(parser.images) == 7
    for image in parser.images:
        src = str(image["src"])
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1]).startswith(PNG_MAGIC)
        assert image.get("alt")
    assert parser.links == [] and "script" not in parser.tags and "link" not in parser.tags
    assert "http://" not in text and "https://" not in text
    assert "&lt;b&gt;fcn&lt;/b&gt;" in text and "<b>fcn</b>" not in text  # escaped
    assert "Pearson r" in text and "Kendall tau" in text
    assert f"{analyses['power'].fit.ks_distance:.4g}" in text


def test_spectrum_json_is_flat_and_readable_by_fit(
    tmp_path: Path, analyses: dict[str, Analysis]
) -> None:
    """spectrum.json keeps eigenvalues under 'spectrum' at the top level: `fit FILE` reads it."""
    analysis = analyses["power"]
    path = atomic_write_json(tmp_path / "spectrum.json", model_result(analysis))
    record = json.loads(path.read_text())
    assert {"model", "spectrum", "fit", "measures", "versions", "config"} <= set(record)
    np.testing.assert_array_equal(load_eigenvalues(path), analysis.eigenvalues)
    figures = write_spectrum_figures(record, tmp_path)
    assert [p.name for p in figures] == ["spectrum.png", "spectrum-cdf.png"]
    assert all(p.read_bytes().startswith(PNG_MAGIC) for p in figures)


def test_report_notes_unreadable_files(tmp_path: Path, analyses: dict[str, Analysis]) -> None:
    atomic_write_json(tmp_path / "ok" / "spectrum.json", model_result(analyses["power"]))
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "track.json").write_text("{ not json")
    (tmp_path / ".staging-x").mkdir()
    (tmp_path / ".staging-x" / "demo.json").write_text("{}")  # hidden: ignored
    with pytest.warns(SkippedResultWarning, match=r"skipped bad/track.json \(JSONDecodeError"):
        text = write_report(tmp_path).read_text()
    assert "Could not read bad/track.json" in text
    assert "Demo" not in text


DAMAGED: list[tuple[str, str, str]] = [
    ("spectrum.json", "{ not json", "JSONDecodeError"),
    ("spectrum.json", "[1, 2]", "not a JSON object but a JSON list"),
    ("spectrum.json", "null", "not a JSON object but a JSON NoneType"),
    ("spectrum.json", "{}", "no 'spectrum' or 'blocks' with eigenvalues"),
    ("spectrum.json", '{"spectrum": {"k": 3}}', "no spectrum.eigenvalues"),
    ("track.json", '{"kind": "track"}', "no 'entries' list"),
    ("demo.json", '{"states": {"trained": {}}, "table": []}', "no spectrum.eigenvalues"),
]


@pytest.mark.parametrize(("name", "content", "reason"), DAMAGED)
def test_report_of_only_damaged_files_is_an_error_naming_them(
    tmp_path: Path, capsys: pytest.CaptureFixture, name: str, content: str, reason: str
) -> None:
    """Issue #18.6: a folder whose only result is damaged gave exit 0 and an empty report."""
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / name).write_text(content)
    with pytest.raises(UserInputError, match=f"no valid result file.*run/{name} .*{reason}"):
        write_report(tmp_path)
    assert not (tmp_path / "report.html").exists()
    assert main(["report", str(tmp_path)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and f"run/{name}" in err


def test_report_names_each_skipped_file_on_stderr(
    tmp_path: Path, capsys: pytest.CaptureFixture, analyses: dict[str, Analysis]
) -> None:
    atomic_write_json(tmp_path / "ok" / "spectrum.json", model_result(analyses["power"]))
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "spectrum.json").write_text('{"model": "x"')
    (tmp_path / "bad" / "demo.json").write_text("[]")
    assert main(["report", str(tmp_path)]) == 0
    out, err = capsys.readouterr()
    assert out.strip() == str(tmp_path / "report.html")
    lines = err.strip().splitlines()
    assert len(lines) == 2 and all(line.startswith("hessian-powerlaw: warning: ") for line in lines)
    assert "skipped bad/demo.json (not a JSON object" in lines[0]
    assert "skipped bad/spectrum.json (JSONDecodeError" in lines[1]


def test_report_errors(tmp_path: Path) -> None:
    with pytest.raises(UserInputError, match="does not exist"):
        write_report(tmp_path / "missing")
    with pytest.raises(UserInputError, match="no result files"):
        write_report(tmp_path)
    assert not (tmp_path / "report.html").exists()


def test_png_roundtrip_through_matplotlib(analyses: dict[str, Analysis]) -> None:
    """The embedded PNG decodes to an image of the figure's size (not an empty file)."""
    import matplotlib.image as mpimg

    fig = plots.rank_plot(analyses["power"].eigenvalues, analyses["power"].fit)
    image = mpimg.imread(io.BytesIO(plots.png_bytes(fig, dpi=100)), format="png")
    assert image.shape[:2] == (440, 640)
    assert float(image[..., :3].std()) > 0.05  # not blank
