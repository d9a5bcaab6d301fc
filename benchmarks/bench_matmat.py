"""Cost of one ``matmat`` column, with and without micro-batches, as a ratio to one gradient.

For a zoo model and data set, side by side in one process: the median time of one gradient
over the Hessian batches (the zoo's default batching: one batch of images; text in batches of
32 sequences), and of one ``b``-column product by two operators on them:
the default (``micro_batch_size="auto"``, which applies the batch in slices when ``b``
tangent copies of its activations pass the memory budget) and ``micro_batch_size=None``
(the whole batch in one vmapped pass). Also checks that the two products agree. Run:

    .venv/bin/python benchmarks/bench_matmat.py --model lenet --data fashion-mnist:4000 \\
        --samples 2048 --block-sizes 4,16 --dtypes float32,float64

The model is at its seeded initialisation (the cost of a product does not depend on the
weights).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from hessian_powerlaw import zoo
from hessian_powerlaw.analysis import parse_dtype
from hessian_powerlaw.operators import HessianOperator


def median_seconds(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up (and the operator's one-off measurement and split check)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="lenet")
    parser.add_argument("--data", default="fashion-mnist:4000")
    parser.add_argument("--samples", type=int, default=2048, help="samples in the one batch")
    parser.add_argument("--block-sizes", default="4,16")
    parser.add_argument("--dtypes", default="float32,float64")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    data = zoo.load_data(args.data, seed=0, model_spec=args.model)
    model = zoo.build_model(args.model, data, seed=0)
    batches = data.hessian_batches(args.samples, None, 0)
    print(f"{args.model} on {args.data}: {args.samples} samples in {len(batches)} batch(es), "
          f"{args.threads} threads")  # fmt: skip
    print("\n| dtype | b | gradient ms | auto: slices | auto: column / gradient | "
          "whole batch: column / gradient | speed-up | difference (rel. norm) |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    for name in args.dtypes.split(","):
        dtype = parse_dtype(name)
        auto = HessianOperator(model, data.loss, batches, dtype=dtype)
        whole = HessianOperator(model, data.loss, batches, dtype=dtype, micro_batch_size=None)
        gradient = median_seconds(whole.gradient, args.repeats)
        for b in [int(x) for x in args.block_sizes.split(",")]:
            V = torch.randn(auto.n, b, dtype=dtype, generator=torch.Generator().manual_seed(b))
            t_auto = median_seconds(lambda: auto.matmat(V), args.repeats)  # noqa: B023
            t_whole = median_seconds(lambda: whole.matmat(V), args.repeats)  # noqa: B023
            diff = (auto.matmat(V) - whole.matmat(V)).norm() / whole.matmat(V).norm()
            print(
                f"| {name} | {b} | {gradient * 1e3:.0f} | {len(auto.last_pass_samples)} | "
                f"{t_auto / b / gradient:.2f} | {t_whole / b / gradient:.2f} | "
                f"{t_whole / t_auto:.2f}x | {float(diff):.1e} |",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
