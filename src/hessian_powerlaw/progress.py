"""Progress bars on stderr for long work; silenced with ``enabled=False`` (CLI ``--quiet``)."""

from __future__ import annotations

import sys
from typing import Any

from tqdm.auto import tqdm


def progress_bar(total: int | None, desc: str, enabled: bool = True, **kwargs: Any) -> tqdm:
    """A tqdm bar on stderr. ``enabled=False`` returns a bar that prints nothing."""
    return tqdm(
        total=total,
        desc=desc,
        file=sys.stderr,
        disable=not enabled,
        dynamic_ncols=True,
        leave=False,
        **kwargs,
    )
