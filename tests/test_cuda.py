"""The CUDA paths against the same explicit Hessians as the CPU tests (skipped without a GPU).

Run on a machine with a GPU: ``python -m pytest tests/test_cuda.py``. Products on the GPU
are checked against the explicit float64 Hessian built on the CPU (``tests/reference.py``),
the solvers' certified pairs on the GPU against ``torch.linalg.eigh``, and the ``spectrum``
command with ``--device cuda`` against the same command on the CPU.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from hessian_powerlaw.operators import HessianOperator
from hessian_powerlaw.solvers import top_eigenpairs
from tests.reference import digits_mlp, explicit_hessian

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.fixture(scope="module")
def problem() -> tuple[HessianOperator, torch.Tensor, np.ndarray]:
    """A trained 1,210-parameter MLP on 200 digits: its operator on the GPU (float64), its
    explicit Hessian (CPU) and that Hessian's eigenvalues, largest first."""
    model, criterion, batches = digits_mlp(hidden=16, n_samples=200, num_batches=2, train_steps=100)
    H = explicit_hessian(model, criterion, batches)
    op = HessianOperator(model, criterion, batches, device="cuda")
    return op, H, torch.linalg.eigvalsh(H).flip(0).numpy()


def test_products_on_the_gpu_are_the_explicit_hessians(problem) -> None:
    op, H, _ = problem
    assert op.device.type == "cuda"
    V = torch.randn(op.n, 5, dtype=torch.float64)
    HV = op.matmat(V.to(op.device))
    assert HV.device.type == "cuda"
    # float64 on both sides: only summation order differs
    torch.testing.assert_close(HV.cpu(), H @ V, rtol=1e-10, atol=1e-12)


def test_top_eigenpairs_on_the_gpu_are_certified(problem) -> None:
    op, H, evals = problem
    k = 30
    spec = top_eigenpairs(op, k=k, tol=1e-9, return_vectors=True)
    assert spec.all_converged
    assert np.abs(spec.eigenvalues - evals[:k]).max() / abs(evals[0]) <= 1e-8
    V = torch.as_tensor(spec.eigenvectors)
    true = torch.linalg.vector_norm(H @ V - V * torch.as_tensor(spec.eigenvalues), dim=0)
    assert np.all(true.numpy() <= 1e-9 * np.abs(spec.eigenvalues) * (1 + 1e-6))


def test_float32_products_run_without_tf32_and_restore_the_flags() -> None:
    """A convolution in TF32 differs from float32 by ~1e-3: the operator turns TF32 off for
    its products only (torch's default, cudnn.allow_tf32 = True, comes back afterwards)."""
    from torch import nn

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 8, 3), nn.Tanh(), nn.Flatten(), nn.Linear(8 * 36, 10))
    x, y = torch.randn(64, 1, 8, 8), torch.randint(0, 10, (64,))
    reference = HessianOperator(model, nn.CrossEntropyLoss(), [(x, y)], device="cuda")
    V = torch.randn(reference.n, 4, dtype=torch.float64, device="cuda")
    exact = reference.matmat(V)
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    try:
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = True
        errors = {}
        for allow in (False, True):
            op = HessianOperator(model, nn.CrossEntropyLoss(), [(x, y)], device="cuda",
                                 dtype=torch.float32, allow_tf32=allow)  # fmt: skip
            out = op.matmat(V.float()).double()
            errors[allow] = float(torch.linalg.norm(out - exact) / torch.linalg.norm(exact))
            assert torch.backends.cudnn.allow_tf32 and torch.backends.cuda.matmul.allow_tf32
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved
    assert errors[False] <= 1e-5, errors
    assert errors[True] > 10 * errors[False], errors  # TF32 does run when allowed


def test_lean_and_eigenvalues_only_solves_on_the_gpu(problem) -> None:
    """A budget that leaves no room for the products: the lean solve, certified. A budget
    below any basis (n = 100,000, k = 100 in 40 MiB, as in test_memory_budget.py): the
    eigenvalues-only mode, every value within its bound."""
    from tests.test_eigenvalues_only import Diagonal, power_law

    op, _, evals = problem
    k = 20
    full = top_eigenpairs(op, k=k, tol=1e-9)
    lean = top_eigenpairs(op, k=k, tol=1e-9, memory_budget=int(full.memory_bytes * 0.7))
    assert lean.method == "block-lanczos-lean" and lean.all_converged
    np.testing.assert_allclose(lean.eigenvalues, evals[:k], rtol=0, atol=1e-8 * abs(evals[0]))

    values = power_law(100_000, top=200)
    diagonal = Diagonal(values, device="cuda")
    spec = top_eigenpairs(diagonal, k=100, tol=1e-8, memory_budget=40 * 2**20)
    assert spec.method == "lanczos-eigenvalues-only" and spec.all_converged
    truth = np.sort(values)[::-1][:100]
    assert np.all(np.abs(spec.eigenvalues - truth) <= spec.residuals * spec.scale)


def test_float32_products_on_the_gpu_keep_the_top_eigenvalues(problem) -> None:
    """float32 with TF32 off (torch's default for matmul): the top 10 to 1e-4 relative."""
    model, criterion, batches = digits_mlp(hidden=16, n_samples=200, num_batches=2, train_steps=100)
    model = model.float()
    batches = [(x.float(), y) for x, y in batches]
    op = HessianOperator(model, criterion, batches, device="cuda", dtype=torch.float32)
    spec = top_eigenpairs(op, k=10)
    _, _, evals = problem
    np.testing.assert_allclose(spec.eigenvalues, evals[:10], rtol=1e-4)


def test_spectrum_command_on_the_gpu_matches_the_cpu(tmp_path: Path) -> None:
    from hessian_powerlaw.cli import main

    common = ["spectrum", "--model", "lenet", "--data", "digits", "--samples", "300",
              "--k", "40", "--dtype", "float64", "--trace-matvecs", "20", "--n-boot", "0",
              "--no-density", "--quiet"]  # fmt: skip
    results = {}
    for device in ("cpu", "cuda"):
        out = tmp_path / device
        assert main([*common, "--device", device, "--out", str(out)]) == 0
        results[device] = json.loads((out / "spectrum.json").read_text())
    assert results["cuda"]["config"]["device"] == "cuda"
    cpu = np.asarray(results["cpu"]["spectrum"]["eigenvalues"])
    gpu = np.asarray(results["cuda"]["spectrum"]["eigenvalues"])
    # each certified to the default 1e-3 relative; in float64 both are far better than that
    np.testing.assert_allclose(gpu, cpu, rtol=1e-6)
