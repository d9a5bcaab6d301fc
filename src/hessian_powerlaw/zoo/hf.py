"""``hf:PATH``: Hugging Face causal language models and tokenizers from a local folder.

Loading is offline (``local_files_only=True``) and never runs code shipped with a model:
``trust_remote_code=False`` is passed to every loader, and a folder that asks for its own code
(an ``auto_map`` in ``config.json`` or ``tokenizer_config.json``, or a ``model_type`` that
``transformers`` does not know) is refused before anything is loaded, so transformers never
prompts. Weights load through safetensors or a weights-only ``torch.load``.

Attention is forced to the ``"eager"`` implementation: plain matmuls and a softmax, which
autograd can differentiate twice. Fused kernels (SDPA, FlashAttention) may lack double
backward, and a Hessian-vector product needs it.

``transformers`` is an optional dependency (the ``[llm]`` extra); every entry point here
raises one clear :class:`UserInputError` naming the extra when it is missing.
"""

from __future__ import annotations

import contextlib
import json
import pickle
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import nn

from hessian_powerlaw.errors import UserInputError

LLM_EXTRA_HINT = "pip install 'hessian-powerlaw[llm]'"

# files of which a saved Hugging Face tokenizer has at least one
_TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.json",
    "vocab.txt",
    "tokenizer.model",
    "spiece.model",
)


def require_transformers() -> ModuleType:
    """Import ``transformers`` or say how to install it."""
    try:
        import transformers
    except ImportError:
        raise UserInputError(
            "hf:PATH models and tokenizers need the optional package 'transformers'; "
            f"install it with: {LLM_EXTRA_HINT}"
        ) from None
    return transformers


def hf_folder(spec_or_path: str | Path) -> Path:
    """``"hf:DIR"`` or ``DIR`` -> the folder, checked to hold a Hugging Face ``config.json``."""
    text = str(spec_or_path)
    path = Path(text[3:] if text.startswith("hf:") else text).expanduser()
    if not path.is_dir():
        raise UserInputError(
            f"hf:PATH model folder {str(path)!r} does not exist; give a local folder written "
            "by save_pretrained (nothing is downloaded)"
        )
    if not (path / "config.json").is_file():
        raise UserInputError(
            f"folder {str(path)!r} is not a Hugging Face model: it has no config.json "
            "(save one with model.save_pretrained(DIR))"
        )
    _refuse_custom_code(path)
    return path


# files whose "auto_map" makes transformers import Python code from the folder
_CODE_MAP_FILES = ("config.json", "tokenizer_config.json", "processor_config.json")


def _read_json_object(file: Path) -> dict[str, Any]:
    try:
        value = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UserInputError(f"cannot read {str(file)!r}: {_first_line(exc)}") from None
    if not isinstance(value, dict):
        raise UserInputError(f"{str(file)!r} is not a JSON object")
    return value


def _refuse_custom_code(path: Path) -> None:
    """Refuse a folder that would make transformers import Python code shipped with it.

    Such code runs with the user's rights the moment the model or tokenizer is built, and
    transformers would otherwise ask on stdin whether to run it. We never do: a user who
    trusts the code loads the model themselves and passes it as ``module:attr``.
    """
    for name in _CODE_MAP_FILES:
        file = path / name
        if file.is_file() and "auto_map" in _read_json_object(file):
            raise UserInputError(
                f"refusing {str(path)!r}: its {name} asks to run Python code shipped with the "
                "model (auto_map), and hessian-powerlaw never runs code that comes with data; "
                "if you trust that code, build the model yourself and pass it as module:attr"
            )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


@contextlib.contextmanager
def _quiet_transformers(transformers: ModuleType) -> Iterator[None]:
    """No "Loading weights" bars from transformers: the tool shows its own progress."""
    hf_logging = transformers.utils.logging
    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def load_tokenizer(spec_or_path: str | Path) -> Any:
    """The tokenizer saved in an ``hf:PATH`` folder (``AutoTokenizer``, offline)."""
    path = hf_folder(spec_or_path)
    transformers = require_transformers()
    # without these files recent transformers versions build an empty tokenizer from the
    # model config alone, which would silently encode every text to nothing
    if not any((path / name).is_file() for name in _TOKENIZER_FILES):
        raise UserInputError(
            f"folder {str(path)!r} holds no tokenizer (none of {', '.join(_TOKENIZER_FILES)}); "
            "save one there with tokenizer.save_pretrained(DIR)"
        )
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(
            str(path), local_files_only=True, trust_remote_code=False
        )
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UserInputError(
            f"cannot load a tokenizer from {str(path)!r}: {_first_line(exc)}; save one there "
            "with tokenizer.save_pretrained(DIR)"
        ) from None
    if len(tokenizer) == 0:
        raise UserInputError(f"the tokenizer in {str(path)!r} has an empty vocabulary")
    return tokenizer


class HFCausalLM(nn.Module):
    """A Hugging Face causal LM as ``forward(idx[B, T]) -> logits[B, T, V]``.

    A Hugging Face causal LM seen as ``forward(idx[B, T]) -> logits[B, T, V]``, under the
    model's own parameter names.

    The wrapper *shares* the wrapped model's submodules, parameters and buffers (the very same
    dictionaries, not copies), so ``named_parameters()``, ``state_dict()``, ``--params`` globs,
    ``last``, per-block labels and every JSON output use the names a user knows from their
    model: ``transformer.h.0.attn.c_attn.weight`` for GPT-2,
    ``model.layers.0.self_attn.q_proj.weight`` for LLaMA-style models. The wrapped model itself
    is kept outside the module tree (:attr:`hf_model`); registered as a child it would put a
    ``model.`` prefix in front of every name. Checkpoints written by older versions, which had
    that prefix, still load (``training.load_weights`` strips it).
    """

    hf_model: nn.Module

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        # not a registered child (see the class docstring); object.__setattr__ bypasses
        # nn.Module's registration
        object.__setattr__(self, "hf_model", model)
        for name in ("_modules", "_parameters", "_buffers", "_non_persistent_buffers_set"):
            object.__setattr__(self, name, getattr(model, name))

    def train(self, mode: bool = True) -> HFCausalLM:
        """Switch train/eval mode, the wrapped model's own flag included.

        Switch the shared modules and the wrapped model's own flag, which Hugging Face code
        reads at the top level (``self.training``) and which is not in the shared tree.
        """
        super().train(mode)
        self.hf_model.training = mode
        return self

    @property
    def config(self) -> Any:
        """The wrapped model's configuration."""
        return self.hf_model.config

    def get_output_embeddings(self) -> nn.Module:
        """The LM head (possibly tied to the input embedding)."""
        return self.hf_model.get_output_embeddings()

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        """Logits ``[B, T, V]`` of token ids ``[B, T]``."""
        return self.hf_model(input_ids=idx, use_cache=False).logits


_CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "n_ctx")


def _max_positions(config: Any) -> int | None:
    for key in _CONTEXT_KEYS:
        value = getattr(config, key, None)
        if isinstance(value, int):
            return value
    return None


def context_length(spec_or_path: str | Path) -> int | None:
    """The model's maximum sequence length from its ``config.json``.

    The model's maximum sequence length from its ``config.json`` (no transformers needed);
    None when the config does not say.
    """
    config = _read_json_object(hf_folder(spec_or_path) / "config.json")
    for key in _CONTEXT_KEYS:
        if isinstance(config.get(key), int):
            return int(config[key])
    return None


def _check_against_data(model: HFCausalLM, data: Any, path: Path) -> None:
    """The data's vocabulary and sequence length must fit the model."""
    head = model.get_output_embeddings()
    model_vocab = getattr(head, "out_features", None) or getattr(model.config, "vocab_size", None)
    if model_vocab is not None and int(data.num_classes) > int(model_vocab):
        raise UserInputError(
            f"the data has {data.num_classes} token ids but the model in {str(path)!r} "
            f"predicts only {model_vocab}; encode the data with this model's tokenizer "
            f"(load it with model_spec='hf:{path}')"
        )
    seq_len = int(tuple(data.input_shape)[0])
    limit = _max_positions(model.config)
    if limit is not None and seq_len > limit:
        raise UserInputError(
            f"sequence length {seq_len} exceeds the {limit} positions of the model in "
            f"{str(path)!r}; choose a sequence length of at most {limit}"
        )


def _check_model_type(path: Path, transformers: ModuleType) -> None:
    """A ``model_type`` transformers does not know could only be built from shipped code."""
    model_type = _read_json_object(path / "config.json").get("model_type")
    if not isinstance(model_type, str):
        raise UserInputError(
            f"cannot load a causal language model from {str(path)!r}: its config.json names "
            "no model_type (save the model with save_pretrained(DIR))"
        )
    if model_type not in transformers.models.auto.configuration_auto.CONFIG_MAPPING:
        raise UserInputError(
            f"refusing {str(path)!r}: its config.json has model_type {model_type!r}, which "
            f"transformers {transformers.__version__} does not know; such a model needs code "
            "shipped with it, which hessian-powerlaw never runs"
        )


def load_hf_model(spec_or_path: str | Path, data: Any = None) -> HFCausalLM:
    """Load ``AutoModelForCausalLM`` from a local folder with eager attention.

    ``data`` (a text bundle, optional) is checked against the model: its token ids must be
    below the model's vocabulary size and its sequences no longer than the model's context.
    Raises UserInputError when ``transformers`` is missing, the folder is not a Hugging Face
    causal LM, or the model cannot run eager attention (and so cannot give second
    derivatives).
    """
    path = hf_folder(spec_or_path)
    transformers = require_transformers()
    _check_model_type(path, transformers)
    try:
        with _quiet_transformers(transformers):
            hf_model = transformers.AutoModelForCausalLM.from_pretrained(
                str(path),
                local_files_only=True,
                trust_remote_code=False,
                attn_implementation="eager",
            )
    except pickle.UnpicklingError:
        # transformers loads *.bin weights with torch.load(weights_only=True): a pickle that
        # holds more than tensors is refused there, and we say so in one line
        raise UserInputError(
            f"refusing the weights in {str(path)!r}: pytorch_model.bin holds pickled objects "
            "beyond tensors, which could run code when loaded; save the model with "
            "save_pretrained(DIR, safe_serialization=True) to write safetensors"
        ) from None
    except (OSError, ValueError, KeyError, TypeError, RuntimeError) as exc:
        raise UserInputError(
            f"cannot load a causal language model from {str(path)!r}: {_first_line(exc)}"
        ) from None
    attention = getattr(hf_model.config, "_attn_implementation", "eager")
    if attention != "eager":
        raise UserInputError(
            f"the model in {str(path)!r} runs attention with {attention!r}, which may have no "
            "second derivatives; its Hessian cannot be computed reliably"
        )
    model = HFCausalLM(hf_model)
    model.eval()
    if data is not None:
        _check_against_data(model, data, path)
    return model
