"""``hessian-powerlaw subspace``: outputs, checkpoint loading, JSON, one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from hessian_powerlaw.cli import main

# a small FCN on 200 digits keeps the command to a few seconds (n = 1,210 parameters)
MODEL, DATA = "fcn:1x16", "digits"
BASE = ["subspace", "--model", MODEL, "--data", DATA, "--samples", "200", "--k", "10", "--quiet"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A state_dict of the FCN after 150 full-batch Adam steps (a decaying spectrum)."""
    from hessian_powerlaw import zoo

    data = zoo.load_data(DATA)
    model = zoo.build_model(MODEL, data, seed=0)
    (batch,) = data.hessian_batches(None, None, 0)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(150):
        optimizer.zero_grad()
        data.loss(model(batch[0]), batch[1]).backward()
        optimizer.step()
    path = tmp_path_factory.mktemp("ckpt") / "state.pt"
    torch.save(model.state_dict(), path)
    return path


def test_subspace_writes_json_and_figure(
    tmp_path: Path, checkpoint: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    args = [*BASE, "--checkpoint", str(checkpoint), "--trace-matvecs", "30", "--out", str(out)]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "top-m overlap" in text and "Davis-Kahan" in text and "wrote" in text
    assert sorted(p.name for p in out.iterdir()) == ["subspace.json", "subspace.png"]
    assert (out / "subspace.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    record = json.loads((out / "subspace.json").read_text())
    assert record["model"] == MODEL and record["checkpoint"] == str(checkpoint)
    stability = record["stability"]
    assert stability["k"] == 10 and stability["n"] == 1210
    for name in ("angles", "davis_kahan_bound", "davis_kahan_ratio", "overlap"):
        assert len(stability[name]) == 10
    assert len(stability["eigenvalues_a"]) == 11
    assert stability["info"]["num_samples_a"] == 100 == stability["info"]["num_samples_b"]
    assert stability["bound_violations"] == 0
    sines = np.sin(np.asarray(stability["angles"]))
    assert np.all(sines <= np.asarray(stability["davis_kahan_bound"]))
    assert "NaN" not in (out / "subspace.json").read_text()  # strict JSON
    assert stability["low_dimension"]["trace"] is not None


def test_subspace_json_on_stdout_and_seeds_split(
    tmp_path: Path, checkpoint: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = [
        *BASE,
        "--checkpoint",
        str(checkpoint),
        "--splits",
        "seeds",
        "--trace-matvecs",
        "0",
        "--json",
        "--out",
        str(tmp_path / "o"),
    ]
    assert main(args) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["config"]["splits"] == "seeds"
    assert printed["stability"]["split"].startswith("two random subsets of 200 samples")
    assert printed["stability"]["low_dimension"]["trace"] is None  # --trace-matvecs 0


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--k", "0"], "--k must be an integer >= 1, got 0"),
        (["--params", "per-block"], "per-block is not supported"),
        (["--splits", "seeds", "--samples", "100000"], "needs num_samples below"),
        (["--checkpoint", "/nonexistent/state.pt"], "does not exist"),
    ],
)
def test_subspace_user_errors_are_one_line(
    tmp_path: Path, extra: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    # later options win in argparse, so the extra ones override the base ones
    assert main([*BASE, "--out", str(out), *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err
    assert not out.exists() or not any(out.iterdir())
