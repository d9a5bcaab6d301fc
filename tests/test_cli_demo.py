"""`hessian-powerlaw demo`: `--quick` end to end (training, both spectra, table, verdict, files,
report), the default's configuration (LeNet on MNIST at the paper's K = 1000) with a smoke run
at a tiny K, and the verdict computed from the numbers."""

from __future__ import annotations

import json
from html import escape
from pathlib import Path

import pytest

from hessian_powerlaw.cli import main
from hessian_powerlaw.demo import DEMO_PRESETS, demo_verdict, ks_decisive
from hessian_powerlaw.experiments.tables import AGREEMENTS
from tests.test_report_browser import CHECK_SCRIPT, CHROMIUM, chromium


def test_demo_quick(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--quiet", "--out", str(out)]) == 0
    stdout = capsys.readouterr().out
    preset = DEMO_PRESETS["quick"]

    names = {p.name for p in out.iterdir()}
    assert {"demo.json", "demo.png", "demo-random_init.png", "demo-trained.png",
            "report.html", "run"} <= names  # fmt: skip
    assert not any(name.startswith(".staging") for name in names)
    record = json.loads((out / "demo.json").read_text())
    assert record["kind"] == "demo" and record["settings"]["k"] == preset.k
    assert record["num_samples"] == preset.samples
    assert list(record["states"]) == ["random init", "trained"]

    random_init, trained = record["table"]
    assert (random_init["state"], trained["state"]) == ("random init", "trained")
    for row, state in zip(record["table"], record["states"].values()):
        spectrum = state["analysis"]["spectrum"]
        assert row["k"] == len(spectrum["eigenvalues"]) == preset.k
        # the library's default tolerance, as the solver recorded it
        tol = state["analysis"]["config"]["tol"]
        assert all(spectrum["converged"]) and max(spectrum["residuals"]) <= tol
        assert row["lambda_max"] == spectrum["eigenvalues"][0]
    # the paper's contrast: a trained network's top spectrum is a power law with s near 1,
    # the random initialisation's is much further from one (larger d_ks, flatter, and the
    # likelihood ratio against the exponential law points the other way)
    assert trained["test_accuracy"] > 0.9 and random_init["test_accuracy"] < 0.3
    assert trained["power_law"] is True and 0.7 < trained["s"] < 1.6
    assert random_init["d_ks"] > 2 * trained["d_ks"] and random_init["s"] < 0.6
    assert random_init["lr_exponential"] < 0 < trained["lr_exponential"]

    # the paper's numbers stand beside ours (Table 1, LeNet on MNIST)
    assert (random_init["paper_d_ks"], trained["paper_d_ks"]) == (0.0796, 0.009)
    assert (random_init["paper_power_law"], trained["paper_power_law"]) == (False, True)
    # K = 60: the paper's KS test is not decisive, and the output says so in plain words
    assert not ks_decisive(preset.k)
    assert len(record["notes"]) == 1 and "not decisive" in record["notes"][0]
    assert record["agreement"] == "agrees" and record["agreement"] in AGREEMENTS
    assert record["finding"].startswith("The paper's finding")

    html = (out / "report.html").read_text()
    assert html.count("<img ") == 5  # the demo figure + rank plot and CDF of each state
    assert "not decisive" in html and escape(record["finding"]) in html
    lines = stdout.splitlines()
    header = next(line for line in lines if line.startswith("state"))
    # the table leads with the paper's test, the paper's numbers beside it
    assert header.split()[:6] == ["state", "k", "d_ks", "d_c", "power", "law?"]
    assert header.index("paper d_ks") < header.index("p (bootstrap)")
    assert "favours exponential" in stdout and "favours power law" in stdout
    assert any(line.startswith("note: At K = 60 the paper's KS test is not decisive")
               for line in lines)  # fmt: skip
    assert "d_c = 1.36/sqrt(60) = 0.176" in stdout and "run the demo without --quick" in stdout
    assert f"{record['finding']}" in stdout
    assert "total time" in stdout
    if CHROMIUM is not None:  # the demo's own report renders every figure in a browser
        checked = tmp_path / "checked.html"
        checked.write_text(html.replace("</body>", CHECK_SCRIPT + "</body>"))
        done = chromium("--virtual-time-budget=10000", "--dump-dom", checked.as_uri(),
                        profile=tmp_path / "profile")  # fmt: skip
        assert "HPL-IMAGES total=5 broken=0" in done.stdout, done.stderr[-2000:]


def test_demo_unwritable_out(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["demo", "--quick", "--quiet", "--out", str(blocker)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is a file" in err[0]


@pytest.mark.parametrize("existed", [False, True])
def test_interrupted_demo_leaves_no_new_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch, existed: bool
) -> None:
    """Ctrl-C early in the demo: no new folder is left behind; one that existed stays."""
    from hessian_powerlaw import training

    def interrupt(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(training, "load_config_data", interrupt)
    out = tmp_path / "results" / "demo2"
    if existed:
        out.mkdir(parents=True)
        (out / "old.txt").write_text("keep")
    assert main(["demo", "--quick", "--quiet", "--out", str(out)]) == 130
    assert "interrupted" in capsys.readouterr().err
    if existed:
        assert [p.name for p in out.iterdir()] == ["old.txt"]
    else:
        assert list(tmp_path.iterdir()) == []


def test_failed_demo_leaves_no_new_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from hessian_powerlaw import demo, training

    def fail(*args: object, **kwargs: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(training, "train", fail)
    with pytest.raises(RuntimeError, match="boom"):
        demo.run_demo(tmp_path / "demo", quick=True)
    assert list(tmp_path.iterdir()) == []


def test_default_demo_is_the_papers_test_on_mnist() -> None:
    """`make demo`: LeNet on real MNIST, K = 1000 on 1,000 samples, float32 products under the
    "norm" criterion at its float32 default tolerance."""
    preset = DEMO_PRESETS["default"]
    assert preset.model == "lenet" and preset.data.partition(":")[0] == "mnist"
    assert (preset.k, preset.samples) == (1000, 1000)
    assert (preset.dtype, preset.criterion, preset.tol) == ("float32", "norm", None)
    assert ks_decisive(preset.k)  # d_c = 0.043 < the paper's random-init d_ks 0.0796
    assert not ks_decisive(DEMO_PRESETS["quick"].k)
    import hessian_powerlaw

    assert hessian_powerlaw.run_demo.__module__ == "hessian_powerlaw.demo"


def test_default_demo_starts_on_mnist_at_a_tiny_k(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A smoke run of the default path (real MNIST, 28x28 LeNet) with K and data cut down."""
    import dataclasses

    from hessian_powerlaw import demo
    from hessian_powerlaw.errors import UserInputError
    from hessian_powerlaw.zoo import load_data

    try:
        load_data("mnist:300")
    except UserInputError as exc:
        pytest.skip(f"MNIST missing: {exc}")
    tiny = dataclasses.replace(DEMO_PRESETS["default"], data="mnist:300", epochs=1, k=10,
                               samples=16, trace_matvecs=0, dtype="float32")  # fmt: skip
    monkeypatch.setitem(demo.DEMO_PRESETS, "default", tiny)
    out = tmp_path / "demo"
    assert main(["demo", "--quiet", "--out", str(out)]) == 0
    stdout = capsys.readouterr().out
    assert stdout.startswith("lenet trained on mnist:300 for 1 epoch (3 steps)")
    assert "top k = 10 eigenvalues on 16 training samples" in stdout
    assert "not decisive" in stdout  # K = 10 is far below the paper's
    record = json.loads((out / "demo.json").read_text())
    assert record["settings"]["data"] == "mnist:300" and record["num_samples"] == 16
    assert record["training"]["warmup_steps"] == 3  # one epoch of 300 images in batches of 128
    assert [row["k"] for row in record["table"]] == [10, 10]


def _row(state: str, d_ks: float, d_c: float, lr: float, lr_p: float = 0.01) -> dict:
    return {"state": state, "d_ks": d_ks, "d_c": d_c, "power_law": d_ks < d_c, "s": 1.0,
            "lr_exponential": lr, "lr_exponential_p": lr_p}  # fmt: skip


def test_demo_verdict_is_computed_from_the_numbers() -> None:
    d_c = 1.36 / 1000**0.5
    # K = 1000: the paper's KS test decides; the finding holds when only the trained net passes
    agreement, lines, notes = demo_verdict(
        [_row("random init", 0.081, d_c, -3.0), _row("trained", 0.011, d_c, 4.0)], 1000
    )
    assert agreement == "agrees" and notes == []
    assert lines[0].startswith("random init: not a power law by the paper's KS test")
    assert "paper d_ks = 0.0796" in lines[0] and "paper d_ks = 0.0090" in lines[1]
    agreement, lines, _ = demo_verdict(
        [_row("random init", 0.030, d_c, -3.0), _row("trained", 0.011, d_c, 4.0)], 1000
    )
    assert agreement == "partly agrees" and "random init: a power law" in lines[1]
    agreement, _, _ = demo_verdict(
        [_row("random init", 0.030, d_c, -3.0), _row("trained", 0.090, d_c, 4.0)], 1000
    )
    assert agreement == "disagrees"
    # a trained spectrum that is a power law only down to some rank says how far it reaches
    bent = {**_row("trained", 0.081, d_c, 4.0), "k": 1000, "span_k": 500, "span_d_ks": 0.0297,
            "span_d_c": 0.0608, "span_s": 1.051}  # fmt: skip
    agreement, _, notes = demo_verdict([_row("random init", 0.079, d_c, -3.0), bent], 1000)
    assert agreement == "partly agrees"
    assert notes == [
        "trained: the paper's test passes on the top 500 eigenvalues (d_ks = 0.0297 < d_c = "
        "0.0608, s = 1.051) but not on all 1000: below rank 500 the spectrum falls away from "
        "the power law."
    ]
    # K = 60: not decisive; the finding is read from d_ks and the likelihood ratios
    d_c = 1.36 / 60**0.5
    agreement, lines, notes = demo_verdict(
        [_row("random init", 0.10, d_c, -2.6), _row("trained", 0.07, d_c, 2.8)], 60
    )
    assert agreement == "agrees" and "not decisive" in notes[0]
    assert not any("KS test (" in line for line in lines)  # KS verdicts are not counted
    agreement, _, _ = demo_verdict(
        [_row("random init", 0.05, d_c, 1.0), _row("trained", 0.07, d_c, 2.8)], 60
    )
    assert agreement == "partly agrees"


def test_states_side_by_side_match_one_after_the_other(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With two torch threads the first state is analysed in a spawned process beside the
    second: the same eigenvalues (float64 products: to 1e-8) and evaluations as one process
    analysing both with one thread; the caller's thread count is restored."""
    import dataclasses

    import numpy as np
    import torch

    from hessian_powerlaw import demo
    from hessian_powerlaw.training import TrainConfig, load_config_data, train

    settings = dataclasses.replace(DEMO_PRESETS["quick"], epochs=1, k=8, samples=64,
                                   trace_matvecs=0, dtype="float64")  # fmt: skip
    config = TrainConfig(model="lenet", data="digits", epochs=1, batch_size=128, seed=0,
                         checkpoint_epochs=(0, 1))  # fmt: skip
    data = load_config_data(config)
    train(config, tmp_path / "run", data=data)
    run = tmp_path / "run"
    files = {"random init": run / "ckpt-0.pt", "trained": run / "final.pt"}
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        alone = demo.analyze_states(config, files, settings, data)
        torch.set_num_threads(2)
        side = demo.analyze_states(config, files, settings, data)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(threads)
    assert list(side) == list(files)
    for name in files:
        a = np.array(alone[name]["analysis"]["spectrum"]["eigenvalues"])
        b = np.array(side[name]["analysis"]["spectrum"]["eigenvalues"])
        np.testing.assert_allclose(b, a, rtol=1e-8, atol=1e-12)
        assert side[name]["evaluation"] == alone[name]["evaluation"]
