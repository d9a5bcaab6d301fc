"""Top-k Hessian eigenvalues: block Lanczos vs. ARPACK vs. PyHessian-style power iteration.

All three run side by side in one process on the same ``HessianOperator``: a LeNet-style CNN
(about 6,000 parameters) trained briefly on all 1,797 scikit-learn digits, the whole data set
as one batch, float64. For each method we report operator columns (matvecs), wall seconds, the
largest relative residual ``||H v - lambda v|| / |lambda_1|`` (measured afterwards with extra
products that are not counted) and the largest eigenvalue difference from ARPACK.

- block Lanczos: ``top_eigenpairs(op, k, tol)``;
- ARPACK: ``scipy.sparse.linalg.eigsh(op.to_scipy(), k, which="LA")``, one HVP per call. Its
  ``tol`` means ``||r|| <= tol * |theta_i|`` per pair, stricter than ours for small
  eigenvalues, so it runs at ``tol * lambda_1 / lambda_k`` (the same stopping rule as ours) and,
  for reference, at ``tol`` itself;
- power iteration with deflation, as PyHessian's ``eigenvalues()`` (relative change < 1e-3,
  at most 100 iterations per eigenvalue).

Then the amortized cost of one column of ``matmat`` with b = 16 as a ratio to one gradient,
timed interleaved (median of repeats). Run:

    .venv/bin/python benchmarks/bench_topk.py --k 100 --threads 2 --json bench_topk.json

(``--num-samples``, ``--power-k`` and ``--block-sizes`` make quicker variants.)
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.sparse.linalg import eigsh
from threadpoolctl import threadpool_limits
from torch import nn

from hessian_powerlaw.io import atomic_write_json
from hessian_powerlaw.operators import HessianOperator
from hessian_powerlaw.solvers import top_eigenpairs


class LeNetDigits(nn.Module):
    """LeNet-style CNN for 8x8 digits: 5,750 parameters."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, 3, padding=1)  # 8x8x6 -> pool -> 4x4x6
        self.conv2 = nn.Conv2d(6, 16, 3, padding=1)  # 4x4x16 -> pool -> 2x2x16
        self.fc1 = nn.Linear(64, 64)
        self.fc2 = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.max_pool2d(torch.relu(self.conv1(x)), 2)
        x = nn.functional.max_pool2d(torch.relu(self.conv2(x)), 2)
        return self.fc2(torch.relu(self.fc1(x.flatten(1))))


def trained_lenet(
    steps: int, num_samples: int = 1797, seed: int = 0
) -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    """The CNN after ``steps`` full-batch Adam steps on the first ``num_samples`` digits."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    X = torch.tensor(digits.images[:num_samples] / 16.0, dtype=torch.float64)[:, None]
    y = torch.tensor(digits.target[:num_samples])
    torch.manual_seed(seed)
    model = LeNetDigits().double()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    criterion = nn.CrossEntropyLoss()
    for _ in range(steps):
        optimizer.zero_grad()
        criterion(model(X), y).backward()
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return model, (X, y)


def residuals(op: HessianOperator, values: np.ndarray, vectors: np.ndarray, scale: float):
    """``||H v - lambda v|| / scale`` per pair, with products not charged to any method."""
    V = torch.as_tensor(vectors, dtype=op.dtype)
    before = op.num_matvecs
    HV = torch.cat([op.matmat(V[:, i : i + 32]) for i in range(0, V.shape[1], 32)], dim=1)
    op.num_matvecs = before
    R = HV - V * torch.as_tensor(values, dtype=op.dtype)
    return torch.linalg.vector_norm(R, dim=0).numpy() / scale


def run_lanczos(op: HessianOperator, k: int, tol: float, block: int) -> dict[str, Any]:
    op.num_matvecs = 0
    start = time.perf_counter()
    spec = top_eigenpairs(op, k=k, tol=tol, block_size=block, return_vectors=True)
    seconds = time.perf_counter() - start
    return {
        "values": spec.eigenvalues,
        "vectors": spec.eigenvectors,
        "matvecs": spec.num_matvecs,
        "seconds": seconds,
        "converged": spec.num_converged,
    }


def run_arpack(op: HessianOperator, k: int, tol: float) -> dict[str, Any]:
    op.num_matvecs = 0
    lin = op.to_scipy()
    start = time.perf_counter()
    values, vectors = eigsh(lin, k=k, which="LA", tol=tol, v0=np.ones(op.n) / np.sqrt(op.n))
    seconds = time.perf_counter() - start
    order = np.argsort(-values)
    return {
        "values": values[order],
        "vectors": vectors[:, order],
        "matvecs": op.num_matvecs,
        "seconds": seconds,
        "converged": k,
    }


def run_power(op: HessianOperator, k: int, tol: float, max_iter: int = 100) -> dict[str, Any]:
    """PyHessian's ``eigenvalues()``: power iteration, deflated by Gram-Schmidt."""
    op.num_matvecs = 0
    gen = torch.Generator().manual_seed(0)
    found: list[torch.Tensor] = []
    values: list[float] = []
    start = time.perf_counter()
    for _ in range(k):
        v = torch.randn(op.n, generator=gen, dtype=op.dtype)
        v /= v.norm()
        eigenvalue: float | None = None
        for _ in range(max_iter):
            for u in found:  # PyHessian's orthnormal(v, eigenvectors)
                v = v - (v @ u) * u
            v /= v.norm()
            Hv = op.matvec(v)
            tmp = float(Hv @ v)
            v = Hv / Hv.norm()
            if eigenvalue is not None and abs(eigenvalue - tmp) / (abs(eigenvalue) + 1e-6) < tol:
                break
            eigenvalue = tmp
        values.append(float(eigenvalue))
        found.append(v)
    seconds = time.perf_counter() - start
    order = np.argsort(-np.array(values))
    return {
        "values": np.array(values)[order],
        "vectors": torch.stack(found, dim=1).numpy()[:, order],
        "matvecs": op.num_matvecs,
        "seconds": seconds,
        "converged": k,
    }


def matmat_cost_ratio(
    model: nn.Module, batch: tuple[torch.Tensor, ...], b: int, repeats: int
) -> dict[str, Any]:
    """Median seconds of one gradient and of one b-column matmat, interleaved.

    Two operators on the same whole batch: the default (``micro_batch_size="auto"``, which may
    apply the batch in slices) and ``micro_batch_size=None`` (the batch in one vmapped pass).
    The gradient is the whole batch's, the fastest way to take it.
    """
    auto = HessianOperator(model, nn.CrossEntropyLoss(), batch)
    whole = HessianOperator(model, nn.CrossEntropyLoss(), batch, micro_batch_size=None)
    V = torch.randn(auto.n, b, generator=torch.Generator().manual_seed(1), dtype=auto.dtype)
    whole.gradient(), auto.matmat(V), whole.matmat(V)  # warm-up
    grad_t, auto_t, whole_t = [], [], []
    for _ in range(repeats):
        for op, times in ((None, grad_t), (auto, auto_t), (whole, whole_t)):
            t = time.perf_counter()
            whole.gradient() if op is None else op.matmat(V)
            times.append(time.perf_counter() - t)
    g = statistics.median(grad_t)
    m, mw = statistics.median(auto_t), statistics.median(whole_t)
    return {
        "gradient_s": g,
        "matmat_s": m,
        "matmat_whole_batch_s": mw,
        "b": b,
        "micro_batches": auto.last_pass_samples,
        "ratio_per_column": m / b / g,
        "ratio_per_column_whole_batch": mw / b / g,
    }


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--tol", type=float, default=1e-6)
    parser.add_argument(
        "--block-sizes", default="2,16", help="block Lanczos block sizes, comma-separated"
    )
    parser.add_argument("--train-steps", type=int, default=300)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--num-samples", type=int, default=1797, help="digits in the batch")
    parser.add_argument("--power-k", type=int, help="eigenvalues for power iteration (default k)")
    parser.add_argument("--skip-power", action="store_true", help="skip the power iteration")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    # scipy's BLAS gets the same threads as torch; an oversubscribed BLAS distorts ARPACK's time
    threadpool_limits(args.threads)

    model, batch = trained_lenet(args.train_steps, args.num_samples)
    op = HessianOperator(model, nn.CrossEntropyLoss(), batch)
    print(
        f"LeNet-style CNN on digits: n = {op.n} parameters, {op.num_samples} samples, "
        f"loss {op.loss_value():.4f}, torch threads {args.threads}",
        file=sys.stderr,
    )
    cost = matmat_cost_ratio(model, batch, b=16, repeats=args.repeats)
    log(f"matmat b=16 costs {cost['ratio_per_column']:.2f} gradients per column")

    def timed(name: str, result: dict[str, Any]) -> None:
        runs[name] = result
        log(f"{name}: {result['matvecs']} matvecs, {result['seconds']:.1f} s")

    runs: dict[str, dict[str, Any]] = {}
    for block in [int(b) for b in args.block_sizes.split(",")]:
        ours = run_lanczos(op, args.k, args.tol, block)
        timed(f"block Lanczos (b={block}, tol {args.tol:g})", ours)
    lam1, lamk = float(ours["values"][0]), float(ours["values"][-1])
    equiv = args.tol * lam1 / abs(lamk)
    timed(f"ARPACK eigsh LA (tol {args.tol:g})", run_arpack(op, args.k, args.tol))
    # ARPACK's rule ||r|| <= tol |theta_i| is stricter than ours for small eigenvalues; this
    # tolerance is looser than ours for the large ones: the two runs bracket a fair comparison
    timed(f"ARPACK eigsh LA (tol {equiv:.2g}, looser)", run_arpack(op, args.k, equiv))
    if not args.skip_power:
        pk = args.power_k or args.k
        timed(f"power iteration, PyHessian-style (rel. 1e-3), top {pk}", run_power(op, pk, 1e-3))

    reference = runs[f"ARPACK eigsh LA (tol {args.tol:g})"]["values"]
    rows = []
    for name, r in runs.items():
        res = residuals(op, r["values"], r["vectors"], lam1)
        rows.append(
            {
                "method": name,
                "matvecs": int(r["matvecs"]),
                "seconds": r["seconds"],
                "max_residual": float(res.max()),
                "max_eig_diff_vs_arpack": float(
                    np.abs(r["values"] - reference[: len(r["values"])]).max() / lam1
                ),
            }
        )
    base = next(row for row in rows if row["method"] == f"ARPACK eigsh LA (tol {args.tol:g})")
    print(
        "\n| method | matvecs | wall s | matvecs / ARPACK | time / ARPACK | "
        "max residual | max abs eig diff vs ARPACK / lambda_1 |"
    )
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['method']} | {row['matvecs']} | {row['seconds']:.2f} | "
            f"{row['matvecs'] / base['matvecs']:.2f} | {row['seconds'] / base['seconds']:.2f} | "
            f"{row['max_residual']:.1e} | {row['max_eig_diff_vs_arpack']:.1e} |"
        )
    print(
        f"\nmatmat b={cost['b']}: {cost['matmat_s'] * 1e3:.1f} ms in micro-batches of "
        f"{cost['micro_batches']} samples, gradient {cost['gradient_s'] * 1e3:.1f} ms: one "
        f"column costs {cost['ratio_per_column']:.2f} gradients "
        f"({cost['ratio_per_column_whole_batch']:.2f} with the batch whole, "
        f"{cost['matmat_whole_batch_s'] * 1e3:.1f} ms)"
    )
    print(f"lambda_1 = {lam1:.6g}, lambda_{args.k} = {lamk:.6g}")
    if args.json:
        summary = {
            "n": op.n,
            "k": args.k,
            "tol": args.tol,
            "threads": args.threads,
            "rows": rows,
            "matmat_cost": cost,
            "lambda_1": lam1,
            "lambda_k": lamk,
        }
        atomic_write_json(args.json, summary)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
