"""The one exception type for mistakes in what a user passed in, and the checks that raise it."""

from __future__ import annotations

import numbers
from typing import Any


class UserInputError(ValueError):
    """A mistake in the user's input (a spec, a file, a parameter value).

    The message names the input and the fix. The command line prints it as a single line
    and exits with status 2, without a traceback; from Python it is an ordinary ValueError.
    """


def check_int(value: Any, name: str, minimum: int = 1) -> int:
    """``value`` as an ``int`` when it is an integer (numpy integers too) of at least ``minimum``.

    Args:
        value: what the user passed.
        name: the parameter's name, for the message.
        minimum: the smallest valid value.

    Returns:
        ``int(value)``.

    Raises:
        UserInputError: ``value`` is a bool, not an integer, or below ``minimum``.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise UserInputError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)
