"""Issue #18.9: Ctrl-C says whether rerunning the same command resumes where it stopped.

``train``, ``track`` and ``reproduce`` keep their finished work (checkpoints, track.json,
per-condition analyses) and pick it up when run again; the message says so, and what the
rerun needs (``train --restart`` would discard the run again). Other commands only say
"interrupted".
"""

from __future__ import annotations

import pytest

from hessian_powerlaw.cli import main


def _interrupt(*args: object, **kwargs: object) -> None:
    raise KeyboardInterrupt


CASES = [
    ("hessian_powerlaw.training.train", ["train", "--model", "lenet", "--data", "digits",
     "--out", "RUN"], "rerunning the same command resumes from the last checkpoint in RUN"),
    ("hessian_powerlaw.training.train", ["train", "--model", "lenet", "--data", "digits",
     "--out", "RUN", "--restart"], "rerun without --restart to resume from the last checkpoint"),
    ("hessian_powerlaw.tracking.track_run", ["track", "RUN"],
     "rerunning the same command resumes: the checkpoints already analysed in RUN/track.json"),
    ("hessian_powerlaw.experiments.run_experiment", ["reproduce", "width", "--quick"],
     "rerunning the same command resumes: the training runs (from their last checkpoint) and "
     "the analyses already finished under results/width are reused"),
]  # fmt: skip


@pytest.mark.parametrize(("target", "argv", "note"), CASES)
def test_interrupted_says_that_rerunning_resumes(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, target: str, argv, note: str
) -> None:
    monkeypatch.setattr(target, _interrupt)
    assert main(argv) == 130
    err = capsys.readouterr().err
    assert err.startswith("hessian-powerlaw: interrupted; ") and note in err
    assert err.count("\n") == 1


def test_a_command_that_does_not_resume_says_only_interrupted(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setattr("hessian_powerlaw.io.load_eigenvalues", _interrupt)
    assert main(["fit", "ev.txt"]) == 130
    assert capsys.readouterr().err == "hessian-powerlaw: interrupted\n"
