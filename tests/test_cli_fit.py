"""``hessian-powerlaw fit`` and ``io.load_eigenvalues``: every file format, and every mistake."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from hessian_powerlaw.cli import main
from hessian_powerlaw.errors import UserInputError
from hessian_powerlaw.io import load_eigenvalues
from hessian_powerlaw.powerlaw import fit_power_law

VALUES = 2.5 * np.arange(1, 201, dtype=np.float64) ** -1.0  # an exact rank law, s = 1


def write_formats(folder: Path) -> dict[str, Path]:
    """The same eigenvalues in every supported layout."""
    files = {
        "npy": folder / "ev.npy",
        "npy-column": folder / "column.npy",
        "txt": folder / "ev.txt",
        "csv-header": folder / "ev.csv",
        "json-list": folder / "list.json",
        "json-top": folder / "top.json",
        "json-spectrum": folder / "spectrum.json",
    }
    np.save(files["npy"], VALUES)
    np.save(files["npy-column"], VALUES[:, None])
    files["txt"].write_text("\n".join(repr(float(v)) for v in VALUES) + "\n")
    files["csv-header"].write_text(
        "# top eigenvalues\neigenvalue\n" + "\n".join(repr(float(v)) for v in VALUES) + "\n\n"
    )
    files["json-list"].write_text(json.dumps(VALUES.tolist()))
    files["json-top"].write_text(json.dumps({"eigenvalues": VALUES.tolist()}))
    files["json-spectrum"].write_text(
        json.dumps({"model": "lenet", "spectrum": {"eigenvalues": VALUES.tolist(), "k": 200}})
    )
    return files


def test_every_format_loads_the_same_values(tmp_path: Path) -> None:
    for name, path in write_formats(tmp_path).items():
        loaded = load_eigenvalues(path)
        assert loaded.dtype == np.float64, name
        np.testing.assert_array_equal(loaded, VALUES, err_msg=name)


def test_fit_prints_the_fit_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    expected = str(fit_power_law(VALUES))
    for name, path in write_formats(tmp_path).items():
        assert main(["fit", str(path)]) == 0, name
        out, err = capsys.readouterr()
        assert out.strip() == expected, name
        assert err == ""
    assert expected.endswith(": power law")


def test_fit_json_with_bootstrap_and_alternatives(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_formats(tmp_path)["npy"]
    args = ["fit", str(path), "--k", "150", "--alpha", "0.01", "--critical", "exact"]
    assert main([*args, "--bootstrap", "50", "--compare", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["file"] == str(path)
    fit = result["fit"]
    assert (fit["k"], fit["alpha"], fit["critical"]) == (150, 0.01, "exact")
    assert fit == fit_power_law(VALUES, k=150, alpha=0.01, critical="exact").to_dict()
    assert result["bootstrap"]["n_boot"] == 50 and 0 <= result["bootstrap"]["p_value"] <= 1
    names = [t["alternative"] for t in result["alternatives"]["tests"]]
    assert names == ["exponential", "lognormal", "stretched_exponential", "truncated_power_law"]

    assert main(["fit", str(path), "--cutoff", "clauset", "--compare"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert "k = " in lines[0] and lines[1].startswith("power law (beta = ")
    assert len(lines) == 6


def test_dropped_values_are_a_warning_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "ev.txt"
    path.write_text("\n".join(map(repr, [*VALUES.tolist(), 0.0, -0.5])))
    assert main(["fit", str(path)]) == 0
    out, err = capsys.readouterr()
    assert err == (
        "hessian-powerlaw: warning: dropped 2 non-positive eigenvalue(s) of the 202 selected; "
        "the fit uses the 200 positive ones\n"
    )
    assert out.strip() == str(fit_power_law(VALUES))


def test_fit_of_a_folder_says_it_is_a_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue #18.7: a folder is not 'missing'; when it holds a spectrum.json, name that."""
    assert main(["fit", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is a folder, not a file" in err and "does not exist" not in err
    write_formats(tmp_path)
    assert main(["fit", str(tmp_path)]) == 2
    assert f"e.g. '{tmp_path / 'spectrum.json'}'" in capsys.readouterr().err


def test_compare_near_the_float_maximum(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Issue #18.5: eigenvalues of 1e308 gave 'ValueError: math domain error'."""
    path = tmp_path / "big.txt"
    path.write_text("\n".join(map(repr, [1e308, 1e308, *np.linspace(1.0, 2.0, 50).tolist()])))
    assert main(["fit", str(path), "--compare", "--json"]) == 0
    tests = json.loads(capsys.readouterr().out)["alternatives"]["tests"]
    assert len(tests) == 4 and all(np.isfinite(t["loglik_ratio"]) for t in tests)
    path.write_text("\n".join(map(repr, [1e300, *np.logspace(-20, -10, 30).tolist()])))
    assert main(["fit", str(path), "--compare"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "beyond floating point" in err


BAD_FILES: list[tuple[str, bytes, str]] = [
    ("ev.txt", b"1.0\n2.0\n3,4\n", "line 3: expected one number per line, got '3,4'"),
    ("ev.csv", b"rank,value\n1,2.0\n", "line 2: expected one number per line, got '1,2.0'"),
    ("ev.txt", b"eigenvalue\nlambda\n1.0\n", "line 2: expected one number per line"),
    ("ev.txt", b"\xff\xfe\x00garbage", "is not a UTF-8 text file"),
    ("ev.txt", b"# nothing\n\n", "holds no values"),
    ("ev.json", b"{not json", "is not valid JSON"),
    ("ev.json", b'{"values": [1, 2]}', "no 'eigenvalues' list"),
    ("ev.json", b'{"eigenvalues": "1 2 3"}', "'eigenvalues' must be a list of numbers"),
    ("ev.json", b'{"eigenvalues": [1.0, "2.0"]}', "entry 1 of 'eigenvalues' is '2.0'"),
    ("ev.json", b'{"eigenvalues": [1.0, true]}', "entry 1 of 'eigenvalues' is True"),
    ("ev.npy", b"not an npy file", "is not a readable .npy array"),
    ("ev.mat", b"1.0\n", "unknown extension '.mat'"),
]


@pytest.mark.parametrize(("name", "content", "message"), BAD_FILES)
def test_malformed_files_are_one_error_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str, content: bytes, message: str
) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(UserInputError, match=f"eigenvalue file '{path}'"):
        load_eigenvalues(path)
    assert main(["fit", str(path)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("hessian-powerlaw: error: eigenvalue file ")
    assert message in err and err.count("\n") == 1


def test_bad_arrays_and_values(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cases = {
        "matrix.npy": (lambda p: np.save(p, np.ones((4, 5))), "array of shape (4, 5)"),
        "strings.npy": (lambda p: np.save(p, np.array(["a", "b"])), "not real numbers"),
        "few.npy": (lambda p: np.save(p, np.arange(1.0, 6.0)), "only 5 positive eigenvalue(s)"),
        "nan.json": (
            lambda p: p.write_text(json.dumps({"eigenvalues": [*VALUES.tolist(), None]})),
            "1 non-finite value(s) (nan at index 200)",
        ),
        "missing.npy": (lambda p: None, "does not exist"),
    }
    for name, (make, message) in cases.items():
        path = tmp_path / name
        make(path)
        assert main(["fit", str(path)]) == 2, name
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, (name, err)
    np.save(tmp_path / "ok.npy", VALUES)
    assert main(["fit", str(tmp_path / "ok.npy"), "--k", "500"]) == 2
    assert "k = 500 is larger than the number of eigenvalues (200)" in capsys.readouterr().err
    assert main(["fit", str(tmp_path / "ok.npy"), "--alpha", "2"]) == 2
    assert "alpha must be a significance level" in capsys.readouterr().err


def test_console_script_exit_codes(tmp_path: Path) -> None:
    script = Path(sys.executable).with_name("hessian-powerlaw")
    if not script.exists():
        pytest.skip(f"console script not installed next to {sys.executable}")
    good = write_formats(tmp_path)["json-spectrum"]
    ok = subprocess.run([str(script), "fit", str(good)], capture_output=True, text=True)
    assert ok.returncode == 0 and ok.stdout.strip() == str(fit_power_law(VALUES))
    bad = tmp_path / "bad.txt"
    bad.write_text("1.0\nfoo 2\n")
    failed = subprocess.run([str(script), "fit", str(bad)], capture_output=True, text=True)
    assert failed.returncode == 2 and failed.stdout == ""
    assert failed.stderr.startswith("hessian-powerlaw: error: eigenvalue file ")
    assert "Traceback" not in failed.stderr and failed.stderr.count("\n") == 1
