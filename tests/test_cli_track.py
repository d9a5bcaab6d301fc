"""`hessian-powerlaw track` on a real 3-checkpoint run: entries, correlations, resumption."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy import stats

import hessian_powerlaw.tracking as tracking
from hessian_powerlaw.cli import main
from hessian_powerlaw.tracking import TARGETS, TRACKED_MEASURES, select_checkpoints, track_run

MEASURE_KEYS = {"lambda_max", "trace", "trace_stderr", "s", "sigma_s", "beta", "d_ks", "d_c",
                "p_value", "lr_exponential", "lr_exponential_p",
                "is_power_law"}  # fmt: skip
OPTIONS = dict(k=12, samples=200, trace_matvecs=12)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """fcn:1x8 trained on digits for 3 epochs with a checkpoint after each (steps 12, 24, 36)."""
    from hessian_powerlaw.training import TrainConfig, train

    out = tmp_path_factory.mktemp("run")
    config = TrainConfig(model="fcn:1x8", data="digits", epochs=3, batch_size=128,
                         checkpoint_epochs=(1, 2, 3), seed=0)  # fmt: skip
    train(config, out, progress=False)
    return out


def _count_analyses(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    real = tracking.analyze

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(tracking, "analyze", counting)
    return calls


def test_track_command(run_dir: Path, capsys: pytest.CaptureFixture) -> None:
    code = main(["track", str(run_dir), "--k", "12", "--samples", "200", "--trace-matvecs", "12",
                 "--quiet"])  # fmt: skip
    assert code == 0
    record = json.loads((run_dir / "track.json").read_text())
    assert record["kind"] == "track" and record["complete"] is True
    entries = record["entries"]
    assert [e["step"] for e in entries] == [12, 24, 36]
    assert [e["checkpoint"] for e in entries] == ["ckpt-12.pt", "ckpt-24.pt", "ckpt-36.pt"]
    metrics = {m["step"]: m for m in map(json.loads, (run_dir / "metrics.jsonl").open())}
    for entry in entries:
        assert set(entry["measures"]) == MEASURE_KEYS
        assert all(entry["measures"][key] is not None for key in MEASURE_KEYS)
        assert len(entry["analysis"]["spectrum"]["eigenvalues"]) == 12
        assert entry["test_loss"] == metrics[entry["step"]]["test_loss"]
        assert entry["gap"] == pytest.approx(entry["test_loss"] - entry["train_loss"], abs=1e-15)
    # every measure against both targets, checked against scipy on the same numbers
    for target in TARGETS:
        y = [e[target] for e in entries]
        for measure in TRACKED_MEASURES:
            x = [e["measures"][measure] for e in entries]
            corr = record["correlations"][target][measure]
            assert corr["n"] == 3
            assert corr["pearson_r"] == pytest.approx(stats.pearsonr(x, y).statistic, abs=1e-12)
            assert corr["kendall_p"] is not None and corr["spearman_rho"] is not None
    for name in ("track-measures.png", "track-vs-test_loss.png", "track-vs-gap.png",
                 "track-spectra.png"):  # fmt: skip
        assert (run_dir / name).read_bytes()[:4] == b"\x89PNG"
    out = capsys.readouterr().out
    assert "pearson r" in out and "test_loss" in out and out.count("step 12") == 1


def test_track_writes_tensorboard_events(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """``--tensorboard DIR``: the measures of every checkpoint, read back from the event files,
    equal track.json's, and each step has its rank plot (finished entries are reused)."""
    from tests.tensorboard_events import read_events

    board = tmp_path / "tb"
    code = main(["track", str(run_dir), "--k", "12", "--samples", "200", "--trace-matvecs", "12",
                 "--quiet", "--no-figures", "--tensorboard", str(board)])  # fmt: skip
    assert code == 0 and f"TensorBoard event files to {board}" in capsys.readouterr().out
    record = json.loads((run_dir / "track.json").read_text())
    scalars, images = read_events(board)
    for key in ("s", "d_ks", "d_c", "lambda_max", "trace"):
        expected = [(e["step"], e["measures"][key]) for e in record["entries"]]
        got = scalars[f"hessian/{key}"]
        assert [step for step, _ in got] == [12, 24, 36]
        np.testing.assert_allclose([v for _, v in got], [v for _, v in expected], rtol=1e-6)
    got_loss = [v for _, v in scalars["hessian/test_loss"]]
    np.testing.assert_allclose(got_loss, [e["test_loss"] for e in record["entries"]], rtol=1e-6)
    assert [e.step for e in images["hessian/rank_plot"]] == [12, 24, 36]
    assert images["hessian/rank_plot"][0].encoded_image_string[:4] == b"\x89PNG"


def test_resume_skips_finished_checkpoints(
    run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An interrupted track keeps its finished checkpoints; the next call only adds the rest."""
    (run_dir / "track.json").unlink(missing_ok=True)
    calls = _count_analyses(monkeypatch)

    def interrupt(entry: dict) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        track_run(run_dir, **OPTIONS, figures=False, on_entry=interrupt)
    partial = json.loads((run_dir / "track.json").read_text())
    assert [e["step"] for e in partial["entries"]] == [12] and partial["complete"] is False
    assert len(calls) == 1

    result = track_run(run_dir, **OPTIONS, figures=False)
    assert len(calls) == 3  # only the two missing checkpoints
    assert [e["step"] for e in result.entries] == [12, 24, 36] and result.complete
    assert result.entries[0] == partial["entries"][0]

    again = track_run(run_dir, **OPTIONS, figures=False)
    assert len(calls) == 3  # nothing recomputed
    np.testing.assert_array_equal(
        again.entries[2]["analysis"]["spectrum"]["eigenvalues"],
        result.entries[2]["analysis"]["spectrum"]["eigenvalues"],
    )
    # other settings are a different analysis: recomputed, not mixed in
    changed = track_run(run_dir, **{**OPTIONS, "k": 10}, every=2, figures=False)
    assert [e["step"] for e in changed.entries] == [12, 36] and len(calls) == 5


def test_select_checkpoints_keeps_the_last() -> None:
    ckpts = [(s, f"ckpt-{s}.pt") for s in (0, 10, 20, 30, 40)]
    assert [s for s, _ in select_checkpoints(ckpts, 1)] == [0, 10, 20, 30, 40]
    assert [s for s, _ in select_checkpoints(ckpts, 2)] == [0, 20, 40]
    assert [s for s, _ in select_checkpoints(ckpts, 3)] == [0, 30, 40]


def test_track_errors(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["track", str(tmp_path / "nope"), "--quiet"]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["track", str(tmp_path), "--quiet"]) == 2
    assert "not a run folder" in capsys.readouterr().err


def test_tensorboard_without_the_package_is_one_line(
    run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    import sys

    calls = _count_analyses(monkeypatch)
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import now fails
    code = main(["track", str(run_dir), "--k", "12", "--quiet", "--tensorboard",
                 str(tmp_path / "tb")])  # fmt: skip
    assert code == 2 and not calls  # refused before any analysis
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "pip install 'hessian-powerlaw[tensorboard]'" in err
