"""``chargpt:LxD[:H]``: a small nanoGPT-style decoder for character-level language modelling.

The network maps token ids ``idx[B, T]`` to next-token logits ``[B, T, V]``:

    h_0 = E[idx] + P[0:T]                                  token + position embeddings
    h_l = h_{l-1} + Attn_l(LN(h_{l-1}));  h_l += MLP_l(LN(h_l))      L pre-LayerNorm blocks
    logits = LN_f(h_L) W_head^T                            final LayerNorm and LM head

Causal self-attention is written out as plain matrix products and a masked softmax,

    A = softmax((Q K^T) / sqrt(d_head) + M),   M_ij = -inf for j > i,   out = A V,

so that every operation has a second derivative in autograd (fused attention kernels such as
``scaled_dot_product_attention`` may lack double backward). The MLP uses the exact (erf) GELU.

Parameter names are short and stable so that globs such as ``blocks.3.*`` or ``*.attn.*``
select what one expects: ``tok_emb``, ``pos_emb``, ``blocks.<i>.{ln_1,attn.qkv,attn.proj,
ln_2,mlp.fc,mlp.proj}``, ``ln_f`` and ``head``.

Weight tying (sharing ``tok_emb.weight`` with ``head.weight``, as nanoGPT does) is off by
default: the LM head is then its own parameter, and the paper's "last-layer Hessian" is the
Hessian with respect to ``head.weight`` alone. With ``tie_weights=True`` the shared matrix is
one parameter that appears under its first name, ``tok_emb.weight``; its Hessian then
includes the curvature of both uses (see :func:`hessian_powerlaw.zoo.blocks.last_layer_names`).
"""

from __future__ import annotations

import math
import re

import torch
from torch import nn
from torch.nn import functional as F

from hessian_powerlaw.errors import UserInputError
from hessian_powerlaw.protocols import DataBundle

_SPEC = re.compile(r"^chargpt:(\d+)x(\d+)(?::(\d+))?$")


def default_heads(width: int) -> int:
    """Heads of 64 dimensions as in GPT-2 (d = 384 gives the paper's 6 heads), at least one.

    When ``width // 64`` does not divide the width, the largest smaller head count that does
    is used, so that the default is always valid.
    """
    heads = max(1, width // 64)
    while width % heads:
        heads -= 1
    return heads


def parse_chargpt_spec(spec: str) -> tuple[int, int, int]:
    """``"chargpt:LxD[:H]"`` -> ``(L, D, H)``; UserInputError for a malformed spec."""
    match = _SPEC.match(spec.strip())
    if match is None:
        raise UserInputError(
            f"model spec {spec!r} is not of the form chargpt:LxD[:H] "
            "(L blocks, width D, H heads), e.g. chargpt:4x128 or chargpt:6x384:6"
        )
    layers, width = int(match.group(1)), int(match.group(2))
    heads = int(match.group(3)) if match.group(3) else default_heads(width)
    if layers < 1 or width < 1 or heads < 1:
        raise UserInputError(f"model spec {spec!r}: L, D and H must all be at least 1")
    if width % heads:
        raise UserInputError(
            f"model spec {spec!r}: the width D={width} must be divisible by the number of "
            f"heads H={heads}; choose H among the divisors of {width}"
        )
    return layers, width, heads


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention from plain matmuls and a masked softmax."""

    def __init__(self, width: int, heads: int, block_size: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.attn_drop = nn.Dropout(dropout)
        self.resid_drop = nn.Dropout(dropout)
        causal = torch.tril(torch.ones(block_size, block_size, dtype=torch.bool))
        # not persistent: the mask is rebuilt from the shape and never stored in checkpoints
        self.register_buffer("causal", causal, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The module's output."""
        batch, time, width = x.shape
        head_dim = width // self.heads
        q, k, v = self.qkv(x).split(width, dim=2)
        # [B, T, D] -> [B, H, T, d_head]
        q, k, v = (t.view(batch, time, self.heads, head_dim).transpose(1, 2) for t in (q, k, v))
        scores = (q @ k.transpose(-2, -1)) / math.sqrt(head_dim)
        scores = scores.masked_fill(~self.causal[:time, :time], float("-inf"))
        weights = self.attn_drop(F.softmax(scores, dim=-1))
        out = (weights @ v).transpose(1, 2).reshape(batch, time, width)
        return self.resid_drop(self.proj(out))


class MLP(nn.Module):
    """Position-wise ``proj(GELU(fc(x)))`` with a 4x hidden width."""

    def __init__(self, width: int, dropout: float) -> None:
        super().__init__()
        self.fc = nn.Linear(width, 4 * width)
        self.proj = nn.Linear(4 * width, width)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The module's output."""
        return self.drop(self.proj(F.gelu(self.fc(x))))


class Block(nn.Module):
    """One pre-LayerNorm transformer block: ``x + attn(ln_1(x))``, then ``x + mlp(ln_2(x))``."""

    def __init__(self, width: int, heads: int, block_size: int, dropout: float) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(width)
        self.attn = CausalSelfAttention(width, heads, block_size, dropout)
        self.ln_2 = nn.LayerNorm(width)
        self.mlp = MLP(width, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The module's output."""
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class CharGPT(nn.Module):
    """A nanoGPT-style decoder: ``forward(idx[B, T]) -> logits[B, T, vocab_size]``.

    ``T`` may be anything up to ``block_size``. Initialisation follows GPT-2/nanoGPT: normal
    weights with standard deviation 0.02, residual output projections scaled by
    ``1 / sqrt(2 L)``, zero biases, unit LayerNorm gains.
    """

    def __init__(
        self,
        vocab_size: int,
        block_size: int,
        layers: int,
        width: int,
        heads: int,
        dropout: float = 0.0,
        tie_weights: bool = False,
    ) -> None:
        super().__init__()
        self.vocab_size = vocab_size
        self.block_size = block_size
        self.tok_emb = nn.Embedding(vocab_size, width)
        self.pos_emb = nn.Embedding(block_size, width)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(Block(width, heads, block_size, dropout) for _ in range(layers))
        self.ln_f = nn.LayerNorm(width)
        self.head = nn.Linear(width, vocab_size, bias=False)
        self.tie_weights = tie_weights
        self._init_weights(layers)
        if tie_weights:
            self.head.weight = self.tok_emb.weight

    def _init_weights(self, layers: int) -> None:
        for name, module in self.named_modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                # residual projections get a smaller scale so the residual stream's variance
                # does not grow with depth (GPT-2)
                std = 0.02 / math.sqrt(2 * layers) if name.endswith(".proj") else 0.02
                nn.init.normal_(module.weight, mean=0.0, std=std)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)

    def get_output_embeddings(self) -> nn.Linear:
        """The LM head (same accessor name as Hugging Face models)."""
        return self.head

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        """The module's output."""
        time = idx.shape[1]
        if time > self.block_size:
            raise UserInputError(
                f"sequence length {time} exceeds the model's block size {self.block_size}; "
                "use shorter sequences or build the model for the data's sequence length"
            )
        positions = torch.arange(time, device=idx.device)
        x = self.drop(self.tok_emb(idx) + self.pos_emb(positions))
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln_f(x))


def _data_dims(data: DataBundle) -> tuple[int, int]:
    """(vocabulary size, sequence length) of a text data bundle, validated."""
    if getattr(data, "kind", None) != "text":
        raise UserInputError(
            "chargpt models need text data (e.g. --data shakespeare or --data text:FILE), "
            f"got data of kind {getattr(data, 'kind', None)!r}"
        )
    (seq_len,) = tuple(data.input_shape)
    return int(data.num_classes), int(seq_len)


def build_chargpt(
    spec: str, data: DataBundle, seed: int = 0, *, dropout: float = 0.0, tie_weights: bool = False
) -> CharGPT:
    """Build ``chargpt:LxD[:H]`` for a text bundle.

    Build ``chargpt:LxD[:H]`` for a text bundle: vocabulary = ``data.num_classes``,
    block size = the data's sequence length ``data.input_shape[0]``.

    The weights depend only on ``seed`` (the global RNG state is left untouched).
    """
    layers, width, heads = parse_chargpt_spec(spec)
    vocab_size, block_size = _data_dims(data)
    if not 0.0 <= dropout < 1.0:
        raise UserInputError(f"dropout must be in [0, 1), got {dropout}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return CharGPT(vocab_size, block_size, layers, width, heads, dropout, tie_weights)
