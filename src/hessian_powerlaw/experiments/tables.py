"""Rows, markdown tables and verdict sentences of the reproductions, from the numbers.

Everything here works on the JSON-ready dicts the runner writes (``results.json``), so tables
and sentences can be regenerated from the files alone; no torch.

The verdict of an experiment is built from comparisons the summaries compute (power-law
verdicts against the paper's, orderings of ``d_ks`` or ``s``, signs of correlations) and from
the differences between our setting and the paper's (K, data, epochs), which are the likely
causes when the comparison fails.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from hessian_powerlaw.experiments.paper import PAPER_ROWS, PaperRow
from hessian_powerlaw.report.tables import (
    SCALE_COLUMNS,
    VERDICT_COLUMNS,
    format_value,
    summary_row,
)

# The paper's Hessian size and data, for naming what our run does differently.
PAPER_K = 1000
PAPER_EPOCHS = 50
DATA_NAMES = {
    "digits": "scikit-learn digits (8x8, 1,437 training images) instead of MNIST",
    "fashion-mnist": "Fashion-MNIST",
}

MEASURE_COLUMNS: tuple[tuple[str, str], ...] = (
    ("k", "k"),
    *VERDICT_COLUMNS,
    *SCALE_COLUMNS,
    ("test_accuracy", "test acc"),
    ("converged", "converged"),
)
PAPER_COLUMNS: tuple[tuple[str, str], ...] = (
    ("paper_setting", "paper setting"),
    ("paper_d_ks", "paper d_ks"),
    ("paper_power_law", "paper power law?"),
    ("paper_s", "paper s"),
)


def columns(*values: tuple[str, str], paper: bool = True) -> tuple[tuple[str, str], ...]:
    """``setting``, the swept ``values`` columns, the measures and (optionally) the paper's."""
    return (("setting", "setting"), *values, *MEASURE_COLUMNS, *(PAPER_COLUMNS if paper else ()))


def paper_row(experiment: str, setting: str | None) -> PaperRow | None:
    """The paper's row named ``setting`` in ``experiment`` (``None`` for ``None``)."""
    if setting is None:
        return None
    for row in PAPER_ROWS.get(experiment, ()):
        if row.setting == setting:
            return row
    raise KeyError(f"experiment {experiment!r} has no paper row {setting!r}")


def paper_cells(experiment: str, setting: str | None) -> dict[str, Any]:
    """The ``paper_*`` cells of a row (empty when the condition has no paper counterpart)."""
    row = paper_row(experiment, setting)
    if row is None:
        return {key: None for key, _ in PAPER_COLUMNS}
    return {
        "paper_setting": row.setting,
        "paper_d_ks": row.d_ks,
        "paper_power_law": row.power_law,
        "paper_s": row.s,
    }


def analysis_row(
    experiment: str,
    result: Mapping[str, Any],
    analysis: Mapping[str, Any],
    setting: str | None = None,
    paper: str | None = None,
) -> dict[str, Any]:
    """One table row: a condition's labels and swept values, one analysis, the paper's cells."""
    evaluation = result.get("evaluation") or {}
    row = summary_row(analysis, setting=setting or result["label"])
    row.update(result.get("values") or {})
    row["group"] = result.get("group") or ""
    row["test_accuracy"] = (evaluation.get("test") or {}).get("accuracy")
    row["test_loss"] = (evaluation.get("test") or {}).get("loss")
    row["train_accuracy"] = (evaluation.get("train") or {}).get("accuracy")
    row["train_loss"] = (evaluation.get("train") or {}).get("loss")
    row.update(paper_cells(experiment, paper if paper is not None else result.get("paper")))
    return row


def condition_rows(experiment: str, results: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per condition (per block for per-block conditions)."""
    rows = []
    for result in results:
        analyses = result.get("analyses") or {}
        for group, analysis in analyses.items():
            setting = result["label"] if len(analyses) == 1 else f"{result['label']} / {group}"
            rows.append(analysis_row(experiment, result, analysis, setting))
    return rows


# --------------------------------------------------------------------------------------
# Markdown
# --------------------------------------------------------------------------------------


def cell(value: Any) -> str:
    """A markdown cell: ranges as ``low-high``, numbers to 4 significant digits, ``|`` escaped."""
    if (
        isinstance(value, (list, tuple))
        and len(value) == 2
        and all(isinstance(v, (int, float)) for v in value)
    ):
        return f"{format_value(float(value[0]), 3)}-{format_value(float(value[1]), 3)}"
    return format_value(value).replace("|", "\\|")


def markdown_table(rows: Sequence[Mapping[str, Any]], cols: Sequence[Sequence[str]]) -> str:
    """A GitHub markdown table of ``rows`` with ``cols`` = ``(key, header)`` pairs."""
    header = "| " + " | ".join(title for _, title in cols) + " |"
    rule = "|" + "|".join("---" for _ in cols) + "|"
    body = ["| " + " | ".join(cell(row.get(key)) for key, _ in cols) + " |" for row in rows]
    return "\n".join([header, rule, *body])


PAPER_TABLE_COLUMNS = (
    ("setting", "setting"),
    ("d_ks", "d_ks"),
    ("power_law", "power law?"),
    ("s", "s"),
    ("note", "note"),
)
CORRELATION_COLUMNS = (
    ("measure", "measure"),
    ("target", "target"),
    ("n", "n"),
    ("pearson_r", "Pearson r"),
    ("pearson_p", "p"),
    ("spearman_rho", "Spearman rho"),
    ("spearman_p", "p"),
    ("kendall_tau", "Kendall tau"),
    ("kendall_p", "p"),
)


def results_section(record: Mapping[str, Any], heading: str = "###") -> str:
    """Our table (next to the paper's numbers), correlations, the paper's rows, the verdict."""
    parts = [
        f"{heading} Our results next to the paper's",
        "",
        markdown_table(record.get("rows") or [], record.get("columns") or []),
    ]
    if record.get("correlations"):
        parts += [
            "",
            f"{heading} Correlations",
            "",
            markdown_table(record["correlations"], CORRELATION_COLUMNS),
        ]
    if record.get("paper"):
        parts += [
            "",
            f"{heading} The paper's numbers (Tang et al., ICML 2025)",
            "",
            markdown_table(record["paper"], PAPER_TABLE_COLUMNS),
        ]
    parts += ["", f"**Verdict.** {record.get('verdict', '')}"]
    return "\n".join(parts)


def markdown_report(record: Mapping[str, Any]) -> str:
    """``OUT/table.md``: title, command, scale, wall time, tables and verdict."""
    head = [
        f"# {record['title']}",
        "",
        f"Paper: {record['claim']}",
        "",
        f"Command: `{record['command']}` (scale `{record['scale']}`, "
        f"measured time {compute_seconds(record):.0f} s).",
        "",
    ]
    figures = [f"![{name}]({name})" for name in record.get("figures") or []]
    return "\n".join(head) + results_section(record, "##") + "\n\n" + "\n".join(figures) + "\n"


# --------------------------------------------------------------------------------------
# Verdict helpers
# --------------------------------------------------------------------------------------


def verdict_agreement(rows: Iterable[Mapping[str, Any]]) -> tuple[int, int, list[str]]:
    """(agreeing, compared, labels that disagree) for rows with both power-law verdicts."""
    agree, total, wrong = 0, 0, []
    for row in rows:
        ours, theirs = row.get("power_law"), row.get("paper_power_law")
        if ours is None or theirs is None:
            continue
        total += 1
        if bool(ours) == bool(theirs):
            agree += 1
        else:
            wrong.append(str(row.get("setting")))
    return agree, total, wrong


def scale_differences(scale: Mapping[str, Any], k: int | None = None) -> list[str]:
    """How our scale differs from the paper's, in words: the likely causes of disagreement."""
    if scale.get("name") == "paper":
        return []
    out = []
    k = k if k is not None else scale.get("k")
    if k is not None and k < PAPER_K:
        from hessian_powerlaw.powerlaw import critical_value

        out.append(
            f"K = {k} instead of {PAPER_K} (d_c = {critical_value(k):.3f} instead of "
            f"{critical_value(PAPER_K):.3f}, a weaker KS test)"
        )
    data = DATA_NAMES.get(str(scale.get("mnist")))
    if data:
        out.append(data)
    epochs = scale.get("epochs")
    if epochs is not None and epochs < PAPER_EPOCHS:
        out.append(f"{epochs} epochs instead of {PAPER_EPOCHS}")
    return out


def unconverged(results: Iterable[Mapping[str, Any]]) -> list[str]:
    """Conditions whose eigensolver stopped at its product budget with pairs unconverged."""
    notes = []
    for result in results:
        for group, analysis in (result.get("analyses") or {}).items():
            flags = (analysis.get("spectrum") or {}).get("converged") or []
            if flags and not all(flags):
                where = result["label"] if len(result["analyses"]) == 1 else group
                notes.append(
                    f"{sum(map(bool, flags))} of {len(flags)} eigenpairs converged for {where}"
                )
    return notes


def join_words(items: Sequence[str]) -> str:
    items = [i for i in items if i]
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def sentence(agreements: Sequence[str], disagreements: Sequence[str], causes: Sequence[str]) -> str:
    """One sentence: what agrees, what does not and the likely cause, from computed parts."""
    parts = []
    if agreements:
        parts.append("Agrees with the paper: " + "; ".join(agreements))
    if disagreements:
        lead = "but disagrees" if agreements else "Disagrees with the paper"
        text = f"{lead}: " + "; ".join(disagreements)
        if causes:
            text += f", likely because of {join_words(list(causes))}"
        parts.append(text)
    elif causes and parts:
        parts.append(f"despite {join_words(list(causes))}")
    if not parts:
        return "No setting here has a counterpart in the paper's tables, so nothing is compared."
    return ", ".join(parts) + "."


def verdict_phrase(rows: Sequence[Mapping[str, Any]]) -> tuple[list[str], list[str]]:
    """The power-law verdict comparison as (agreement parts, disagreement parts)."""
    agree, total, wrong = verdict_agreement(rows)
    if total == 0:
        return [], []
    text = f"{agree} of {total} power-law verdicts match"
    if wrong:
        return [], [f"{text} (the opposite verdict for {join_words(wrong)})"]
    return [text], []


def compute_seconds(record: Mapping[str, Any]) -> float:
    """The time an experiment's numbers took to compute (older files: the wall time)."""
    return float(record.get("compute_seconds") or record["seconds"])


def mean(values: Iterable[Any]) -> float | None:
    numbers = [float(v) for v in values if v is not None]
    return sum(numbers) / len(numbers) if numbers else None


def fmt(value: Any, digits: int = 3) -> str:
    return format_value(value, digits)
