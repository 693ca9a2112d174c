"""Transformer layers for next-item models, swappable through their configs.

Histories are left-padded (0 = padding, most recent item last). Dropout on the
attention weights is its own knob (``attention_dropout``, default 0): on a CPU it
costs a mask the size of the attention matrix per layer. Attention is
causal through an additive float mask buffer (a boolean ``tril`` mask breaks
ONNX Runtime); each position may always attend to itself, so rows that are all
padding never turn into NaN.

Blocks read and write a ``[tokens, d]`` stream and see the ``[B, L]`` grid only
through a ``TokenLayout``: every position-wise step (projections, feed-forward,
norms, gates, dropout) is per token, only attention needs the grid.
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


@dataclass(frozen=True)
class AttentionGrid:
    """Some of a batch's sequences on a grid cut to the longest of them; attention runs per grid."""

    batch: int
    length: int
    mask: torch.Tensor  # [batch, 1, length, length] additive attention mask
    slots: torch.Tensor | None  # each of the grid's stream tokens' flat index in it; None: every slot
    empty_slots: torch.Tensor  # [batch] slots of each sequence's max_len window its items leave empty


@dataclass(frozen=True)
class TokenLayout:
    """Where a batch's token stream sits in its left-padded ``[B, L]`` grid.

    Packed, the stream holds the real tokens only, and attention runs on a few grids of
    sequences of similar length: batches of randomly mixed users are about half padding
    on ML-1M, and training need not compute it (attention on 8 grids of 16 ML-1M users
    costs half as much as on one grid of 128). Unpacked, the stream is every slot of one
    grid (a free reshape; inference and ONNX export use it, as packing has a
    data-dependent size).
    """

    batch: int
    length: int
    grids: tuple[AttentionGrid, ...]
    rows: torch.Tensor | None  # packed: each stream token's flat index in the [B, L] grid
    sizes: tuple[int, ...]  # stream tokens per attention grid, in stream order

    @classmethod
    def of(cls, padding: torch.Tensor, causal: torch.Tensor, pack: bool, attention_grids: int = 8) -> TokenLayout:
        batch, length = padding.shape
        lengths = (~padding).sum(1)
        empty_slots = causal.shape[0] - lengths
        if not pack or padding.all():  # a batch without tokens has nothing to pack
            grid = AttentionGrid(batch, length, attention_mask(causal, padding), None, empty_slots)
            return cls(batch, length, (grid,), None, (batch * length,))
        grids, rows = [], []
        for members in lengths.argsort(stable=True).tensor_split(attention_grids):
            grid_length = int(lengths[members].max()) if len(members) else 0
            if grid_length == 0:
                continue  # sequences without tokens have nothing to attend
            columns = torch.arange(length - grid_length, length, device=padding.device)
            grid_padding = padding[members][:, columns]
            slots = (~grid_padding).flatten().nonzero().squeeze(1)
            grids.append(
                AttentionGrid(
                    len(members), grid_length, attention_mask(causal, grid_padding), slots, empty_slots[members]
                )
            )
            rows.append((members[:, None] * length + columns).flatten()[slots])
        return cls(batch, length, tuple(grids), torch.cat(rows), tuple(len(grid.slots) for grid in grids))

    def to_grid(self, stream: torch.Tensor) -> torch.Tensor:
        """``[tokens, c] -> [B, L, c]``; padded slots of a packed stream are zeros."""
        width = stream.shape[-1]
        if self.rows is None:
            return stream.view(self.batch, self.length, width)
        grid = stream.new_zeros(self.batch * self.length, width).index_copy(0, self.rows, stream)
        return grid.view(self.batch, self.length, width)

    def to_stream(self, grid: torch.Tensor) -> torch.Tensor:
        """``[B, L, c] -> [tokens, c]``."""
        flat = grid.reshape(self.batch * self.length, grid.shape[-1])
        return flat if self.rows is None else flat.index_select(0, self.rows)

    def to_attention_grids(self, stream: torch.Tensor) -> list[torch.Tensor]:
        """``[tokens, c]`` -> one ``[batch, length, c]`` per attention grid."""
        width = stream.shape[-1]
        return [
            (
                part
                if grid.slots is None
                else part.new_zeros(grid.batch * grid.length, width).index_copy(0, grid.slots, part)
            ).view(grid.batch, grid.length, width)
            for grid, part in zip(self.grids, stream.split(self.sizes))
        ]

    def from_attention_grids(self, parts: list[torch.Tensor]) -> torch.Tensor:
        """The inverse of ``to_attention_grids``."""
        flats = [part.reshape(grid.batch * grid.length, part.shape[-1]) for grid, part in zip(self.grids, parts)]
        picked = [
            flat if grid.slots is None else flat.index_select(0, grid.slots) for grid, flat in zip(self.grids, flats)
        ]
        return picked[0] if len(picked) == 1 else torch.cat(picked)


class SelfAttention(nn.Module):
    """Multi-head attention through ``scaled_dot_product_attention`` (fused kernels on CPU and CUDA).

    Projections run on the token stream; only the attention itself runs on grids. ``padding_sink``: every
    query also attends to its window's empty slots, as RecTools' SASRec does without a key padding mask
    (the eSASRec authors' SASRec+SS): their inputs are zeroed, so each is the projections' biases, and the
    slots count as one key whose weight is multiplied by their number.
    """

    def __init__(self, dim: int, heads: int, dropout: float, padding_sink: bool = False) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not divisible by heads {heads}")
        self.heads = heads
        self.dropout = dropout
        self.padding_sink = padding_sink
        self.query = nn.Linear(dim, dim)
        self.key_value = nn.Linear(dim, 2 * dim)
        self.output = nn.Linear(dim, dim)

    def forward(self, queries: torch.Tensor, keys: torch.Tensor, layout: TokenLayout) -> torch.Tensor:
        """``queries``, ``keys``: ``[tokens, d]`` streams -> ``[tokens, d]``."""
        dim, heads = queries.shape[-1], self.heads
        attended = []
        for grid, q, kv in zip(
            layout.grids,
            layout.to_attention_grids(self.query(queries)),
            layout.to_attention_grids(self.key_value(keys)),
        ):
            q = q.view(grid.batch, grid.length, heads, dim // heads).transpose(1, 2)
            k, v = (part.transpose(1, 2) for part in kv.view(grid.batch, grid.length, 2, heads, dim // heads).unbind(2))
            mask = grid.mask
            if self.padding_sink:
                k, v, mask = self._with_padding_sink(k, v, grid)
            out = F.scaled_dot_product_attention(
                q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0
            )
            attended.append(out.transpose(1, 2).reshape(grid.batch, grid.length, dim))
        return self.output(layout.from_attention_grids(attended))

    def xavier_as_rectools(self) -> None:
        """Draw as RecTools does: Xavier-normal over torch's packed ``[3d, d]`` in-projection (so each of
        query, key and value starts narrower than Xavier over its own matrix), the biases zero as torch
        starts ``nn.MultiheadAttention`` (RecTools re-draws matrices only)."""
        dim = self.query.in_features
        packed_std = math.sqrt(2.0 / (dim + 3 * dim))
        nn.init.normal_(self.query.weight, std=packed_std)
        nn.init.normal_(self.key_value.weight, std=packed_std)
        for projection in (self.query, self.key_value, self.output):
            nn.init.zeros_(projection.bias)

    def _with_padding_sink(
        self, k: torch.Tensor, v: torch.Tensor, grid: AttentionGrid
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``k``, ``v`` ``[B, H, L, d_h]`` with the empty slots' key and value first; the mask gives it
        ``log(empty slots)`` (``-inf`` for a full window), the sum of that many identical weights."""
        key_bias, value_bias = self.key_value.bias.view(2, self.heads, 1, k.shape[-1]).unbind(0)
        k = torch.cat([key_bias.expand(grid.batch, -1, -1, -1), k], dim=2)
        v = torch.cat([value_bias.expand(grid.batch, -1, -1, -1), v], dim=2)
        sink = grid.empty_slots.to(grid.mask.dtype).log().view(grid.batch, 1, 1, 1).expand(-1, -1, grid.length, -1)
        return k, v, torch.cat([sink, grid.mask], dim=-1)


class TransformerBlock(nn.Module, ABC):
    @abstractmethod
    def forward(self, x: torch.Tensor, layout: TokenLayout) -> torch.Tensor:
        """``[tokens, d] -> [tokens, d]``."""


class SASRecBlock(TransformerBlock):
    """The original SASRec block (Kang & McAuley, 2018), as in the authors' code.

    Queries are layer-normalised, keys and values are not; the residual runs from
    the normalised queries; a ReLU point-wise feed-forward with its own residual.
    """

    def __init__(
        self,
        dim: int,
        heads: int,
        dropout: float,
        attention_dropout: float,
        ff_mult: int,
        config: SASRecBlockConfig | None = None,
    ) -> None:
        super().__init__()
        config = config or SASRecBlockConfig()
        self.attention_norm = nn.LayerNorm(dim, eps=1e-8)
        self.attention = SelfAttention(dim, heads, attention_dropout, padding_sink=config.attend_to_padding)
        self.output_dropout = nn.Dropout(dropout if config.attention_output_dropout else 0.0)
        self.feed_forward_norm = nn.LayerNorm(dim, eps=1e-8)
        self.feed_forward = nn.Sequential(
            nn.Linear(dim, ff_mult * dim),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(ff_mult * dim, dim),
            nn.Dropout(dropout),
        )

    def forward(self, x: torch.Tensor, layout: TokenLayout) -> torch.Tensor:
        queries = self.attention_norm(x)
        h = queries + self.output_dropout(self.attention(queries, x, layout))
        h = self.feed_forward_norm(h)
        return h + self.feed_forward(h)


class SwiGLU(nn.Module):
    """``W2 Dropout(silu(W1 x) * W3 x)`` without biases (dropout on the hidden units, as in the ReLU feed-forward)."""

    def __init__(self, dim: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.gate_and_value = nn.Linear(dim, 2 * hidden, bias=False)
        self.hidden_dropout = nn.Dropout(dropout)
        self.down = nn.Linear(hidden, dim, bias=False)

    def xavier_as_rectools(self) -> None:
        """Xavier-normal over each half on its own, as RecTools' two ``[hidden, d]`` matrices are drawn."""
        for half in self.gate_and_value.weight.data.chunk(2):
            nn.init.xavier_normal_(half)

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

    def forward(self, x: torch.Tensor, layout: TokenLayout) -> torch.Tensor:
        normed = self.attention_norm(x)
        h = x + torch.sigmoid(self.attention_gate(x)) * self.dropout(self.attention(normed, normed, layout))
        update = self.dropout(self.feed_forward(self.feed_forward_norm(h)))
        return h + torch.sigmoid(self.feed_forward_gate(h)) * update


@dataclass(frozen=True)
class SASRecBlockConfig(PartConfig):
    """The SASRec authors' stack ends with a LayerNorm (``final_norm``).

    RecTools' SASRec layer (the eSASRec authors' SASRec+SS) differs in two ways, each an option:
    it drops out the attention weights but not the attention's output (``attention_output_dropout``
    off), and without a key padding mask its queries also attend to the window's empty slots
    (``attend_to_padding``), which on short histories (Beauty: 8.9 items in a window of 50) take
    much of the attention.
    """

    kind = "sasrec_block"
    final_norm: bool = True
    attention_output_dropout: bool = True
    attend_to_padding: bool = False

    def build(self, dim: int, heads: int, dropout: float, attention_dropout: float, ff_mult: int) -> TransformerBlock:
        return SASRecBlock(dim, heads, dropout, attention_dropout, ff_mult, self)


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
    # With xavier_init: draw as RecTools' parameter shapes would (a packed q/k/v in-projection, SwiGLU's
    # two matrices, attention biases zero); Xavier's spread depends on a matrix's shape, and ours are
    # packed differently. Off keeps the runs the ML-1M figures were measured with.
    xavier_as_rectools: bool = False

    def __post_init__(self) -> None:
        if self.xavier_as_rectools and not self.xavier_init:
            raise ValueError("backbone.xavier_as_rectools draws Xavier-normal: it needs backbone.xavier_init")


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
            if config.xavier_as_rectools:
                for module in self.modules():
                    if isinstance(module, (SelfAttention, SwiGLU)):
                        module.xavier_as_rectools()
        else:
            nn.init.normal_(self.item_embeddings.weight, std=config.dim**-0.5)
        with torch.no_grad():
            self.item_embeddings.weight[0].zero_()

    def catalogue(self) -> torch.Tensor:
        """The item table one batch reads and scores against: dropped out while training."""
        return F.dropout(self.item_embeddings.weight, self.config.item_dropout, self.training)

    def forward(
        self, items: torch.Tensor, catalogue: torch.Tensor | None = None, pack: bool | None = None
    ) -> torch.Tensor:
        """``catalogue`` is the batch's table from ``catalogue()``; the raw table when omitted.

        ``pack`` (default: while training) computes real tokens only; padded positions of
        the output are zeros either way, and real ones do not depend on it.
        """
        items = items[:, -self.config.max_len :]
        table = self.item_embeddings.weight if catalogue is None else catalogue
        return self.contextualise(F.embedding(items, table, padding_idx=0), items == 0, pack)

    def contextualise(self, embedded: torch.Tensor, padding: torch.Tensor, pack: bool | None = None) -> torch.Tensor:
        """The stack over item vectors already looked up, ``[B, L, d]`` with ``padding [B, L]``: for models
        whose input vector of an item is not one row of a table (a fusion of its modalities, per user)."""
        embedded, padding = embedded[:, -self.config.max_len :], padding[:, -self.config.max_len :]
        length = embedded.shape[1]
        layout = TokenLayout.of(padding, self.causal, self.training if pack is None else pack)
        positions = torch.arange(self.config.max_len - length, self.config.max_len, device=embedded.device)
        x = embedded * self.scale + self.position_embeddings(positions)
        x = self.embedding_dropout(layout.to_stream(x))
        for block in self.blocks:
            x = block(x, layout)
        return layout.to_grid(self.final_norm(x)).masked_fill(padding.unsqueeze(-1), 0.0)
