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
