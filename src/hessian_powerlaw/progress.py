"""Progress on stderr for long work; silenced with ``enabled=False`` (CLI ``--quiet``).

On a terminal it is a tqdm bar that redraws itself in place. When stderr is not a terminal (a
log file, a pipe, a notebook's captured output, CI) a redrawn bar would leave hundreds of
carriage-return updates in the log, so progress is a few whole lines instead: one at the start,
one each time another tenth of the work is done, and one at the end.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping
from typing import IO, Any

from tqdm.auto import tqdm

# a line for each further tenth of the work, when stderr is not a terminal
LINE_FRACTION = 0.1


def _is_terminal(stream: IO[str]) -> bool:
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty()) if callable(isatty) else False
    except (OSError, ValueError):  # a closed or detached stream
        return False


def progress_bar(total: int | None, desc: str, enabled: bool = True, **kwargs: Any) -> Any:
    """Progress of ``total`` units of work on stderr, with tqdm's interface.

    ``enabled=False`` returns a bar that prints nothing. On a terminal: a tqdm bar. Otherwise
    a :class:`LineProgress`, which prints a few plain lines (see the module docstring).
    """
    if enabled and not _is_terminal(sys.stderr):
        return LineProgress(total, desc, file=sys.stderr)
    return tqdm(
        total=total,
        desc=desc,
        file=sys.stderr,
        disable=not enabled,
        dynamic_ncols=True,
        leave=False,
        **kwargs,
    )


class LineProgress:
    """The part of tqdm's interface this package uses, printed as whole lines for logs.

    ``desc: started (total N)``, then ``desc: 30% (30/100), 1.2 s, loss=0.1234`` whenever another
    :data:`LINE_FRACTION` of ``total`` is done, and ``desc: done, 100/100 in 3.4 s`` at
    :meth:`close` (``ended at 37/100 after 1.2 s`` when the work ended early, e.g. a
    solver that converged within its budget, or an interruption). With ``total=None``: only
    the first and the last line.
    """

    def __init__(self, total: int | None, desc: str, file: IO[str] | None = None) -> None:
        self.total = total
        self.desc = desc
        self.n = 0
        self.file = file if file is not None else sys.stderr
        self.postfix = ""
        self._start = time.perf_counter()
        self._tenths = 0  # tenths of the total already announced
        self._closed = False
        self._line(f"started (total {total})" if total else "started")

    def _line(self, text: str) -> None:
        self.file.write(f"{self.desc}: {text}\n")
        self.file.flush()

    def _elapsed(self) -> str:
        return f"{time.perf_counter() - self._start:.1f} s"

    def update(self, n: int | float = 1) -> None:
        """Count ``n`` more steps done."""
        self.n += n
        if not self.total or self._closed:
            return
        tenths = min(int(self.n / self.total / LINE_FRACTION), int(round(1 / LINE_FRACTION)))
        if tenths > self._tenths:
            self._tenths = tenths
            percent = round(100 * tenths * LINE_FRACTION)
            extra = f", {self.postfix}" if self.postfix else ""
            self._line(f"{percent}% ({self.n:g}/{self.total}), {self._elapsed()}{extra}")

    def set_postfix(
        self, ordered_dict: Mapping[str, Any] | None = None, refresh: bool = True, **kwargs: Any
    ) -> None:
        """Shown on the next line printed (never a line of its own)."""
        items = {**(ordered_dict or {}), **kwargs}
        self.postfix = ", ".join(f"{key}={value}" for key, value in items.items())

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        """Ignored: plain lines carry no postfix."""
        self.postfix = s

    def set_description(self, desc: str | None = None, refresh: bool = True) -> None:
        """Change the description of the next lines."""
        self.desc = desc or ""

    def refresh(self) -> None:
        """Nothing to redraw: lines are printed only as the work advances."""

    def write(self, s: str) -> None:
        """Print a line on stderr."""
        self.file.write(s.rstrip("\n") + "\n")
        self.file.flush()

    def close(self) -> None:
        """Print the last line."""
        if self._closed:
            return
        self._closed = True
        extra = f", {self.postfix}" if self.postfix else ""
        if self.total and self.n < self.total:
            self._line(f"ended at {self.n:g}/{self.total} after {self._elapsed()}{extra}")
        else:
            count = f"{self.n:g}/{self.total}" if self.total else f"{self.n:g}"
            self._line(f"done, {count} in {self._elapsed()}{extra}")

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
