"""Files in and out: atomic writes, safe checkpoint loading, staged output folders.

Every file the tool writes goes through these helpers so that a result never looks valid
when it is not: a file is written to a temporary name in the same folder and renamed over
the target only when complete.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from hessian_powerlaw._results import to_jsonable
from hessian_powerlaw.errors import UserInputError


def ensure_writable_dir(path: str | os.PathLike[str], what: str = "output folder") -> Path:
    """Create ``path`` if needed and check that we can write there (UserInputError if not)."""
    p = Path(path)
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserInputError(f"cannot create {what} {str(p)!r}: {exc.strerror}") from None
    if not p.is_dir() or not os.access(p, os.W_OK | os.X_OK):
        raise UserInputError(f"{what} {str(p)!r} is not a writable folder; choose another --out")
    return p


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` via a temporary file in the same folder and a rename."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return target


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> Path:
    """Strict JSON (no NaN tokens) of ``obj`` after :func:`to_jsonable`, written atomically."""
    text = json.dumps(to_jsonable(obj), indent=2, allow_nan=False) + "\n"
    return atomic_write_text(path, text)


def atomic_torch_save(path: str | os.PathLike[str], obj: Any) -> Path:
    """``torch.save`` through a temporary file and a rename."""
    import io as _io

    import torch

    buffer = _io.BytesIO()
    torch.save(obj, buffer)
    return atomic_write_bytes(path, buffer.getvalue())


def load_checkpoint(path: str | os.PathLike[str]) -> Any:
    """Load a checkpoint with ``weights_only=True``: data never runs code.

    Raises UserInputError naming the file when it is missing or not a safe checkpoint.
    """
    import torch

    p = Path(path)
    if not p.is_file():
        raise UserInputError(f"checkpoint {str(p)!r} does not exist")
    try:
        return torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle errors, truncated files, unsafe globals
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserInputError(
            f"cannot load checkpoint {str(p)!r} as weights-only data: {first}"
        ) from None


@contextlib.contextmanager
def staged_dir(final: str | os.PathLike[str]) -> Iterator[Path]:
    """Write a set of outputs into a temporary folder; move them into ``final`` on success.

    On an exception (or Ctrl-C) the temporary folder is removed and ``final`` keeps what it
    had before: nothing half-written is left behind. Files already in ``final`` that the
    block did not produce are left untouched.
    """
    out = ensure_writable_dir(final)
    tmp = Path(tempfile.mkdtemp(prefix=".staging-", dir=out))
    try:
        yield tmp
        for item in sorted(tmp.rglob("*")):
            if item.is_file():
                dest = out / item.relative_to(tmp)
                dest.parent.mkdir(parents=True, exist_ok=True)
                os.replace(item, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
