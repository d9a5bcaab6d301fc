"""Data-parallel Hessian products on torch.distributed.

Two kinds of tests:

- in one process: the helpers are the identity without a process group; the slicing of
  batches between ranks is exact (the per-rank operators, weighted by their sample counts,
  sum to the explicit Hessian); the consistency checks catch what they should; a
  DDP-wrapped model is unwrapped (in a one-rank gloo group);
- under ``torchrun --nproc_per_node=2`` (gloo on CPU, tests/dist_worker.py): eigenvalues and
  the power-law fit equal the single-process run within 1e-10 relative in float64 with half
  the data per rank, for a digits MLP and a chargpt parameter subset; a rank that raises
  before its first product, and ranks that disagree on the data, stop every rank quickly
  with a non-zero exit and a message that names the cause.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.distributed as dist
from torch import nn

from hessian_powerlaw import HessianOperator, distributed
from hessian_powerlaw.cli._torchrun import run_cli
from hessian_powerlaw.errors import UserInputError
from tests import dist_worker
from tests.reference import digits_mlp

ROOT = Path(__file__).resolve().parents[1]
WORKER = Path(dist_worker.__file__).resolve()
RTOL = 1e-10  # the bound for "equal to the single-process run", float64


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """One intra-op thread, like each torchrun rank: on a busy machine spinning OpenMP
    threads slow small products down by an order of magnitude."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# --------------------------------------------------------------------------------------------
# without a process group


def test_helpers_are_the_identity_without_a_process_group() -> None:
    assert not distributed.is_initialized()
    assert (distributed.rank(), distributed.world_size(), distributed.is_primary()) == (0, 1, True)
    t = torch.arange(5.0)
    assert distributed.all_reduce_sum(t, identical=t) is t
    assert distributed.broadcast(t) is t
    distributed.check_consistent(k=10, seed=1)  # nothing to compare with: no error
    batches = [(torch.zeros(3, 2), torch.zeros(3))]
    assert distributed.shard(batches) == batches
    assert distributed.shard_checked(batches, torch.zeros(4)) is batches


def test_init_from_env_needs_the_launcher_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    assert not distributed.launched_by_torchrun()
    assert distributed.init_from_env() is False
    assert not distributed.is_initialized()
    env = {"RANK": "0", "WORLD_SIZE": "2", "MASTER_ADDR": "h", "MASTER_PORT": "1"}
    assert distributed.launched_by_torchrun(env)
    assert not distributed.launched_by_torchrun({**env, "MASTER_PORT": ""})


@pytest.mark.parametrize("bad", [0, -1.0, float("nan"), float("inf")])
def test_timeout_is_validated(bad: float) -> None:
    with pytest.raises(UserInputError, match="timeout"):
        distributed.init_from_env(timeout=bad)


def test_timeout_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(distributed.TIMEOUT_ENV, "42.5")
    assert distributed.default_timeout() == 42.5
    monkeypatch.setenv(distributed.TIMEOUT_ENV, "soon")
    with pytest.raises(UserInputError, match=distributed.TIMEOUT_ENV):
        distributed.default_timeout()
    monkeypatch.delenv(distributed.TIMEOUT_ENV)
    assert distributed.default_timeout() == distributed.DEFAULT_TIMEOUT_S


def _namespace(calls: list[str], **extra: Any) -> Any:
    import argparse

    return argparse.Namespace(command="fit", run=lambda a: calls.append("ran") or 0, **extra)


@pytest.mark.parametrize(("rank", "runs"), [("0", True), ("1", False)])
def test_commands_without_data_parallel_run_once_on_rank_zero(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], rank: str, runs: bool
) -> None:
    monkeypatch.setenv("RANK", rank)
    monkeypatch.setenv("WORLD_SIZE", "2")
    calls: list[str] = []
    assert run_cli(_namespace(calls)) == 0
    assert calls == (["ran"] if runs else [])
    assert ("fit does not split its work" in capsys.readouterr().err) == runs
    assert not distributed.is_initialized()  # no process group for such a command


# --------------------------------------------------------------------------------------------
# slicing batches between ranks


def _pieces(batches: list[Any], world: int) -> list[list[Any]]:
    return [distributed._split(batches, r, world) for r in range(world)]


@pytest.mark.parametrize("world", [2, 3, 4])
def test_each_batch_is_cut_into_contiguous_slices(world: int) -> None:
    X = torch.arange(22.0).reshape(11, 2)
    y = torch.arange(11)
    batches = [(X[:7], y[:7]), (X[7:], y[7:])]  # sizes 7 and 4
    per_rank = _pieces(batches, world)
    for b, (xb, yb) in enumerate(batches):
        got = [pieces[b] for pieces in per_rank if b < len(pieces)]
        # the slices, in rank order, are the batch again; sizes as torch.tensor_split cuts
        assert torch.equal(torch.cat([p[0] for p in got]), xb)
        assert torch.equal(torch.cat([p[1] for p in got]), yb)
        expected = [len(t) for t in torch.tensor_split(yb, world)]
        assert [len(p[1]) for p in got] == [m for m in expected if m]
    counts = [sum(len(p[1]) for p in pieces) for pieces in per_rank]
    assert sum(counts) == 11 and max(counts) - min(counts) <= 2  # balanced


def test_slicing_keeps_broadcast_tensors_and_structure() -> None:
    batch = {
        "input_ids": torch.arange(12).reshape(6, 2),
        "mask": torch.ones(1, 2),  # broadcast over samples: kept whole
        "name": "shakespeare",
    }
    first, second = _pieces([batch], 2)
    assert torch.equal(first[0]["input_ids"], batch["input_ids"][:3])
    assert torch.equal(second[0]["input_ids"], batch["input_ids"][3:])
    assert first[0]["mask"] is batch["mask"] and second[0]["name"] == "shakespeare"


def test_batches_smaller_than_the_world_leave_some_ranks_without_data() -> None:
    batches = [(torch.zeros(1, 3), torch.zeros(1))]
    assert [len(p) for p in _pieces(batches, 3)] == [1, 0, 0]


def test_unsliceable_batches_are_dealt_round_robin() -> None:
    class Opaque:
        pass

    items = [Opaque() for _ in range(5)]
    assert _pieces(items, 2) == [items[0::2], items[1::2]]
    with pytest.raises(UserInputError, match="cannot be shared by 8 ranks"):
        distributed._split(items, 0, 8)


def test_rank_operators_sum_to_the_one_process_operator() -> None:
    """The split changes nothing: sum_r (N_r / N) H_r = H, column by column.

    H_r is the Hessian of rank r's slices alone (its own sample-weighted mean), so the
    weighted sum is exactly what the all-reduce of the distributed operator computes. H is
    the operator on the unsliced batches (test_operators.py checks it against the explicit
    Hessian of torch.func.hessian).
    """
    model, loss, batches = digits_mlp(hidden=4, n_samples=61, num_batches=3)  # sizes 21, 20, 20
    full = HessianOperator(model, loss, batches)
    eye = torch.eye(full.n, dtype=torch.float64)
    H = full.matmat(eye)
    for world in (2, 3):
        total = torch.zeros_like(H)
        for pieces in _pieces(batches, world):
            op = HessianOperator(model, loss, pieces)
            total += (op.num_samples / full.num_samples) * op.matmat(eye)
        # the same float64 sums in another order: rounding only
        assert torch.allclose(total, H, rtol=0, atol=1e-13 * float(H.abs().max())), world


def test_ranks_refuse_a_loss_that_is_not_a_mean(monkeypatch: pytest.MonkeyPatch) -> None:
    """Slicing every batch across ranks is exact only for a mean loss: a summed loss is one
    clear error on every rank (each checks the same first batch) before any collective."""
    model, loss, batches = digits_mlp(hidden=4, n_samples=40, num_batches=2)

    def summed(m: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        return nn.functional.cross_entropy(m(batch[0]), batch[1], reduction="sum")

    mean_op = HessianOperator(model, loss, batches)
    monkeypatch.setattr(distributed, "world_size", lambda: 2)
    monkeypatch.setattr(distributed, "check_consistent", lambda **values: None)  # one process
    mean_op._check_rank_split(batches)  # a mean loss passes
    with pytest.raises(UserInputError, match="2 ranks share every Hessian batch.*batch 0"):
        HessianOperator(model, summed, batches)


# --------------------------------------------------------------------------------------------
# consistency checks, pieces that do not need a second rank


def test_fingerprint_tells_different_values_apart() -> None:
    a = torch.randn(50, dtype=torch.float64)
    assert distributed.fingerprint(a) == distributed.fingerprint(a.clone())
    assert distributed.fingerprint(a) != distributed.fingerprint(a.flip(0))
    assert distributed.fingerprint(a) != distributed.fingerprint(a[:-1])
    b = a.clone()
    b[17] += 1e-6
    assert distributed.fingerprint(a) != distributed.fingerprint(b)


def test_checksums_accept_equal_blocks_and_reject_different_ones() -> None:
    V = torch.randn(40, 3, dtype=torch.float64)
    world = 4
    mine = distributed._checksums(V)
    distributed._verify_checksums(mine, world * mine, V.shape, world)  # all ranks equal
    other = V.clone()
    other[5, 2] += 1e-9  # one rank differs in one entry of column 2
    total = 3 * mine + distributed._checksums(other)
    with pytest.raises(distributed.DistributedError, match="column 2"):
        distributed._verify_checksums(mine, total, V.shape, world)


def test_mismatch_message_names_the_ranks_and_values() -> None:
    msg = distributed._mismatch_message("num_params", ["1210", "1210", "1200"])
    assert msg.startswith("ranks disagree on num_params: rank 0 has 1210, rank 2 has 1200")
    assert "same model, data and options" in msg


def test_fsdp_is_refused_with_advice() -> None:
    class FullyShardedDataParallel(nn.Module):  # stands in for torch's FSDP wrapper
        pass

    with pytest.raises(UserInputError, match="FSDP"):
        distributed.unwrap_model(nn.Sequential(FullyShardedDataParallel()))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def one_rank_group() -> Iterator[None]:
    """A real gloo process group with a single rank, destroyed afterwards."""
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{_free_port()}", rank=0, world_size=1
    )
    try:
        yield
    finally:
        dist.destroy_process_group()


def test_ddp_wrapped_model_is_unwrapped(one_rank_group: None) -> None:
    model, loss, batches = digits_mlp(hidden=4, n_samples=40, num_batches=2)
    ddp = nn.parallel.DistributedDataParallel(model)
    assert distributed.unwrap_model(ddp) is model
    V = torch.randn(sum(p.numel() for p in model.parameters()), 2, dtype=torch.float64)
    wrapped = HessianOperator(ddp, loss, batches).matmat(V)
    plain = HessianOperator(model, loss, batches).matmat(V)
    assert torch.equal(wrapped, plain)
    assert distributed.is_initialized() and distributed.world_size() == 1


# --------------------------------------------------------------------------------------------
# two ranks under torchrun


def _torchrun(*args: str, timeout: float = 150.0) -> tuple[subprocess.CompletedProcess, float]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env["OMP_NUM_THREADS"] = "1"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    start = time.monotonic()
    proc = subprocess.run(
        [*cmd, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )
    return proc, time.monotonic() - start


def _reference(case: str) -> dict[str, Any]:
    """The single-process run of the same case."""
    model, loss, batches, params = dist_worker.build(case)
    return dist_worker.compute(case, dist_worker.operator(model, loss, batches, params))


def _assert_close(got: Any, want: Any, what: str) -> None:
    got, want = np.asarray(got, dtype=float), np.asarray(want, dtype=float)
    assert got.shape == want.shape, what
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=0, err_msg=what)


@pytest.fixture(scope="module")
def two_rank_results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("dist") / "results.json"
    proc, _ = _torchrun(str(WORKER), "--case", "mlp", "chargpt", "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(out.read_text())


@pytest.mark.slow
@pytest.mark.parametrize("case", ["mlp", "chargpt"])
def test_two_ranks_equal_one_process(case: str, two_rank_results: dict[str, Any]) -> None:
    got, want = two_rank_results[case], _reference(case)
    # half the data per rank: each batch was cut in two equal slices
    total = got["num_samples"]
    assert got["world_size"] == 2 and got["local_samples"] == [total // 2, total // 2]
    assert all(got["converged"]) and all(want["converged"])
    _assert_close(got["eigenvalues"], want["eigenvalues"], "eigenvalues")
    for name in ("beta", "s", "sigma_s", "ks_distance", "critical_value"):
        _assert_close(got["fit"][name], want["fit"][name], f"fit.{name}")
    assert got["fit"]["is_power_law"] == want["fit"]["is_power_law"]


@pytest.mark.slow
def test_a_rank_that_dies_stops_torchrun_quickly_naming_it(tmp_path: Path) -> None:
    out = tmp_path / "never.json"
    proc, seconds = _torchrun(
        str(WORKER), "--case", "mlp", "--out", str(out), "--fail-rank", "1", timeout=90
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0 and not out.exists()
    assert seconds < 60, f"took {seconds:.1f} s"
    # torchrun's summary names rank 1 as the root cause, with its error message
    root = output[output.index("Root Cause") :]
    assert "rank      : 1 (local_rank: 1)" in root
    assert "injected failure on rank 1" in root
    # rank 0, if it reached a collective before torchrun stopped it, blamed rank 1 too
    for line in output.splitlines():
        if "rank 0 of 2:" in line:
            assert "because rank 1 failed with RuntimeError: injected failure" in line


@pytest.mark.slow
def test_a_rank_that_dies_stops_the_others_without_torchrun(tmp_path: Path) -> None:
    """Plain env:// launch, nobody kills the survivor: it must notice and name rank 1 itself."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TORCHELASTIC")}
    env.update(
        WORLD_SIZE="2", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()), OMP_NUM_THREADS="1"
    )
    out = tmp_path / "never.json"
    cmd = [sys.executable, str(WORKER), "--case", "mlp", "--out", str(out), "--fail-rank", "1"]
    start = time.monotonic()
    procs = [
        subprocess.Popen(
            cmd,
            cwd=ROOT,
            env={**env, "RANK": str(r), "LOCAL_RANK": str(r)},
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )  # fmt: skip
        for r in range(2)
    ]
    try:
        results = [p.communicate(timeout=60) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    seconds = time.monotonic() - start
    assert seconds < 60, f"took {seconds:.1f} s"
    (_, err0), (_, err1) = results
    assert procs[1].returncode != 0 and "injected failure on rank 1" in err1
    assert procs[0].returncode == 1, err0[-3000:]
    assert (
        "hessian-powerlaw: error: rank 0 of 2: " in err0
        and "because rank 1 failed with RuntimeError: injected failure on rank 1" in err0
    ), err0[-3000:]
    assert not out.exists()


@pytest.mark.slow
def test_ranks_that_disagree_on_the_data_all_fail(tmp_path: Path) -> None:
    out = tmp_path / "never.json"
    proc, seconds = _torchrun(
        str(WORKER), "--case", "mlp", "--out", str(out), "--mismatch-rank", "1", timeout=90
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0 and not out.exists()
    assert seconds < 60, f"took {seconds:.1f} s"
    # every rank raises the same message, naming the value and both ranks' versions; torchrun
    # stops the other worker as soon as the first one exits, so that one's line may be cut off
    lines = [ln for ln in output.splitlines() if "dist_worker: error: ranks disagree on data" in ln]
    assert 1 <= len(lines) <= 2, output[-3000:]
    assert len(set(lines)) == 1, lines
    assert "rank 0 has '19500 values" in lines[0] and "rank 1 has '19435 values" in lines[0]


SPECTRUM_ARGS = dict(samples=100, k=12, tol=1e-8, trace_matvecs=12, seed=0)


@pytest.mark.slow
def test_spectrum_command_under_torchrun_equals_one_process(tmp_path: Path) -> None:
    """``torchrun -m hessian_powerlaw spectrum`` gives the single-process eigenvalues, fit and
    trace (Hutch++ probes broadcast from rank 0); only rank 0 prints and writes."""
    from hessian_powerlaw.analysis import analyze_spec

    out = tmp_path / "out"
    a = SPECTRUM_ARGS
    proc, _ = _torchrun(
        "-m", "hessian_powerlaw", "spectrum", "--model", "fcn:1x16", "--data", "digits",
        "--dtype", "float64",
        "--samples", str(a["samples"]), "--batch-size", "50", "--k", str(a["k"]),
        "--tol", str(a["tol"]), "--trace-matvecs", str(a["trace_matvecs"]), "--no-density",
        "--out", str(out), "--quiet",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "does not split its work" not in proc.stderr  # both ranks took part
    assert proc.stdout.count("wrote ") == 1  # rank 1's summary went nowhere
    got = json.loads((out / "spectrum.json").read_text())
    want = analyze_spec("fcn:1x16", "digits", batch_size=50, density=False, **a).to_dict()
    assert got["num_samples"] == want["num_samples"] == a["samples"]
    _assert_close(got["spectrum"]["eigenvalues"], want["spectrum"]["eigenvalues"], "eigenvalues")
    _assert_close(got["fit"]["beta"], want["fit"]["beta"], "fit.beta")
    _assert_close(got["fit"]["ks_distance"], want["fit"]["ks_distance"], "fit.ks_distance")
    _assert_close(got["trace"]["estimate"], want["trace"]["estimate"], "trace")


@pytest.mark.slow
def test_track_command_under_torchrun_equals_one_process(tmp_path: Path) -> None:
    """``torchrun -m hessian_powerlaw track RUN`` shares every checkpoint's products between
    the ranks and gives the single-process entries; only rank 0 prints and writes, and a
    second call resumes from the finished checkpoints on both ranks."""
    import shutil

    from hessian_powerlaw.tracking import track_run
    from hessian_powerlaw.training import TrainConfig, train

    run = tmp_path / "run"
    config = TrainConfig(model="fcn:1x16", data="digits:200", epochs=2, batch_size=50,
                         checkpoint_epochs=(0, 2), seed=0)  # fmt: skip
    train(config, run)
    single = tmp_path / "single"
    shutil.copytree(run, single)
    a = SPECTRUM_ARGS
    options = ["--samples", str(a["samples"]), "--batch-size", "50", "--k", str(a["k"]),
               "--tol", str(a["tol"]), "--trace-matvecs", str(a["trace_matvecs"]),
               "--no-figures", "--quiet"]  # fmt: skip
    proc, _ = _torchrun("-m", "hessian_powerlaw", "track", str(run), *options)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "does not split its work" not in proc.stderr  # both ranks took part
    assert proc.stdout.count("wrote ") == 1 and proc.stdout.count("step 0:") == 1
    got = json.loads((run / "track.json").read_text())
    want = track_run(single, batch_size=50, figures=False, **a).to_dict()
    assert [e["checkpoint"] for e in got["entries"]] == [e["checkpoint"] for e in want["entries"]]
    assert len(got["entries"]) == 2 and got["complete"]
    for g, w in zip(got["entries"], want["entries"]):
        _assert_close(g["analysis"]["spectrum"]["eigenvalues"],
                      w["analysis"]["spectrum"]["eigenvalues"], g["checkpoint"])  # fmt: skip
        _assert_close(g["measures"]["trace"], w["measures"]["trace"], "trace")
    # resuming: both ranks find both checkpoints done and agree on it
    again, _ = _torchrun("-m", "hessian_powerlaw", "track", str(run), *options)
    assert again.returncode == 0, again.stderr[-4000:]
    assert json.loads((run / "track.json").read_text())["entries"] == got["entries"]
