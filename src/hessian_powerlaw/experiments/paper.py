"""The paper's published numbers (Tang et al., ICML 2025), as data.

Each experiment's markdown table puts our measurement next to these. A ``None`` means the
paper gives no value for that cell (e.g. no s when the spectrum is not a power law).
Ranges the paper reports only as an interval are kept as ``(low, high)`` tuples.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PaperRow:
    """One published setting: its label, d_ks, verdict and rank exponent s."""

    setting: str
    d_ks: float | tuple[float, float] | None
    power_law: bool | None
    s: float | tuple[float, float] | None = None
    note: str = ""


PAPER_ROWS: dict[str, tuple[PaperRow, ...]] = {
    "trained-vs-random": (
        PaperRow("LeNet MNIST, random init", 0.0796, False),
        PaperRow("LeNet MNIST, SGD-trained", 0.0090, True, 1.009),
        PaperRow("LeNet Fashion-MNIST, random init", 0.0971, False),
        PaperRow("LeNet Fashion-MNIST, trained", 0.0132, True, 1.065),
        PaperRow("LeNet CIFAR-10, random init", 0.0663, False),
        PaperRow("LeNet CIFAR-10, trained", 0.0279, True, 1.033),
        PaperRow("FCN MNIST, 2 hidden layers of 100, trained", 0.0112, True, 0.827),
    ),
    "optimizers": (
        PaperRow("LeNet CIFAR-10, SGD", (0.016, 0.036), True, 1.03, "range over optimizers"),
        PaperRow("LeNet CIFAR-10, RAdam", (0.016, 0.036), True, 1.36, "range over optimizers"),
        PaperRow(
            "LeNet CIFAR-10, Adam / AMSGrad / AdaBound / Yogi ...",
            (0.016, 0.036),
            True,
            (1.03, 1.36),
            "all power-law; smaller s goes with smaller lambda_max, trace and test error",
        ),
    ),
    "batch-size": (
        PaperRow("LeNet MNIST, batch 128 (phase I)", 0.0090, True, 1.01),
        PaperRow("LeNet MNIST, batch 512 (phase I)", 0.0079, True, 1.12),
        PaperRow("LeNet MNIST, batch 640 (phase I)", 0.0125, True, 1.19),
        PaperRow("LeNet MNIST, batch 768 ... 50000 (phase II)", (0.13, 0.28), False),
        PaperRow("LeNet MNIST, full batch 60000 (phase III)", 0.094, False),
    ),
    "width": (
        PaperRow("FCN MNIST, width 10", 0.149, False),
        PaperRow("FCN MNIST, width 20", 0.185, False),
        PaperRow("FCN MNIST, width 30", 0.0656, False),
        PaperRow("FCN MNIST, width 50", 0.0187, True, 0.88),
        PaperRow("FCN MNIST, width 70", 0.0376, True, 0.79),
        PaperRow("FCN MNIST, width 100", 0.0112, True, 0.83),
    ),
    "depth": (
        PaperRow("FCN MNIST, 1 hidden layer", 0.241, False),
        PaperRow("FCN MNIST, 2 hidden layers of 100", 0.0112, True, 0.827),
    ),
    "data-size": (
        PaperRow("LeNet MNIST, 600 training samples", 0.205, False),
        PaperRow("LeNet MNIST, 1000 training samples", 0.0198, True, 0.89),
        PaperRow("LeNet MNIST, 6000 training samples", 0.0151, True, 1.00),
    ),
    "label-noise": (
        PaperRow("LeNet MNIST, clean labels", 0.0090, True, 1.009),
        PaperRow("LeNet MNIST, 40% label noise", 0.180, False),
        PaperRow("LeNet MNIST, 80% label noise", 0.157, False),
    ),
    "training-progress": (
        PaperRow("LeNet MNIST, random init", 0.0796, False),
        PaperRow("LeNet MNIST, end of SGD training", 0.0090, True, 1.009),
    ),
    "eigengaps": (
        PaperRow("MNIST: gap exponent vs s", None, True, 0.9, "gap exponent 1.817 ~ s + 1"),
    ),
    "llm-generalization": (
        PaperRow("GPT2-nano / GPT-2, random or pretrained on target data", (0.05, 0.12), False),
        PaperRow("GPT2-nano / GPT-2, trained or fine-tuned", (0.016, 0.042), True),
        PaperRow(
            "Pearson(d_ks, test loss) across checkpoints",
            None,
            None,
            None,
            "up to 0.92 (GPT2-nano), 0.98 (fine-tuned GPT-2 small); lambda_max -0.71, trace 0.25",
        ),
    ),
    "llm-layers": (
        PaperRow(
            "GPT-2, each transformer layer",
            None,
            True,
            None,
            "a power law appears in every layer; larger models have lower d_ks",
        ),
    ),
}

# The paper's scalar findings that are not table rows.
PAPER_GAP_EXPONENT_MNIST = 1.817
PAPER_S_MNIST_FOR_GAPS = 0.9
PAPER_PEARSON_S_TEST_ERROR_MNIST = 0.85
