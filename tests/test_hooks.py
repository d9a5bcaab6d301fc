"""HessianHook: measures inside a user's own training loop, without disturbing the run."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from hessian_powerlaw.errors import UserInputError
from hessian_powerlaw.hooks import HessianHook, preserved_training_state, take_batches
from hessian_powerlaw.report.html import write_report
from tests.reference import digits_data, explicit_hessian

FAST = dict(k=12, trace_matvecs=12, n_boot=0)  # small: these tests check plumbing and numbers


def _model() -> nn.Module:
    """64 -> 12 -> 10 with dropout, so that training draws from the global generator."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(64, 12), nn.Tanh(), nn.Dropout(0.2), nn.Linear(12, 10))


def _train(
    steps: int, hook: HessianHook | None = None, model: nn.Module | None = None
) -> nn.Module:
    """A seeded loop: shuffled mini-batches from the global generator, dropout, SGD with
    momentum. ``hook.step()`` after every optimizer step."""
    model = model or _model()
    X, y = digits_data(300, dtype=torch.float32)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    criterion = nn.CrossEntropyLoss()
    torch.manual_seed(1)
    model.train()
    for _ in range(steps):
        idx = torch.randperm(len(X))[:32]
        opt.zero_grad()
        criterion(model(X[idx]), y[idx]).backward()
        opt.step()
        if hook is not None:
            hook.step()
    return model


def _hessian_batch() -> tuple[torch.Tensor, torch.Tensor]:
    return digits_data(120, dtype=torch.float32)


def _held_out() -> tuple[torch.Tensor, torch.Tensor]:
    X, y = digits_data(400, dtype=torch.float32)
    return X[300:], y[300:]


def test_run_with_and_without_the_hook_ends_bit_identical(tmp_path: Path) -> None:
    without = _train(12)
    model = _model()
    hook = HessianHook(model, nn.CrossEntropyLoss(), _hessian_batch(), every=4,
                       out=tmp_path / "hessian", held_out=_held_out(), **FAST)  # fmt: skip
    with_hook = _train(12, hook, model)
    hook.close()
    assert [r["step"] for r in hook.records] == [4, 8, 12]
    for (name, a), b in zip(without.state_dict().items(), with_hook.state_dict().values()):
        assert torch.equal(a, b), f"{name} differs with the hook"
    assert with_hook.training and all(m.training for m in with_hook.modules())


def test_state_is_restored_around_a_measurement() -> None:
    model = _train(2)
    model.eval()
    model[2].train()  # a mixed state: exactly this comes back
    X, y = _hessian_batch()
    nn.CrossEntropyLoss()(model(X), y).backward()
    grads = [p.grad for p in model.parameters()]
    copies = [g.clone() for g in grads]
    torch.manual_seed(5)
    np.random.seed(5)
    random.seed(5)
    expected = (torch.rand(3), np.random.rand(3), random.random())
    torch.manual_seed(5)
    np.random.seed(5)
    random.seed(5)

    def drawing_loss(m: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """Cross-entropy that also draws from every global generator (as a user's loss may)."""
        noise = torch.rand(()) * 0 + np.random.rand() * 0 + random.random() * 0
        return nn.functional.cross_entropy(m(batch[0]), batch[1]) + noise

    hook = HessianHook(model, drawing_loss, (X, y), every=1, **FAST)
    with torch.no_grad():
        hook.measure(0)
        assert not torch.is_grad_enabled()
    assert [m.training for m in model.modules()] == [False, False, False, True, False]
    assert all(p.grad is g for p, g in zip(model.parameters(), grads))
    assert all(torch.equal(g, c) for g, c in zip(grads, copies))
    got = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(got[0], expected[0]) and np.array_equal(got[1], expected[1])
    assert got[2] == expected[2]


def test_record_equals_explicit_hessian_and_losses(tmp_path: Path) -> None:
    """The record's eigenvalues are the explicit Hessian's on the fixed batch; train_loss and
    test_loss are the criterion's mean losses (eval mode); gap is their difference."""
    model = _train(20).double()
    X, y = (t.double() if t.is_floating_point() else t for t in _hessian_batch())
    Xh, yh = (t.double() if t.is_floating_point() else t for t in _held_out())
    hook = HessianHook(model, nn.CrossEntropyLoss(), (X, y), every=5, held_out=(Xh, yh),
                       dtype="float64", tol=1e-10, params="3.*", **FAST)  # fmt: skip
    record = hook.measure(20, epoch=1.5)
    names = ["3.weight", "3.bias"]
    exact = torch.linalg.eigvalsh(explicit_hessian(model, nn.CrossEntropyLoss(), (X, y), names))
    np.testing.assert_allclose(
        record["analysis"]["spectrum"]["eigenvalues"], exact.flip(0)[:12].numpy(), rtol=1e-8
    )
    assert record["analysis"]["num_params"] == 130 and record["step"] == 20
    assert record["epoch"] == 1.5
    model.eval()
    with torch.no_grad():
        train_loss = float(nn.CrossEntropyLoss()(model(X), y))
        test_loss = float(nn.CrossEntropyLoss()(model(Xh), yh))
    assert record["train_loss"] == pytest.approx(train_loss, rel=1e-12)
    assert record["test_loss"] == pytest.approx(test_loss, rel=1e-12)
    assert record["gap"] == pytest.approx(test_loss - train_loss, rel=1e-9)
    measures = record["measures"]
    assert measures["lambda_max"] == pytest.approx(float(exact[-1]), rel=1e-8)
    for key in ("s", "d_ks", "d_c", "trace"):
        assert measures[key] is not None


def test_records_file_is_tracks_and_report_renders_it(tmp_path: Path) -> None:
    out = tmp_path / "hessian"
    board = tmp_path / "tb"
    model = _model()
    hook = HessianHook(model, nn.CrossEntropyLoss(), _hessian_batch(), every=3, out=out,
                       held_out=_held_out(), tensorboard=board, name="mlp", data="digits",
                       **FAST)  # fmt: skip
    _train(9, hook, model)
    partial = json.loads((out / "track.json").read_text())
    assert partial["kind"] == "track" and partial["complete"] is False
    result = hook.close()
    record = json.loads((out / "track.json").read_text())
    assert record["complete"] is True and record["model"] == "mlp"
    assert [e["step"] for e in record["entries"]] == [3, 6, 9]
    assert record["entries"] == json.loads(json.dumps(result.to_dict()["entries"]))
    # track's correlations, with the held-out loss and the gap as targets
    assert record["correlations"]["test_loss"]["d_ks"]["n"] == 3
    assert record["correlations"]["gap"]["lambda_max"]["pearson_r"] is not None
    page = write_report(out).read_text()
    assert "Tracked run" in page and page.count("<img") >= 2
    from tests.tensorboard_events import read_events

    scalars, images = read_events(board)
    got = [(step, v) for step, v in scalars["hessian/d_ks"]]
    assert [s for s, _ in got] == [3, 6, 9]
    np.testing.assert_allclose(
        [v for _, v in got], [e["measures"]["d_ks"] for e in record["entries"]], rtol=1e-6
    )
    assert [e.step for e in images["hessian/rank_plot"]] == [3, 6, 9]


def test_a_resumed_run_continues_its_records_file(tmp_path: Path) -> None:
    out = tmp_path / "hessian"
    model = _train(3)
    first = HessianHook(model, nn.CrossEntropyLoss(), _hessian_batch(), every=2, out=out, **FAST)
    for step in (2, 4, 6):
        first.step(step)
    first.close()
    # resumed from step 4: its records up to step 4 stay, the new step 6 replaces the old one
    again = HessianHook(model, nn.CrossEntropyLoss(), _hessian_batch(), every=2, out=out, **FAST)
    assert again.step(5) is None
    again.step(6)
    entries = json.loads((out / "track.json").read_text())["entries"]
    assert [e["step"] for e in entries] == [2, 4, 6]
    # other settings start a new file
    other = HessianHook(model, nn.CrossEntropyLoss(), _hessian_batch(), every=2, out=out,
                        **{**FAST, "k": 11})  # fmt: skip
    other.step(8)
    assert [e["step"] for e in json.loads((out / "track.json").read_text())["entries"]] == [8]


def test_batches_are_taken_once_without_drawing_from_the_generator() -> None:
    X, y = digits_data(40, dtype=torch.float32)
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(X, y), batch_size=16, shuffle=True
    )
    torch.manual_seed(3)
    expected = torch.rand(2)
    torch.manual_seed(3)
    taken = take_batches(loader)
    assert torch.equal(torch.rand(2), expected)
    assert [len(b[0]) for b in taken] == [16, 16, 8]
    batch = (X.clone(), y)
    (copy,) = take_batches(batch)
    batch[0].zero_()  # the caller reuses its buffer: the hook's copy is unaffected
    assert torch.equal(copy[0], X)


def test_hook_errors() -> None:
    model = _model()
    batch = _hessian_batch()
    with pytest.raises(UserInputError, match="every must be an integer >= 1"):
        HessianHook(model, nn.CrossEntropyLoss(), batch, every=0)
    with pytest.raises(UserInputError, match="per-block is for `spectrum`"):
        HessianHook(model, nn.CrossEntropyLoss(), batch, every=1, params="per-block")
    with pytest.raises(UserInputError, match="loss must be"):
        HessianHook(model, "cross-entropy", batch, every=1)
    with pytest.raises(UserInputError, match="Hessian batch is empty"):
        HessianHook(model, nn.CrossEntropyLoss(), [], every=1)
    hook = HessianHook(model, nn.CrossEntropyLoss(), batch, every=1, params="fc9.*", **FAST)
    with pytest.raises(UserInputError, match="'fc9.*' matches no parameter"):
        hook.measure(1)
    assert model.training  # restored after the error too
    with preserved_training_state(model):
        model.eval()
    assert model.training
