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

# The paper's Hessian size and training, for naming what our run does differently.
PAPER_K = 1000
PAPER_EPOCHS = 50
PAPER_TRAIN_SIZE = 60000
# data set names as the sentences say them
DATA_LABELS = {
    "digits": "scikit-learn digits (8x8, 1,437 training images)",
    "mnist": "MNIST",
    "mnist-idx": "MNIST",
    "fashion-mnist": "Fashion-MNIST",
    "cifar10": "CIFAR-10",
    "shakespeare": "Shakespeare",
}
# (training, test) examples of each image data set, before ``:N`` or ``subset``
DATA_SIZES: dict[str, tuple[int, int]] = {
    "digits": (1437, 360),
    "mnist": (60000, 10000),
    "mnist-idx": (60000, 10000),
    "fashion-mnist": (60000, 10000),
    "cifar10": (50000, 10000),
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


def verdict_line(record: Mapping[str, Any]) -> str:
    """``**Verdict: <computed headline>.** <computed sentence>`` (older files: no headline)."""
    headline = AGREEMENT_HEADLINES.get(str(record.get("agreement")))
    if headline is None:
        return f"**Verdict.** {record.get('verdict', '')}"
    return f"**Verdict: {headline}.** {record.get('verdict', '')}"


def results_section(record: Mapping[str, Any], heading: str = "###") -> str:
    """The body of an experiment's report, in Markdown.

    The settings that ran and where they depart from the paper's, our table (next to the
    paper's numbers), correlations, the paper's rows, the verdict.
    """
    parts = []
    if record.get("settings"):
        parts += [f"{heading} Settings", "", *(f"- {line}" for line in record["settings"]), ""]
    if record.get("notes"):
        parts += [
            f"{heading} Where these settings depart from the paper's, and why",
            "",
            *(f"- {note}" for note in record["notes"]),
            "",
        ]
    parts += [
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
    parts += ["", verdict_line(record)]
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
    body = results_section(record, "##")
    return "\n".join(head) + "\n" + body + "\n\n" + "\n".join(figures) + "\n"


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


def data_name(spec: str) -> str:
    """The data set of a data spec: ``mnist:6000`` -> ``mnist``."""
    return str(spec).partition(":")[0]


def train_size(config: Mapping[str, Any]) -> int | None:
    """The training examples of a run's image data.

    Training examples of a run's image data after ``:N`` and ``subset`` (a config dict);
    ``None`` for data whose size is not known here (text).
    """
    spec = str(config.get("data", ""))
    name, _, rest = spec.partition(":")
    if name not in DATA_SIZES:
        return None
    n = DATA_SIZES[name][0]
    count = rest.rpartition(":")[2] if name in ("mnist-idx", "cifar10") else rest
    if count.isdigit():
        n = min(n, int(count))
    if config.get("subset") is not None:
        n = min(n, int(config["subset"]))
    return n


def _family(model: Any) -> str:
    return str(model).partition(":")[0]


def setting_differences(
    results: Sequence[Mapping[str, Any]],
    *,
    paper_model: str | None = None,
    paper_data: str | None = "mnist",
    sizes: bool = True,
) -> list[str]:
    """How the runs behind ``results`` differ from the paper's settings, in words.

    Computed from each result's ``config`` and ``hessian`` (what actually ran): a K below the
    paper's 1000 (with both critical values), data other than ``paper_data``, models other
    than ``paper_model``, fewer than 50 epochs and (``sizes``) training sets smaller than
    MNIST's 60,000. These are the likely causes when a comparison fails.
    """
    out = []
    ks = [int((r.get("hessian") or {})["k"]) for r in results if (r.get("hessian") or {}).get("k")]
    if ks and min(ks) < PAPER_K:
        from hessian_powerlaw.powerlaw import critical_value

        k = min(ks)
        out.append(
            f"K = {k} instead of {PAPER_K} (d_c = {critical_value(k):.3f} instead of "
            f"{critical_value(PAPER_K):.3f}, a weaker KS test)"
        )
    configs = [r.get("config") or {} for r in results]
    if paper_data is not None:
        ours = [n for n in dict.fromkeys(data_name(c.get("data", "")) for c in configs) if n]
        others = [n for n in ours if DATA_LABELS.get(n, n) != DATA_LABELS.get(paper_data)]
        if others:
            names = join_words([DATA_LABELS.get(n, n) for n in others])
            out.append(f"{names} instead of {DATA_LABELS.get(paper_data, paper_data)}")
    if paper_model is not None:
        models = [m for m in dict.fromkeys(_family(c.get("model")) for c in configs)]
        if models and paper_model not in models:
            out.append(f"{join_words(models)} instead of {paper_model}")
    trained = [c for c, r in zip(configs, results) if r.get("trained", True)]
    short: dict[int, list[str]] = {}
    for c in trained:
        epochs = c.get("epochs")
        if epochs is not None and epochs < PAPER_EPOCHS:
            short.setdefault(int(epochs), [])
            if _family(c.get("model")) not in short[int(epochs)]:
                short[int(epochs)].append(_family(c.get("model")))
    for epochs, models in sorted(short.items()):
        unit = "epoch" if epochs == 1 else "epochs"
        out.append(f"{epochs} {unit} instead of {PAPER_EPOCHS} ({join_words(models)})")
    if sizes:
        small = sorted(
            {
                n
                for c in trained
                if (n := train_size(c)) is not None
                and n < PAPER_TRAIN_SIZE
                and data_name(c.get("data", "")) != "digits"
            }
        )
        if small:  # fmt: skip
            counts = join_words([f"{n:,}" for n in small])
            out.append(f"{counts} training images instead of {PAPER_TRAIN_SIZE:,}")
    return out


AGREEMENTS = ("agrees", "partly agrees", "disagrees", "not compared")
AGREEMENT_HEADLINES = {
    "agrees": "the finding holds here (agrees with the paper)",
    "partly agrees": "the finding holds only in part here (partly agrees with the paper)",
    "disagrees": "the finding does not hold here (disagrees with the paper)",
    "not compared": "nothing here is compared with the paper",
}


def agreement(agreements: Sequence[str], disagreements: Sequence[str]) -> str:
    """The verdict's headline.

    The verdict's headline from its computed comparisons: "agrees" (all comparisons
    agree), "partly agrees", "disagrees" (none agrees) or "not compared" (none made).
    """
    if agreements and disagreements:
        return "partly agrees"
    if agreements:
        return "agrees"
    if disagreements:
        return "disagrees"
    return "not compared"


def spectra_count(result: Mapping[str, Any]) -> int:
    """Spectra behind one condition result (one per tracked checkpoint or per block)."""
    if result.get("track"):
        return len(result["track"].get("entries") or [])
    return len(result.get("analyses") or {})


def settings_lines(results: Sequence[Mapping[str, Any]]) -> list[str]:
    """What the conditions actually ran, in words, from their configs and analyses.

    One line each for the models, the data (training-set sizes), the training (optimizer,
    learning rate, batch, epochs or steps) and the Hessian (K, samples, product dtype and
    solver tolerance as the analyses record them, number of spectra).
    """
    if not results:
        return []
    configs = [r.get("config") or {} for r in results]
    trained = [c for c, r in zip(configs, results) if r.get("trained", True)]

    def unique(values: Any) -> list[Any]:
        return [v for v in dict.fromkeys(values) if v is not None]

    def listing(values: Sequence[Any]) -> str:
        return ", ".join(format_value(v) if not isinstance(v, str) else v for v in values)

    data = []
    for c in configs:
        n = train_size(c)
        text = data_name(c.get("data", "")) + (f" ({n:,} training images)" if n else "")
        data.append(text)
    lines = [
        f"Models: {listing(unique(c.get('model') for c in configs))}.",
        f"Data: {listing(unique(data))}.",
    ]
    if trained:
        epochs = unique(c.get("epochs") for c in trained)
        steps = unique(c.get("steps") for c in trained)
        length = []
        if epochs:
            length.append(f"{listing(epochs)} epoch{'s' * (epochs != [1])}")
        if steps:
            length.append(f"{listing(steps)} step{'s' * (steps != [1])}")
        warmup = unique(c.get("warmup_steps") or None for c in trained)
        lines.append(
            f"Training: {listing(unique(c.get('optimizer') for c in trained))}, "
            f"lr {listing(unique(c.get('lr') for c in trained))}, "
            f"batch {listing(unique(c.get('batch_size') for c in trained))}, "
            f"{' / '.join(length)}"
            + (f", linear lr warm-up over {listing(warmup)} steps" if warmup else "")
            + "."
        )
    analyses = [a for r in results for a in (r.get("analyses") or {}).values()]
    ks = unique((r.get("hessian") or {}).get("k") for r in results)
    samples = unique(r.get("num_samples") for r in results)
    dtypes = unique((a.get("config") or {}).get("dtype") for a in analyses)
    tols = unique((a.get("config") or {}).get("tol") for a in analyses)
    text = f"Hessian: K = {listing(ks)} on {listing(samples)} samples"
    if dtypes or tols:
        text += f" ({listing(dtypes)} products, solver tol {listing(tols)})"
    count = sum(spectra_count(r) for r in results)
    lines.append(f"{text}; {count} {'spectrum' if count == 1 else 'spectra'}.")
    return lines


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
    """``a``, ``a and b``, ``a, b and c``."""
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
    """The mean of the values that are not None, or None."""
    numbers = [float(v) for v in values if v is not None]
    return sum(numbers) / len(numbers) if numbers else None


def fmt(value: Any, digits: int = 3) -> str:
    """A number to ``digits`` significant digits, ``-`` for None."""
    return format_value(value, digits)
