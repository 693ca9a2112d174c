"""Transformer layers: masks, causality, left padding, the LiGR gating formula, SwiGLU, SASRec blocks."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from recmodels.nn.layers import (
    BackboneConfig,
    LiGRBlock,
    LiGRBlockConfig,
    SASRecBlock,
    SASRecBlockConfig,
    SelfAttention,
    SequenceBackbone,
    SwiGLU,
    TokenLayout,
    attention_mask,
    causal_mask,
)

N_ITEMS = 30
BLOCKS = {
    "sasrec": SASRecBlockConfig(),
    "sasrec_rectools": SASRecBlockConfig(attention_output_dropout=False, attend_to_padding=True),
    "ligr": LiGRBlockConfig(),
}
INF = float("inf")


def _backbone(block: str, max_len: int = 10, seed: int = 0) -> SequenceBackbone:
    torch.manual_seed(seed)
    config = BackboneConfig(dim=8, blocks=2, heads=2, max_len=max_len, dropout=0.0, ff_mult=2, block=BLOCKS[block])
    return SequenceBackbone(N_ITEMS, config).eval()


def _plain_layout(batch: int, length: int) -> TokenLayout:
    """A batch without padding, as a stream of ``batch * length`` tokens."""
    return TokenLayout.of(torch.zeros(batch, length, dtype=torch.bool), causal_mask(length), pack=False)


# --- masks -------------------------------------------------------------------------------------


def test_causal_mask_values():
    mask = causal_mask(4)
    expected = torch.tensor(
        [
            [0.0, -INF, -INF, -INF],
            [0.0, 0.0, -INF, -INF],
            [0.0, 0.0, 0.0, -INF],
            [0.0, 0.0, 0.0, 0.0],
        ]
    )
    assert mask.dtype == torch.float32
    assert torch.equal(mask, expected)


def test_attention_mask_blocks_padded_keys_and_keeps_the_diagonal_open():
    causal = causal_mask(6)
    padding = torch.tensor(
        [
            [True, True, False, False, False],  # left-padded
            [False, False, False, False, False],  # no padding
            [True, True, True, True, False],  # a single real item
        ]
    )
    mask = attention_mask(causal, padding)
    assert mask.shape == (3, 1, 5, 5)
    mask = mask[:, 0]
    for b in range(3):
        for q in range(5):
            for k in range(5):
                if q == k:
                    expected = 0.0  # diagonal always open, even on padded rows
                elif k > q or padding[b, k]:
                    expected = -INF
                else:
                    expected = 0.0
                assert mask[b, q, k].item() == expected, (b, q, k)
    # no row is all -inf (softmax would give NaN)
    assert torch.isfinite(mask).any(dim=-1).all()
    # the causal buffer is cut to the batch length, not used whole
    assert torch.equal(mask[1], causal[:5, :5])


def test_attention_mask_on_fully_padded_rows_is_finite_somewhere():
    padding = torch.ones(2, 3, dtype=torch.bool)
    mask = attention_mask(causal_mask(3), padding)[:, 0]
    expected = torch.full((3, 3), -INF).fill_diagonal_(0.0)
    assert torch.equal(mask[0], expected) and torch.equal(mask[1], expected)


# --- self-attention against a hand computation ----------------------------------------------------


def test_self_attention_matches_manual_multi_head_attention():
    torch.manual_seed(1)
    dim, heads, length = 6, 2, 4
    attention = SelfAttention(dim, heads, dropout=0.0).eval()
    queries, keys = torch.randn(2, length, dim), torch.randn(2, length, dim)
    padding = torch.tensor([[True, False, False, False], [False, False, False, False]])
    layout = TokenLayout.of(padding, causal_mask(length), pack=False)
    mask = layout.grids[0].mask
    got = attention(layout.to_stream(queries), layout.to_stream(keys), layout).view(2, length, dim)

    q = queries @ attention.query.weight.T + attention.query.bias
    kv = keys @ attention.key_value.weight.T + attention.key_value.bias
    k, v = kv[..., :dim], kv[..., dim:]
    head = dim // heads
    outputs = []
    for h in range(heads):
        part = slice(h * head, (h + 1) * head)
        logits = q[..., part] @ k[..., part].transpose(1, 2) / math.sqrt(head) + mask[:, 0]
        outputs.append(torch.softmax(logits, dim=-1) @ v[..., part])
    expected = torch.cat(outputs, dim=-1) @ attention.output.weight.T + attention.output.bias
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("pack", [False, True])
@pytest.mark.parametrize("cut", [0, 1])
def test_padding_sink_equals_attending_to_the_zeroed_empty_slots(pack, cut):
    """RecTools' SASRec has no key padding mask: a query attends to every earlier slot of its max_len window,
    the empty ones holding zeros. One bias key weighted by their count must give the same outputs."""
    torch.manual_seed(2)
    dim, heads, max_len = 8, 2, 6
    attention = SelfAttention(dim, heads, dropout=0.0, padding_sink=True).eval()
    lengths = torch.tensor([2, 5, 6 - cut, 1])  # one full window, or a batch's grid shorter than it
    padding = torch.arange(max_len)[None, :] < (max_len - lengths)[:, None]
    window = torch.randn(len(lengths), max_len, dim).masked_fill(padding[..., None], 0.0)
    layout = TokenLayout.of(padding[:, cut:], causal_mask(max_len), pack=pack)  # the count comes from max_len
    stream = layout.to_stream(window[:, cut:])
    got = layout.to_grid(attention(stream, stream, layout))

    q = attention.query(window).view(len(lengths), max_len, heads, -1).transpose(1, 2)
    k, v = (
        part.transpose(1, 2) for part in attention.key_value(window).view(len(lengths), max_len, 2, heads, -1).unbind(2)
    )
    logits = q @ k.transpose(-1, -2) / math.sqrt(dim // heads) + causal_mask(max_len)  # no padding mask
    expected = attention.output((logits.softmax(-1) @ v).transpose(1, 2).reshape(len(lengths), max_len, dim))
    real = ~padding[:, cut:]
    torch.testing.assert_close(got[real], expected[:, cut:][real], atol=1e-5, rtol=1e-5)
    plain = SelfAttention(dim, heads, dropout=0.0).eval()
    plain.load_state_dict(attention.state_dict())
    assert not torch.allclose(plain(stream, stream, layout), attention(stream, stream, layout), atol=1e-3)


def test_self_attention_rejects_indivisible_heads():
    with pytest.raises(ValueError, match="not divisible"):
        SelfAttention(10, 3, 0.0)


# --- causality and left padding, end to end -------------------------------------------------------


@pytest.mark.parametrize("block", sorted(BLOCKS))
@pytest.mark.parametrize("j", [0, 3, 7, 9])
def test_changing_an_item_never_changes_earlier_positions(block, j):
    backbone = _backbone(block)
    generator = torch.Generator().manual_seed(j)
    items = torch.randint(1, N_ITEMS + 1, (3, 10), generator=generator)
    items[2, :2] = 0  # one left-padded row; j >= 2 changes a real item there, j = 0 keeps a padded one
    changed = items.clone()
    changed[:2, j] = changed[:2, j] % N_ITEMS + 1  # a different real item
    if j >= 2:
        changed[2, j] = changed[2, j] % N_ITEMS + 1
    with torch.no_grad():
        before, after = backbone(items), backbone(changed)
    assert torch.allclose(before[:, :j], after[:, :j], atol=1e-6, rtol=0)
    difference = (before[:2, j:] - after[:2, j:]).abs().amax(dim=(1, 2))
    assert (difference > 1e-3).all()  # position j itself (and later) does see the change


@pytest.mark.parametrize("block", sorted(BLOCKS))
def test_extra_left_padding_does_not_change_the_scores(block):
    backbone = _backbone(block)
    history = torch.tensor([[4, 17, 9, 22, 3]])
    padded = torch.cat([torch.zeros(1, 4, dtype=torch.int64), history], dim=1)  # length 9 < max_len 10
    with torch.no_grad():
        short, long = backbone(history), backbone(padded)
    assert long.shape == (1, 9, 8)
    torch.testing.assert_close(long[:, 4:], short, atol=1e-5, rtol=0)
    # in a batch with a longer history, too
    other = torch.tensor([[5, 6, 7, 8, 9, 10, 11, 12, 13]])
    with torch.no_grad():
        batch = backbone(torch.cat([padded, other]))
        alone = backbone(other)
    torch.testing.assert_close(batch[0, 4:], short[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(batch[1], alone[0], atol=1e-5, rtol=0)


@pytest.mark.parametrize("block", sorted(BLOCKS))
def test_histories_longer_than_max_len_keep_their_most_recent_items(block):
    backbone = _backbone(block, max_len=6)
    items = torch.arange(1, 10).unsqueeze(0)  # 9 items, max_len 6
    with torch.no_grad():
        full, recent = backbone(items), backbone(items[:, -6:])
    assert full.shape == (1, 6, 8)
    assert torch.equal(full, recent)


def test_only_the_sasrec_stack_ends_with_a_layer_norm():
    # as in the authors' code: SASRec's last_layernorm; RecTools' LiGRLayers (eSASRec) has none
    assert isinstance(_backbone("sasrec").final_norm, torch.nn.LayerNorm)
    ligr = _backbone("ligr")
    assert isinstance(ligr.final_norm, torch.nn.Identity)
    with torch.no_grad():
        out = ligr(torch.tensor([[0, 0, 5, 6]]))
    assert torch.equal(out[0, :2], torch.zeros(2, 8))  # padded positions stay exactly zero
    with_norm = dataclasses.replace(ligr.config, block=LiGRBlockConfig(final_norm=True))
    assert isinstance(SequenceBackbone(N_ITEMS, with_norm).final_norm, torch.nn.LayerNorm)


def test_token_layout_packs_real_tokens_and_restores_the_grid():
    padding = torch.tensor([[False, False, False], [True, True, False], [True, False, False], [True, True, True]])
    grid = torch.arange(1.0, 13.0).view(4, 3, 1)
    packed = TokenLayout.of(padding, causal_mask(3), pack=True, attention_grids=2)
    # sequences sorted by length: the empty one and the single token share a grid of length 1
    assert [(g.batch, g.length) for g in packed.grids] == [(2, 1), (2, 3)]
    assert torch.equal(packed.to_stream(grid).squeeze(1), torch.tensor([6.0, 8.0, 9.0, 1.0, 2.0, 3.0]))
    assert packed.sizes == (1, 5)
    assert torch.equal(packed.to_grid(packed.to_stream(grid)), grid.masked_fill(padding.unsqueeze(-1), 0.0))
    short, long = packed.to_attention_grids(packed.to_stream(grid))
    assert torch.equal(short.squeeze(-1), torch.tensor([[0.0], [6.0]]))  # the empty sequence is a zero row
    assert torch.equal(long.squeeze(-1), torch.tensor([[0.0, 8.0, 9.0], [1.0, 2.0, 3.0]]))
    assert torch.equal(packed.from_attention_grids([short, long]), packed.to_stream(grid))
    unpacked = TokenLayout.of(padding, causal_mask(3), pack=False)
    assert unpacked.to_stream(grid).shape == (12, 1) and len(unpacked.grids) == 1
    assert torch.equal(unpacked.to_grid(unpacked.to_stream(grid)), grid)


@pytest.mark.parametrize("block", sorted(BLOCKS))
def test_packing_changes_neither_outputs_nor_gradients(block):
    """Training packs the real tokens; real positions must not notice, padded ones stay zero."""
    torch.manual_seed(0)
    config = dataclasses.replace(_backbone(block).config, block=dataclasses.replace(BLOCKS[block], final_norm=True))
    backbone = SequenceBackbone(N_ITEMS, config).train()  # dropout is 0: training mode only switches packing on
    with torch.no_grad():
        backbone.final_norm.bias.copy_(torch.linspace(-1.0, 1.0, 8))
    items = torch.tensor(
        [
            [0, 0, 0, 5, 6, 7],
            [0, 1, 2, 3, 4, 5],
            [0, 0, 0, 0, 0, 9],
            [0, 0, 0, 0, 0, 0],
            [3, 1, 4, 1, 5, 9],
            [0, 0, 2, 7, 1, 8],
        ]
    )  # 4 attention grids of sequences sorted by length: 2, 2, 1 and 1 sequences
    outputs, gradients = {}, {}
    for pack in (True, False):
        backbone.zero_grad()
        out = backbone(items, pack=pack)
        (out * torch.linspace(0.5, 1.5, 8)).sum().backward()
        outputs[pack] = out.detach()
        gradients[pack] = {name: p.grad.clone() for name, p in backbone.named_parameters()}
    torch.testing.assert_close(outputs[True], outputs[False], atol=1e-5, rtol=1e-5)
    for name, gradient in gradients[True].items():
        torch.testing.assert_close(gradient, gradients[False][name], atol=1e-5, rtol=1e-4, msg=name)
    padded = items == 0
    assert torch.equal(outputs[True][padded], torch.zeros(int(padded.sum()), 8))
    assert (outputs[True][~padded].abs().sum(-1) > 0).all() and torch.isfinite(outputs[False]).all()
    empty = backbone(torch.zeros(2, 6, dtype=torch.int64), pack=True)  # nothing to pack: still zeros, no error
    assert torch.equal(empty, torch.zeros(2, 6, 8))


def test_padding_embedding_is_zero():
    backbone = _backbone("sasrec")
    assert torch.equal(backbone.item_embeddings.weight[0], torch.zeros(8))
    assert backbone.item_embeddings.weight.shape == (N_ITEMS + 1, 8)


def test_initialisation_follows_the_config():
    """SASRec's: item embeddings N(0, 1/d) scaled by sqrt(d) on input; RecTools': every matrix
    Xavier-normal and no scale, so the input is the embedding itself."""
    torch.manual_seed(0)
    dim, n_items = 64, 3000
    scaled = SequenceBackbone(n_items, BackboneConfig(dim=dim, max_len=20))
    torch.manual_seed(0)
    xavier = SequenceBackbone(n_items, BackboneConfig(dim=dim, max_len=20, xavier_init=True, scale_embeddings=False))
    assert scaled.scale == pytest.approx(8.0) and xavier.scale == 1.0
    assert scaled.item_embeddings.weight[1:].std().item() == pytest.approx(dim**-0.5, rel=0.05)
    xavier_std = math.sqrt(2.0 / (n_items + 1 + dim))
    assert xavier.item_embeddings.weight[1:].std().item() == pytest.approx(xavier_std, rel=0.05)
    assert xavier.position_embeddings.weight.std().item() == pytest.approx(math.sqrt(2.0 / (20 + dim)), rel=0.1)
    assert torch.equal(xavier.item_embeddings.weight[0], torch.zeros(dim))
    # LayerNorm weights (1-D) keep their ones under either initialisation
    assert all(
        torch.equal(norm.weight, torch.ones(dim))
        for norm in (xavier.blocks[0].attention_norm, xavier.blocks[0].feed_forward_norm)
    )
    # with no blocks (and the LiGR stack's missing final norm) the output is the input embedding
    items = torch.tensor([[0, 5, 7]])
    positions = torch.tensor([18, 19])
    for backbone, scale in ((scaled, 8.0), (xavier, 1.0)):
        bare = SequenceBackbone(n_items, dataclasses.replace(backbone.config, blocks=0, block=LiGRBlockConfig()))
        bare.load_state_dict(backbone.state_dict(), strict=False)
        expected = bare.item_embeddings.weight[[5, 7]] * scale + bare.position_embeddings(positions)
        assert torch.allclose(bare.eval()(items)[0, 1:], expected)


@pytest.mark.parametrize("block", [LiGRBlockConfig(), SASRecBlockConfig(attend_to_padding=True)])
def test_xavier_as_rectools_draws_over_rectools_parameter_shapes(block):
    """RecTools re-draws every matrix of torch's ``nn.MultiheadAttention`` (one packed in-projection,
    biases left at torch's zeros) and of its two-matrix SwiGLU; Xavier's spread follows those shapes."""
    dim, ff_mult = 256, 4
    torch.manual_seed(0)
    config = BackboneConfig(dim=dim, blocks=1, max_len=20, ff_mult=ff_mult, block=block, xavier_init=True)
    ours = SequenceBackbone(100, dataclasses.replace(config, xavier_as_rectools=True)).blocks[0]
    reference = nn.MultiheadAttention(dim, 1)
    fan_out, fan_in = reference.in_proj_weight.shape
    packed_std = math.sqrt(2.0 / (fan_in + fan_out))
    for projection in (ours.attention.query, ours.attention.key_value):
        assert projection.weight.std().item() == pytest.approx(packed_std, rel=0.02)
    for ours_bias, torch_bias in (
        (ours.attention.query.bias, reference.in_proj_bias[:dim]),
        (ours.attention.key_value.bias, reference.in_proj_bias[dim:]),
        (ours.attention.output.bias, reference.out_proj.bias),
    ):
        assert torch.equal(ours_bias.detach(), torch_bias.detach())
    plain = SequenceBackbone(100, config).blocks[0]
    assert plain.attention.query.weight.std().item() == pytest.approx(math.sqrt(2.0 / (2 * dim)), rel=0.02)
    assert plain.attention.query.bias.abs().max() > 0
    if isinstance(block, LiGRBlockConfig):
        hidden = nn.Linear(dim, ff_mult * dim, bias=False).weight
        for half in ours.feed_forward.gate_and_value.weight.chunk(2):
            assert half.std().item() == pytest.approx(math.sqrt(2.0 / sum(hidden.shape)), rel=0.02)
        packed = plain.feed_forward.gate_and_value.weight
        assert packed.std().item() == pytest.approx(math.sqrt(2.0 / sum(packed.shape)), rel=0.02)


def test_xavier_as_rectools_needs_xavier_init():
    with pytest.raises(ValueError, match="needs backbone.xavier_init"):
        BackboneConfig(xavier_as_rectools=True)


def test_item_dropout_drops_one_table_per_batch_only_while_training():
    torch.manual_seed(0)
    config = BackboneConfig(
        dim=16,
        blocks=1,
        heads=1,
        max_len=6,
        dropout=0.0,
        item_dropout=0.5,
        block=LiGRBlockConfig(),
        scale_embeddings=False,
    )
    backbone = SequenceBackbone(200, config)
    assert backbone.eval().catalogue() is backbone.item_embeddings.weight
    table = backbone.train().catalogue()
    dropped = table[1:] == 0
    assert 0.4 < dropped.float().mean().item() < 0.6
    kept = ~dropped
    assert torch.allclose(table[1:][kept], 2.0 * backbone.item_embeddings.weight[1:][kept])  # inverted dropout
    # the forward pass reads the table it is given: the same dropped rows reach input and scores
    items = torch.tensor([[0, 3, 9, 4]])
    bare = SequenceBackbone(200, dataclasses.replace(config, blocks=0)).train()
    bare.load_state_dict(backbone.state_dict(), strict=False)
    out = bare(items, table)
    assert torch.allclose(out[0, 1:], table[[3, 9, 4]] + bare.position_embeddings(torch.tensor([3, 4, 5])))
    # padding gets no gradient through the dropped table
    bare(items, bare.catalogue()).sum().backward()
    assert bare.item_embeddings.weight.grad[0].abs().sum() == 0
    assert bare.item_embeddings.weight.grad[3].abs().sum() > 0


def test_presets_pick_their_authors_initialisation():
    from recmodels.models.sasrec import esasrec, sasrec_ss

    ligr = esasrec().backbone
    assert (ligr.xavier_init, ligr.scale_embeddings) == (True, False)
    original = sasrec_ss().backbone
    assert (original.xavier_init, original.scale_embeddings) == (False, True)
    assert esasrec(scale_embeddings=True, dim=32).backbone.scale_embeddings  # still overridable


def test_esasrec_preset_drops_attention_and_items_at_its_dropout_rate():
    from recmodels.models.sasrec import esasrec, sasrec_ss

    ligr = esasrec(dropout=0.1).backbone
    assert (ligr.dropout, ligr.attention_dropout, ligr.item_dropout) == (0.1, 0.1, 0.1)
    assert esasrec().backbone.item_dropout == BackboneConfig.dropout
    assert esasrec(dropout=0.1, attention_dropout=0.0).backbone.attention_dropout == 0.0  # still overridable
    original = sasrec_ss(dropout=0.1).backbone
    assert (original.attention_dropout, original.item_dropout) == (
        0.0,
        0.0,
    )  # as in its measured figures (docs/sequential.md)


# --- blocks ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", [SASRecBlock, LiGRBlock])
def test_block_output_shape(cls):
    torch.manual_seed(0)
    block = cls(8, 2, 0.0, 0.0, 2).eval()
    x = torch.randn(3 * 5, 8)
    out = block(x, _plain_layout(3, 5))
    assert out.shape == (3 * 5, 8)
    assert torch.isfinite(out).all()


def test_sasrec_block_matches_its_formula():
    """Normalised queries, raw keys/values, residual from the normalised queries, ReLU feed-forward."""
    torch.manual_seed(3)
    block = SASRecBlock(6, 2, 0.0, 0.0, 2).eval()
    x = torch.randn(2 * 4, 6)
    layout = _plain_layout(2, 4)
    with torch.no_grad():
        got = block(x, layout)
        queries = F.layer_norm(x, (6,), block.attention_norm.weight, block.attention_norm.bias, eps=1e-8)
        h = queries + block.attention(queries, x, layout)
        h = F.layer_norm(h, (6,), block.feed_forward_norm.weight, block.feed_forward_norm.bias, eps=1e-8)
        first, second = block.feed_forward[0], block.feed_forward[3]
        expected = h + F.relu(h @ first.weight.T + first.bias) @ second.weight.T + second.bias
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def _ligr(seed: int = 0) -> LiGRBlock:
    torch.manual_seed(seed)
    block = LiGRBlock(6, 2, 0.0, 0.0, 2).eval()
    with torch.no_grad():  # non-trivial norms so normalised and raw inputs really differ
        for norm in (block.attention_norm, block.feed_forward_norm):
            norm.weight.copy_(torch.rand(6) + 0.5)
            norm.bias.copy_(torch.randn(6) * 0.3)
    return block


def _swiglu_by_hand(module: SwiGLU, x: torch.Tensor) -> torch.Tensor:
    hidden = module.down.weight.shape[1]
    w_gate, w_value = module.gate_and_value.weight[:hidden], module.gate_and_value.weight[hidden:]
    return (F.silu(x @ w_gate.T) * (x @ w_value.T)) @ module.down.weight.T


def test_ligr_block_gates_read_the_unnormalised_input():
    block = _ligr()
    x = torch.randn(2 * 5, 6) * 2 + 1  # far from normalised
    layout = _plain_layout(2, 5)
    with torch.no_grad():
        got = block(x, layout)
        ln1 = F.layer_norm(x, (6,), block.attention_norm.weight, block.attention_norm.bias)
        attention_gate, feed_forward_gate = block.attention_gate, block.feed_forward_gate
        h = x + torch.sigmoid(x @ attention_gate.weight.T + attention_gate.bias) * block.attention(ln1, ln1, layout)
        ln2 = F.layer_norm(h, (6,), block.feed_forward_norm.weight, block.feed_forward_norm.bias)
        gate = torch.sigmoid(h @ feed_forward_gate.weight.T + feed_forward_gate.bias)
        expected = h + gate * _swiglu_by_hand(block.feed_forward, ln2)
        # the same formula with gates on the normalised inputs is measurably different
        h_wrong = x + torch.sigmoid(attention_gate(ln1)) * block.attention(ln1, ln1, layout)
        ln2_wrong = F.layer_norm(h_wrong, (6,), block.feed_forward_norm.weight, block.feed_forward_norm.bias)
        wrong = h_wrong + torch.sigmoid(feed_forward_gate(ln2_wrong)) * _swiglu_by_hand(block.feed_forward, ln2_wrong)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    assert (got - wrong).abs().max() > 1e-2


def test_ligr_block_with_closed_gates_is_the_identity():
    block = _ligr(seed=1)
    x = torch.rand(2 * 5, 6) + 0.5  # positive inputs: an all-negative gate matrix gives a very negative pre-activation
    layout = _plain_layout(2, 5)
    with torch.no_grad():
        for gate in (block.attention_gate, block.feed_forward_gate):
            gate.weight.fill_(-50.0)
            gate.bias.zero_()
        closed = block(x, layout)
        for gate in (block.attention_gate, block.feed_forward_gate):
            gate.weight.fill_(50.0)
        open_ = block(x, layout)
    torch.testing.assert_close(closed, x, atol=1e-5, rtol=0)
    assert (open_ - x).abs().max() > 0.1  # with open gates the sub-layers do contribute


def test_swiglu_has_no_biases_and_matches_its_formula():
    torch.manual_seed(2)
    module = SwiGLU(4, 6, dropout=0.0)
    assert module.gate_and_value.bias is None and module.down.bias is None
    assert all(not name.endswith("bias") for name, _ in module.named_parameters())
    assert sum(p.numel() for p in module.parameters()) == 4 * 12 + 6 * 4
    x = torch.randn(3, 4)
    torch.testing.assert_close(module(x), _swiglu_by_hand(module, x), atol=1e-6, rtol=1e-6)
    # no bias: zero in, zero out
    assert torch.equal(module(torch.zeros(1, 4)), torch.zeros(1, 4))


def test_swiglu_drops_hidden_units_only_in_training():
    torch.manual_seed(3)
    module = SwiGLU(4, 6, dropout=1.0)
    x = torch.randn(5, 4)
    torch.testing.assert_close(module.eval()(x), _swiglu_by_hand(module, x), atol=1e-6, rtol=1e-6)
    assert torch.equal(module.train()(x), torch.zeros(5, 4))  # every hidden unit dropped, no bias to leak through


def test_block_configs_build_their_blocks():
    assert isinstance(SASRecBlockConfig().build(8, 2, 0.1, 0.0, 2), SASRecBlock)
    ligr = LiGRBlockConfig().build(8, 2, 0.1, 0.0, 3)
    assert isinstance(ligr, LiGRBlock)
    assert ligr.feed_forward.down.weight.shape == (8, 24)


def test_esasrec_preset_trains_like_the_authors_code():
    from recmodels.models.sasrec import esasrec, sasrec_ss

    preset = esasrec()
    assert preset.loss.per_position  # a fresh draw of negatives for every position
    assert preset.trainer.adam_betas == (0.9, 0.98)
    assert not preset.group_by_length  # randomly mixed users in a batch
    original = sasrec_ss()
    assert (original.loss.per_position, original.trainer.adam_betas, original.group_by_length) == (
        False,
        (0.9, 0.999),
        True,
    )  # as in its measured figures (docs/sequential.md)
