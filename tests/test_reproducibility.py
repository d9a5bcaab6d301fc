"""Issue #18: batches, forwards and losses that would give silently wrong spectra are named.

Each test builds the failure the issue describes (an iterable that is empty after its first
pass, data that change between passes, noise in forward, a NaN loss, ...) on a small real
model and checks that the operator or the solver refuses it with one UserInputError line that
names the cause; and that deterministic set-ups still pass, at the stated cost of the check.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from hessian_powerlaw import operators, top_eigenpairs
from hessian_powerlaw.cli import main
from hessian_powerlaw.errors import UserInputError
from hessian_powerlaw.operators import HessianOperator, MatrixOperator, as_operator
from tests.reference import digits_data, digits_mlp, explicit_hessian

# ------------------------------------------------------------------------------------------
# item 2: batches that are not the same on every pass


class _OneShot:
    """Re-iterable in appearance (``__iter__``, no ``__next__``), empty after its first pass:
    a streaming source or an iterator kept in an object."""

    def __init__(self, batches: list) -> None:
        self._it = iter(batches)

    def __iter__(self) -> Iterator:
        return self._it


class _Shrinking:
    """Yields all batches on the first pass and one fewer on each later pass."""

    def __init__(self, batches: list) -> None:
        self.batches, self.passes = batches, 0

    def __iter__(self) -> Iterator:
        self.passes += 1
        return iter(self.batches[: len(self.batches) - (self.passes > 1)])


def test_an_iterable_that_is_empty_after_one_pass_is_named() -> None:
    model, criterion, batches = digits_mlp(n_samples=200, num_batches=2)
    op = HessianOperator(model, criterion, _OneShot(batches))
    with pytest.raises(UserInputError, match=r"no samples .* iterated only once.*list"):
        top_eigenpairs(op, 5)


def test_a_changed_sample_count_is_named() -> None:
    model, criterion, batches = digits_mlp(n_samples=200, num_batches=2)
    op = HessianOperator(model, criterion, _Shrinking(batches))
    with pytest.raises(UserInputError, match=r"gave 100 samples .* first pass gave 200"):
        op.loss_and_gradient()


def test_a_loader_that_draws_different_samples_each_pass_is_named() -> None:
    """Each pass draws a different random subset of 200 of the 400 samples: the same sample
    count, a different Hessian every product (the issue's lambda_1 3.62 instead of 2.12)."""
    model, criterion, _ = digits_mlp(n_samples=200)
    dataset = torch.utils.data.TensorDataset(*digits_data(400))
    sampler = torch.utils.data.RandomSampler(dataset, num_samples=200)
    loader = torch.utils.data.DataLoader(dataset, batch_size=100, sampler=sampler)
    op = HessianOperator(model, criterion, loader)
    with pytest.raises(UserInputError, match=r"different data on pass 2.*random subset"):
        top_eigenpairs(op, 5)


def _batchnorm_net() -> nn.Module:
    # BatchNorm without running statistics normalises with batch statistics even in eval
    # mode, so the Hessian depends on which samples share a batch
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(64, 8), nn.BatchNorm1d(8, track_running_stats=False), nn.Tanh(), nn.Linear(8, 10)
    ).double()


def test_batch_statistics_with_a_shuffling_loader_are_named_on_the_first_product() -> None:
    dataset = torch.utils.data.TensorDataset(*digits_data(120))
    loader = torch.utils.data.DataLoader(dataset, batch_size=40, shuffle=True)
    op = HessianOperator(_batchnorm_net(), nn.CrossEntropyLoss(), loader)
    with pytest.raises(UserInputError, match=r"not reproducible.*BatchNorm.*shuffle=True"):
        op.matvec(torch.ones(op.n, dtype=torch.float64))


def test_a_shuffling_loader_with_a_mean_loss_is_accepted() -> None:
    """Shuffling only reorders a sum of per-sample Hessians: same operator up to rounding,
    so neither the data check nor the repeated product may object."""
    model, criterion, batches = digits_mlp(n_samples=120, num_batches=3)
    H = explicit_hessian(model, criterion, batches)
    dataset = torch.utils.data.TensorDataset(*digits_data(120))
    loader = torch.utils.data.DataLoader(dataset, batch_size=40, shuffle=True)
    op = HessianOperator(model, criterion, loader)
    V = torch.randn(op.n, 3, dtype=torch.float64)
    for _ in range(3):
        out = op.matmat(V)
        assert (
            float(torch.linalg.matrix_norm(out - H @ V) / torch.linalg.matrix_norm(H @ V)) < 1e-12
        )


def test_the_repeat_costs_one_column_once_and_is_not_counted(monkeypatch) -> None:
    model, criterion, batches = digits_mlp(n_samples=120, num_batches=2)
    op = HessianOperator(model, criterion, batches)
    columns: list[int] = []
    real_pass = op._pass
    monkeypatch.setattr(
        op, "_pass", lambda V, *a, **kw: columns.append(V.shape[1]) or real_pass(V, *a, **kw)
    )
    V = torch.randn(op.n, 4, dtype=torch.float64)
    op.matmat(V)
    op.matmat(V)
    assert columns == [4, 1, 4]  # the first product is repeated on one column, once
    assert op.num_matvecs == 8 and op.num_data_passes == 2


def test_the_repeat_tolerance_allows_for_tf32_on_cuda() -> None:
    """sqrt(eps) of the dtype, but float32 on CUDA with TF32 (only when the operator allows
    it) rounds at 2^-10, not 2^-23."""
    model, criterion, batches = digits_mlp(n_samples=20)
    op = HessianOperator(model, criterion, batches)
    assert op.repeat_rtol() == pytest.approx(1.49e-8, rel=1e-2)
    op.dtype = torch.float32
    assert op.repeat_rtol() == pytest.approx(3.45e-4, rel=1e-2)
    op.device = torch.device("cuda")  # the rule only; no product runs
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    try:
        torch.backends.cudnn.allow_tf32 = True
        # by default the operator's products run without TF32 whatever the flags
        assert op.repeat_rtol() == pytest.approx(3.45e-4, rel=1e-2)
        op.allow_tf32 = True
        assert op.repeat_rtol() == pytest.approx(2**-5)
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
        assert op.repeat_rtol() == pytest.approx(3.45e-4, rel=1e-2)
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


# ------------------------------------------------------------------------------------------
# item 3: randomness inside forward


class NoisyNet(nn.Module):
    """Adds Gaussian noise to the hidden layer on every forward (in any mode)."""

    def __init__(self, input_shape: tuple[int, ...] = (64,), num_classes: int = 10) -> None:
        super().__init__()
        self.fc1 = nn.Linear(int(np.prod(input_shape)), 16)
        self.fc2 = nn.Linear(16, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        h = torch.tanh(self.fc1(x.flatten(1)))
        return self.fc2(h + 0.1 * torch.randn_like(h))


def test_noise_in_forward_is_named_not_blamed_on_the_tolerance() -> None:
    X, y = digits_data(200)
    op = HessianOperator(NoisyNet().double(), nn.CrossEntropyLoss(), (X, y))
    with pytest.raises(UserInputError, match=r"not reproducible.*draws random numbers"):
        top_eigenpairs(op, 10)


def test_check_reproducible_false_opts_out() -> None:
    X, y = digits_data(200)
    op = HessianOperator(
        NoisyNet().double(), nn.CrossEntropyLoss(), (X, y), check_reproducible=False
    )
    assert op.matvec(torch.ones(op.n, dtype=torch.float64)).shape == (op.n,)


def test_noise_in_forward_is_one_line_in_the_cli(tmp_path: Path, capsys) -> None:
    code = main(
        ["spectrum", "--model", "tests.test_reproducibility:NoisyNet", "--data", "digits",
         "--samples", "200", "--k", "10", "--trace-matvecs", "0", "--n-boot", "0",
         "--no-density", "--quiet", "--out", str(tmp_path / "out")]
    )  # fmt: skip
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "draws random numbers" in err[0] and "--tol" not in err[0]
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------------------
# item 4: losses, gradients and products that are not finite


def _nan_loss(model: nn.Module, batch: tuple[Tensor, Tensor]) -> Tensor:
    x, y = batch
    return nn.functional.cross_entropy(model(x), y) * torch.tensor(float("nan"), dtype=x.dtype)


def _kink(model: nn.Module, batch: tuple[Tensor, Tensor]) -> Tensor:
    """Cross-entropy plus sqrt|w - w0|, finite at w = w0 but with an infinite gradient."""
    w = model[0].weight
    return (
        nn.functional.cross_entropy(model(batch[0]), batch[1]) + (w - w.detach()).abs().sqrt().sum()
    )


def _cusp(model: nn.Module, batch: tuple[Tensor, Tensor]) -> Tensor:
    """Cross-entropy plus |w - w0|^1.5: finite loss and gradient, infinite curvature at w0."""
    w = model[0].weight
    return (
        nn.functional.cross_entropy(model(batch[0]), batch[1])
        + ((w - w.detach()).abs() ** 1.5).sum()
    )


@pytest.mark.parametrize(
    ("loss", "message"),
    [(_nan_loss, r"the loss is not finite \(nan\) on batch 0"),
     (_kink, r"the gradient is not finite on batch 0"),
     (_cusp, r"Hessian-vector product is not finite")],
)  # fmt: skip
def test_a_non_finite_loss_gradient_or_product_is_named(loss, message: str) -> None:
    model, _, batches = digits_mlp(n_samples=100)
    op = HessianOperator(model, loss, batches)
    with pytest.raises(UserInputError, match=message):
        top_eigenpairs(op, 3)


def test_non_finite_parameters_are_named() -> None:
    model, criterion, batches = digits_mlp(n_samples=100)
    with torch.no_grad():
        model[2].bias[3] = float("inf")
    op = HessianOperator(model, criterion, batches)
    with pytest.raises(UserInputError, match=r"not finite.*2\.bias"):
        top_eigenpairs(op, 3)


# ------------------------------------------------------------------------------------------
# item 8: what an operator is


def test_top_eigenpairs_wraps_matrices_and_scipy_operators() -> None:
    from scipy.sparse.linalg import aslinearoperator

    rng = np.random.default_rng(0)
    A = rng.standard_normal((30, 30))
    A = A + A.T
    exact = np.linalg.eigvalsh(A)[::-1][:3]
    for matrix in (A, torch.as_tensor(A), A.tolist(), aslinearoperator(A)):
        spec = top_eigenpairs(matrix, 3, block_size=2, criterion="norm")
        np.testing.assert_allclose(spec.eigenvalues, exact, rtol=1e-9)
    assert top_eigenpairs([[1, 0], [0, 1]], 1).eigenvalues.tolist() == pytest.approx([1.0])


def test_as_operator_passes_operators_through_and_checks_symmetry() -> None:
    from scipy.sparse.linalg import aslinearoperator

    op = MatrixOperator(np.eye(3))
    assert as_operator(op) is op
    wrapped = as_operator(aslinearoperator(np.diag([3.0, 2.0, 1.0])))
    assert (wrapped.n, wrapped.dtype, wrapped.device.type) == (3, torch.float64, "cpu")
    V = torch.ones(3, 2, dtype=torch.float64)
    assert wrapped.matmat(V).tolist() == [[3.0, 3.0], [2.0, 2.0], [1.0, 1.0]]
    assert wrapped.num_matvecs == 2
    with pytest.raises(UserInputError, match="symmetric"):
        as_operator([[1.0, 2.0], [0.0, 1.0]])
    with pytest.raises(UserInputError, match="symmetric"):
        as_operator(aslinearoperator(np.array([[1.0, 2.0], [0.0, 1.0]])))


@pytest.mark.parametrize("bad", ["H", 3.0, object(), [1.0, 2.0], [[1, 2], [3]]])
def test_something_else_is_told_what_an_operator_is(bad: object) -> None:
    with pytest.raises(UserInputError, match=r"n, dtype, device and matmat"):
        top_eigenpairs(bad, 1)


def test_as_operator_is_public() -> None:
    assert "as_operator" in operators.__all__
