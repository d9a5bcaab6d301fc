"""Summary rows and tables of analyses, as text (terminal) and as HTML (report).

These work on the dictionaries our JSON files hold (``Analysis.to_dict()``), so the command
line, the report and a user reading the JSON all see the same numbers. No torch here.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from typing import Any

# (key, header) of the columns the demo and the spectrum summary print
# the power-law verdict and the curvature scale: every table of spectra shows these
VERDICT_COLUMNS: tuple[tuple[str, str], ...] = (
    ("s", "s"),
    ("d_ks", "d_ks"),
    ("d_c", "d_c"),
    ("power_law", "power law?"),
)
SCALE_COLUMNS: tuple[tuple[str, str], ...] = (("lambda_max", "lambda_max"), ("trace", "trace"))
# the calibrated tests beyond the paper's KS test: bootstrap p-value, likelihood ratio vs exp
CALIBRATED_COLUMNS: tuple[tuple[str, str], ...] = (
    ("p_value", "p (bootstrap)"),
    ("lr_exponential", "LR vs exp"),
    ("lr_exponential_p", "p (LR)"),
)
# how well the eigensolve converged: an eigenvalue is only as good as its residual
CONVERGENCE_COLUMNS: tuple[tuple[str, str], ...] = (
    ("converged", "converged"),
    ("max_residual", "max residual"),
)


def with_uncertainty(
    columns: Sequence[tuple[str, str]], k_fit: bool = True
) -> tuple[tuple[str, str], ...]:
    """``columns`` with ``sigma_s`` after ``s`` (the report's tables).

    Args:
        columns: ``(key, header)`` pairs, e.g. :data:`VERDICT_COLUMNS`.
        k_fit: put the number of eigenvalues the fit used first.

    Returns:
        The wider columns.
    """
    wider: list[tuple[str, str]] = [("k_fit", "k fitted")] if k_fit else []
    for key, title in columns:
        wider.append((key, title))
        if key == "s":
            wider.append(("sigma_s", "sigma_s"))
    return tuple(wider)


SUMMARY_COLUMNS: tuple[tuple[str, str], ...] = (
    ("model", "model"),
    ("state", "state"),
    ("k", "k"),
    *VERDICT_COLUMNS,
    *SCALE_COLUMNS,
)

# the demo leads with the paper's test (d_ks against d_c, its verdict, s) and the paper's
# numbers for the same state, then the largest top-K the test passes on (demo.demo_table);
# the calibrated tests that go beyond it stand beside them
DEMO_COLUMNS: tuple[tuple[str, str], ...] = (
    ("state", "state"),
    ("k", "k"),
    ("d_ks", "d_ks"),
    ("d_c", "d_c"),
    ("power_law", "power law?"),
    ("s", "s"),
    ("paper_d_ks", "paper d_ks"),
    ("paper_power_law", "paper power law?"),
    ("paper_s", "paper s"),
    ("span_k", "power law to K"),
    *CALIBRATED_COLUMNS,
    ("test_accuracy", "test acc"),
    *SCALE_COLUMNS,
)


def format_value(value: Any, digits: int = 4) -> str:
    """One cell: ``None``/NaN -> ``-``, booleans -> yes/no, floats to ``digits`` significant."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return "-"
        return f"{value:.{digits}g}"
    return str(value)


def summary_row(analysis: Mapping[str, Any], **labels: Any) -> dict[str, Any]:
    """The numbers a reader wants first from one ``Analysis.to_dict()``.

    ``labels`` (e.g. ``model="lenet", state="trained"``) are put in front of the row.
    Convergence is reported as ``converged/requested`` next to the largest relative residual
    ``||H v - lambda v|| / |lambda_1|``: an eigenvalue is only as good as its residual.
    """
    measures = analysis.get("measures") or {}
    spectrum = analysis.get("spectrum") or {}
    fit = analysis.get("fit") or {}
    residuals = [r for r in (spectrum.get("residuals") or []) if r is not None]
    converged = spectrum.get("converged") or []
    return {
        **labels,
        "k": len(spectrum.get("eigenvalues") or []),
        "k_fit": fit.get("k"),
        "s": measures.get("s"),
        "sigma_s": fit.get("sigma_s"),
        "d_ks": measures.get("d_ks"),
        "d_c": measures.get("d_c"),
        "power_law": measures.get("is_power_law"),
        "p_value": measures.get("p_value"),
        "lr_exponential": measures.get("lr_exponential"),
        "lr_exponential_p": measures.get("lr_exponential_p"),
        "lambda_max": measures.get("lambda_max"),
        "trace": measures.get("trace"),
        "trace_stderr": measures.get("trace_stderr"),
        "converged": f"{sum(bool(c) for c in converged)}/{len(converged)}",
        "max_residual": max(residuals) if residuals else None,
        "num_params": analysis.get("num_params"),
        "seconds": analysis.get("seconds"),
        "fit_note": analysis.get("fit_error"),
    }


def text_table(
    rows: Sequence[Mapping[str, Any]], columns: Sequence[tuple[str, str]] = SUMMARY_COLUMNS
) -> str:
    """A plain aligned table (right-aligned numbers) for the terminal and the README."""
    header = [title for _, title in columns]
    cells = [[format_value(row.get(key)) for key, _ in columns] for row in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    for row in cells:
        lines.append(
            "  ".join(
                c.rjust(w) if _numeric(c) else c.ljust(w) for c, w in zip(row, widths)
            ).rstrip()
        )
    return "\n".join(lines)


def _numeric(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def html_table(
    rows: Sequence[Mapping[str, Any]],
    columns: Sequence[tuple[str, str]],
    *,
    caption: str | None = None,
) -> str:
    """An HTML table; every cell is escaped. Power-law verdicts get a class for colouring."""
    head = "".join(f"<th>{html.escape(title)}</th>" for _, title in columns)
    body = []
    for row in rows:
        cells = []
        for key, _ in columns:
            value = row.get(key)
            css = ""
            if key in ("power_law", "is_power_law") and isinstance(value, bool):
                css = ' class="yes"' if value else ' class="no"'
            cells.append(f"<td{css}>{html.escape(format_value(value))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    cap = f"<caption>{html.escape(caption)}</caption>" if caption else ""
    return f"<table>{cap}<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


# the per-checkpoint table `track` prints
TRACK_STEP_COLUMNS: tuple[tuple[str, str], ...] = (
    ("step", "step"),
    ("test_loss", "test loss"),
    ("gap", "gap"),
    *VERDICT_COLUMNS,
    *SCALE_COLUMNS,
    ("converged", "converged"),
)


CORRELATION_COLUMNS: tuple[tuple[str, str], ...] = (
    ("measure", "measure"),
    ("n", "n"),
    ("pearson_r", "Pearson r"),
    ("pearson_p", "p"),
    ("spearman_rho", "Spearman rho"),
    ("spearman_p", "p"),
    ("kendall_tau", "Kendall tau"),
    ("kendall_p", "p"),
    ("reason", "note"),
)


def correlation_rows(correlations: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """``{measure: {pearson_r, pearson_p, ...}}`` -> table rows with a ``measure`` column."""
    return [{"measure": name, **dict(stats)} for name, stats in correlations.items()]


def track_rows(data: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One flat row per checkpoint: training metrics next to the Hessian measures."""
    rows = []
    for entry in data.get("entries") or []:
        row = summary_row(entry.get("analysis") or {"measures": entry.get("measures")})
        row.update({k: v for k, v in entry.items() if k not in ("analysis", "measures")})
        rows.append(row)
    return sorted(rows, key=lambda r: (r.get("step") is None, r.get("step") or 0))


def demo_summary(table: Sequence[Mapping[str, Any]]) -> str:
    """What the demo's numbers say, in words, from the rows of :func:`demo_table`."""
    lines = []
    for row in table:
        if row.get("d_ks") is None:
            lines.append(f"{row['state']}: no power-law fit ({row.get('fit_note')})")
            continue
        relation = "<" if row["power_law"] else ">="
        verdict = "a power law" if row["power_law"] else "not a power law"
        text = (
            f"{row['state']}: d_ks = {row['d_ks']:.4f} {relation} d_c = {row['d_c']:.4f}, "
            f"{verdict} by the paper's KS test; s = {row['s']:.3f}"
        )
        if row.get("p_value") is not None:
            text += f"; bootstrap p = {row['p_value']:.3g}"
        if row.get("lr_exponential") is not None:
            favours = "power law" if row["lr_exponential"] > 0 else "exponential"
            text += (
                f"; likelihood ratio vs exponential R = {row['lr_exponential']:+.2f} "
                f"(p = {row['lr_exponential_p']:.2g}, favours {favours})"
            )
        lines.append(text)
    return "\n".join(lines)
