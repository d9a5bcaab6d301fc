"""`hessian-powerlaw demo --quick` end to end: training, both spectra, table, files, report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hessian_powerlaw.cli import main
from hessian_powerlaw.tracking import DEMO_PRESETS
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
        assert all(spectrum["converged"]) and max(spectrum["residuals"]) <= preset.tol
        assert row["lambda_max"] == spectrum["eigenvalues"][0]
    # the paper's contrast: a trained network's top spectrum is a power law with s near 1,
    # the random initialisation's is much further from one (larger d_ks, flatter, and the
    # likelihood ratio against the exponential law points the other way)
    assert trained["test_accuracy"] > 0.9 and random_init["test_accuracy"] < 0.3
    assert trained["power_law"] is True and 0.7 < trained["s"] < 1.6
    assert random_init["d_ks"] > 2 * trained["d_ks"] and random_init["s"] < 0.6
    assert random_init["lr_exponential"] < 0 < trained["lr_exponential"]

    html = (out / "report.html").read_text()
    assert html.count("<img ") == 5  # overlay + rank plot and CDF of each state
    header = next(line for line in stdout.splitlines() if line.startswith("model"))
    assert header.split()[:5] == ["model", "state", "test", "acc", "k"]
    assert "favours exponential" in stdout and "favours power law" in stdout
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
    from hessian_powerlaw import tracking, training

    def fail(*args: object, **kwargs: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(training, "train", fail)
    with pytest.raises(RuntimeError, match="boom"):
        tracking.run_demo(tmp_path / "demo", quick=True)
    assert list(tmp_path.iterdir()) == []
