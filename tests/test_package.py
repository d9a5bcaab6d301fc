"""The package skeleton: lazy exports, atomic writes, staged output folders, CLI errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import hessian_powerlaw
from hessian_powerlaw.errors import UserInputError
from hessian_powerlaw.io import atomic_write_json, staged_dir


def test_unknown_attribute_raises() -> None:
    with pytest.raises(AttributeError):
        hessian_powerlaw.does_not_exist  # noqa: B018


def test_atomic_json_is_strict(tmp_path: Path) -> None:
    out = atomic_write_json(tmp_path / "a.json", {"x": np.arange(3), "nan": float("nan")})
    assert json.loads(out.read_text()) == {"x": [0, 1, 2], "nan": None}
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_staged_dir_leaves_nothing_on_failure(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), staged_dir(tmp_path / "out") as stage:
        (stage / "half.json").write_text("{")
        raise RuntimeError("boom")
    assert list((tmp_path / "out").iterdir()) == []
    with staged_dir(tmp_path / "out") as stage:
        (stage / "done.json").write_text("{}")
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["done.json"]


def test_user_input_error_is_value_error() -> None:
    assert issubclass(UserInputError, ValueError)


def test_atomic_files_get_the_umask_mode(tmp_path: Path) -> None:
    import os

    old = os.umask(0o022)
    try:
        out = atomic_write_json(tmp_path / "b.json", {})
    finally:
        os.umask(old)
    assert out.stat().st_mode & 0o777 == 0o644


def test_every_public_name_resolves() -> None:
    for name in hessian_powerlaw.__all__:
        assert getattr(hessian_powerlaw, name) is not None, name
