"""HessianOperator and MatrixOperator against an explicit Hessian (tests/reference.py).

Tolerances: float64 products agree with the explicit Hessian (jacrev(grad), equal to
torch.func.hessian here) to 1e-12 relative (both are exact up to rounding on a
~1,200-parameter model); float32 products to 1e-5 relative.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.sparse.linalg import eigsh
from torch import Tensor, nn

from hessian_powerlaw.errors import UserInputError
from hessian_powerlaw.operators import HessianOperator, MatrixOperator, microbatch
from tests.reference import digits_data, digits_mlp, explicit_hessian

RTOL64 = 1e-12


def rel_err(a: Tensor, b: Tensor) -> float:
    return float(torch.linalg.matrix_norm(a - b) / torch.linalg.matrix_norm(b))


@pytest.fixture(scope="module")
def mlp() -> tuple[nn.Module, nn.Module, list, Tensor]:
    """1,210-parameter tanh MLP on 200 digits in 3 unequal batches, and its explicit Hessian."""
    model, criterion, batches = digits_mlp(hidden=16, n_samples=200, num_batches=3)
    assert [len(b[0]) for b in batches] == [67, 67, 66]
    return model, criterion, batches, explicit_hessian(model, criterion, batches)


def test_reference_equals_torch_func_hessian(mlp) -> None:
    """The reference Hessian (jacrev of grad) is torch.func.hessian's on this MLP, so every
    comparison with it here is a comparison with torch.func.hessian + eigh."""
    model, criterion, batches, H = mlp
    H_hessian = explicit_hessian(model, criterion, batches, method="hessian")
    assert rel_err(H_hessian, H) < 1e-13


@pytest.fixture(scope="module")
def block() -> Tensor:
    return torch.randn(1210, 6, generator=torch.Generator().manual_seed(1), dtype=torch.float64)


@pytest.mark.parametrize("backend", ["vmap", "autograd", "auto"])
def test_matmat_equals_explicit_hessian(mlp, block, backend: str) -> None:
    model, criterion, batches, H = mlp
    op = HessianOperator(model, criterion, batches, backend=backend)
    assert op.n == H.shape[0] == 1210
    assert rel_err(op.matmat(block), H @ block) < RTOL64
    assert op.num_matvecs == 6 and op.num_data_passes == 1


def test_matmat_equals_stacked_matvecs(mlp, block) -> None:
    model, criterion, batches, _ = mlp
    op = HessianOperator(model, criterion, batches)
    stacked = torch.stack([op.matvec(block[:, j]) for j in range(block.shape[1])], dim=1)
    assert rel_err(op.matmat(block), stacked) < RTOL64
    assert op.num_matvecs == 12
    assert op.num_data_passes == 7  # 6 matvecs + 1 matmat, one pass over the data each


def test_multi_batch_weighting_equals_concatenated_batch(mlp, block) -> None:
    model, criterion, batches, _ = mlp
    X, y = digits_data(200)
    single = explicit_hessian(model, criterion, [(X, y)])
    op = HessianOperator(model, criterion, batches)
    assert op.num_samples == 200
    assert rel_err(op.matmat(block), single @ block) < RTOL64
    # one batch passed bare (a tuple) is the same operator
    op1 = HessianOperator(model, criterion, (X, y))
    assert rel_err(op1.matmat(block), single @ block) < RTOL64


def test_dataloader_batches(mlp, block) -> None:
    model, criterion, _, H = mlp
    X, y = digits_data(200)
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(X, y), batch_size=67, shuffle=False
    )
    op = HessianOperator(model, criterion, loader)
    assert op.num_samples == 200
    assert rel_err(op.matmat(block), H @ block) < RTOL64
    op.check_deterministic()


def test_parameter_subsets_are_sub_blocks(mlp) -> None:
    model, criterion, batches, H = mlp
    names = [name for name, _ in model.named_parameters()]
    assert names == ["0.weight", "0.bias", "2.weight", "2.bias"]
    offsets = np.cumsum([0] + [p.numel() for p in model.parameters()])
    cases = {
        "2.*": ["2.weight", "2.bias"],
        "last": ["2.weight", "2.bias"],
        ("0.bias", "2.bias"): ["0.bias", "2.bias"],  # order follows named_parameters
    }
    for params, expected in cases.items():
        op = HessianOperator(model, criterion, batches, params=params)
        assert op.param_names == expected
        idx = np.concatenate([np.arange(offsets[i], offsets[i + 1]) for i in _pos(names, expected)])
        sub = H[np.ix_(idx, idx)]
        eye = torch.eye(op.n, dtype=torch.float64)
        assert rel_err(op.matmat(eye), sub) < RTOL64
    # a list of tensors, given in any order
    op = HessianOperator(model, criterion, batches, params=[model[2].bias, model[0].bias])
    assert op.param_names == ["0.bias", "2.bias"]
    assert op.param_shapes == [torch.Size([16]), torch.Size([10])]


def test_summarize_names_collapses_blocks_only_when_complete() -> None:
    from hessian_powerlaw.operators import summarize_names

    names = ["emb.weight"] + [f"h.{i}.{p}" for i in range(12) for p in ("w", "b")] + ["head.w"]
    assert summarize_names(names) == "emb.weight, h.{0-11}.w, h.{0-11}.b, head.w"
    assert summarize_names(names[:5]) == "emb.weight, h.0.w, h.0.b, h.1.w, h.1.b"  # short: as is
    # not every combination of indices exists: the names are kept, never invented
    ragged = [f"l.{i}.e.{j}.w" for i in range(3) for j in range(3) if (i, j) != (2, 2)]
    ragged += [f"x{i}" for i in range(10)]
    shown = summarize_names(ragged)  # 18 names: past the limit, so collapsing is tried
    assert shown.startswith("l.0.e.0.w, l.0.e.1.w") and "{" not in shown
    assert "l.2.e.2.w" not in shown
    gaps = [f"b.{i}.w" for i in (0, 2, 5)] + [f"p{i}" for i in range(20)]
    assert summarize_names(gaps).startswith("b.{0,2,5}.w, p0, p1")
    assert summarize_names(gaps).endswith("(5 more)")


def _pos(names: list[str], chosen: list[str]) -> list[int]:
    return [names.index(c) for c in chosen]


def test_bad_params_name_the_available_names(mlp) -> None:
    model, criterion, batches, _ = mlp
    with pytest.raises(UserInputError, match=r"'fc9\.\*'.*parameters: 0\.weight, 0\.bias"):
        HessianOperator(model, criterion, batches, params="fc9.*")
    with pytest.raises(UserInputError, match="not a parameter of the model"):
        HessianOperator(model, criterion, batches, params=[torch.zeros(3)])
    # the model's own last module as the example glob
    with pytest.raises(UserInputError, match=r"globs such as '2\.\*', or 'last'"):
        HessianOperator(model, criterion, batches, params="fc9.*")
    with pytest.raises(UserInputError, match="dtype"):
        HessianOperator(model, criterion, batches, dtype=torch.float16)
    op = HessianOperator(model, criterion, batches)
    with pytest.raises(UserInputError, match=r"shape \(1210, b\)"):
        op.matmat(torch.zeros(5, 2, dtype=torch.float64))


def test_gradient_and_loss_match_autograd(mlp) -> None:
    model, criterion, batches, _ = mlp
    X, y = digits_data(200)
    model.zero_grad()
    loss = criterion(model(X), y)
    loss.backward()
    loss = loss.detach()
    expected = torch.cat([p.grad.reshape(-1) for p in model.parameters()])
    model.zero_grad()
    op = HessianOperator(model, criterion, batches)
    assert abs(op.loss_value() - float(loss)) < 1e-12 * abs(float(loss))
    assert rel_err(op.gradient()[:, None], expected[:, None]) < 1e-12


class _ModeRecorder(nn.Module):
    """A float32 MLP that records whether it ran in training mode."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(64, 8), nn.Linear(8, 10)
        self.modes: list[bool] = []

    def forward(self, x: Tensor) -> Tensor:
        self.modes.append(self.training)
        return self.fc2(torch.tanh(self.fc1(x)))


def test_model_is_not_modified_and_mode_is_restored() -> None:
    torch.manual_seed(0)
    model = _ModeRecorder()  # float32 model, float64 operator
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    X, y = digits_data(50, dtype=torch.float32)
    op = HessianOperator(model, nn.CrossEntropyLoss(), (X, y))
    op.matmat(torch.randn(op.n, 3, dtype=torch.float64))
    assert model.modes and not any(model.modes)  # products ran in eval mode
    assert model.training  # and the mode is restored
    for k, v in model.state_dict().items():
        assert v.dtype == torch.float32 and torch.equal(v, before[k])
    # the float64 operator equals the explicit Hessian of a float64 copy
    model64 = _ModeRecorder().double()
    model64.load_state_dict({k: v.double() for k, v in before.items()})
    H = explicit_hessian(model64, nn.CrossEntropyLoss(), [(X.double(), y)])
    V = torch.randn(op.n, 4, dtype=torch.float64)
    assert rel_err(op.matmat(V), H @ V) < RTOL64


class _TinyLM(nn.Module):
    def __init__(self, vocab: int = 11, width: int = 6) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, width)
        self.head = nn.Linear(width, vocab)

    def forward(self, ids: Tensor) -> Tensor:
        return self.head(torch.tanh(self.emb(ids)))


def _lm_loss(model: nn.Module, batch: dict[str, Tensor]) -> Tensor:
    logits = model(batch["input_ids"])
    return nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), batch["labels"].ravel()
    )


def test_dict_batches_with_callable_loss_and_integer_inputs() -> None:
    torch.manual_seed(0)
    model = _TinyLM().double()
    gen = torch.Generator().manual_seed(3)
    batches = [
        {"input_ids": torch.randint(0, 11, (m, 5), generator=gen)} for m in (4, 4)
    ]  # equal sizes: the token-mean loss of the concatenation is the weighted mean
    for b in batches:
        b["labels"] = torch.roll(b["input_ids"], -1, dims=1)
    op = HessianOperator(model, _lm_loss, batches)
    H = explicit_hessian(model, _lm_loss, batches)
    V = torch.randn(op.n, 5, dtype=torch.float64)
    assert rel_err(op.matmat(V), H @ V) < RTOL64
    assert batches[0]["input_ids"].dtype == torch.int64


class _SquareFn(torch.autograd.Function):
    """x^2 as an old-style autograd.Function: twice differentiable, but not vmap-able."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # noqa: ANN001
        ctx.save_for_backward(x)
        return x * x

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # noqa: ANN001
        (x,) = ctx.saved_tensors
        return 2 * x * grad  # differentiable ops: double backward works


class _SquareNet(nn.Module):
    def __init__(self, custom: bool) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(64, 6), nn.Linear(6, 10)
        self.custom = custom

    def forward(self, x: Tensor) -> Tensor:
        h = self.fc1(x)
        return self.fc2(_SquareFn.apply(h) if self.custom else h * h)


def test_auto_backend_falls_back_to_autograd_when_vmap_fails() -> None:
    torch.manual_seed(0)
    custom = _SquareNet(custom=True).double()
    plain = _SquareNet(custom=False).double()
    plain.load_state_dict(custom.state_dict())
    X, y = digits_data(40)
    criterion = nn.CrossEntropyLoss()
    with pytest.raises(RuntimeError):  # the premise: vmap cannot trace it
        HessianOperator(custom, criterion, (X, y), backend="vmap").matvec(torch.ones(460))
    op = HessianOperator(custom, criterion, (X, y))
    V = torch.randn(op.n, 3, dtype=torch.float64)
    H = explicit_hessian(plain, criterion, [(X, y)])
    assert rel_err(op.matmat(V), H @ V) < RTOL64
    assert op._active_backend == "autograd"


def test_float32_operator(mlp, block) -> None:
    model, criterion, batches, H = mlp
    op = HessianOperator(model, criterion, batches, dtype=torch.float32)
    out = op.matmat(block)
    assert out.dtype == torch.float32
    assert rel_err(out.double(), H @ block) < 1e-5


class _AlwaysDropout(nn.Module):
    """Dropout applied whatever the mode (as in MC-dropout code): H v is random."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(64, 16), nn.Linear(16, 10)
        self.drop = nn.Dropout(0.5)

    def forward(self, x: Tensor) -> Tensor:
        h = torch.tanh(self.fc1(x))
        return self.fc2(nn.functional.dropout(h, 0.5, training=True))


def test_check_deterministic_detects_dropout(mlp) -> None:
    model, criterion, batches, _ = mlp
    assert HessianOperator(model, criterion, batches).check_deterministic() < 1e-13
    X, y = digits_data(100)
    op = HessianOperator(_AlwaysDropout().double(), criterion, (X, y))
    with pytest.raises(UserInputError, match="not reproducible.*dropout modules present"):
        op.check_deterministic()


def test_check_deterministic_names_a_shuffling_loader() -> None:
    torch.manual_seed(0)
    # BatchNorm without running statistics uses batch statistics even in eval mode, so a
    # shuffled loader changes the Hessian (not just the summation order)
    model = nn.Sequential(
        nn.Linear(64, 8), nn.BatchNorm1d(8, track_running_stats=False), nn.Tanh(), nn.Linear(8, 10)
    ).double()
    X, y = digits_data(120)
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(X, y), batch_size=40, shuffle=True
    )
    op = HessianOperator(model, nn.CrossEntropyLoss(), loader)
    with pytest.raises(UserInputError, match="shuffle=True"):
        op.check_deterministic()


def test_to_scipy_interoperates(mlp) -> None:
    model, criterion, batches, H = mlp
    op = HessianOperator(model, criterion, batches, params="2.*")
    lin = op.to_scipy()
    assert lin.shape == (170, 170)
    v = np.random.default_rng(0).standard_normal(170)
    sub = H[-170:, -170:]
    assert np.allclose(lin @ v, sub.numpy() @ v, rtol=0, atol=1e-12 * np.abs(sub.numpy()).max())
    top = eigsh(lin, k=3, which="LA", tol=1e-12, return_eigenvectors=False)
    assert np.allclose(np.sort(top), torch.linalg.eigvalsh(sub)[-3:].numpy(), rtol=1e-9)


def test_matrix_operator() -> None:
    A = np.array([[2.0, 1.0], [1.0, 3.0]])
    op = MatrixOperator(A)
    assert (op.n, op.dtype) == (2, torch.float64)
    assert torch.allclose(op.matvec(torch.tensor([1.0, 0.0], dtype=torch.float64)), op.matrix[:, 0])
    assert op.num_matvecs == 1
    assert MatrixOperator(torch.eye(3, dtype=torch.float32)).dtype == torch.float32
    with pytest.raises(UserInputError, match="symmetric"):
        MatrixOperator(np.array([[1.0, 2.0], [0.0, 1.0]]))
    with pytest.raises(UserInputError, match="square"):
        MatrixOperator(np.ones((2, 3)))


def test_last_finds_a_tied_head_by_identity() -> None:
    """A head whose weight is the embedding matrix: ``last`` selects it under the name
    ``named_parameters`` lists (the embedding's), not an empty selection."""

    class Tied(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = nn.Embedding(7, 4)
            self.mid = nn.Linear(4, 4)
            self.head = nn.Linear(4, 7, bias=False)
            self.head.weight = self.emb.weight

        def forward(self, idx: torch.Tensor) -> torch.Tensor:
            return self.head(torch.tanh(self.mid(self.emb(idx))))

    model = Tied().double()
    x = torch.tensor([0, 1, 2, 3, 4, 5])
    y = torch.tensor([1, 2, 3, 4, 5, 6])
    op = HessianOperator(model, nn.CrossEntropyLoss(), (x, y), params="last")
    assert op.param_names == ["emb.weight"]
    assert op.n == 28


def test_cuda_device_without_cuda_is_a_user_error() -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    model, criterion, batches = digits_mlp()
    with pytest.raises(UserInputError, match="no CUDA"):
        HessianOperator(model, criterion, batches, device="cuda")


# ------------------------------------------------------------------------- micro-batches


@pytest.mark.parametrize("backend", ["vmap", "autograd"])
@pytest.mark.parametrize("micro", [1, 7, 30, 66])
def test_micro_batches_give_the_same_operator(mlp, block, backend: str, micro: int) -> None:
    model, criterion, batches, H = mlp
    op = HessianOperator(model, criterion, batches, backend=backend, micro_batch_size=micro)
    assert rel_err(op.matmat(block), H @ block) < RTOL64
    assert op.splits_batches is True
    assert op.num_data_passes == 1 and op.num_matvecs == 6


def test_auto_micro_batches_follow_the_memory_budget(mlp, block, monkeypatch) -> None:
    model, criterion, batches, H = mlp
    op = HessianOperator(model, criterion, batches)
    assert rel_err(op.matmat(block), H @ block) < RTOL64
    assert op.splits_batches is None  # 6 columns of 67 samples fit the default budget
    (per_sample,) = op.planner.activation_bytes.values()
    # the saved activations of this tanh MLP: input 64, hidden 16 (and its tanh), logits 10
    assert 8 * (64 + 16 + 10) <= per_sample <= 8 * 4 * (64 + 16 + 16 + 10)
    # a budget of 10 samples per 6 columns cuts every 67-sample batch into 7 slices
    monkeypatch.setattr(microbatch, "CPU_PRODUCT_BYTES", 10 * 6 * per_sample)
    op = HessianOperator(model, criterion, batches)
    pieces = op._micro_batches(0, batches[0], 67, 6)
    assert [len(p[0]) for p in pieces] == [10] * 4 + [9] * 3
    assert torch.equal(torch.cat([p[0] for p in pieces]), batches[0][0])
    assert rel_err(op.matmat(block), H @ block) < RTOL64
    assert op.splits_batches is True
    assert op.last_pass_samples == 2 * ([10] * 4 + [9] * 3) + [10] * 3 + [9] * 4
    # one column may take 6 times as many samples a pass: 67 -> 2 slices, 66 -> 2 slices
    op.matvec(block[:, 0])
    assert op.last_pass_samples == [34, 33, 34, 33, 33, 33]


def _summed_loss(model: nn.Module, batch: tuple[Tensor, Tensor]) -> Tensor:
    return nn.functional.cross_entropy(model(batch[0]), batch[1], reduction="sum")


def test_a_loss_that_is_not_a_mean_is_never_split(mlp, block, monkeypatch) -> None:
    model, _, batches, _ = mlp
    # the operator's definition: batch weights m_b / M on each (here summed) batch loss
    X, y = batches[0]
    H = explicit_hessian(model, _summed_loss, [(X, y)])
    with pytest.raises(UserInputError, match="micro_batch_size=10: the loss of a batch is not"):
        HessianOperator(model, _summed_loss, (X, y), micro_batch_size=10).matmat(block)
    monkeypatch.setattr(microbatch, "CPU_PRODUCT_BYTES", 1.0)  # "auto" would cut to 1 sample
    op = HessianOperator(model, _summed_loss, (X, y))
    assert rel_err(op.matmat(block), H @ block) < RTOL64
    assert op.splits_batches is False


def _masked_loss(model: nn.Module, batch: tuple[Tensor, Tensor]) -> Tensor:
    """A token-style mean over the targets that are not ignored (class 0 is padding)."""
    return nn.functional.cross_entropy(model(batch[0]), batch[1], ignore_index=0)


@pytest.mark.parametrize("kind", ["class-weighted", "ignore_index"])
def test_weighted_means_are_caught_even_when_the_losses_agree(block, monkeypatch, kind) -> None:
    """At a zero-initialised head every sample has the same loss, so the loss values of a
    class-weighted or masked mean agree with the size-weighted mean of the slices; the
    gradients do not, and the operator must not split."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 16), nn.Tanh(), nn.Linear(16, 10)).double()
    nn.init.zeros_(model[2].weight)
    nn.init.zeros_(model[2].bias)
    X, y = digits_data(64)
    class_weights = torch.linspace(1.0, 5.0, 10, dtype=torch.float64)
    loss = nn.CrossEntropyLoss(weight=class_weights) if kind == "class-weighted" else _masked_loss
    whole = HessianOperator(model, loss, (X, y), micro_batch_size=None)
    V = block[: whole.n]
    expected = whole.matmat(V)
    with pytest.raises(UserInputError, match="micro_batch_size=8: .*gradients differs"):
        HessianOperator(model, loss, (X, y), micro_batch_size=8).matmat(V)
    monkeypatch.setattr(microbatch, "CPU_PRODUCT_BYTES", 1.0)  # "auto" would cut to 1 sample
    op = HessianOperator(model, loss, (X, y))
    assert rel_err(op.matmat(V), expected) < RTOL64
    assert op.splits_batches is False and op.last_pass_samples == [64]


def test_batch_statistics_are_never_split(block, monkeypatch) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(64, 8), nn.BatchNorm1d(8, track_running_stats=False), nn.Tanh(), nn.Linear(8, 10)
    ).double()
    X, y = digits_data(60)
    monkeypatch.setattr(microbatch, "CPU_PRODUCT_BYTES", 1.0)
    whole = HessianOperator(model, nn.CrossEntropyLoss(), (X, y), micro_batch_size=None)
    op = HessianOperator(model, nn.CrossEntropyLoss(), (X, y))
    V = block[: op.n]
    assert rel_err(op.matmat(V), whole.matmat(V)) < RTOL64
    assert op.splits_batches is False


@pytest.mark.parametrize("bad", [0, -3, 2.5, "big", True])
def test_bad_micro_batch_size_names_the_parameter(mlp, bad) -> None:
    model, criterion, batches, _ = mlp
    with pytest.raises(UserInputError, match="micro_batch_size must be"):
        HessianOperator(model, criterion, batches, micro_batch_size=bad)
