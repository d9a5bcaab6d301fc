"""How exact are float32 Hessian products of LeNet on a GPU, and under which cuDNN settings?

For the demo's set-up (LeNet on 1,000 MNIST training images, random initialisation) the script
compares float32 products with float64 ones on the same device, for 16 random unit vectors,
under each cuDNN setting: the operator's default (TF32 off), cuDNN's deterministic algorithms
only, and cuDNN off (PyTorch's own convolutions). It prints the relative error of the
products and their asymmetry ``|w^T H v - v^T H w| / (|lambda_1| ||v|| ||w||)``, the two
things that set the floor of a residual. With ``--k`` it then solves the top ``k`` under the
setting with the smallest error, with the demo's criterion ("norm", 1e-5).

    python benchmarks/bench_cuda_precision.py --data mnist-idx:DIR:10000 --device cuda --k 1000
"""

from __future__ import annotations

import argparse
import contextlib
import time
from collections.abc import Iterator

import torch

from hessian_powerlaw import zoo
from hessian_powerlaw.operators import HessianOperator
from hessian_powerlaw.solvers import top_eigenpairs


@contextlib.contextmanager
def cudnn(setting: str) -> Iterator[None]:
    saved = torch.backends.cudnn.enabled, torch.backends.cudnn.deterministic
    torch.backends.cudnn.enabled = setting != "cudnn-off"
    torch.backends.cudnn.deterministic = setting == "deterministic"
    try:
        yield
    finally:
        torch.backends.cudnn.enabled, torch.backends.cudnn.deterministic = saved


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="mnist:10000")
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--k", type=int, default=0)
    parser.add_argument("--max-matvecs", type=int, default=12000)
    args = parser.parse_args()

    data = zoo.load_data(args.data, seed=0)
    model = zoo.build_model("lenet", data, seed=0)
    batches = data.hessian_batches(args.samples, None, 0)
    exact = HessianOperator(model, data.loss, batches, device=args.device)
    V = torch.randn(exact.n, 16, dtype=torch.float64, device=exact.device)
    V /= torch.linalg.vector_norm(V, dim=0)
    HV = exact.matmat(V)
    lam1 = float(top_eigenpairs(exact, k=1, tol=1e-8).eigenvalues[0])
    errors = {}
    for setting in ("default", "deterministic", "cudnn-off"):
        with cudnn(setting):
            op = HessianOperator(model, data.loss, batches, device=args.device,
                                 dtype=torch.float32)  # fmt: skip
            start = time.perf_counter()
            out = op.matmat(V.float()).double()
            seconds = (time.perf_counter() - start) / V.shape[1]
        error = float(torch.linalg.norm(out - HV) / torch.linalg.norm(HV))
        G = V.T @ out
        asym = float((G - G.T).abs().max()) / abs(lam1)
        errors[setting] = error
        print(f"{setting:14s} relative error {error:.2e}  asymmetry/lambda_1 {asym:.2e}  "
              f"{seconds * 1e3:.1f} ms a column", flush=True)  # fmt: skip
    if args.k:
        best = min(errors, key=errors.get)
        with cudnn(best):
            op = HessianOperator(model, data.loss, batches, device=args.device,
                                 dtype=torch.float32)  # fmt: skip
            start = time.perf_counter()
            spec = top_eigenpairs(op, k=args.k, criterion="norm", tol=1e-5,
                                  max_matvecs=args.max_matvecs)  # fmt: skip
        seconds = time.perf_counter() - start
        print(f"top {args.k} under {best}: {int(spec.converged.sum())} converged, "
              f"{spec.num_matvecs} products, {seconds:.1f} s", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
