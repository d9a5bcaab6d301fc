"""analyze(): eigenvalues against an explicit Hessian, fit, trace and the spec/checkpoint path."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from hessian_powerlaw.analysis import (
    DEFAULT_MAX_SAMPLES,
    ModelAnalysis,
    analyze,
    analyze_groups,
    analyze_operator,
    analyze_spec,
    parameter_groups,
)
from hessian_powerlaw.errors import UserInputError
from hessian_powerlaw.io import atomic_write_json
from hessian_powerlaw.operators import MatrixOperator
from hessian_powerlaw.powerlaw import bootstrap_pvalue, compare_alternatives, fit_power_law
from tests.reference import digits_mlp, explicit_hessian

MEASURE_KEYS = {"lambda_max", "trace", "trace_stderr", "s", "sigma_s", "beta", "d_ks", "d_c",
                "p_value", "lr_exponential", "lr_exponential_p",
                "is_power_law"}  # fmt: skip


@pytest.fixture(scope="module")
def mlp() -> tuple[nn.Module, nn.Module, list, torch.Tensor]:
    """A 610-parameter tanh MLP on 150 digits, its batches and its explicit Hessian."""
    model, loss, batches = digits_mlp(hidden=8, n_samples=150, num_batches=2)
    return model, loss, batches, explicit_hessian(model, loss, batches)


def test_eigenvalues_fit_and_trace_match_the_explicit_hessian(mlp) -> None:
    model, loss, batches, H = mlp
    exact = torch.linalg.eigvalsh(H).flip(0).numpy()
    result = analyze(model, loss, batches, k=20, tol=1e-8, trace_matvecs=90, seed=3)
    # eigenvalues: relative to lambda_1, as the solver's residuals are
    assert result.spectrum.all_converged
    np.testing.assert_allclose(result.eigenvalues, exact[:20], rtol=0, atol=1e-8 * exact[0])
    assert result.lambda_max == pytest.approx(exact[0], rel=1e-8)
    # the fit is the statistics layer's fit of these eigenvalues
    reference = fit_power_law(exact[:20])
    assert result.fit.beta == pytest.approx(reference.beta, rel=1e-6)
    assert result.fit.ks_distance == pytest.approx(reference.ks_distance, rel=1e-6, abs=1e-9)
    # the calibrated tests are those of the statistics layer on the same eigenvalues
    boot = bootstrap_pvalue(exact[:20], n_boot=1000, seed=3)
    assert result.measures["p_value"] == pytest.approx(boot.p_value, abs=0.01)
    lr = compare_alternatives(exact[:20])["exponential"]
    assert result.measures["lr_exponential"] == pytest.approx(lr.normalized_ratio, rel=1e-5)
    assert result.measures["lr_exponential_p"] == pytest.approx(lr.p_value, rel=1e-4)
    # Hutch++ trace: within 3 of its standard errors of the exact trace
    exact_trace = float(torch.trace(H))
    assert abs(result.trace.estimate - exact_trace) <= 3 * result.trace.std_error + 1e-9
    assert result.num_params == H.shape[0] == 610
    assert set(result.measures) == MEASURE_KEYS
    assert result.measures["s"] == result.fit.s
    assert result.measures["d_c"] == result.fit.critical_value
    assert result.measures["trace"] == result.trace.estimate
    json.dumps(result.to_dict(), allow_nan=False)  # strict JSON, eigenvectors left out
    assert "eigenvectors" not in result.to_dict()["spectrum"]


def test_parameter_subset_is_the_matching_sub_block(mlp) -> None:
    model, loss, batches, _ = mlp
    names = ["2.weight", "2.bias"]
    sub = explicit_hessian(model, loss, batches, param_names=names)
    exact = torch.linalg.eigvalsh(sub).flip(0).numpy()
    result = analyze(model, loss, batches, k=12, params=["2.*"], trace_matvecs=0)
    assert result.num_params == sub.shape[0] == 90
    assert result.params == "2.*" and result.trace is None
    np.testing.assert_allclose(result.eigenvalues, exact[:12], rtol=0, atol=1e-7 * exact[0])
    # "last" resolves to the same last layer
    (group,) = parameter_groups(model, "last").values()
    assert group == names


def test_k_larger_than_the_parameter_count(mlp) -> None:
    model, loss, batches, _ = mlp
    with pytest.raises(UserInputError, match=r"k = 611 is larger .* \(610\)"):
        analyze(model, loss, batches, k=611)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"k": 0}, "k must be"), ({"tol": 0.0}, "tol must"), ({"alpha": 1.5}, "alpha must"),
     ({"trace_matvecs": -1}, "trace_matvecs"), ({"trace_matvecs": 4}, "Hutch"),
     ({"dtype": "float16"}, "dtype must")],
)  # fmt: skip
def test_bad_parameters_are_user_errors(mlp, kwargs: dict, message: str) -> None:
    model, loss, batches, _ = mlp
    with pytest.raises(UserInputError, match=message):
        analyze(model, loss, batches, **{"k": 5, **kwargs})


def test_no_fit_when_fewer_than_ten_positive_eigenvalues() -> None:
    """A saddle with 6 positive directions: the spectrum is reported, the fit is not."""
    values = np.concatenate([np.linspace(5.0, 1.0, 6), -np.linspace(0.1, 3.0, 34)])
    result = analyze_operator(MatrixOperator(np.diag(values)), k=12, trace_matvecs=0)
    assert result.fit is None
    assert "only 6 of the top 12 eigenvalues are positive" in result.fit_error
    assert result.measures["s"] is None and result.measures["is_power_law"] is None
    assert result.lambda_max == pytest.approx(5.0, rel=1e-9)
    json.dumps(result.to_dict(), allow_nan=False)


def test_fit_ignores_negative_tail_and_counts_it() -> None:
    values = np.concatenate([10.0 / np.arange(1, 31), -np.linspace(0.01, 0.02, 5), np.zeros(5)])
    result = analyze_operator(MatrixOperator(np.diag(values)), k=40, trace_matvecs=0)
    assert result.fit.k == 30 and result.fit.n_dropped == 10
    assert result.fit.s == pytest.approx(fit_power_law(values[:30]).s, rel=1e-9)


class _Blocks(nn.Module):
    """Embedding, two repeated blocks and a head: what per-block groups are made for."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(64, 6)
        self.blocks = nn.ModuleList(nn.Linear(6, 6) for _ in range(2))
        self.head = nn.Linear(6, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.embed(x))
        for block in self.blocks:
            h = torch.tanh(block(h))
        return self.head(h)


def test_per_block_groups_equal_separate_runs() -> None:
    torch.manual_seed(0)
    model = _Blocks().double()
    _, loss, batches = digits_mlp(hidden=4, n_samples=120)
    groups = analyze_groups(model, loss, batches, "per-block", k=8, trace_matvecs=0)
    assert list(groups) == ["embeddings", "blocks.0", "blocks.1", "head"]
    for label, names in parameter_groups(model, "per-block").items():
        sub = explicit_hessian(model, loss, batches, param_names=names)
        exact = torch.linalg.eigvalsh(sub).flip(0).numpy()[:8]
        np.testing.assert_allclose(groups[label].eigenvalues, exact, atol=1e-7 * exact[0])


def test_analyze_spec_from_zoo_and_checkpoint(tmp_path: Path) -> None:
    """Random init, then the same weights from a checkpoint: identical spectra and files."""
    from hessian_powerlaw.zoo import build_model, load_data

    options = dict(samples=200, k=12, trace_matvecs=0, density=False, seed=1)
    random_init = analyze_spec("fcn:1x8", "digits", **options)
    assert random_init.num_samples == 200 and random_init.checkpoint is None
    assert set(random_init.evaluation) == {"train", "test"}
    assert random_init.analysis.num_params == 64 * 8 + 8 + 8 * 10 + 10
    # the one analysis's results read as analyze()'s do
    assert random_init.fit is random_init.analysis.fit and random_init.fit is not None
    assert random_init.measures is random_init.analysis.measures
    np.testing.assert_array_equal(random_init.eigenvalues, random_init.analysis.eigenvalues)

    data = load_data("digits", seed=1)
    torch.save(build_model("fcn:1x8", data, seed=1).state_dict(), tmp_path / "w.pt")
    loaded = analyze_spec("fcn:1x8", "digits", checkpoint=tmp_path / "w.pt", **options)
    np.testing.assert_array_equal(loaded.analysis.eigenvalues, random_init.analysis.eigenvalues)
    (tmp_path / "run").mkdir()
    (tmp_path / "w.pt").rename(tmp_path / "run" / "final.pt")  # a run folder means its final.pt
    from_folder = analyze_spec("fcn:1x8", "digits", checkpoint=tmp_path / "run", **options)
    np.testing.assert_array_equal(from_folder.analysis.eigenvalues, loaded.analysis.eigenvalues)
    record = json.loads(atomic_write_json(tmp_path / "spectrum.json", loaded).read_text())
    assert record["kind"] == "spectrum" and record["checkpoint"].endswith("w.pt")
    assert record["spectrum"]["eigenvalues"] == loaded.analysis.eigenvalues.tolist()
    assert record["versions"]["torch"] == torch.__version__
    assert "analysis" not in record and record["blocks"] == {}


def test_checkpoint_of_another_model_is_a_user_error(tmp_path: Path) -> None:
    torch.save(nn.Linear(3, 2).state_dict(), tmp_path / "other.pt")
    with pytest.raises(UserInputError, match="do not fit the model"):
        analyze_spec("fcn:1x8", "digits", checkpoint=tmp_path / "other.pt", k=5, samples=50)


def test_unknown_specs_are_user_errors() -> None:
    with pytest.raises(UserInputError, match="model spec"):
        analyze_spec("nosuchnet", "digits", k=5, samples=50)
    with pytest.raises(UserInputError):
        analyze_spec("fcn:1x8", "nosuchdata", k=5, samples=50)


def test_default_sample_caps() -> None:
    from hessian_powerlaw.analysis import default_num_samples

    class Small:
        kind, num_train = "image", 1437

    class Large:
        kind, num_train = "image", 60000

    assert default_num_samples(Small()) == 1437
    assert default_num_samples(Large()) == DEFAULT_MAX_SAMPLES["image"]


def test_model_analysis_per_block_keeps_blocks(mlp) -> None:
    model, loss, batches, _ = mlp
    one = analyze(model, loss, batches, k=10, trace_matvecs=0)
    result = ModelAnalysis(model="m", data="d", checkpoint=None, num_samples=150,
                           params="per-block", analysis=None, blocks={"a": one, "b": one},
                           evaluation={}, config={}, versions={}, seconds=0.0)  # fmt: skip
    record = result.to_dict()
    assert "spectrum" not in record and set(record["blocks"]) == {"a", "b"}
    assert result.analyses == {"a": one, "b": one}
    with pytest.raises(AttributeError, match=r"use \.blocks\[label\]\.fit \(labels: a, b\)"):
        _ = result.fit


def test_readme_python_api_example(capsys: pytest.CaptureFixture) -> None:
    """The README's "Python API" example runs as printed (it is the documentation)."""
    import re

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Python API", 1)
    assert len(section) == 2, "README has no '## Python API' section"
    code = re.search(r"```python\n(.*?)```", section[1], re.S)
    assert code is not None, "the Python API section has no python code block"
    namespace: dict = {}
    exec(compile(code.group(1), "README.md", "exec"), namespace)  # noqa: S102
    result = namespace["result"]
    assert result.spectrum.k == 30 and result.fit is not None
    assert "d_ks = " in capsys.readouterr().out
