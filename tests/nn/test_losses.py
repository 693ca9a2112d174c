"""Next-item losses against hand-computed values on tiny tensors (d = 2, 4 items).

Losses read padded ``hidden [B, L, d]`` and ``targets [B, L]`` (0 = no target). The
fixtures are two sequences of two positions; position (1, 0) is padding and carries
a large hidden state that would show up in any loss that did not skip it.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from recmodels.graph.sampler import SampledNegatives
from recmodels.nn.losses import (
    BCELossConfig,
    BinaryCrossEntropy,
    FullSoftmax,
    FullSoftmaxConfig,
    SampledLogits,
    SampledSoftmax,
    SampledSoftmaxConfig,
    semi_hard_triplet_loss,
)

N_ITEMS = 4
SEED = 7
REAL = [(0, 0), (0, 1), (1, 1)]  # positions with a target in TARGETS
TARGETS = torch.tensor([[1, 3], [0, 4]])


def _embeddings() -> torch.Tensor:
    # row 0 is padding
    return torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [-1.0, 0.5], [0.5, -2.0]])


def _hidden() -> torch.Tensor:
    return torch.tensor([[[2.0, 1.0], [-1.0, 0.5]], [[5.0, 5.0], [0.3, -0.7]]])


def _generator(seed: int = SEED) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _draws(shape: tuple[int, ...], seed: int = SEED) -> torch.Tensor:
    """The uniform negatives a loss draws first from ``_generator(seed)``."""
    return torch.randint(1, N_ITEMS + 1, shape, generator=_generator(seed))


def _logit(b: int, position: int, item: int) -> float:
    """``hidden[b, position] . E[item]`` written out on the 2-d vectors."""
    h, e = _hidden()[b, position], _embeddings()[item]
    return float(h[0] * e[0] + h[1] * e[1])


def _softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def _cross_entropy(positive: float, negatives: list[float]) -> float:
    """``-log softmax`` of the positive among [positive, negatives]."""
    return -positive + math.log(math.exp(positive) + sum(math.exp(n) for n in negatives))


def _extra(items, valid, log_q=None) -> SampledNegatives:
    items = torch.tensor(items)
    log_q = torch.zeros(items.shape) if log_q is None else torch.tensor(log_q, dtype=torch.float32)
    return SampledNegatives(items=items, log_q=log_q, valid=torch.tensor(valid))


# --- BCE ------------------------------------------------------------------------------------------


def test_bce_is_softplus_of_positive_and_uniform_negative_averaged_over_real_positions():
    negatives = _draws((2, 2))
    assert negatives.tolist() == [[4, 1], [2, 3]]
    targets = torch.tensor([[4, 2], [0, 1]])  # (0, 0) draws its own target: an accidental hit
    loss = BinaryCrossEntropy()(_hidden(), targets, _embeddings(), _generator())
    # (0,0): positive h.(0.5,-2) = -1, hit -> no negative term
    # (0,1): positive h.(0,1) = 0.5, negative item 1 -> -1
    # (1,1): positive h.(1,0) = 0.3, negative item 3 -> -0.3 - 0.35 = -0.65
    expected = (_softplus(1.0) + _softplus(-0.5) + _softplus(-1.0) + _softplus(-0.3) + _softplus(-0.65)) / 3
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    assert _logit(0, 0, 4) == pytest.approx(-1.0) and _logit(1, 1, 3) == pytest.approx(-0.65)
    with_hit = expected + _softplus(-1.0) / 3  # what counting the hit as a negative would add
    assert with_hit - loss.item() > 0.1


def test_bce_uses_the_samplers_first_valid_draw():
    uniform = _draws((2, 2))  # [[4, 1], [2, 3]]
    extra = _extra(
        [[[2, 3], [4, 1]], [[1, 1], [1, 3]]],
        [[[True, True], [True, False]], [[False, False], [False, True]]],
    )
    loss = BinaryCrossEntropy()(_hidden(), TARGETS, _embeddings(), _generator(), extra)
    # (0,0): slot 0 -> item 2 (slot 1 ignored); (0,1): slot 0 -> item 4; (1,1): slot 0 invalid, slot 1 -> item 3
    expected = (
        _softplus(-_logit(0, 0, 1))
        + _softplus(_logit(0, 0, 2))
        + _softplus(-_logit(0, 1, 3))
        + _softplus(_logit(0, 1, 4))
        + _softplus(-_logit(1, 1, 4))
        + _softplus(_logit(1, 1, 3))
    ) / 3
    assert loss.item() == pytest.approx(expected, rel=1e-6)

    extra = _extra(
        [[[2, 3], [4, 1]], [[1, 1], [1, 2]]],
        [[[False, True], [True, False]], [[False, False], [False, True]]],
    )
    loss = BinaryCrossEntropy()(_hidden(), TARGETS, _embeddings(), _generator(), extra)
    # (0,0): slot 0 invalid, slot 1 -> item 3; (1,1): slot 1 -> item 2
    assert uniform[0, 0] != 3 and uniform[1, 1] != 2  # the uniform fallback would give something else
    expected = (
        _softplus(-_logit(0, 0, 1))
        + _softplus(_logit(0, 0, 3))
        + _softplus(-_logit(0, 1, 3))
        + _softplus(_logit(0, 1, 4))
        + _softplus(-_logit(1, 1, 4))
        + _softplus(_logit(1, 1, 2))
    ) / 3
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_bce_falls_back_to_the_uniform_draw_without_a_valid_one():
    uniform = _draws((2, 2))  # [[4, 1], [2, 3]]
    extra = _extra(
        [[[2, 3], [4, 1]], [[1, 1], [1, 2]]], [[[False, False], [True, True]], [[False, False], [False, False]]]
    )
    loss = BinaryCrossEntropy()(_hidden(), TARGETS, _embeddings(), _generator(), extra)
    expected = (
        _softplus(-_logit(0, 0, 1))
        + _softplus(_logit(0, 0, int(uniform[0, 0])))
        + _softplus(-_logit(0, 1, 3))
        + _softplus(_logit(0, 1, 4))
        + _softplus(-_logit(1, 1, 4))
        + _softplus(_logit(1, 1, int(uniform[1, 1])))
    ) / 3
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_bce_accidental_hit_from_the_sampler_contributes_only_the_positive_term():
    extra = _extra([[[1], [3]], [[2], [4]]], [[[True], [True]], [[True], [True]]])  # every negative is the target
    loss = BinaryCrossEntropy()(_hidden(), TARGETS, _embeddings(), _generator(), extra)
    expected = (_softplus(-_logit(0, 0, 1)) + _softplus(-_logit(0, 1, 3)) + _softplus(-_logit(1, 1, 4))) / 3
    assert loss.item() == pytest.approx(expected, rel=1e-6)


# --- sampled softmax ------------------------------------------------------------------------------


def test_sampled_softmax_is_cross_entropy_over_positive_and_per_sequence_negatives():
    loss = SampledSoftmax(3, logq_correction=False)(_hidden(), TARGETS, _embeddings(), _generator())
    negatives = _draws((2, 3))
    assert negatives.tolist() == [[4, 1, 2], [3, 4, 4]]  # each sequence its own negatives
    # (0,0) target 1: item 1 is an accidental hit; (1,1) target 4: both 4s are hits
    expected = (
        _cross_entropy(_logit(0, 0, 1), [_logit(0, 0, 4), _logit(0, 0, 2)])
        + _cross_entropy(_logit(0, 1, 3), [_logit(0, 1, 4), _logit(0, 1, 1), _logit(0, 1, 2)])
        + _cross_entropy(_logit(1, 1, 4), [_logit(1, 1, 3)])
    ) / 3
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_sampled_softmax_hand_numbers_with_controlled_negatives():
    """One position; its single uniform draw is the target, so only the two extra negatives count."""
    hidden, targets = torch.tensor([[[2.0, 1.0]]]), torch.tensor([[1]])
    assert _draws((1, 1), seed=0).item() == 1
    extra = _extra([[[2, 3]]], [[[True, True]]])
    loss = SampledSoftmax(1, False)(hidden, targets, _embeddings(), _generator(0), extra)
    # logits: positive e1 -> 2.0; item 2 -> 1.0; item 3 -> -2 + 0.5 = -1.5
    expected = -math.log(math.exp(2.0) / (math.exp(2.0) + math.exp(1.0) + math.exp(-1.5)))
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    assert expected == pytest.approx(-torch.log_softmax(torch.tensor([2.0, 1.0, -1.5]), 0)[0].item(), rel=1e-6)


def test_sampled_softmax_accidental_hit_equals_loss_without_that_negative():
    loss_fn = SampledSoftmax(2, logq_correction=False)
    # every position gets [its target, item 2]: the target copy must act as if it were absent
    with_hit = _extra(
        [[[1, 2], [3, 2]], [[2, 2], [4, 2]]], [[[True, True], [True, True]], [[True, True], [True, True]]]
    )
    without = _extra([[[2], [2]], [[2], [2]]], [[[True], [True]], [[True], [True]]])
    a = loss_fn(_hidden(), TARGETS, _embeddings(), _generator(), with_hit)
    b = loss_fn(_hidden(), TARGETS, _embeddings(), _generator(), without)
    torch.testing.assert_close(a, b)
    # by hand: sequence 0 draws (4, 1), sequence 1 draws (2, 3); hits masked; plus the extra item 2
    assert _draws((2, 2)).tolist() == [[4, 1], [2, 3]]
    expected = (
        _cross_entropy(_logit(0, 0, 1), [_logit(0, 0, 4), _logit(0, 0, 2)])
        + _cross_entropy(_logit(0, 1, 3), [_logit(0, 1, 4), _logit(0, 1, 1), _logit(0, 1, 2)])
        + _cross_entropy(_logit(1, 1, 4), [_logit(1, 1, 2), _logit(1, 1, 3), _logit(1, 1, 2)])
    ) / 3
    assert a.item() == pytest.approx(expected, rel=1e-6)
    # counting the hit as a negative would give a larger loss
    counted = (
        expected
        + (
            _cross_entropy(_logit(0, 0, 1), [_logit(0, 0, 4), _logit(0, 0, 1), _logit(0, 0, 2)])
            - _cross_entropy(_logit(0, 0, 1), [_logit(0, 0, 4), _logit(0, 0, 2)])
        )
        / 3
    )
    assert counted - a.item() > 0.05


def test_sampled_softmax_can_mask_every_item_of_the_sequence():
    """Sequence 0 draws (4, 1) and has targets (1, 3): item 1 leaves both its positions, not only the first."""
    loss = SampledSoftmax(2, logq_correction=False, mask_sequence_items=True)(
        _hidden(), TARGETS, _embeddings(), _generator()
    )
    assert _draws((2, 2)).tolist() == [[4, 1], [2, 3]]
    expected = (
        _cross_entropy(_logit(0, 0, 1), [_logit(0, 0, 4)])
        + _cross_entropy(_logit(0, 1, 3), [_logit(0, 1, 4)])
        + _cross_entropy(_logit(1, 1, 4), [_logit(1, 1, 2), _logit(1, 1, 3)])
    ) / 3
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    own_target_only = SampledSoftmax(2, logq_correction=False, mask_sequence_items=False)(
        _hidden(), TARGETS, _embeddings(), _generator()
    )
    assert own_target_only.item() != pytest.approx(expected, rel=1e-3), "item 1 stays a negative at position 1"
    assert SampledSoftmaxConfig().build().mask_sequence_items, "the config's default masks the whole sequence"


def test_sampled_softmax_per_position_draws_for_each_position():
    """Per position, the real positions (in row-major order) draw their own negatives."""
    loss = SampledSoftmax(2, logq_correction=False, per_position=True)(_hidden(), TARGETS, _embeddings(), _generator())
    negatives = _draws((3, 2))
    assert negatives.tolist() == [[4, 1], [2, 3], [4, 4]]  # for (0,0), (0,1), (1,1)
    # every hit here is the position's own target (masking other sequence items: the next test)
    expected = (
        _cross_entropy(_logit(0, 0, 1), [_logit(0, 0, 4)])
        + _cross_entropy(_logit(0, 1, 3), [_logit(0, 1, 2)])
        + _cross_entropy(_logit(1, 1, 4), [])
    ) / 3
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_sampled_softmax_per_position_masks_other_items_of_the_sequence():
    hidden, targets = torch.tensor([[[2.0, 1.0], [-1.0, 0.5]]]), torch.tensor([[1, 3]])
    assert _draws((2, 1), seed=3).tolist() == [[3], [1]]  # each position draws the other's target
    masked = SampledSoftmax(1, False, mask_sequence_items=True, per_position=True)
    kept = SampledSoftmax(1, False, mask_sequence_items=False, per_position=True)
    assert masked(hidden, targets, _embeddings(), _generator(3)).item() == pytest.approx(0.0, abs=1e-7)
    expected = (_cross_entropy(2.0, [-1.5]) + _cross_entropy(_logit(0, 1, 3), [-1.0])) / 2
    assert kept(hidden, targets, _embeddings(), _generator(3)).item() == pytest.approx(expected, rel=1e-6)


def test_sampled_softmax_per_position_dense_and_sparse_paths_agree(monkeypatch):
    """Uniform and sampler (extra) negatives alike: the same loss and gradients by either route."""
    torch.manual_seed(0)
    n_items, dim = 50, 4
    targets = torch.randint(1, n_items + 1, (3, 6))
    targets[0, :2] = 0
    extra_items = torch.randint(1, n_items + 1, (3, 6, 5))
    extra = _extra(extra_items.tolist(), (torch.rand(3, 6, 5) > 0.3).tolist(), torch.log(torch.rand(3, 6, 5)).tolist())
    results = []
    for items_per_negative in (SampledSoftmax.DENSE_ITEMS_PER_NEGATIVE, 0):  # 0 forces the sparse path
        monkeypatch.setattr(SampledSoftmax, "DENSE_ITEMS_PER_NEGATIVE", items_per_negative)
        monkeypatch.setattr(SampledSoftmax, "DENSE_CHUNK_ROWS", 4)  # several chunks on the dense path
        torch.manual_seed(1)
        embeddings = torch.randn(n_items + 1, dim).requires_grad_()
        hidden = torch.randn(3, 6, dim).requires_grad_()
        loss = SampledSoftmax(8, logq_correction=True, per_position=True)(
            hidden, targets, embeddings, _generator(), extra
        )
        loss.backward()
        results.append((loss.detach(), embeddings.grad, hidden.grad))
    for dense, sparse in zip(*results):
        torch.testing.assert_close(dense, sparse)


def test_sampled_logits_match_gathered_embeddings_and_their_gradients():
    """The sparse kernels against the obvious gather, with an item repeated within a row."""
    generator = torch.Generator().manual_seed(0)
    queries = torch.randn(5, 3, dtype=torch.float64, generator=generator).requires_grad_()
    embeddings = torch.randn(9, 3, dtype=torch.float64, generator=generator).requires_grad_()
    items = torch.randint(1, 9, (5, 4), generator=generator)
    items[2] = torch.tensor([7, 7, 1, 7])
    logits = SampledLogits.apply(queries, embeddings, items)
    expected = torch.einsum("nd,nkd->nk", queries, embeddings[items])
    torch.testing.assert_close(logits, expected)
    weights = torch.randn(5, 4, dtype=torch.float64, generator=generator)
    got = torch.autograd.grad((logits * weights).sum(), (queries, embeddings))
    want = torch.autograd.grad((expected * weights).sum(), (queries, embeddings))
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b)
    assert torch.autograd.gradcheck(lambda q, e: SampledLogits.apply(q, e, items), (queries, embeddings))


def test_sampled_softmax_ignores_invalid_extra_negatives():
    loss_fn = SampledSoftmax(2, logq_correction=False)
    # invalid slots (e.g. items in the history) carry different items in `mixed` and `kept`
    valid = [[[True, False], [False, True]], [[True, True], [True, True]]]
    mixed = _extra([[[2, 4], [1, 2]], [[3, 2], [3, 2]]], valid)
    kept = _extra([[[2, 2], [2, 2]], [[3, 2], [3, 2]]], valid)
    a = loss_fn(_hidden(), TARGETS, _embeddings(), _generator(), mixed)
    b = loss_fn(_hidden(), TARGETS, _embeddings(), _generator(), kept)
    torch.testing.assert_close(a, b)
    # all extra negatives invalid == no extra negatives
    none = _extra([[[2, 4], [1, 2]], [[3, 2], [3, 2]]], [[[False, False]] * 2] * 2)
    c = loss_fn(_hidden(), TARGETS, _embeddings(), _generator(), none)
    d = loss_fn(_hidden(), TARGETS, _embeddings(), _generator())
    torch.testing.assert_close(c, d)
    assert abs(a.item() - d.item()) > 1e-3


def test_logq_correction_subtracts_log_q():
    hidden, targets = torch.tensor([[[2.0, 1.0]]]), torch.tensor([[1]])
    assert _draws((1, 1), seed=5).item() == 4
    extra = _extra([[[2, 3]]], [[[True, True]]], log_q=[[[math.log(0.5), math.log(0.1)]]])
    loss = SampledSoftmax(1, logq_correction=True)(hidden, targets, _embeddings(), _generator(5), extra)
    # positive 2.0 (uncorrected); uniform item 4: 2*0.5 + 1*(-2) = -1, minus log(1/4);
    # item 2: 1.0 - log 0.5; item 3: -1.5 - log 0.1
    expected = _cross_entropy(2.0, [-1.0 + math.log(4), 1.0 - math.log(0.5), -1.5 - math.log(0.1)])
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    uncorrected = SampledSoftmax(1, logq_correction=False)(hidden, targets, _embeddings(), _generator(5), extra)
    assert uncorrected.item() == pytest.approx(_cross_entropy(2.0, [-1.0, 1.0, -1.5]), rel=1e-6)
    assert abs(loss.item() - uncorrected.item()) > 0.1


# --- full softmax ---------------------------------------------------------------------------------


def test_full_softmax_is_cross_entropy_over_real_items():
    loss = FullSoftmax()(_hidden(), TARGETS, _embeddings(), _generator())
    positions = TARGETS > 0
    logits = _hidden()[positions] @ _embeddings()[1:].T
    expected = F.cross_entropy(logits, TARGETS[positions] - 1)
    torch.testing.assert_close(loss, expected)
    # the padding column would change the result if it were included (its logit 0 is not negligible)
    with_padding = F.cross_entropy(_hidden()[positions] @ _embeddings().T, TARGETS[positions])
    assert (with_padding - expected).abs() > 1e-3
    # by hand: position (0,0) has logits (2, 1, -1.5, -1) over items 1..4
    by_hand = [
        _cross_entropy(_logit(b, p, int(TARGETS[b, p])), [_logit(b, p, i) for i in range(1, 5) if i != TARGETS[b, p]])
        for b, p in REAL
    ]
    assert by_hand[0] == pytest.approx(
        -math.log(math.exp(2) / (math.exp(2) + math.exp(1) + math.exp(-1.5) + math.exp(-1)))
    )
    assert loss.item() == pytest.approx(sum(by_hand) / 3, rel=1e-6)


# --- padding and gradients ------------------------------------------------------------------------

LOSSES = [
    BinaryCrossEntropy(),
    SampledSoftmax(3, False),
    SampledSoftmax(3, True),
    SampledSoftmax(3, False, per_position=True),
    FullSoftmax(),
]


def _loss_id(loss) -> str:
    return f"{type(loss).__name__}-{getattr(loss, 'logq_correction', '')}-{getattr(loss, 'per_position', '')}"


@pytest.mark.parametrize("loss_fn", LOSSES, ids=_loss_id)
def test_padded_positions_do_not_count(loss_fn):
    hidden = _hidden()
    changed = hidden.clone()
    changed[1, 0] = torch.tensor([-30.0, 40.0])
    a = loss_fn(hidden, TARGETS, _embeddings(), _generator())
    b = loss_fn(changed, TARGETS, _embeddings(), _generator())
    assert torch.isfinite(a)
    torch.testing.assert_close(a, b)


@pytest.mark.parametrize("loss_fn", LOSSES, ids=_loss_id)
def test_gradients_reach_the_embedding_table_and_hidden_states(loss_fn):
    embeddings = _embeddings().requires_grad_()
    hidden = _hidden().requires_grad_()
    loss = loss_fn(hidden, TARGETS, embeddings, _generator())
    loss.backward()
    assert torch.isfinite(embeddings.grad).all() and torch.isfinite(hidden.grad).all()
    assert embeddings.grad[TARGETS[TARGETS > 0]].abs().sum(-1).gt(0).all()  # every target row is pulled
    assert embeddings.grad[0].abs().sum() == 0  # padding is never a candidate
    assert hidden.grad[TARGETS > 0].abs().sum(-1).gt(0).all()
    assert hidden.grad[1, 0].abs().sum() == 0  # nothing flows to the padded position


def test_full_softmax_gradient_matches_autograd_of_the_reference():
    embeddings = _embeddings().requires_grad_()
    FullSoftmax()(_hidden(), TARGETS, embeddings, _generator()).backward()
    reference = _embeddings().requires_grad_()
    positions = TARGETS > 0
    F.cross_entropy(_hidden()[positions] @ reference[1:].T, TARGETS[positions] - 1).backward()
    torch.testing.assert_close(embeddings.grad, reference.grad)


# --- configs --------------------------------------------------------------------------------------


def test_configs_build_their_losses():
    assert isinstance(BCELossConfig().build(), BinaryCrossEntropy)
    assert isinstance(FullSoftmaxConfig().build(), FullSoftmax)
    built = SampledSoftmaxConfig(n_negatives=5, logq_correction=True).build()
    assert isinstance(built, SampledSoftmax) and built.n_negatives == 5 and built.logq_correction
    with pytest.raises(ValueError, match="n_negatives"):
        SampledSoftmaxConfig(n_negatives=0).build()


def _semi_hard_by_definition(embeddings: torch.Tensor, labels: torch.Tensor, margin: float) -> torch.Tensor:
    """The loss spelt out pair by pair: each anchor-positive's negative is the closest one farther than the
    positive, else the farthest."""
    distances = torch.cdist(embeddings, embeddings)
    losses = []
    for anchor, positive in itertools.permutations(range(len(labels)), 2):
        if labels[anchor] < 0 or labels[anchor] != labels[positive]:
            continue
        negatives = [n for n in range(len(labels)) if labels[n] >= 0 and labels[n] != labels[anchor]]
        if not negatives:
            continue
        farther = [distances[anchor, n] for n in negatives if distances[anchor, n] > distances[anchor, positive]]
        chosen = min(farther) if farther else max(distances[anchor, n] for n in negatives)
        losses.append(torch.relu(distances[anchor, positive] - chosen + margin))
    return torch.stack(losses).mean()


def test_the_semi_hard_triplet_loss_matches_its_definition_pair_by_pair():
    generator = torch.Generator().manual_seed(0)
    for _ in range(20):
        embeddings = torch.randn(24, 5, generator=generator)
        labels = torch.randint(-1, 4, (24,), generator=generator)
        expected = _semi_hard_by_definition(embeddings, labels, 0.5)
        assert torch.allclose(semi_hard_triplet_loss(embeddings, labels, 0.5), expected, atol=1e-6)


def test_the_semi_hard_triplet_loss_is_zero_without_a_pair_and_keeps_the_graph():
    embeddings = torch.randn(4, 3, requires_grad=True)
    loss = semi_hard_triplet_loss(embeddings, torch.tensor([0, 1, 2, -1]), 0.5)
    assert loss.item() == 0.0 and loss.requires_grad
