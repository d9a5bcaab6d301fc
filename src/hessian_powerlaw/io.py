"""Files in and out: atomic writes, safe checkpoint loading, staged output folders.

Every file the tool writes goes through these helpers so that a result never looks valid
when it is not: a file is written to a temporary name in the same folder and renamed over
the target only when complete.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import re
import shutil
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hessian_powerlaw._results import to_jsonable
from hessian_powerlaw.errors import UserInputError

if TYPE_CHECKING:
    import numpy as np


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


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


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
        # mkstemp creates 0600; give the file the mode an ordinary open() would (umask)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return target


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` (UTF-8) atomically; returns the path."""
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


# torch.save's legacy (non-zip) format starts with this pickled magic number
_LEGACY_TORCH_MAGIC = b"\x8a\nl\xfc\x9cF\xf9 j\xa8P\x19"
_UNSAFE_GLOBAL_RE = re.compile(r"GLOBAL ([\w.]+) was not an allowed global")


def load_checkpoint(path: str | os.PathLike[str]) -> Any:
    """Load a checkpoint with ``weights_only=True``: data never runs code.

    Raises UserInputError, one line naming the file, when it is missing, is not a file
    written by ``torch.save``, is damaged, or holds pickled objects rather than tensors
    (e.g. a whole model saved with ``torch.save(model)``).
    """
    import torch

    p = Path(path)
    if p.is_dir():
        raise UserInputError(f"checkpoint {str(p)!r} is a folder, not a checkpoint file")
    if not p.is_file():
        raise UserInputError(f"checkpoint {str(p)!r} does not exist")
    if p.stat().st_size == 0:
        raise UserInputError(f"checkpoint {str(p)!r} is an empty file")
    if not _looks_like_torch_file(p):
        raise UserInputError(f"checkpoint {str(p)!r} is not a PyTorch file saved with torch.save")
    try:
        return torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "global" not in str(exc).lower():  # e.g. a truncated legacy-format file
            raise UserInputError(
                f"checkpoint {str(p)!r} is a damaged or truncated PyTorch file "
                f"({_one_line(exc)}); save it again"
            ) from None
        found = _UNSAFE_GLOBAL_RE.search(str(exc))
        what = f" ({found.group(1)})" if found else ""
        raise UserInputError(
            f"checkpoint {str(p)!r} holds a pickled object{what}, not tensors (it was saved "
            "with torch.save(model)?); save model.state_dict() instead (hessian-powerlaw "
            "loads checkpoints weights-only and never runs pickled code)"
        ) from None
    except Exception as exc:  # truncated or corrupted archives
        raise UserInputError(
            f"checkpoint {str(p)!r} is a damaged or truncated PyTorch file "
            f"({_one_line(exc)}); save it again"
        ) from None


def _looks_like_torch_file(p: Path) -> bool:
    """Whether ``p`` starts like a ``torch.save`` file.

    Whether ``p`` starts like a torch.save file (a zip archive with data.pkl, or the
    legacy pickle format); damaged archives count, so that torch.load says what is wrong.
    """
    try:
        with p.open("rb") as fh:
            head = fh.read(32)
    except OSError as exc:
        raise UserInputError(f"cannot read checkpoint {str(p)!r}: {exc.strerror}") from None
    if head.startswith(b"\x80") and _LEGACY_TORCH_MAGIC in head[:16]:
        return True
    if not head.startswith(b"PK\x03\x04"):
        return False
    try:
        with zipfile.ZipFile(p) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError):
        return True
    return any(n == "data.pkl" or n.endswith("/data.pkl") for n in names)


def _one_line(exc: BaseException, limit: int = 160) -> str:
    """The first sentence of an exception's text, without ANSI codes, on one short line."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))
    text = " ".join(text.split())
    text = re.sub(r"^\[enforce fail at [^\]]*\]\s*\.?\s*", "", text)
    text = text.split(". ")[0].rstrip(".") or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _new_folders(path: Path) -> list[Path]:
    """``path`` and those of its parents that do not exist yet, deepest first."""
    missing = []
    for folder in (path, *path.parents):
        if folder.exists() or folder.is_symlink():
            break
        missing.append(folder)
    return missing


def remove_empty_folders(folders: list[Path]) -> None:
    """Remove ``folders`` (deepest first) while they are empty; stop at the first that is not."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            break


@contextlib.contextmanager
def staged_dir(
    final: str | os.PathLike[str], *, remove_new_on_failure: bool = False
) -> Iterator[Path]:
    """Write a set of outputs into a temporary folder; move them into ``final`` on success.

    On an exception (or Ctrl-C) the temporary folder is removed and ``final`` keeps what it
    had before: nothing half-written is left behind. Files already in ``final`` that the
    block did not produce are left untouched. With ``remove_new_on_failure`` a failure also
    removes ``final`` (and its parents) when this call created it and it is still empty, so
    that no new folder is left behind; a folder that existed before always stays.
    """
    created = _new_folders(Path(final))
    out = ensure_writable_dir(final)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=".staging-", dir=out))
    except BaseException:
        if remove_new_on_failure:
            remove_empty_folders(created)
        raise
    try:
        yield tmp
        for item in sorted(tmp.rglob("*")):
            if item.is_file():
                dest = out / item.relative_to(tmp)
                dest.parent.mkdir(parents=True, exist_ok=True)
                os.replace(item, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if remove_new_on_failure:
            remove_empty_folders(created)
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def check_target_dir(path: str | os.PathLike[str], what: str = "output folder") -> Path:
    """Check, creating nothing, that ``path`` is a writable folder or could be created.

    The nearest existing ancestor must be a writable folder; UserInputError if not.
    """
    p = Path(path)
    missing = _new_folders(p)
    probe = missing[-1].parent if missing else p
    if probe.exists() and not probe.is_dir():
        raise UserInputError(f"{what} {str(p)!r}: {str(probe)!r} is a file, not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise UserInputError(f"{what} {str(p)!r} is not writable; choose another --out")
    return p


def load_eigenvalues(path: str | os.PathLike[str]) -> np.ndarray:
    """Read a list of eigenvalues (a float64 numpy array, in file order) from ``path``.

    Formats, chosen by extension:

    - ``.npy``: a numeric array of one dimension (or a single row or column); loaded with
      ``allow_pickle=False``, so a file never runs code.
    - ``.txt``, ``.csv``, ``.tsv``, ``.dat``: one number per line. Blank lines and lines that
      start with ``#`` are skipped, and so is a header: the first remaining line when it is
      not a number (e.g. ``eigenvalue``). Any other line that is not one number is an error.
    - ``.json``: a list of numbers, ``{"eigenvalues": [...]}``, or the tool's
      ``spectrum.json``, ``{"spectrum": {"eigenvalues": [...]}}``. ``null`` entries (how the
      tool writes non-finite values) become NaN, which the fit then reports by position.

    Malformed files raise :class:`UserInputError` naming the file and what is wrong.
    """
    import numpy as np

    p = Path(path)
    if p.is_dir():
        inside = [p / name for name in ("spectrum.json", "eigenvalues.npy") if (p / name).is_file()]
        hint = f", e.g. {str(inside[0])!r}" if inside else ""
        raise UserInputError(
            f"eigenvalue file {str(p)!r} is a folder, not a file; pass a file of "
            f"eigenvalues (.npy, .txt, .csv, .json) inside it{hint}"
        )
    if not p.is_file():
        raise UserInputError(f"eigenvalue file {str(p)!r} does not exist")
    suffix = p.suffix.lower()
    readers = {".npy": _eigenvalues_from_npy, ".json": _eigenvalues_from_json}
    readers.update(dict.fromkeys((".txt", ".csv", ".tsv", ".dat"), _eigenvalues_from_text))
    reader = readers.get(suffix)
    if reader is None:
        raise UserInputError(
            f"eigenvalue file {str(p)!r}: unknown extension {suffix or '(none)'!r}; use .npy, "
            ".txt/.csv (one value per line) or .json"
        )
    values = np.asarray(reader(p), dtype=np.float64)
    if values.size == 0:
        raise UserInputError(f"eigenvalue file {str(p)!r} holds no values")
    return values


def _eigenvalues_from_npy(p: Path) -> np.ndarray:
    import numpy as np

    try:
        arr = np.load(p, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise UserInputError(
            f"eigenvalue file {str(p)!r} is not a readable .npy array: {exc}"
        ) from None
    if not isinstance(arr, np.ndarray) or arr.dtype.kind not in "iuf":
        kind = getattr(arr, "dtype", type(arr))
        raise UserInputError(f"eigenvalue file {str(p)!r} holds {kind} data, not real numbers")
    if arr.ndim == 2 and 1 in arr.shape:
        arr = arr.ravel()
    if arr.ndim != 1:
        raise UserInputError(
            f"eigenvalue file {str(p)!r} holds an array of shape {arr.shape}; expected a 1-D list"
        )
    return arr


def _eigenvalues_from_text(p: Path) -> list[float]:
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise UserInputError(f"eigenvalue file {str(p)!r} is not a UTF-8 text file") from None
    values: list[float] = []
    header_allowed = True
    for number, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        try:
            values.append(float(line))
        except ValueError:
            if header_allowed and not any(ch.isdigit() for ch in line):
                header_allowed = False  # a column name such as "eigenvalue"
                continue
            raise UserInputError(
                f"eigenvalue file {str(p)!r}, line {number}: expected one number per line, "
                f"got {line[:40]!r}"
            ) from None
        header_allowed = False
    return values


def _eigenvalues_from_json(p: Path) -> list[float]:
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserInputError(f"eigenvalue file {str(p)!r} is not valid JSON: {exc}") from None
    if isinstance(data, dict) and isinstance(data.get("spectrum"), dict):
        data = data["spectrum"]
    if isinstance(data, dict):
        if "eigenvalues" not in data:
            raise UserInputError(
                f"eigenvalue file {str(p)!r}: no 'eigenvalues' list at the top level or under "
                "'spectrum'"
            )
        data = data["eigenvalues"]
    if not isinstance(data, list):
        raise UserInputError(f"eigenvalue file {str(p)!r}: 'eigenvalues' must be a list of numbers")
    values: list[float] = []
    for i, item in enumerate(data):
        if item is None:
            values.append(float("nan"))
        elif isinstance(item, (int, float)) and not isinstance(item, bool):
            values.append(float(item))
        else:
            raise UserInputError(
                f"eigenvalue file {str(p)!r}: entry {i} of 'eigenvalues' is {item!r}, not a number"
            )
    return values
