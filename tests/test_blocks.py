"""Per-block parameter groups and the LM-head ("last") parameters of transformer models."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from hessian_powerlaw.errors import UserInputError
from hessian_powerlaw.operators import HessianOperator
from hessian_powerlaw.zoo.blocks import find_blocks, last_layer_names, per_block_groups
from hessian_powerlaw.zoo.gpt import CharGPT
from hessian_powerlaw.zoo.hf import HFCausalLM


def _assert_partition(model: nn.Module, groups: dict[str, list[str]]) -> None:
    """Every trainable parameter in exactly one group, groups in named_parameters order."""
    flat = [name for names in groups.values() for name in names]
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert flat == trainable


def _chargpt(layers: int = 3, tie: bool = False) -> CharGPT:
    torch.manual_seed(0)
    return CharGPT(vocab_size=11, block_size=8, layers=layers, width=16, heads=2, tie_weights=tie)


def test_chargpt_groups() -> None:
    model = _chargpt(3)
    groups = per_block_groups(model)
    assert list(groups) == ["embeddings", "blocks.0", "blocks.1", "blocks.2", "head"]
    assert groups["embeddings"] == ["tok_emb.weight", "pos_emb.weight"]
    assert groups["head"] == ["ln_f.weight", "ln_f.bias", "head.weight"]
    assert all(n.startswith("blocks.1.") for n in groups["blocks.1"])
    assert len(groups["blocks.1"]) == 12
    _assert_partition(model, groups)


def test_tied_chargpt_head_matrix_lives_in_embeddings() -> None:
    model = _chargpt(2, tie=True)
    groups = per_block_groups(model)
    assert groups["head"] == ["ln_f.weight", "ln_f.bias"]
    _assert_partition(model, groups)
    assert last_layer_names(model) == ["tok_emb.weight"]  # the shared matrix, first name


def test_frozen_parameters_are_left_out() -> None:
    model = _chargpt(2)
    for p in model.blocks[0].parameters():
        p.requires_grad_(False)
    model.tok_emb.weight.requires_grad_(False)
    groups = per_block_groups(model)
    assert "blocks.0" not in groups
    assert groups["embeddings"] == ["pos_emb.weight"]
    _assert_partition(model, groups)


def test_groups_feed_the_operator_and_sum_to_the_whole() -> None:
    """The groups are valid ``params`` for HessianOperator and their sizes add up to n."""
    model = _chargpt(2).double()
    x = torch.randint(0, 11, (2, 9), generator=torch.Generator().manual_seed(0))
    batch = (x[:, :-1], x[:, 1:])

    def loss(m: nn.Module, b: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        logits = m(b[0])
        return nn.functional.cross_entropy(logits.reshape(-1, 11), b[1].reshape(-1))

    whole = HessianOperator(model, loss, batch)
    sizes = [
        HessianOperator(model, loss, batch, params=names).n
        for names in per_block_groups(model).values()
    ]
    assert sum(sizes) == whole.n


class _Head(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(4, 4)


class _NestedBlock(nn.Module):
    """A block that holds its own list of 4 identical heads (more items than blocks)."""

    def __init__(self) -> None:
        super().__init__()
        self.heads = nn.ModuleList(_Head() for _ in range(4))
        self.norm = nn.LayerNorm(4)


class _NestedModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(5, 4)
        self.layers = nn.ModuleList(_NestedBlock() for _ in range(2))
        self.out = nn.Linear(4, 5)


def test_outer_list_of_blocks_wins_over_inner_lists() -> None:
    model = _NestedModel()
    name, blocks = find_blocks(model)
    assert name == "layers" and len(blocks) == 2
    groups = per_block_groups(model)
    assert list(groups) == ["embeddings", "layers.0", "layers.1", "head"]  # the model's names
    assert all(n.startswith("layers.1.") for n in groups["layers.1"])
    assert groups["head"] == ["out.weight", "out.bias"]
    _assert_partition(model, groups)


def test_model_without_blocks_is_a_clear_error() -> None:
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
    with pytest.raises(UserInputError, match="repeated blocks"):
        per_block_groups(model)


def test_last_layer_names_fallback_and_operator_agreement() -> None:
    mlp = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
    assert last_layer_names(mlp) == ["2.weight", "2.bias"]
    model = _chargpt(2)
    assert last_layer_names(model) == ["head.weight"]
    batch = (torch.zeros(1, 4, dtype=torch.int64), torch.zeros(1, 4, dtype=torch.int64))

    def loss(m: nn.Module, b: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        return nn.functional.cross_entropy(m(b[0]).reshape(-1, 11), b[1].reshape(-1))

    # the operator's generic "last" selects the same parameters for an untied chargpt
    assert HessianOperator(model, loss, batch, params="last").param_names == ["head.weight"]


def test_hugging_face_gpt2_and_llama_groups() -> None:
    transformers = pytest.importorskip("transformers")
    gpt2 = HFCausalLM(
        transformers.GPT2LMHeadModel(
            transformers.GPT2Config(vocab_size=13, n_positions=8, n_embd=8, n_layer=3, n_head=2)
        )
    )
    groups = per_block_groups(gpt2)
    assert list(groups) == ["embeddings", *(f"transformer.h.{i}" for i in range(3)), "head"]
    assert groups["embeddings"] == ["transformer.wte.weight", "transformer.wpe.weight"]
    assert groups["head"] == ["transformer.ln_f.weight", "transformer.ln_f.bias"]
    assert all(n.startswith("transformer.h.2.") for n in groups["transformer.h.2"])
    _assert_partition(gpt2, groups)
    assert last_layer_names(gpt2) == ["transformer.wte.weight"]  # tied LM head

    llama = HFCausalLM(
        transformers.LlamaForCausalLM(
            transformers.LlamaConfig(
                vocab_size=13,
                hidden_size=8,
                intermediate_size=16,
                num_hidden_layers=2,
                num_attention_heads=2,
                num_key_value_heads=1,
                max_position_embeddings=8,
            )
        )
    )
    groups = per_block_groups(llama)
    assert list(groups) == ["embeddings", "model.layers.0", "model.layers.1", "head"]
    assert groups["head"] == ["model.norm.weight", "lm_head.weight"]
    _assert_partition(llama, groups)
    assert last_layer_names(llama) == ["lm_head.weight"]
