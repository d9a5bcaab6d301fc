"""Memory budgets of the eigensolvers: what each method stores, and which one fits.

``top_eigenpairs`` keeps a basis of ``m`` vectors of length ``n`` and, by default, their
products: ``2 m n`` numbers of the operator's dtype, ``m`` about ``2.2 k``. That is 1.1 GB in
float32 for K = 1000 on LeNet (n = 61,706), but 35 GB at n = 2 million. A memory budget
chooses, before any product is taken, the first method that fits:

1. ``"block-lanczos"``: basis and products (the products certify residuals for free);
2. ``"block-lanczos-lean"``: the basis only; the final Ritz pairs are certified by applying
   the operator to them once more (``k`` extra products), restarts use the Lanczos
   residual estimates;
3. the same with a smaller basis (more restarts, more products), down to ``k + extra + p``;
4. ``"lanczos-eigenvalues-only"`` (:mod:`hessian_powerlaw.solvers.eigenvalues_only`) when
   no eigenvectors, no checkpoint and one end of the spectrum are asked for: no stored basis;
   the budget holds the top eigenvectors it locks, the rest are found by a deflated
   three-term recurrence with finite-precision bounds (``basis_size`` 0 in the plan).

A request that no method can serve is refused in one line before any work.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass

import torch

from hessian_powerlaw.errors import UserInputError

#: Share of the free memory of the operator's device a solve may use by default.
DEFAULT_FREE_SHARE = 0.5

_UNITS = {"": 1, "b": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}


def parse_bytes(value: int | float | str) -> int:
    """Bytes from an integer or a size like ``"4GiB"``, ``"512M"``, ``"1.5 GB"`` (binary units).

    Raises:
        UserInputError: the value is not a positive size.
    """
    if isinstance(value, bool):
        raise UserInputError(f"memory_budget must be a size such as '4GiB', got {value!r}")
    if isinstance(value, (int, float)):
        size = float(value)
    else:
        match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([kmgtKMGT]?)(?:i?[bB])?\s*", str(value))
        if match is None:
            raise UserInputError(
                f"memory_budget must be a size such as '4GiB' or '512MiB', got {value!r}"
            )
        size = float(match.group(1)) * _UNITS[match.group(2).lower()]
    if not (math.isfinite(size) and size >= 1):
        raise UserInputError(f"memory_budget must be a positive size, got {value!r}")
    return int(size)


def free_bytes(device: torch.device) -> int:
    """Free memory of ``device`` in bytes.

    CUDA's free memory plus what torch caches unused; on the host ``MemAvailable`` (Linux),
    else the physical memory.
    """
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device))
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def default_budget(device: torch.device) -> int:
    """The budget when none is given: :data:`DEFAULT_FREE_SHARE` of the free memory."""
    return int(DEFAULT_FREE_SHARE * free_bytes(device))


# rows of the basis one streamed pass handles at a time (restarts, certification)
ROW_CHUNK = 8192


def block_lanczos_bytes(
    n: int, capacity: int, k_want: int, p: int, itemsize: int, lean: bool
) -> int:
    """Peak bytes the block Lanczos solver allocates (not counting the operator's own).

    The basis (``capacity x n``), its products unless ``lean``, the float64 projected
    matrix and its eigenvectors (``2 capacity^2``), and the streamed passes over row chunks
    (rotations of up to ``capacity`` Ritz vectors, in the dtype and in float64), plus a few
    blocks of ``p`` vectors.
    """
    stored = (1 if lean else 2) * capacity * n * itemsize
    projected = 3 * capacity * capacity * 8
    chunk = min(ROW_CHUNK, n)
    streamed = chunk * capacity * (2 * itemsize + 2 * 8)
    blocks = 8 * p * n * 8
    return int(stored + projected + streamed + blocks + k_want * 64)


@dataclass(frozen=True)
class Plan:
    """The method a solve will use and the memory it will take (bytes)."""

    method: str
    basis_size: int
    bytes: int
    budget: int

    def describe(self) -> str:
        """One line for users: the method, its memory and the budget."""
        basis = f" (basis {self.basis_size})" if self.basis_size else ""
        return (
            f"{self.method}{basis}, about {format_bytes(self.bytes)} "
            f"of a {format_bytes(self.budget)} budget"
        )


def format_bytes(size: float) -> str:
    """``size`` bytes as a short binary-unit string (``"1.2 GiB"``)."""
    for unit, scale in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if size >= scale:
            return f"{size / scale:.3g} {unit}"
    return f"{int(size)} B"
