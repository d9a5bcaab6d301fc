"""Progress output: a redrawn bar on a terminal, a few whole lines in a log."""

from __future__ import annotations

import io
import sys

import pytest

from hessian_powerlaw import progress
from hessian_powerlaw.progress import LineProgress, progress_bar


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_log_gets_start_tenths_and_end_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    log = io.StringIO()  # not a terminal, like `make demo > log 2>&1`
    monkeypatch.setattr(sys, "stderr", log)
    with progress_bar(500, "epoch 1/3") as bar:
        for _ in range(500):
            bar.update(1)
            bar.set_postfix(loss="0.1234", refresh=False)
    text = log.getvalue()
    assert "\r" not in text
    lines = text.splitlines()
    assert lines[0] == "epoch 1/3: started (total 500)"
    assert [line.split(": ")[1].split(" ")[0] for line in lines[1:-1]] == [
        f"{p}%" for p in range(10, 101, 10)
    ]
    assert "(250/500)" in lines[5] and lines[5].endswith("loss=0.1234")
    assert lines[-1].startswith("epoch 1/3: done, 500/500 in ") and len(lines) == 12


def test_work_that_ends_early_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    log = io.StringIO()
    monkeypatch.setattr(sys, "stderr", log)
    bar = progress_bar(1000, "top-5 eigenpairs")
    bar.update(16)
    bar.update(16)
    bar.close()
    bar.close()  # closing twice prints nothing more
    lines = log.getvalue().splitlines()
    assert len(lines) == 2 and lines[1].startswith("top-5 eigenpairs: ended at 32/1000 after")


def test_terminal_gets_tqdm_and_disabled_prints_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    bar = progress_bar(10, "work")
    assert not isinstance(bar, LineProgress)
    bar.close()
    log = io.StringIO()
    monkeypatch.setattr(sys, "stderr", log)
    with progress_bar(10, "quiet", enabled=False) as bar:
        bar.update(10)
    assert log.getvalue() == ""


def test_unknown_total_prints_first_and_last_line() -> None:
    log = io.StringIO()
    bar = LineProgress(None, "reading", file=log)
    for _ in range(50):
        bar.update()
    bar.close()
    assert log.getvalue().splitlines()[0] == "reading: started"
    assert log.getvalue().splitlines()[1].startswith("reading: done, 50 in")
    assert progress.LINE_FRACTION == 0.1
