"""Interrupted eigensolves resume: solver state files (solver level and ``spectrum``)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from hessian_powerlaw.errors import UserInputError
from hessian_powerlaw.operators import MatrixOperator
from hessian_powerlaw.solvers import SolverCheckpoint, top_eigenpairs

ROOT = Path(__file__).resolve().parents[1]


def known_matrix(eigenvalues: np.ndarray, seed: int = 0) -> MatrixOperator:
    rng = np.random.default_rng(seed)
    Q, _ = np.linalg.qr(rng.standard_normal((eigenvalues.size, eigenvalues.size)))
    return MatrixOperator((Q * eigenvalues) @ Q.T)


class Interrupting:
    """An operator that raises KeyboardInterrupt (as Ctrl-C would) once ``after`` products
    have been applied: the interruption lands inside a block step, mid-solve."""

    def __init__(self, op: MatrixOperator, after: int) -> None:
        self.op, self.after, self.applied = op, after, 0
        self.n, self.dtype, self.device = op.n, op.dtype, op.device

    def matmat(self, V: torch.Tensor) -> torch.Tensor:
        if self.applied >= self.after:
            raise KeyboardInterrupt
        self.applied += V.shape[1]
        return self.op.matmat(V)


# a power law with restarts forced by a small basis: the state saved includes locked pairs
LAMBDA = np.arange(1, 301, dtype=np.float64) ** -1.0
OPTIONS: dict[str, Any] = dict(k=20, tol=1e-10, criterion="norm", block_size=3, basis_size=40)


def test_interrupted_solve_resumes_to_the_same_eigenvalues(tmp_path: Path) -> None:
    op = known_matrix(LAMBDA)
    whole = top_eigenpairs(op, **OPTIONS)
    assert whole.all_converged and whole.resumed_matvecs == 0

    state = SolverCheckpoint(tmp_path / "state.pt", interval=0, identity={"matrix": "power-law"})
    stop_at = whole.num_matvecs // 2
    with pytest.raises(KeyboardInterrupt):
        top_eigenpairs(Interrupting(op, stop_at), checkpoint=state, **OPTIONS)
    assert state.path.exists()  # the last complete step was saved

    counting = Interrupting(op, after=10**9)
    resumed = top_eigenpairs(counting, checkpoint=state, **OPTIONS)
    assert resumed.resumed_matvecs > 0
    assert resumed.num_matvecs - resumed.resumed_matvecs == counting.applied
    assert counting.applied < whole.num_matvecs
    assert resumed.all_converged
    np.testing.assert_allclose(resumed.eigenvalues, whole.eigenvalues, rtol=1e-10, atol=0)
    np.testing.assert_allclose(resumed.eigenvalues, LAMBDA[:20], rtol=1e-8)
    assert not state.path.exists()  # removed once the solve is over
    assert not list(tmp_path.iterdir())  # and no temporary file left behind


def test_a_state_of_another_problem_is_refused_naming_what_differs(tmp_path: Path) -> None:
    op = known_matrix(LAMBDA)
    path = tmp_path / "state.pt"
    with pytest.raises(KeyboardInterrupt):
        top_eigenpairs(Interrupting(op, 60), checkpoint=SolverCheckpoint(path, 0), **OPTIONS)
    assert path.exists()
    with pytest.raises(UserInputError, match=r"k=20 in the saved solve, k=25 in this one"):
        top_eigenpairs(op, checkpoint=path, **{**OPTIONS, "k": 25})
    other = SolverCheckpoint(path, 0, identity={"model": "lenet"})
    with pytest.raises(
        UserInputError, match=r"model=\(unset\) in the saved solve, identity\.model='lenet'"
    ):
        top_eigenpairs(op, checkpoint=other, **OPTIONS)
    assert path.exists()  # a refused state is kept: it may belong to another command

    path.write_bytes(b"not a state")
    with pytest.raises(UserInputError, match="damaged or not a solver state"):
        top_eigenpairs(op, checkpoint=path, **OPTIONS)
    with pytest.raises(UserInputError, match="interval must be >= 0"):
        SolverCheckpoint(path, -1)
    with pytest.raises(UserInputError, match="checkpoint identity 'model'"):
        SolverCheckpoint(path, 0, identity={"model": object()})


def test_spectrum_rejects_a_negative_save_interval(capsys: pytest.CaptureFixture[str]) -> None:
    from hessian_powerlaw.cli import main

    assert main([*COMMAND[:-2], "--save-every", "-1"]) == 2
    assert "--save-every must be a number of seconds >= 0" in capsys.readouterr().err


def test_a_solve_without_interruption_leaves_no_state(tmp_path: Path) -> None:
    op = known_matrix(LAMBDA)
    (tmp_path / ".s.pt.x1y2.tmp").write_bytes(b"a save killed mid-write")
    spec = top_eigenpairs(op, checkpoint=SolverCheckpoint(tmp_path / "s.pt", 0), **OPTIONS)
    assert spec.all_converged and spec.resumed_matvecs == 0
    assert not list(tmp_path.iterdir())


def test_per_block_solves_are_not_resumable(tmp_path: Path) -> None:
    from hessian_powerlaw.analysis import analyze_spec

    with pytest.raises(UserInputError, match="not supported with params='per-block'"):
        analyze_spec(
            "fcn:1x8", "digits", samples=50, params="per-block", k=4, state_file=tmp_path / "s"
        )
    assert not list(tmp_path.iterdir())


# ------------------------------------------------------------------ spectrum end to end

COMMAND = [
    "spectrum", "--model", "fcn:1x8", "--data", "digits", "--samples", "200", "--k", "40",
    "--criterion", "norm", "--tol", "1e-10", "--trace-matvecs", "0", "--n-boot", "0",
    "--no-density", "--quiet", "--save-every", "0", "--dtype", "float64",
]  # fmt: skip


def _cli(out: Path, env: dict[str, str]) -> list[str]:
    return [sys.executable, "-m", "hessian_powerlaw", *COMMAND, "--out", str(out)]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT / "src") + os.pathsep + env.get("PYTHONPATH", "")
    env["OMP_NUM_THREADS"] = "1"
    return env


def _eigenvalues(out: Path) -> np.ndarray:
    record = json.loads((out / "spectrum.json").read_text())
    return np.asarray(record["spectrum"]["eigenvalues"])


def test_spectrum_killed_mid_solve_resumes(tmp_path: Path) -> None:
    env = _env()
    fresh = tmp_path / "fresh"
    done = subprocess.run(_cli(fresh, env), env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "resumed" not in done.stderr
    assert not (fresh / ".solver-state.pt").exists()

    out = tmp_path / "out"
    state = out / ".solver-state.pt"
    proc = subprocess.Popen(_cli(out, env), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 300
        while not state.exists():  # a lost machine: no chance to clean up
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline
            time.sleep(0.02)
        time.sleep(0.3)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
    assert state.exists() and not (out / "spectrum.json").exists()

    # another command's state is refused with one line naming the difference, and kept
    other = _cli(out, env) + ["--samples", "150"]
    refused = subprocess.run(other, env=env, capture_output=True, text=True, timeout=600)
    assert refused.returncode == 2
    assert "identity.samples=200 in the saved solve, identity.samples=150" in refused.stderr
    assert "Traceback" not in refused.stderr and state.exists()

    again = subprocess.run(_cli(out, env), env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    assert "resumed the eigensolve" in again.stderr
    np.testing.assert_allclose(_eigenvalues(out), _eigenvalues(fresh), rtol=1e-10, atol=0)
    record = json.loads((out / "spectrum.json").read_text())
    assert record["spectrum"]["resumed_matvecs"] > 0
    assert f"{record['spectrum']['resumed_matvecs']} Hessian-vector products" in again.stderr
    assert not state.exists()
