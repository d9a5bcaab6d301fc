"""Top-1000 eigenvalues when the Krylov basis does not fit: the eigenvalues-only mode (#15).

The operator is diagonal with a known spectrum: ``lambda_k = 10 / k`` for ``k <= 1000`` over
a dense bulk of ``n - 1000`` values uniform in ``[-1e-3, 9e-3]`` (float64). The block solver
would keep a basis of about ``2 (k + k/10)`` vectors and their products (70 GB at
``n = 2e6``); here the memory budget is a small fraction of that. Reported: products (and per
eigenvalue), wall time, the phases (products and locked vectors of phase 1, steps of phase
2), the memory plan and the measured peak RSS of the solve, how many of the top 1000 are
right (to 1e-8 relative), how many are flagged converged, and whether every converged value
is within its bound of a true eigenvalue. Run:

    .venv/bin/python benchmarks/bench_eigenvalues_only.py --n 2000000 --budget-mib 2048

``--sweep ROWS...`` also runs the solve for budgets of ROWS locked vectors (products per
eigenvalue against memory), ``--json`` writes the results.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hessian_powerlaw.io import atomic_write_json
from hessian_powerlaw.solvers.eigenvalues_only import _solve, memory_plan


class Diagonal:
    """``diag(values)`` as an operator (n, dtype, device, matmat)."""

    def __init__(self, values: np.ndarray) -> None:
        self.d = torch.as_tensor(values, dtype=torch.float64)
        self.n, self.dtype, self.device = int(self.d.numel()), torch.float64, torch.device("cpu")

    def matmat(self, V: torch.Tensor) -> torch.Tensor:
        return self.d[:, None] * V


SPECTRA = ("power-law", "clusters", "multiple")


def spectrum(n: int, k: int, kind: str = "power-law", seed: int = 0) -> np.ndarray:
    """The top ``k`` (by ``kind``) over ``n - k`` bulk values uniform in [-1e-3, 9e-3].

    power-law: ``10 / j``; clusters: ``k / 5`` clusters of five values ``1e-6`` apart
    (relative) at ``10 / c``; multiple: the power law with exact copies, a double at ranks
    10-11 and a triple at ranks 500-502 (scaled to ``k``).
    """
    rng = np.random.default_rng(seed)
    head = 10.0 / np.arange(1, k + 1)
    if kind == "clusters":
        centers = 10.0 / np.arange(1, k // 5 + 1)
        head = (centers[:, None] * (1 - 1e-6 * np.arange(5))[None, :]).ravel()
        head = np.concatenate([head, 10.0 / np.arange(k // 5 + 1, k // 5 + 1 + k - head.size)])
    elif kind == "multiple":
        head[10] = head[9]
        third = k // 2
        head[third + 1 : third + 3] = head[third]
    return np.concatenate([np.sort(head)[::-1], rng.uniform(-1e-3, 9e-3, n - k)])


def _rss(field: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field):
                return int(line.split()[1]) * 1024
    return 0


def run_once(values: np.ndarray, k: int, budget: int | None, tol: float, max_matvecs: int) -> dict:
    """One solve, measured: the peak RSS is reset before it (Linux ``clear_refs``)."""
    op = Diagonal(values)
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        pass
    base = _rss("VmRSS:")
    started = time.perf_counter()
    spec, stats = _solve(
        op, k, tol=tol, which="largest", max_matvecs=max_matvecs, memory_budget=budget,
        seed=0, progress=True, criterion="relative", vectors=0,
    )  # fmt: skip
    seconds = time.perf_counter() - started
    peak = _rss("VmHWM:") - base
    truth = np.sort(values)[::-1][:k]
    sorted_values = np.sort(values)
    index = np.clip(np.searchsorted(sorted_values, spec.eigenvalues), 1, values.size - 1)
    nearest = np.minimum(
        np.abs(sorted_values[index] - spec.eigenvalues),
        np.abs(sorted_values[index - 1] - spec.eigenvalues),
    )
    bounds = spec.residuals * spec.scale
    right = np.abs(spec.eigenvalues - truth) <= 1e-8 * np.abs(truth)
    plan = stats.pop("plan")
    return {
        "n": int(values.size),
        "top_k_distinct_found": int(np.unique(truth).size - _missing(spec.eigenvalues, truth)),
        "k": k,
        "budget_bytes": budget,
        "plan_peak_bytes": plan.peak_bytes,
        "buffer_rows": plan.rows,
        "measured_peak_rss_bytes": int(peak),
        "peak_over_budget": (peak / budget) if budget else None,
        "matvecs": spec.num_matvecs,
        "matvecs_per_eigenvalue": spec.num_matvecs / k,
        "seconds": seconds,
        "right_to_1e-8": int(right.sum()),
        "flagged_converged": spec.num_converged,
        "converged_within_bound": int((nearest <= bounds)[spec.converged].sum()),
        "converged_outside_bound": int((nearest > bounds)[spec.converged].sum()),
        "max_relative_bound_converged": float(spec.relative_residuals[spec.converged].max())
        if spec.num_converged
        else None,
        **{key: value for key, value in stats.items() if not isinstance(value, np.ndarray)},
    }


def _missing(found: np.ndarray, truth: np.ndarray) -> int:
    """Distinct true values of the top k with no returned value within 1e-8 relative."""
    distinct = np.unique(truth)
    near = np.abs(found[None, :] - distinct[:, None]) <= 1e-8 * np.abs(distinct[:, None])
    return int((~near.any(axis=1)).sum())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=float, default=2e6)
    parser.add_argument("--k", type=int, default=1000)
    parser.add_argument("--spectrum", choices=SPECTRA, default="power-law")
    parser.add_argument("--budget-mib", type=float, default=2048.0)
    parser.add_argument("--tol", type=float, default=1e-6, help="relative tolerance on bounds")
    parser.add_argument("--max-matvecs", type=int, default=40_000)
    parser.add_argument("--sweep", type=int, nargs="*", default=[], metavar="ROWS")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    n, k = int(args.n), args.k
    values = spectrum(n, k, args.spectrum)
    block_basis = 2 * (k + max(4, math.ceil(0.1 * k)))  # top_eigenpairs' default basis
    print(
        f"{args.spectrum}, n={n:,} k={k}: the block solver's basis and products would take "
        f"{2 * block_basis * n * 8 / 2**30:.1f} GiB; budget {args.budget_mib:.0f} MiB",
        flush=True,
    )
    results: dict[str, Any] = {"main": None, "sweep": []}
    budget = int(args.budget_mib * 2**20)
    main_result = run_once(values, k, budget, args.tol, args.max_matvecs)
    results["main"] = main_result
    print(json.dumps(main_result, indent=1, default=str), flush=True)
    for rows in args.sweep:
        plan = memory_plan(n, k, torch.float64, memory_budget=1 << 50, max_matvecs=args.max_matvecs)
        sweep_budget = None if rows == 0 else plan.work_bytes + plan.fixed_bytes + rows * n * 8
        result = run_once(values, k, sweep_budget, args.tol, args.max_matvecs)
        results["sweep"].append(result)
        print(
            f"rows={rows}: {result['matvecs']} products ({result['matvecs_per_eigenvalue']:.1f} "
            f"per eigenvalue), locked {result['locked']}, right {result['right_to_1e-8']}, "
            f"converged {result['flagged_converged']}, outside bound "
            f"{result['converged_outside_bound']}, {result['seconds']:.0f} s",
            flush=True,
        )
    if args.json is not None:
        atomic_write_json(args.json, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
