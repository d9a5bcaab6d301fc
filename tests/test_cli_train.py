"""``hessian-powerlaw train``: the acceptance runs on digits, resumption and user errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from hessian_powerlaw.cli import main
from hessian_powerlaw.training import load_run


def run_cli(*argv: str) -> int:
    return main(["train", *argv])


@pytest.fixture
def restore_threads():
    """``--threads`` sets torch's process-wide thread count: put it back afterwards."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("model, threshold", [("lenet", 0.95), ("fcn:2x100", 0.93)])
def test_digits_acceptance(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    restore_threads: None,
    model: str,
    threshold: float,
) -> None:
    out = tmp_path / "run"
    argv = ["--model", model, "--data", "digits", "--epochs", "30", "--out", str(out)]
    rc = run_cli(*argv, "--quiet", "--threads", "1")
    assert torch.get_num_threads() == 1
    assert rc == 0
    captured = capsys.readouterr()
    assert "test accuracy" in captured.out and captured.err == ""  # --quiet: no bars
    final = load_run(out).metrics[-1]
    assert final["epoch"] == 30
    assert final["test_accuracy"] >= threshold, final


def test_checkpoints_json_and_resume(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--model", "fcn:1x16", "--data", "digits:200", "--epochs", "3", "--batch-size", "50"]
    args += ["--checkpoint-epochs", "0,2", "--out", str(tmp_path / "r"), "--quiet"]
    assert run_cli(*args, "--json") == 0
    result = json.loads(capsys.readouterr().out)
    assert result["steps"] == 12 and result["config"]["checkpoint_epochs"] == [0, 2]
    assert [s for s, _ in load_run(tmp_path / "r").checkpoints] == [0, 8]
    assert run_cli(*args) == 0
    assert "already finished" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--model", "lenett", "--data", "digits"], "unknown model spec 'lenett'"),
        (["--model", "lenet", "--data", "digitz"], "unknown data spec 'digitz'"),
        (["--model", "lenet", "--data", "digits", "--label-noise", "2"], "label_noise"),
        (["--model", "lenet", "--data", "digits", "--optimizer", "foo"], "unknown optimizer"),
        (["--model", "lenet", "--data", "digits", "--threads", "0"], "--threads"),
        (["--model", "lenet", "--data", "digits", "--seq-len", "16"], "text data only"),
        (["--model", "chargpt:1x8", "--data", "shakespeare", "--seq-len", "0"], "--seq-len"),
    ],
)
def test_user_errors_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    assert run_cli(*argv, "--out", str(tmp_path / "r"), "--quiet") == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--data", "digits", "--checkpoint-epochs", "5", "--epochs", "1"], "checkpoint epoch 5"),
        (["--data", "digits", "--seq-len", "16"], "text data only"),
        (["--data", "shakespeare", "--gaussian-inputs"], "image data only"),
    ],
)
def test_invalid_run_leaves_no_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    """The run folder (and its missing parents) appears only after the config and the data
    were checked: a mistake leaves nothing that `track` would mistake for a run."""
    out = tmp_path / "runs" / "e8"
    assert run_cli("--model", "fcn:1x16", *argv, "--out", str(out), "--quiet") == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert list(tmp_path.iterdir()) == []
    # an existing folder stays as it was
    out.mkdir(parents=True)
    (out / "notes.txt").write_text("keep")
    assert run_cli("--model", "fcn:1x16", *argv, "--out", str(out), "--quiet") == 2
    assert [q.name for q in out.iterdir()] == ["notes.txt"]


def test_out_that_is_a_file_is_refused_first(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    argv = ["--model", "fcn:1x16", "--data", "digits", "--out", str(blocker / "r"), "--quiet"]
    assert run_cli(*argv) == 2
    err = capsys.readouterr().err
    assert "is a file, not a folder" in err and err.count("\n") == 1
    assert blocker.read_text() == "x"


def test_argument_errors(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as info:
        run_cli("--model", "lenet", "--data", "digits", "--out", str(tmp_path), "--epochs", "2",
                "--steps", "5")  # fmt: skip
    assert info.value.code == 2
    with pytest.raises(SystemExit):
        run_cli("--model", "lenet", "--data", "digits", "--out", str(tmp_path),
                "--checkpoint-epochs", "1,x")  # fmt: skip


def test_seq_len_travels_from_train_to_spectrum_and_track(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A chargpt's context is its training sequence length: train with --seq-len 16, then
    spectrum needs the same --seq-len to load the checkpoint, and track reads it from the run."""
    text = tmp_path / "caesar.txt"
    text.write_text("Friends, Romans, countrymen, lend me your ears;\n" * 40, encoding="utf-8")
    run = tmp_path / "run"
    data = ["--model", "chargpt:1x16", "--data", f"text:{text}"]
    args = [*data, "--seq-len", "16", "--steps", "3", "--batch-size", "4", "--out", str(run)]
    assert run_cli(*args, "--optimizer", "adamw", "--quiet") == 0
    assert json.loads((run / "config.json").read_text())["seq_len"] == 16
    capsys.readouterr()

    out = tmp_path / "spectrum"
    common = [*data, "--checkpoint", str(run / "final.pt"), "--params", "last", "--k", "5"]
    common += ["--samples", "8", "--trace-matvecs", "0", "--no-density", "--quiet"]
    assert main(["spectrum", *common, "--seq-len", "16", "--out", str(out)]) == 0
    record = json.loads((out / "spectrum.json").read_text())
    assert record["config"]["seq_len"] == 16 and len(record["spectrum"]["eigenvalues"]) == 5
    capsys.readouterr()
    # the default length (128) does not fit the 16-position embedding: one error line
    assert main(["spectrum", *common, "--out", str(tmp_path / "wrong")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err and "--seq-len" in err

    assert main(["track", str(run), "--k", "5", "--samples", "8", "--params", "last",
                 "--trace-matvecs", "0", "--quiet"]) == 0  # fmt: skip
