"""The layers of docs/architecture.md are the import-linter contract that `make lint` checks."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _documented_layers() -> list[str]:
    """The layers of the code block in docs/architecture.md, top first, siblings as ``a | b``."""
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    block = text.split("```\nsrc/hessian_powerlaw/\n", 1)[1].split("```", 1)[0]
    levels: list[list[str]] = []
    for line in block.splitlines():
        match = re.match(r"^  (\| )?([A-Za-z_]+)(\.py|/)\s", line)
        if match is None:
            continue  # a description continued
        if match.group(1):
            levels[-1].append(match.group(2))
        else:
            levels.append([match.group(2)])
    return [" | ".join(level) for level in levels]


def test_the_import_contract_is_the_documented_layering() -> None:
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    contracts = config["tool"]["importlinter"]["contracts"]
    (layers,) = [c for c in contracts if c["type"] == "layers"]
    assert layers["containers"] == ["hessian_powerlaw"] and layers["exhaustive"] is True
    assert _documented_layers() == layers["layers"]


def test_every_module_of_the_package_is_in_a_documented_layer() -> None:
    package = ROOT / "src" / "hessian_powerlaw"
    present = {p.stem for p in package.glob("*.py")} | {
        p.name for p in package.iterdir() if (p / "__init__.py").is_file()
    }
    documented = {name for level in _documented_layers() for name in level.split(" | ")}
    assert present - {"__init__", "__main__"} == documented


def test_bundles_and_operators_meet_their_protocols(tmp_path: Path) -> None:
    """The contracts of docs/architecture.md hold for what the library makes."""
    import numpy as np

    from hessian_powerlaw.operators import DifferenceOperator, MatrixOperator, as_operator
    from hessian_powerlaw.protocols import DataBundle, Operator
    from hessian_powerlaw.zoo import load_data

    text = tmp_path / "plays.txt"
    text.write_text("to be or not to be, that is the question. " * 400, encoding="utf-8")
    assert isinstance(load_data("digits"), DataBundle)
    assert isinstance(load_data(f"text:{text}", seq_len=16), DataBundle)
    matrix = MatrixOperator(np.eye(3))
    assert isinstance(matrix, Operator)
    assert isinstance(DifferenceOperator(matrix, matrix), Operator)
    assert as_operator(matrix) is matrix
    assert not isinstance(np.eye(3), Operator)  # a matrix is wrapped, not taken as it is
