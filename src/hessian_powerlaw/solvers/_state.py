"""Saved solver state: a long eigensolve survives Ctrl-C or a lost machine.

A state file holds everything the block Lanczos iteration needs to continue exactly where it
was (the used rows of the basis and its products, the projected matrix, the pending block,
locked pairs, counters and the random generator), plus a *fingerprint* of the problem, so
that a state is never continued for another problem.

File layout (one file, written to a temporary name and renamed, so a crash mid-write leaves
the previous state intact): 8 bytes little-endian length ``L``, then ``L`` bytes of
``torch.save`` of the small part (loaded ``weights_only``: a state file never runs code),
then the raw bytes of the used rows of ``Qt`` and of ``HQt``. The rows are written straight
from the solver's buffers, in chunks: ``torch.save`` of a slice would serialise the whole
preallocated buffer, and a copy would double the memory the basis takes.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import struct
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import torch
from torch import Tensor

from hessian_powerlaw.errors import UserInputError

__all__ = ["DEFAULT_INTERVAL", "SolverCheckpoint", "as_checkpoint", "describe_mismatch"]

#: Seconds between saves by default: a few minutes of products at most are lost, while the
#: time to write the basis stays a small share of the solve.
DEFAULT_INTERVAL = 180.0

_FORMAT = "hessian-powerlaw.block-lanczos-state.v1"
_CHUNK_BYTES = 64 * 2**20  # rows written / read at once from a device buffer


@dataclass(frozen=True)
class SolverCheckpoint:
    """Where and how often :func:`~hessian_powerlaw.solvers.top_eigenpairs` saves its state.

    Attributes:
        path: the state file. Loaded on start when present (and the problem matches),
            removed once the solve returns.
        interval: seconds between saves (0: after every block step).
        identity: what the caller knows defines the operator (model, data, ...), JSON-like
            values; part of the fingerprint, since the solver alone cannot tell two
            operators of the same size apart.
    """

    path: Path
    interval: float = DEFAULT_INTERVAL
    identity: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))
        if not (isinstance(self.interval, (int, float)) and math.isfinite(self.interval)):
            raise UserInputError(f"checkpoint interval must be a number, got {self.interval!r}")
        if self.interval < 0:
            raise UserInputError(f"checkpoint interval must be >= 0, got {self.interval!r}")
        for key, value in dict(self.identity).items():
            if not (isinstance(key, str) and _plain(value)):
                raise UserInputError(
                    f"checkpoint identity {key!r}: use str keys and str/int/float/bool/None "
                    f"values (or lists of them), got {type(value).__name__}"
                )


def _plain(value: Any) -> bool:
    """Whether ``value`` survives a ``weights_only`` load and compares by value."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return True
    return isinstance(value, (list, tuple)) and all(_plain(v) for v in value)


def as_checkpoint(value: Any) -> SolverCheckpoint | None:
    """``None``, a :class:`SolverCheckpoint`, or a path (default interval, no identity)."""
    if value is None or isinstance(value, SolverCheckpoint):
        return value
    if isinstance(value, (str, os.PathLike)):
        return SolverCheckpoint(Path(value))
    raise UserInputError(
        f"checkpoint must be a path or a SolverCheckpoint, got {type(value).__name__}"
    )


def describe_mismatch(saved: Mapping[str, Any], current: Mapping[str, Any]) -> str | None:
    """``"k=300, this one asks k=1000"``-style text for the first differing fields, or None."""
    parts = []
    for key in sorted(set(saved) | set(current)):
        a = repr(saved[key]) if key in saved else "(unset)"
        b = repr(current[key]) if key in current else "(unset)"
        if a != b:
            parts.append(f"{key}={a} in the saved solve, {key}={b} in this one")
    return "; ".join(parts) if parts else None


def write_state(path: Path, small: dict[str, Any], rows: list[Tensor]) -> None:
    """Write a state file atomically.

    Atomically write ``small`` (torch.save) and the raw bytes of each contiguous 2-D
    tensor in ``rows``.
    """
    buffer = io.BytesIO()
    torch.save({"format": _FORMAT, **small}, buffer)
    header = buffer.getvalue()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(struct.pack("<Q", len(header)))
            fh.write(header)
            for tensor in rows:
                _write_rows(fh, tensor)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def remove_stale_temporaries(path: Path) -> None:
    """Remove the temporary files of saves killed mid-write.

    Remove temporary files that a save killed mid-write left next to ``path`` (a lost
    machine gets no chance to clean up; each holds a whole basis).
    """
    if not path.parent.is_dir():
        return
    for leftover in path.parent.glob(f".{path.name}.*.tmp"):
        with contextlib.suppress(OSError):
            leftover.unlink()


def read_header(fh: BinaryIO, path: Path) -> dict[str, Any]:
    """The small part of a state file; UserInputError naming the file if it is not one."""
    try:
        (length,) = struct.unpack("<Q", fh.read(8))
        small = torch.load(io.BytesIO(fh.read(length)), weights_only=True)
    except Exception as exc:
        raise UserInputError(
            f"solver state {str(path)!r} is damaged or not a solver state "
            f"({type(exc).__name__}); delete it to start the solve afresh"
        ) from None
    if not isinstance(small, dict) or small.get("format") != _FORMAT:
        raise UserInputError(
            f"{str(path)!r} is not a solver state of this version; delete it to start afresh"
        )
    return small


def read_rows(fh: BinaryIO, target: Tensor, path: Path) -> None:
    """Fill the contiguous 2-D ``target`` (any device) from the file, chunk by chunk."""
    if target.numel() == 0:
        return
    row_bytes = target.shape[1] * target.element_size()
    step = max(1, _CHUNK_BYTES // row_bytes)
    for r0 in range(0, target.shape[0], step):
        chunk = target[r0 : r0 + step]
        host = torch.empty(chunk.shape, dtype=chunk.dtype)
        view = host.view(torch.uint8).numpy()
        if fh.readinto(memoryview(view).cast("B")) != view.nbytes:
            raise UserInputError(
                f"solver state {str(path)!r} is truncated; delete it to start the solve afresh"
            )
        chunk.copy_(host)


def _write_rows(fh: BinaryIO, tensor: Tensor) -> None:
    if tensor.numel() == 0:
        return
    row_bytes = tensor.shape[1] * tensor.element_size()
    step = max(1, _CHUNK_BYTES // row_bytes)
    for r0 in range(0, tensor.shape[0], step):
        host = tensor[r0 : r0 + step].cpu()  # a view on the CPU: no copy
        fh.write(memoryview(host.contiguous().view(torch.uint8).numpy()).cast("B"))
