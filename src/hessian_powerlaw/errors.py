"""The one exception type for mistakes in what a user passed in."""

from __future__ import annotations


class UserInputError(ValueError):
    """A mistake in the user's input (a spec, a file, a parameter value).

    The message names the input and the fix. The command line prints it as a single line
    and exits with status 2, without a traceback; from Python it is an ordinary ValueError.
    """
