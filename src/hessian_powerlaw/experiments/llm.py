"""The language-model experiments: generalization along training, and layer-wise spectra.

``llm-generalization`` trains a character GPT on Shakespeare with checkpoints and tracks the
last-layer Hessian along the run (the paper's choice for LLMs), correlating ``d_ks``,
``lambda_max``, trace and ``s`` with the validation loss. ``llm-layers`` computes one spectrum
per transformer block (plus embeddings and head) of the trained model.
"""

from __future__ import annotations

from typing import Any

from hessian_powerlaw.experiments import figures
from hessian_powerlaw.experiments import tables as t
from hessian_powerlaw.experiments.base import Condition, Experiment, Scale, Summary
from hessian_powerlaw.experiments.image import track_table_rows

_RANDOM = "GPT2-nano / GPT-2, random or pretrained on target data"
_TRAINED = "GPT2-nano / GPT-2, trained or fine-tuned"
PAPER_PEARSON_D_KS = 0.92
LLM_MEASURES = ("d_ks", "lambda_max", "trace", "s")
# next-token accuracy is not a measure the paper uses for language models
_LM_MEASURES = tuple(c for c in t.MEASURE_COLUMNS if c[0] != "test_accuracy")


PAPER_GPT = "chargpt:6x384:6"  # GPT2-nano: 6 layers, 6 heads, d = 384
PAPER_GPT_STEPS = 1000
PAPER_LLM_SAMPLES = 256


def _llm_causes(scale: Scale, results: list[dict[str, Any]]) -> list[str]:
    """Where the runs differ from the paper's GPT2-nano set-up, computed from the results."""
    out = []
    config = (results[0].get("config") or {}) if results else {}
    model, steps = config.get("model"), config.get("steps")
    if model is not None and (model != PAPER_GPT or (steps or 0) < PAPER_GPT_STEPS):
        out.append(
            f"a {model} model trained for {steps} steps instead of GPT2-nano (6x384) for "
            f"{PAPER_GPT_STEPS}"
        )
    ks = [int((r.get("hessian") or {}).get("k") or 0) for r in results]
    samples = [int(r.get("num_samples") or 0) for r in results]
    k, n = (min(ks), min(samples)) if results else (t.PAPER_K, PAPER_LLM_SAMPLES)
    if k < t.PAPER_K or n < PAPER_LLM_SAMPLES:
        out.append(f"K = {k} on {n} sequences instead of K = {t.PAPER_K} on {PAPER_LLM_SAMPLES}")
    return out + t.unconverged(results)


def llm_generalization_conditions(scale: Scale) -> tuple[Condition, ...]:
    """One tracked char-GPT run."""
    hessian = scale.hessian(k=scale.llm_k, samples=scale.llm_samples, params="last")
    return (Condition(label="chargpt", config=scale.gpt_run(), hessian=hessian, track=True),)


def llm_generalization_summary(scale: Scale, results: list[dict[str, Any]]) -> Summary:
    """The last-layer spectrum along training and its correlations."""
    (result,) = results
    rows = track_table_rows("llm-generalization", result, _RANDOM, _TRAINED)
    track = result["track"]
    table = (track.get("correlations") or {}).get("test_loss") or {}
    correlations = [{"measure": m, "target": "validation loss", **table[m]}
                    for m in LLM_MEASURES if m in table]  # fmt: skip
    agree, disagree = t.verdict_phrase(rows)
    r = {m: (table.get(m) or {}).get("pearson_r") for m in LLM_MEASURES}
    if r["d_ks"] is not None:
        # Spearman too: one far-off checkpoint (random init) can carry a Pearson r alone
        rho = (table.get("d_ks") or {}).get("spearman_rho")
        text = (f"Pearson(d_ks, validation loss) = {r['d_ks']:.2f} (Spearman {t.fmt(rho, 2)}) "
                f"across {len(rows)} checkpoints (paper up to {PAPER_PEARSON_D_KS})")  # fmt: skip
        (agree if r["d_ks"] > 0 else disagree).append(text)
    sharp = {m: r[m] for m in ("lambda_max", "trace") if r[m] is not None}
    if r["d_ks"] is not None and sharp:
        # the paper's point: d_ks tracks the loss, the sharpness measures do not
        others = t.join_words([f"{m} ({v:+.2f})" for m, v in sharp.items()])
        if r["d_ks"] > max(sharp.values()):
            agree.append(f"d_ks correlates more than {others} (paper: -0.71 and 0.25)")
        else:
            disagree.append(f"{others} correlate at least as much as d_ks "
                            "(paper: -0.71 and 0.25)")  # fmt: skip
    return Summary(
        rows=rows,
        columns=(("setting", "checkpoint"), *_LM_MEASURES,
                 ("test_loss", "validation loss"), ("train_loss", "train loss"),
                 *t.PAPER_COLUMNS),
        verdict=t.sentence(agree, disagree, _llm_causes(scale, results)),
        agreement=t.agreement(agree, disagree),
        findings={"pearson_with_validation_loss": r,
                  "paper_pearson_d_ks": PAPER_PEARSON_D_KS},
        correlations=correlations,
        figures=figures.tracking_figures(track, "test_loss"),
    )  # fmt: skip


def llm_layers_conditions(scale: Scale) -> tuple[Condition, ...]:
    """One char-GPT, one spectrum per parameter group."""
    # the paper's K wherever it is affordable; the quick scale's blocks get half of its K
    k = max(10, scale.llm_k // 2) if scale.name == "quick" else scale.llm_k
    # a block's Hessian backpropagates twice through the whole model (the head's does not):
    # on a CPU, a quarter of the sequences (measured: 8 sequences cost ~0.06 s per product
    # of a 2x64 block, 32 sequences ~0.5 s)
    samples = scale.llm_samples if scale.name == "paper" else max(4, scale.llm_samples // 4)
    hessian = scale.hessian(k=k, samples=samples, params="per-block")
    config = scale.gpt_run(checkpoints=1)
    return (Condition(label="chargpt", config=config, hessian=hessian,
                      paper="GPT-2, each transformer layer"),)  # fmt: skip


def llm_layers_summary(scale: Scale, results: list[dict[str, Any]]) -> Summary:
    """Which parameter groups have power-law spectra."""
    rows = t.condition_rows("llm-layers", results)
    for row in rows:
        row["block"] = str(row["setting"]).rpartition(" / ")[2]
    blocks = [r for r in rows if r["block"] not in ("embeddings", "head")]
    power = [r for r in blocks if r.get("power_law")]
    agree, disagree = [], []
    text = f"{len(power)} of {len(blocks)} transformer blocks have a power-law spectrum"
    (agree if blocks and len(power) == len(blocks) else disagree).append(text)
    for verdict, side in ((True, agree), (False, disagree)):
        others = [f"{r['block']} (d_ks {t.fmt(r.get('d_ks'))})" for r in rows
                  if r not in blocks and bool(r.get("power_law")) is verdict]  # fmt: skip
        if others:
            side.append(f"{t.join_words(others)} {'are' if verdict else 'are not'} power-law")
    return Summary(
        rows=rows,
        columns=(("block", "parameter group"), *_LM_MEASURES, *t.PAPER_COLUMNS),
        verdict=t.sentence(agree, disagree, _llm_causes(scale, results)),
        agreement=t.agreement(agree, disagree),
        findings={"blocks_power_law": len(power), "blocks": len(blocks)},
        figures={"llm-layers": lambda: figures.overlay(
            results, "Per-block Hessian spectra of the trained char-GPT (normalized)")},
    )  # fmt: skip


_GPT_CUT = (
    "A char-GPT with 2 layers, 2 heads and d = 64 (0.12M parameters) trained for 300 steps "
    "instead of GPT2-nano (6 layers, 6 heads, d = 384, 10.8M parameters) for 1000: with 90 "
    "times the parameters, GPT2-nano's forward passes and Hessian products cost about that "
    "much more, which a CPU cannot afford at K = 1000"
)
CUTS_LLM: dict[str, dict[str, tuple[str, ...]]] = {
    "llm-generalization": {"cpu": (
        _GPT_CUT + ".",
        "The last-layer Hessian (as in the paper) on 32 sequences of 128 characters instead "
        "of 256, at 7 checkpoints (steps 0, 50, ..., 300).",
    )},
    "llm-layers": {"cpu": (
        _GPT_CUT + ".",
        "Each parameter group's Hessian on 8 sequences: the products of a block backpropagate "
        "through the whole model (0.2-0.4 s per 4 columns on 8 sequences, measured).",
    )},
}  # fmt: skip


EXPERIMENTS_LLM: tuple[Experiment, ...] = (
    Experiment("llm-generalization", "Language model: spectra along training",
               "across checkpoints of GPT2-nano on Shakespeare, d_ks tracks the test loss "
               "(Pearson up to 0.92) while lambda_max and trace do not (-0.71, 0.25); "
               "trained models are power-law (d_ks 0.016-0.042), random ones are not "
               "(0.05-0.12).", llm_generalization_conditions, llm_generalization_summary,
               cuts=CUTS_LLM["llm-generalization"]),
    Experiment("llm-layers", "Language model: layer-wise spectra",
               "a power law appears in each transformer layer.",
               llm_layers_conditions, llm_layers_summary, cuts=CUTS_LLM["llm-layers"]),
)  # fmt: skip
