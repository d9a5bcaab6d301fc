"""One definition of each shared check, pinned: the same behaviour wherever it is used."""

from __future__ import annotations

import numpy as np
import pytest

from hessian_powerlaw.errors import UserInputError, check_int


def test_check_int_accepts_python_and_numpy_integers() -> None:
    assert check_int(3, "k") == 3 and isinstance(check_int(np.int64(3), "k"), int)
    assert check_int(0, "n_boot", minimum=0) == 0


@pytest.mark.parametrize("value", [0, -1, True, 2.0, "3", None])
def test_check_int_names_the_parameter_and_its_minimum(value: object) -> None:
    with pytest.raises(UserInputError, match=r"^k must be an integer >= 1, got "):
        check_int(value, "k")


def test_every_module_uses_the_one_integer_check() -> None:
    from hessian_powerlaw import analysis, powerlaw, theory

    assert analysis.check_int is check_int
    with pytest.raises(UserInputError, match="k must be an integer >= 10, got 5"):
        powerlaw.fit_power_law(np.arange(1.0, 30.0), k=5)
    with pytest.raises(UserInputError, match="k must be an integer >= 1, got 0"):
        theory.predicted_rank_law(2.0, 0)


def test_a_run_folder_means_its_final_checkpoint_else_its_last(tmp_path) -> None:
    from hessian_powerlaw.training import checkpoint_path

    run = tmp_path / "run"
    run.mkdir()
    with pytest.raises(UserInputError, match="has no checkpoint"):
        checkpoint_path(run)
    for step in (5, 40, 120):
        (run / f"ckpt-{step}.pt").write_bytes(b"")
    assert checkpoint_path(run) == run / "ckpt-120.pt"  # an unfinished run: its last one
    (run / "final.pt").write_bytes(b"")
    assert checkpoint_path(run) == run / "final.pt"
    assert checkpoint_path(run / "ckpt-5.pt") == run / "ckpt-5.pt"


def test_spectra_and_runs_load_a_folder_alike(tmp_path) -> None:
    """``analyze_spec(checkpoint=RUN)`` and ``training.load_model(RUN)`` take the same file."""
    import torch

    from hessian_powerlaw.analysis import analyze_spec
    from hessian_powerlaw.training import load_model_state
    from hessian_powerlaw.zoo import build_model, load_data

    data = load_data("digits", seed=1)
    run = tmp_path / "run"
    run.mkdir()
    trained = build_model("fcn:1x8", data, seed=7)
    torch.save({"model": trained.state_dict()}, run / "ckpt-3.pt")
    loaded = load_model_state("fcn:1x8", data, run, seed=1)
    assert not loaded.training
    for a, b in zip(loaded.parameters(), trained.parameters()):
        assert torch.equal(a, b)
    result = analyze_spec("fcn:1x8", "digits", checkpoint=run, samples=100, k=10,
                          trace_matvecs=0, density=False, n_boot=0, seed=1)  # fmt: skip
    assert result.num_samples == 100 and result.analysis.num_params == 64 * 8 + 8 + 90
