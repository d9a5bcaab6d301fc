"""hf:PATH: a tiny GPT-2 and a character tokenizer saved to a folder, loaded offline.

The acceptance check: the last-layer Hessian's top-10 eigenvalues of the loaded model equal
those of an explicit Hessian of the same parameter subset within 1e-6 (float64).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from hessian_powerlaw.errors import UserInputError
from hessian_powerlaw.operators import HessianOperator
from hessian_powerlaw.solvers import top_eigenpairs
from hessian_powerlaw.zoo.blocks import last_layer_names
from hessian_powerlaw.zoo.hf import HFCausalLM, context_length, load_hf_model
from hessian_powerlaw.zoo.text import TextData, TokenizerEncoder, load_text_data
from tests.test_gpt import explicit_hessian_via_grad

transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

TEXT = (
    "When shall we three meet again\n"
    "In thunder, lightning, or in rain?\n"
    "When the hurlyburly's done,\n"
    "When the battle's lost and won.\n"
    "That will be ere the set of sun.\n"
    "Where the place? Upon the heath.\n"
    "There to meet with Macbeth.\n"
) * 6
CONTEXT = 32


def _save_char_tokenizer(folder: Path, text: str) -> int:
    """A character-level fast tokenizer (WordLevel over single characters), saved offline.

    Ids run in *reverse* character order (and 0 is <unk>), so they differ from the
    library's own character vocabulary: a test can tell which encoder was used.
    """
    chars = sorted(set(text), reverse=True)
    vocab = {"<unk>": 0, **{c: i + 1 for i, c in enumerate(chars)}}
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Split(
        tokenizers.Regex(r"[\s\S]"), behavior="isolated"
    )
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>")
    fast.save_pretrained(str(folder))
    return len(vocab)


def _save_tiny_gpt2(folder: Path, vocab_size: int, tie: bool = True) -> None:
    config = transformers.GPT2Config(
        vocab_size=vocab_size,
        n_positions=CONTEXT,
        n_embd=16,
        n_layer=2,
        n_head=2,
        bos_token_id=0,
        eos_token_id=0,
        tie_word_embeddings=tie,
    )
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(config)
    # larger weights than GPT-2's 0.02 init give a Hessian with a spread-out spectrum
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.normal_(0.0, 0.3)
    model.save_pretrained(str(folder))


@pytest.fixture(scope="module")
def hf_setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("hf")
    text_file = root / "macbeth.txt"
    text_file.write_text(TEXT, encoding="utf-8")
    model_dir = root / "tiny-gpt2"
    vocab_size = _save_char_tokenizer(model_dir, TEXT)
    _save_tiny_gpt2(model_dir, vocab_size)
    return model_dir, text_file


@pytest.fixture(scope="module")
def hf_data(hf_setup: tuple[Path, Path]) -> TextData:
    model_dir, text_file = hf_setup
    return load_text_data(f"text:{text_file}", model_spec=f"hf:{model_dir}")


def test_tokenizer_encodes_the_data(hf_setup: tuple[Path, Path], hf_data: TextData) -> None:
    model_dir, _ = hf_setup
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
    assert isinstance(hf_data.encoder, TokenizerEncoder)
    assert hf_data.num_classes == len(tokenizer)
    assert hf_data.seq_len == CONTEXT == context_length(f"hf:{model_dir}")  # capped default
    cut = round(len(TEXT) * 0.9)
    expected = tokenizer(TEXT[:cut], add_special_tokens=False)["input_ids"]
    assert hf_data.train_tokens.tolist() == expected
    assert hf_data.decode(hf_data.train_tokens[:7].tolist()).replace(" ", "") == "Whensh"


def test_loaded_model_gives_logits_with_eager_attention(
    hf_setup: tuple[Path, Path], hf_data: TextData
) -> None:
    model_dir, _ = hf_setup
    model = load_hf_model(f"hf:{model_dir}", hf_data)
    assert isinstance(model, HFCausalLM)
    assert model.config._attn_implementation == "eager"
    assert not model.training
    x, _ = hf_data.hessian_batches(num_samples=2)[0]
    assert model(x).shape == (2, CONTEXT, hf_data.num_classes)
    names = [n for n, _ in model.named_parameters()]
    assert names[0] == "transformer.wte.weight"
    assert "transformer.h.1.attn.c_attn.weight" in names


def test_last_layer_top10_matches_explicit_hessian(
    hf_setup: tuple[Path, Path], hf_data: TextData
) -> None:
    """The issue's acceptance check through the Python API: tied GPT-2, so the LM head is the
    shared token-embedding matrix (differentiated through both of its uses)."""
    model_dir, _ = hf_setup
    model = load_hf_model(f"hf:{model_dir}", hf_data).double()
    batches = hf_data.hessian_batches(num_samples=4)
    names = last_layer_names(model)
    assert names == ["transformer.wte.weight"]
    op = HessianOperator(model, hf_data.loss, batches, params=names)
    assert op.n == hf_data.num_classes * 16
    H = explicit_hessian_via_grad(model, hf_data.loss, batches, names)
    exact = torch.linalg.eigvalsh(H).flip(0).numpy()
    spec = top_eigenpairs(op, k=10, tol=1e-10, seed=0)
    assert spec.converged.all()
    np.testing.assert_allclose(spec.eigenvalues, exact[:10], rtol=0, atol=1e-6)
    np.testing.assert_allclose(spec.eigenvalues, exact[:10], rtol=1e-8, atol=0)  # and tighter
    assert exact[0] > 1e-2


def test_attention_hessian_products_match_explicit(
    hf_setup: tuple[Path, Path], hf_data: TextData
) -> None:
    """Second derivatives through GPT-2's eager attention: H V on block 1's attention."""
    model_dir, _ = hf_setup
    model = load_hf_model(f"hf:{model_dir}", hf_data).double()
    batches = hf_data.hessian_batches(num_samples=2)
    op = HessianOperator(model, hf_data.loss, batches, params="transformer.h.1.attn.*")
    assert op.n == 16 * 48 + 48 + 16 * 16 + 16
    H = explicit_hessian_via_grad(model, hf_data.loss, batches, op.param_names)
    V = torch.randn(op.n, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    expected = H @ V
    assert float((op.matmat(V) - expected).abs().max()) <= 1e-10 * float(expected.abs().max())
    # the tokenizer's dict batches cut into one sequence per micro-batch give the same product
    micro = HessianOperator(
        model, hf_data.loss, batches, params="transformer.h.1.attn.*", micro_batch_size=1
    )
    got = micro.matmat(V)
    assert micro.splits_batches is True and micro.last_pass_samples == [1, 1]
    assert float((got - expected).abs().max()) <= 1e-10 * float(expected.abs().max())


def test_untied_head_is_lm_head_and_operator_last_agrees(
    tmp_path: Path, hf_setup: tuple[Path, Path]
) -> None:
    _, text_file = hf_setup
    folder = tmp_path / "untied"
    vocab_size = _save_char_tokenizer(folder, TEXT)
    _save_tiny_gpt2(folder, vocab_size, tie=False)
    data = load_text_data(f"text:{text_file}", model_spec=f"hf:{folder}", seq_len=8)
    model = load_hf_model(f"hf:{folder}", data)
    assert last_layer_names(model) == ["lm_head.weight"]
    op = HessianOperator(model, data.loss, data.hessian_batches(num_samples=2), params="last")
    assert op.param_names == ["lm_head.weight"]


# ------------------------------------------------------------------------------- errors


def test_missing_folder_and_non_model_folder(tmp_path: Path) -> None:
    with pytest.raises(UserInputError, match="does not exist"):
        load_hf_model(f"hf:{tmp_path / 'nowhere'}")
    with pytest.raises(UserInputError, match="no config.json"):
        load_hf_model(f"hf:{tmp_path}")
    (tmp_path / "config.json").write_text(json.dumps({"hello": "world"}))
    with pytest.raises(UserInputError, match="cannot load a causal language model"):
        load_hf_model(str(tmp_path))


def test_missing_transformers_names_the_extra(
    monkeypatch: pytest.MonkeyPatch, hf_setup: tuple[Path, Path]
) -> None:
    model_dir, text_file = hf_setup
    monkeypatch.setitem(sys.modules, "transformers", None)  # import now raises ImportError
    with pytest.raises(UserInputError, match=r"pip install 'hessian-powerlaw\[llm\]'"):
        load_hf_model(f"hf:{model_dir}")
    with pytest.raises(UserInputError, match=r"\[llm\]"):
        load_text_data(f"text:{text_file}", model_spec=f"hf:{model_dir}")


def test_data_that_does_not_fit_the_model(hf_setup: tuple[Path, Path]) -> None:
    model_dir, text_file = hf_setup
    too_long = load_text_data(f"text:{text_file}", model_spec=f"hf:{model_dir}", seq_len=40)
    with pytest.raises(UserInputError, match="exceeds the 32 positions"):
        load_hf_model(f"hf:{model_dir}", too_long)
    shakespeare_chars = load_text_data("shakespeare", seq_len=16)  # 80+ characters
    with pytest.raises(UserInputError, match="tokenizer"):
        load_hf_model(f"hf:{model_dir}", shakespeare_chars)


def test_folder_without_tokenizer(tmp_path: Path, hf_setup: tuple[Path, Path]) -> None:
    _, text_file = hf_setup
    _save_tiny_gpt2(tmp_path, 30)
    with pytest.raises(UserInputError, match="holds no tokenizer"):
        load_text_data(f"text:{text_file}", model_spec=f"hf:{tmp_path}")


# ------------------------------------------------------------------------------- CLI


def test_cli_spectrum_last_layer_matches_explicit_hessian(
    tmp_path: Path, hf_setup: tuple[Path, Path], hf_data: TextData
) -> None:
    """``hessian-powerlaw spectrum --model hf:DIR --data text:FILE --params last --k 10``: the
    eigenvalues in spectrum.json equal the explicit last-layer Hessian's within 1e-6."""
    from hessian_powerlaw.cli import main

    model_dir, text_file = hf_setup
    out = tmp_path / "out"
    argv = ["spectrum", "--model", f"hf:{model_dir}", "--data", f"text:{text_file}"]
    argv += ["--dtype", "float64"]  # compared with the explicit float64 Hessian
    argv += ["--params", "last", "--k", "10", "--samples", "4", "--tol", "1e-10"]
    argv += ["--no-density", "--trace-matvecs", "0", "--quiet", "--out", str(out)]
    code = main(argv)
    assert code == 0, "the spectrum command failed (see its error line above)"
    record = json.loads((out / "spectrum.json").read_text())
    assert record["num_params"] == hf_data.num_classes * 16
    model = load_hf_model(f"hf:{model_dir}", hf_data).double()
    batches = hf_data.hessian_batches(4, None, 0)  # what the command uses for --samples 4
    H = explicit_hessian_via_grad(model, hf_data.loss, batches, last_layer_names(model))
    exact = torch.linalg.eigvalsh(H).flip(0).numpy()
    got = np.array(record["spectrum"]["eigenvalues"])
    np.testing.assert_allclose(got, exact[:10], rtol=0, atol=1e-6)


def test_cli_spectrum_with_native_parameter_names(
    tmp_path: Path, hf_setup: tuple[Path, Path], hf_data: TextData
) -> None:
    """``--params 'transformer.h.1.mlp.c_proj.*'``: the model's own names, as a user reads them
    in ``model.named_parameters()``; the eigenvalues equal an explicit Hessian of those
    parameters and the JSON names them the same way."""
    from hessian_powerlaw.cli import main

    model_dir, text_file = hf_setup
    native = transformers.AutoModelForCausalLM.from_pretrained(str(model_dir))
    pattern = "transformer.h.1.mlp.c_proj.*"
    expected_names = [n for n, _ in native.named_parameters() if n.startswith(pattern[:-1])]
    assert expected_names == [f"transformer.h.1.mlp.c_proj.{p}" for p in ("weight", "bias")]
    out = tmp_path / "out"
    argv = ["spectrum", "--model", f"hf:{model_dir}", "--data", f"text:{text_file}"]
    argv += ["--dtype", "float64"]  # compared with the explicit float64 Hessian
    argv += ["--params", pattern, "--k", "8", "--samples", "4", "--tol", "1e-10"]
    argv += ["--no-density", "--trace-matvecs", "0", "--n-boot", "0", "--quiet"]
    argv += ["--out", str(out)]
    assert main(argv) == 0, "the spectrum command failed (see its error line above)"
    record = json.loads((out / "spectrum.json").read_text())
    assert record["params"] == pattern
    assert record["num_params"] == 64 * 16 + 16
    model = load_hf_model(f"hf:{model_dir}", hf_data).double()
    assert [n for n, _ in model.named_parameters()] == [n for n, _ in native.named_parameters()]
    H = explicit_hessian_via_grad(model, hf_data.loss, hf_data.hessian_batches(4, None, 0),
                                  expected_names)  # fmt: skip
    exact = torch.linalg.eigvalsh(H).flip(0).numpy()
    np.testing.assert_allclose(record["spectrum"]["eigenvalues"], exact[:8], rtol=1e-8, atol=0)


def test_pattern_that_matches_nothing_lists_native_names(
    hf_setup: tuple[Path, Path], hf_data: TextData
) -> None:
    model_dir, _ = hf_setup
    model = load_hf_model(f"hf:{model_dir}", hf_data)
    batches = hf_data.hessian_batches(num_samples=2)
    with pytest.raises(UserInputError) as info:
        HessianOperator(model, hf_data.loss, batches, params="transformer.h.7.*")
    message = str(info.value)
    assert "\n" not in message and "model.transformer" not in message
    assert "transformer.h.{0-1}.mlp.c_proj.weight" in message  # blocks collapsed
    # the old prefixed form is answered with the native pattern to use instead
    with pytest.raises(UserInputError, match=r"did you mean 'transformer\.h\.1\.\*'"):
        HessianOperator(model, hf_data.loss, batches, params="model.transformer.h.1.*")


def test_wrapper_shares_the_models_tree_and_old_checkpoints_load(
    tmp_path: Path, hf_setup: tuple[Path, Path], hf_data: TextData
) -> None:
    """The wrapper's state dict is the Hugging Face model's; a checkpoint written by an older
    version (every key prefixed with ``model.``) still loads; modes reach the inner model."""
    from hessian_powerlaw.training import load_weights

    model_dir, _ = hf_setup
    model = load_hf_model(f"hf:{model_dir}", hf_data)
    assert list(model.state_dict()) == list(model.hf_model.state_dict())
    model.train()
    assert model.hf_model.training and model.transformer.h[0].training
    model.eval()
    assert not model.hf_model.training
    old = {f"model.{k}": v.clone() + 1.0 for k, v in model.state_dict().items()}
    torch.save({"model": old}, tmp_path / "old.pt")
    fresh = load_hf_model(f"hf:{model_dir}", hf_data)
    load_weights(fresh, tmp_path / "old.pt")
    for name, value in fresh.state_dict().items():
        torch.testing.assert_close(value, old[f"model.{name}"], rtol=0, atol=0)


# ------------------------------------------------------------------------------- code in a folder


def _save_folder_with_code(folder: Path, sentinel: Path) -> None:
    """A model folder whose config asks transformers to import its own ``evil.py``, which
    writes ``sentinel`` when imported: the file appearing means the folder's code ran."""
    folder.mkdir(parents=True)
    config = {
        "model_type": "evil-gpt",
        "auto_map": {"AutoConfig": "evil.EvilConfig", "AutoModelForCausalLM": "evil.EvilModel"},
    }
    (folder / "config.json").write_text(json.dumps(config), encoding="utf-8")
    (folder / "evil.py").write_text(
        f"from pathlib import Path\nPath({str(sentinel)!r}).write_text('ran')\n"
        "from transformers import GPT2Config as EvilConfig, GPT2LMHeadModel as EvilModel\n",
        encoding="utf-8",
    )


def test_folder_with_auto_map_is_refused_before_loading(tmp_path: Path) -> None:
    sentinel = tmp_path / "code-ran.txt"
    folder = tmp_path / "evil"
    _save_folder_with_code(folder, sentinel)
    with pytest.raises(UserInputError, match=r"refusing .*auto_map.*never runs code"):
        load_hf_model(f"hf:{folder}")
    with pytest.raises(UserInputError, match="auto_map"):
        load_text_data("shakespeare", model_spec=f"hf:{folder}")
    assert not sentinel.exists()
    # an auto_map in the tokenizer's config is refused the same way
    tok_folder = tmp_path / "evil-tokenizer"
    _save_tiny_gpt2(tok_folder, 30)
    (tok_folder / "tokenizer_config.json").write_text(
        json.dumps({"auto_map": {"AutoTokenizer": ["evil.Tok", None]}}), encoding="utf-8"
    )
    with pytest.raises(UserInputError, match=r"tokenizer_config.json asks to run Python code"):
        load_text_data("shakespeare", model_spec=f"hf:{tok_folder}")


def test_cli_never_prompts_and_never_runs_folder_code(tmp_path: Path) -> None:
    """The issue's reproduction: 'y' on stdin used to let transformers run the folder's code."""
    import os
    import subprocess

    sentinel = tmp_path / "code-ran.txt"
    folder = tmp_path / "evil"
    _save_folder_with_code(folder, sentinel)
    argv = [sys.executable, "-m", "hessian_powerlaw", "spectrum", "--model", f"hf:{folder}"]
    argv += ["--data", "shakespeare", "--k", "2", "--quiet", "--out", str(tmp_path / "out")]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    done = subprocess.run(
        argv, input="y\ny\n", capture_output=True, text=True, timeout=120, env=env
    )
    assert done.returncode == 2
    assert "[y/N]" not in done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "auto_map" in lines[0], done.stderr
    assert not sentinel.exists()
    assert not (tmp_path / "out").exists()


def test_unknown_model_type_is_refused(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "my-own-gpt"}))
    with pytest.raises(UserInputError, match=r"model_type 'my-own-gpt'.*does not know"):
        load_hf_model(f"hf:{tmp_path}")


class _TouchOnLoad:
    """Pickles to a call that creates a file: what a malicious pytorch_model.bin could hold."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple:
        return (Path.touch, (self.path,))


def test_pickled_weights_beyond_tensors_give_one_line(tmp_path: Path) -> None:
    folder = tmp_path / "pickled"
    _save_tiny_gpt2(folder, 30)
    model = transformers.GPT2LMHeadModel.from_pretrained(str(folder))
    for file in folder.glob("*.safetensors"):
        file.unlink()
    state = dict(model.state_dict())
    sentinel = tmp_path / "unpickled.txt"
    state["extra"] = _TouchOnLoad(sentinel)
    torch.save(state, folder / "pytorch_model.bin")
    with pytest.raises(UserInputError, match=r"refusing the weights .*pickled objects") as info:
        load_hf_model(f"hf:{folder}")
    assert "\n" not in str(info.value)
    assert not sentinel.exists()
