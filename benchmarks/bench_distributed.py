"""Hessian-vector product throughput with 1 and 2 processes on the same data.

    python benchmarks/bench_distributed.py                  # the table in docs/distributed.md
    python benchmarks/bench_distributed.py --hidden 256 --samples 1797 --block 16

The driver runs three configurations of the same HessianOperator (a tanh MLP on all 1,797
scikit-learn digits, float64, one batch) one after the other, each in fresh processes:

    1 process x 1 thread, 1 process x 2 threads, 2 processes x 1 thread (torchrun, gloo)

and prints products per second (columns of ``matmat`` per second of wall time, the slowest
rank's time under torchrun) and the ratios to the first two. Each worker applies one block
as a warm-up, then ``--repeats`` blocks of ``--block`` columns. The three configurations
run ``--rounds`` times, interleaved, and the fastest repeat of each is kept, so that a
machine shared with other work disturbs them alike; the load average is printed with them.

``--worker`` is the internal entry of one configuration (rank 0 prints one JSON line).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from typing import Any

CONFIGS = (
    ("1 process x 1 thread", 1, 1),
    ("1 process x 2 threads", 1, 2),
    ("2 processes x 1 thread (torchrun)", 2, 1),
)


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hidden", type=int, default=128, help="width of the 2 hidden layers")
    parser.add_argument("--samples", type=int, default=1797, help="digits in the Hessian")
    parser.add_argument("--block", type=int, default=8, help="columns per matmat")
    parser.add_argument("--repeats", type=int, default=5, help="timed matmat calls")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved runs of each config")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def _operator(args: argparse.Namespace) -> Any:
    import torch
    from sklearn.datasets import load_digits

    from hessian_powerlaw import HessianOperator

    digits = load_digits()
    X = torch.as_tensor(digits.data[: args.samples] / 16.0, dtype=torch.float64)
    y = torch.as_tensor(digits.target[: args.samples])
    torch.manual_seed(0)
    h = args.hidden
    model = torch.nn.Sequential(
        torch.nn.Linear(64, h), torch.nn.Tanh(), torch.nn.Linear(h, h), torch.nn.Tanh(),
        torch.nn.Linear(h, 10),
    ).to(torch.float64)  # fmt: skip
    return HessianOperator(model, torch.nn.CrossEntropyLoss(), [(X, y)], dtype=torch.float64)


def worker(args: argparse.Namespace) -> None:
    """Time ``--repeats`` products in this process (one rank under torchrun)."""
    import torch

    from hessian_powerlaw import distributed

    distributed.init_from_env(timeout=300)
    op = _operator(args)
    gen = torch.Generator().manual_seed(0)
    V = torch.randn(op.n, args.block, generator=gen, dtype=torch.float64)
    op.matmat(V)  # warm-up: vmap tracing, allocator
    best = float("inf")
    for _ in range(args.repeats):
        distributed.all_reduce_sum(torch.zeros(1))  # start together
        start = time.perf_counter()
        op.matmat(V)
        best = min(best, _slowest(time.perf_counter() - start))
    if distributed.is_primary():
        print(
            json.dumps({"n": op.n, "samples": op.num_samples, "block": args.block, "seconds": best})
        )
    distributed.shutdown(synchronize=True)


def _slowest(seconds: float) -> float:
    """The largest of every rank's ``seconds``: a product is done when the last rank is."""
    import torch

    from hessian_powerlaw import distributed

    if distributed.world_size() == 1:
        return seconds
    times = [torch.zeros(1, dtype=torch.float64) for _ in range(distributed.world_size())]
    torch.distributed.all_gather(times, torch.tensor([seconds], dtype=torch.float64))
    return max(float(t) for t in times)


def _run_config(args: argparse.Namespace, procs: int, threads: int) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    options = [
        "--worker",
        f"--hidden={args.hidden}",
        f"--samples={args.samples}",
        f"--block={args.block}",
        f"--repeats={args.repeats}",
    ]
    launcher = [sys.executable]
    if procs > 1:
        launcher += ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={procs}"]
    proc = subprocess.run(
        [*launcher, os.path.abspath(__file__), *options],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise SystemExit(f"configuration with {procs} processes failed:\n{proc.stderr[-3000:]}")
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")][-1]
    return json.loads(line)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    if args.worker:
        worker(args)
        return 0
    best: dict[str, dict[str, Any]] = {}
    load_before = os.getloadavg()[0]
    for _ in range(args.rounds):
        for name, procs, threads in CONFIGS:
            result = _run_config(args, procs, threads)
            if name not in best or result["seconds"] < best[name]["seconds"]:
                best[name] = {**result, "config": name, "processes": procs, "threads": threads}
    load_after = os.getloadavg()[0]
    rows = [best[name] for name, _, _ in CONFIGS]
    for row in rows:
        row["matvecs_per_s"] = row["block"] / row["seconds"]
    base, threaded = rows[0]["matvecs_per_s"], rows[1]["matvecs_per_s"]
    first = rows[0]
    print(
        f"HessianOperator.matmat, n = {first['n']:,} parameters, {first['samples']} samples "
        f"in one batch, float64, blocks of {first['block']} columns, best of "
        f"{args.rounds} x {args.repeats}; {os.cpu_count()} CPUs, load average "
        f"{load_before:.1f} before and {load_after:.1f} after"
    )
    print("| configuration | products / s | vs 1 x 1 | vs 1 x 2 threads |")
    print("|---|---|---|---|")
    for row in rows:
        rate = row["matvecs_per_s"]
        print(f"| {row['config']} | {rate:.1f} | {rate / base:.2f} | {rate / threaded:.2f} |")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
