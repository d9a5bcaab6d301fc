"""Training runs: schedules, optimizers, bit-exact determinism, checkpoints and resumption."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from hessian_powerlaw import training
from hessian_powerlaw.errors import UserInputError
from hessian_powerlaw.training import (
    TrainConfig,
    load_model,
    load_run,
    load_weights,
    lr_factor,
    make_optimizer,
    train,
)
from hessian_powerlaw.zoo import build_model, load_data

from .test_zoo_data import needs_fashion

# A small run: 300 digits, batch 64 -> 5 steps per epoch.
SMALL = dict(model="fcn:1x32", data="digits:300", batch_size=64)


@pytest.fixture(autouse=True)
def _one_thread():
    """Small models train several times faster on one thread on a shared 2-core machine;
    bit-for-bit comparisons hold for any fixed thread count."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def curve(run: Path) -> list[dict]:
    """metrics.jsonl without the wall-clock seconds."""
    return [{k: v for k, v in m.items() if k != "seconds"} for m in load_run(run).metrics]


# ---------------------------------------------------------------------------------------
# Configuration, schedules, optimizers
# ---------------------------------------------------------------------------------------


def test_step_schedule_divides_by_ten_at_40_and_80_percent() -> None:
    factors = [lr_factor(t, 100, "step", 0) for t in range(100)]
    assert factors[:40] == [1.0] * 40
    assert factors[40:80] == [0.1] * 40
    assert factors[80:] == [0.01] * 20


def test_cosine_and_warmup() -> None:
    assert lr_factor(0, 100, "cosine", 10) == pytest.approx(0.1)  # (0 + 1) / 10
    assert lr_factor(9, 100, "cosine", 10) == pytest.approx(1.0)
    assert lr_factor(10, 100, "cosine", 10) == 1.0
    assert lr_factor(55, 100, "cosine", 10) == pytest.approx(0.5)  # half-way through decay
    assert lr_factor(99, 100, "cosine", 10) == pytest.approx(
        0.5 * (1 + math.cos(math.pi * 89 / 90))
    )
    assert lr_factor(3, 100, "constant", 4) == 1.0 and lr_factor(1, 100, "constant", 4) == 0.5


def test_config_defaults_and_round_trip() -> None:
    sgd = TrainConfig(model="lenet", data="digits")
    assert (sgd.optimizer, sgd.lr, sgd.weight_decay, sgd.batch_size) == (
        "sgd-momentum",
        0.1,
        5e-4,
        128,
    )
    assert (sgd.epochs, sgd.steps, sgd.schedule) == (50, None, "step")
    assert TrainConfig(model="lenet", data="digits", optimizer="adam").lr == 1e-3
    cfg = TrainConfig(
        model="lenet", data="digits", steps=10, checkpoint_epochs=(5, 0, 5), grad_clip=1.0
    )
    assert cfg.checkpoint_epochs == (0, 5)
    again = TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(epochs=3, steps=10), "not both"),
        (dict(optimizer="adamz"), "unknown optimizer"),
        (dict(lr=-1.0), "lr"),
        (dict(schedule="linear"), "schedule"),
        (dict(batch_size=0), "batch_size"),
        (dict(checkpoint_every=0), "checkpoint_every"),
        (dict(grad_clip=0.0), "grad_clip"),
        (dict(momentum=1.0), "momentum"),
    ],
)
def test_config_validation(kwargs: dict, match: str) -> None:
    with pytest.raises(UserInputError, match=match):
        TrainConfig(model="lenet", data="digits", **kwargs)
    with pytest.raises(UserInputError, match="unknown training config keys"):
        TrainConfig.from_dict({"model": "lenet", "data": "digits", "bogus": 1})


@pytest.mark.parametrize(
    "name, cls, extra",
    [
        ("sgd", torch.optim.SGD, {"momentum": 0}),
        ("sgd-momentum", torch.optim.SGD, {"momentum": 0.9}),
        ("adam", torch.optim.Adam, {"amsgrad": False}),
        ("amsgrad", torch.optim.Adam, {"amsgrad": True}),
        ("adamw", torch.optim.AdamW, {}),
        ("radam", torch.optim.RAdam, {}),
        ("adagrad", torch.optim.Adagrad, {}),
        ("rmsprop", torch.optim.RMSprop, {}),
        ("NAdam", torch.optim.NAdam, {}),
    ],
)
def test_optimizers_by_name(name: str, cls: type, extra: dict) -> None:
    param = torch.nn.Parameter(torch.zeros(3))
    opt = make_optimizer(TrainConfig(model="lenet", data="digits", optimizer=name), [param])
    assert type(opt) is cls
    group = opt.param_groups[0]
    assert group["weight_decay"] == 5e-4
    for key, value in extra.items():
        assert group[key] == value


# ---------------------------------------------------------------------------------------
# Runs
# ---------------------------------------------------------------------------------------


def test_run_folder_contents(tmp_path: Path) -> None:
    cfg = TrainConfig(**SMALL, epochs=3, checkpoint_epochs=(0, 2))
    result = train(cfg, tmp_path / "run", progress=False)
    run = load_run(tmp_path / "run")
    assert run.config == cfg
    assert [step for step, _ in run.checkpoints] == [0, 10]
    assert run.final is not None and result.steps == 15 and result.epochs == 3
    assert [m["step"] for m in run.metrics] == [0, 5, 10, 15]
    keys = {"step", "epoch", "lr", "train_loss", "train_accuracy", "test_loss", "test_accuracy"}
    assert keys | {"seconds"} == set(run.metrics[0])
    # step schedule over 15 updates: x0.1 from update 6, x0.01 from update 12
    assert [m["lr"] for m in run.metrics] == pytest.approx([0.1, 0.1, 0.01, 0.001], rel=1e-12)
    assert json.loads((tmp_path / "run" / "config.json").read_text())["model"] == "fcn:1x32"
    assert result.to_dict()["config"]["data"] == "digits:300"


def test_same_seed_gives_the_same_run_bit_for_bit(tmp_path: Path) -> None:
    cfg = TrainConfig(**SMALL, epochs=2)
    train(cfg, tmp_path / "a", progress=False)
    train(cfg, tmp_path / "b", progress=False)
    assert curve(tmp_path / "a") == curve(tmp_path / "b")
    wa, wb = weights(load_model(tmp_path / "a")[0]), weights(load_model(tmp_path / "b")[0])
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    other = TrainConfig(**{**SMALL, "epochs": 2, "seed": 1})
    train(other, tmp_path / "c", progress=False)
    assert curve(tmp_path / "c") != curve(tmp_path / "a")


def test_reloaded_checkpoint_gives_the_same_loss_to_the_last_bit(tmp_path: Path) -> None:
    cfg = TrainConfig(**SMALL, epochs=2, checkpoint_epochs=(1,))
    train(cfg, tmp_path / "run", progress=False)
    run = load_run(tmp_path / "run")
    model, data, config = load_model(tmp_path / "run")
    assert config == cfg and not model.training
    final = run.metrics[-1]
    assert data.evaluate(model, "test")["loss"] == final["test_loss"]
    assert data.evaluate(model, "train")["loss"] == final["train_loss"]
    mid_model, _, _ = load_model(run.checkpoints[0][1], data=data)
    mid = next(m for m in run.metrics if m["step"] == run.checkpoints[0][0])
    assert data.evaluate(mid_model, "test")["loss"] == mid["test_loss"]


@pytest.mark.parametrize(
    "kwargs, resume_step",
    [
        # the paper's CNN set-up: epochs, sgd-momentum, step schedule, checkpoints by epoch
        (dict(epochs=4, checkpoint_epochs=(1, 2)), 10),
        # the LM set-up: steps, adamw, warmup + cosine, clipping, checkpoints mid-epoch
        (
            dict(
                steps=17,
                optimizer="adamw",
                schedule="cosine",
                warmup_steps=3,
                grad_clip=0.5,
                checkpoint_every=4,
                eval_every=3,
            ),
            12,
        ),
    ],
)
def test_killed_run_resumes_to_the_same_weights(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kwargs: dict, resume_step: int
) -> None:
    cfg = TrainConfig(**SMALL, **kwargs)
    whole = train(cfg, tmp_path / "whole", progress=False)

    # Kill the second run by an interrupt between checkpoints (after update 13).
    original = training._update
    calls = {"n": 0}

    def dying_update(*args, **kw):
        calls["n"] += 1
        if calls["n"] == 14:
            raise KeyboardInterrupt
        return original(*args, **kw)

    monkeypatch.setattr(training, "_update", dying_update)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "resumed", progress=False)
    monkeypatch.setattr(training, "_update", original)
    assert not (tmp_path / "resumed" / "final.pt").exists()

    resumed = train(cfg, tmp_path / "resumed", progress=False)
    assert resumed.resumed_from_step == resume_step
    wa = weights(load_model(tmp_path / "whole")[0])
    wb = weights(load_model(tmp_path / "resumed")[0])
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert curve(tmp_path / "whole") == curve(tmp_path / "resumed")
    assert resumed.final_metrics["test_loss"] == whole.final_metrics["test_loss"]


def test_finished_run_is_returned_and_mismatch_refused(tmp_path: Path) -> None:
    cfg = TrainConfig(**SMALL, epochs=1)
    first = train(cfg, tmp_path / "run", progress=False)
    again = train(cfg, tmp_path / "run", progress=False)
    assert again.resumed_from_step == first.steps and again.final_metrics == first.final_metrics
    with pytest.raises(UserInputError, match="different configuration.*epochs"):
        train(TrainConfig(**SMALL, epochs=2), tmp_path / "run", progress=False)
    restarted = train(
        TrainConfig(**SMALL, epochs=2), tmp_path / "run", progress=False, resume=False
    )
    assert restarted.resumed_from_step is None and restarted.steps == 10


def test_bad_spec_leaves_no_run_behind(tmp_path: Path) -> None:
    with pytest.raises(UserInputError, match="unknown model spec"):
        train(TrainConfig(model="lenett", data="digits", epochs=1), tmp_path / "r", progress=False)
    assert not (tmp_path / "r" / "config.json").exists()


def test_weights_that_do_not_fit_are_refused(tmp_path: Path) -> None:
    train(TrainConfig(**SMALL, epochs=1), tmp_path / "run", progress=False)
    other = build_model("fcn:1x16", load_data("digits"))
    with pytest.raises(UserInputError, match="do not fit the model.*shape mismatch"):
        load_weights(other, tmp_path / "run" / "final.pt")
    lenet = build_model("lenet", load_data("digits"))
    with pytest.raises(UserInputError, match="missing .*unexpected"):
        load_weights(lenet, tmp_path / "run" / "final.pt")
    with pytest.raises(UserInputError, match="not a run folder"):
        load_run(tmp_path)


def test_checkpoints_that_are_not_state_dicts_give_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Files that are not weights-only state dicts: one clear line each, loaded weights-only."""
    net = build_model("fcn:1x16", load_data("digits"))
    text = tmp_path / "ev.txt"
    text.write_text("1.0\n2.0\n")
    whole = tmp_path / "m.pt"
    torch.save(net, whole)  # a pickled module, not tensors
    damaged = tmp_path / "cut.pt"
    torch.save(net.state_dict(), damaged)
    damaged.write_bytes(damaged.read_bytes()[:200])
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    cases = {
        text: "checkpoint '{}' is not a PyTorch file saved with torch.save",
        whole: "checkpoint '{}' holds a pickled object (",
        damaged: "checkpoint '{}' is a damaged or truncated PyTorch file",
        empty: "checkpoint '{}' is an empty file",
    }
    for path, message in cases.items():
        with pytest.raises(UserInputError) as info:
            load_weights(net, path)
        text_of = str(info.value)
        assert text_of.startswith(message.format(path)), text_of
        assert "\n" not in text_of and "\x1b" not in text_of and len(text_of) < 400
    assert "save model.state_dict() instead" in str(
        pytest.raises(UserInputError, load_weights, net, whole).value
    )
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(UserInputError, match="holds no model state dict.*it holds a list"):
        load_weights(net, tmp_path / "list.pt")
    torch.save({"epoch": 3}, tmp_path / "meta.pt")
    with pytest.raises(UserInputError, match="under 'model' or 'state_dict'.*'epoch'"):
        load_weights(net, tmp_path / "meta.pt")

    # through the command line: the error line and nothing else
    from hessian_powerlaw.cli import main

    for path in (text, whole):
        argv = ["spectrum", "--model", "fcn:1x16", "--data", "digits", "--checkpoint", str(path)]
        assert main([*argv, "--out", str(tmp_path / "out"), "--quiet"]) == 2
        err = capsys.readouterr().err
        assert err.startswith("hessian-powerlaw: error: checkpoint") and err.count("\n") == 1
        assert "\x1b" not in err and "weights_only" not in err
    assert not (tmp_path / "out").exists()


def test_lightning_style_state_dict_is_accepted(tmp_path: Path) -> None:
    """{'state_dict': ...} loads like {'model': ...}; a 'model.' prefix on every key is
    stripped when the model's own keys do not all carry it."""
    data = load_data("digits")
    source = build_model("fcn:1x16", data)

    class Wrapper(torch.nn.Module):  # a LightningModule holding the network as self.model
        def __init__(self, model: torch.nn.Module) -> None:
            super().__init__()
            self.model = model

    expected = weights(source)
    saved = {
        "plain.pt": {"state_dict": source.state_dict(), "epoch": 3},
        "lightning.pt": {"state_dict": Wrapper(source).state_dict(), "global_step": 7},
    }
    for name, payload in saved.items():
        torch.save(payload, tmp_path / name)
        torch.manual_seed(123)
        target = build_model("fcn:1x16", data, seed=5)
        load_weights(target, tmp_path / name)
        got = target.state_dict()
        assert all(torch.equal(got[k], expected[k]) for k in expected), name

    # a model whose own keys all start with 'model.' keeps the checkpoint's keys as they are
    wrapped = Wrapper(build_model("fcn:1x16", data, seed=5))
    load_weights(wrapped, tmp_path / "lightning.pt")
    assert all(torch.equal(wrapped.model.state_dict()[k], expected[k]) for k in expected)
    with pytest.raises(UserInputError, match="missing model\\."):
        load_weights(wrapped, tmp_path / "plain.pt")


def test_label_noise_run_uses_noisy_labels(tmp_path: Path) -> None:
    cfg = TrainConfig(**SMALL, epochs=1, label_noise=0.4)
    _, data, _ = load_model(train(cfg, tmp_path / "run", progress=False).out)
    clean = load_data("digits:300")
    assert int((data.train_y != clean.train_y).sum()) == 120


@needs_fashion
@pytest.mark.slow
def test_lenet_fashion_mnist_10k_subset_5_epochs(tmp_path: Path) -> None:
    # Only the final evaluation (eval_every beyond the run) keeps this test short.
    cfg = TrainConfig(
        model="lenet",
        data="fashion-mnist:10000",
        epochs=5,
        schedule="cosine",
        eval_every=10**6,
    )
    result = train(cfg, tmp_path / "run", progress=False)
    assert result.test_accuracy >= 0.82, result.final_metrics
