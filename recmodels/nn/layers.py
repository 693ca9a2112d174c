"""Transformer layers for next-item models, swappable through their configs.

Histories are left-padded (0 = padding, most recent item last). Dropout on the
attention weights is its own knob (``attention_dropout``, default 0): on a CPU it
costs a mask the size of the attention matrix per layer. Attention is
causal through an additive float mask buffer (a boolean ``tril`` mask breaks
ONNX Runtime); each position may always attend to itself, so rows that are all
padding never turn into NaN.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from recmodels.config import PartConfig


def causal_mask(max_len: int) -> torch.Tensor:
    """``[max_len, max_len]`` additive mask: 0 where key <= query, -inf after."""
    return torch.full((max_len, max_len), float("-inf")).triu(diagonal=1)


def attention_mask(causal: torch.Tensor, padding: torch.Tensor) -> torch.Tensor:
    """``[B, 1, L, L]`` additive mask: causal, padded keys hidden, the diagonal always open."""
    length = padding.shape[1]
    blocked = torch.zeros_like(padding, dtype=causal.dtype).masked_fill(padding, float("-inf"))
    mask = causal[:length, :length].unsqueeze(0) + blocked[:, None, :]
    diagonal = torch.eye(length, dtype=torch.bool, device=mask.device)
    return mask.masked_fill(diagonal, 0.0).unsqueeze(1)


class SelfAttention(nn.Module):
    """Multi-head attention through ``scaled_dot_product_attention`` (fused kernels on CPU and CUDA)."""

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not divisible by heads {heads}")
        self.heads = heads
        self.dropout = dropout
        self.query = nn.Linear(dim, dim)
        self.key_value = nn.Linear(dim, 2 * dim)
        self.output = nn.Linear(dim, dim)

    def forward(self, queries: torch.Tensor, keys: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        batch, length, dim = queries.shape
        split = (batch, length, self.heads, dim // self.heads)
        q = self.query(queries).view(split).transpose(1, 2)
        k, v = self.key_value(keys).view(batch, length, 2, self.heads, dim // self.heads).unbind(2)
        attended = F.scaled_dot_product_attention(
            q, k.transpose(1, 2), v.transpose(1, 2), attn_mask=mask, dropout_p=self.dropout if self.training else 0.0
        )
        return self.output(attended.transpose(1, 2).reshape(batch, length, dim))


class TransformerBlock(nn.Module, ABC):
    @abstractmethod
    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor: ...


class SASRecBlock(TransformerBlock):
    """The original SASRec block (Kang & McAuley, 2018), as in the authors' code.

    Queries are layer-normalised, keys and values are not; the residual runs from
    the normalised queries; a ReLU point-wise feed-forward with its own residual.
    """

    def __init__(self, dim: int, heads: int, dropout: float, attention_dropout: float, ff_mult: int) -> None:
        super().__init__()
        self.attention_norm = nn.LayerNorm(dim, eps=1e-8)
        self.attention = SelfAttention(dim, heads, attention_dropout)
        self.output_dropout = nn.Dropout(dropout)
        self.feed_forward_norm = nn.LayerNorm(dim, eps=1e-8)
        self.feed_forward = nn.Sequential(
            nn.Linear(dim, ff_mult * dim), nn.ReLU(), nn.Dropout(dropout), nn.Linear(ff_mult * dim, dim), nn.Dropout(dropout)
        )

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        queries = self.attention_norm(x)
        h = queries + self.output_dropout(self.attention(queries, x, mask))
        h = self.feed_forward_norm(h)
        return h + self.feed_forward(h)


class SwiGLU(nn.Module):
    """``W2 Dropout(silu(W1 x) * W3 x)`` without biases (dropout on the hidden units, as in the ReLU feed-forward)."""

    def __init__(self, dim: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.gate_and_value = nn.Linear(dim, 2 * hidden, bias=False)
        self.hidden_dropout = nn.Dropout(dropout)
        self.down = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, value = self.gate_and_value(x).chunk(2, dim=-1)
        return self.down(self.hidden_dropout(F.silu(gate) * value))


class LiGRBlock(TransformerBlock):
    """LiGR block (eSASRec): pre-LayerNorm with sigmoid-gated residuals.

    ``h = x + sigmoid(Wg1 x) * Dropout(MHA(LN1(x)))``,
    ``y = h + sigmoid(Wg2 h) * Dropout(SwiGLU(LN2(h)))``; the gates read the
    un-normalised input, so a block can learn to pass its input through.
    """

    def __init__(self, dim: int, heads: int, dropout: float, attention_dropout: float, ff_mult: int) -> None:
        super().__init__()
        self.attention_norm = nn.LayerNorm(dim)
        self.attention = SelfAttention(dim, heads, attention_dropout)
        self.attention_gate = nn.Linear(dim, dim)
        self.feed_forward_norm = nn.LayerNorm(dim)
        self.feed_forward = SwiGLU(dim, ff_mult * dim, dropout)
        self.feed_forward_gate = nn.Linear(dim, dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        normed = self.attention_norm(x)
        h = x + torch.sigmoid(self.attention_gate(x)) * self.dropout(self.attention(normed, normed, mask))
        update = self.dropout(self.feed_forward(self.feed_forward_norm(h)))
        return h + torch.sigmoid(self.feed_forward_gate(h)) * update


@dataclass(frozen=True)
class SASRecBlockConfig(PartConfig):
    """The SASRec authors' stack ends with a LayerNorm (``final_norm``)."""

    kind = "sasrec_block"
    final_norm: bool = True

    def build(self, dim: int, heads: int, dropout: float, attention_dropout: float, ff_mult: int) -> TransformerBlock:
        return SASRecBlock(dim, heads, dropout, attention_dropout, ff_mult)


@dataclass(frozen=True)
class LiGRBlockConfig(PartConfig):
    """The eSASRec authors' LiGR stack (RecTools ``LiGRLayers``) has no final LayerNorm."""

    kind = "ligr_block"
    final_norm: bool = False

    def build(self, dim: int, heads: int, dropout: float, attention_dropout: float, ff_mult: int) -> TransformerBlock:
        return LiGRBlock(dim, heads, dropout, attention_dropout, ff_mult)


@dataclass(frozen=True)
class BackboneConfig:
    dim: int = 64
    blocks: int = 2
    heads: int = 1
    max_len: int = 200
    dropout: float = 0.2
    attention_dropout: float = 0.0
    # Dropout on the item embedding table while training, one mask per batch shared by the
    # input lookup and the output scores (RecTools' item net, the eSASRec authors' code).
    item_dropout: float = 0.0
    ff_mult: int = 4
    block: SASRecBlockConfig | LiGRBlockConfig = SASRecBlockConfig()
    # How the stack starts. SASRec's authors scale item embeddings by sqrt(d); RecTools
    # (the eSASRec authors' code) does not, and draws every matrix, embeddings included,
    # from Xavier-normal. A LiGR stack has no normalisation on its residual stream, so
    # the raw embedding scale reaches the output: it trains differently under each.
    scale_embeddings: bool = True
    xavier_init: bool = False


class SequenceBackbone(nn.Module):
    """Item + position embeddings, a stack of blocks, a final LayerNorm if the block asks: ``[B, L] -> [B, L, d]``.

    Positions count from the most recent item, so a history scores the same
    however much padding its batch carries.
    """

    def __init__(self, n_items: int, config: BackboneConfig) -> None:
        super().__init__()
        self.config = config
        self.item_embeddings = nn.Embedding(n_items + 1, config.dim, padding_idx=0)
        self.position_embeddings = nn.Embedding(config.max_len, config.dim)
        self.embedding_dropout = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(
            config.block.build(config.dim, config.heads, config.dropout, config.attention_dropout, config.ff_mult)
            for _ in range(config.blocks)
        )
        self.final_norm = nn.LayerNorm(config.dim) if config.block.final_norm else nn.Identity()
        self.register_buffer("causal", causal_mask(config.max_len), persistent=False)
        self.scale = math.sqrt(config.dim) if config.scale_embeddings else 1.0
        if config.xavier_init:
            for parameter in self.parameters():
                if parameter.dim() > 1:
                    nn.init.xavier_normal_(parameter)
        else:
            nn.init.normal_(self.item_embeddings.weight, std=config.dim**-0.5)
        with torch.no_grad():
            self.item_embeddings.weight[0].zero_()

    def catalogue(self) -> torch.Tensor:
        """The item table one batch reads and scores against: dropped out while training."""
        return F.dropout(self.item_embeddings.weight, self.config.item_dropout, self.training)

    def forward(self, items: torch.Tensor, catalogue: torch.Tensor | None = None) -> torch.Tensor:
        """``catalogue`` is the batch's table from ``catalogue()``; the raw table when omitted."""
        items = items[:, -self.config.max_len :]
        length = items.shape[1]
        padding = items == 0
        positions = torch.arange(self.config.max_len - length, self.config.max_len, device=items.device)
        table = self.item_embeddings.weight if catalogue is None else catalogue
        x = F.embedding(items, table, padding_idx=0) * self.scale + self.position_embeddings(positions)
        keep = (~padding).unsqueeze(-1).to(x.dtype)
        x = self.embedding_dropout(x) * keep
        mask = attention_mask(self.causal, padding)
        for block in self.blocks:
            x = block(x, mask) * keep
        return self.final_norm(x)
