"""Hard-negative sampling: threshold, softmax frequencies, logQ, validity, determinism."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from recmodels.data.interactions import Interactions
from recmodels.graph import (
    HardNegativeConfig,
    NeighbourhoodConfig,
    NeighbourhoodNegativeSampler,
    NeighbourhoodOverlap,
    UniformNegativeSampler,
    item_transition_graph,
    neighbourhood_overlap,
)

N_ITEMS = 8


@pytest.fixture
def overlap() -> NeighbourhoodOverlap:
    items = np.zeros((N_ITEMS + 1, 3), dtype=np.int64)
    scores = np.zeros((N_ITEMS + 1, 3), dtype=np.float32)
    items[1], scores[1] = [2, 3, 4], [0.6, 0.4, 0.2]
    items[2], scores[2] = [1, 5, 0], [0.5, 0.1, 0.0]
    items[3], scores[3] = [6, 0, 0], [0.9, 0.0, 0.0]
    return NeighbourhoodOverlap(items=items, scores=scores, config=NeighbourhoodConfig(top_m=3))


def _admissible(overlap: NeighbourhoodOverlap, target: int, threshold: float) -> dict[int, float]:
    return {
        int(item): float(score)
        for item, score in zip(overlap.items[target], overlap.scores[target])
        if 0 < score <= threshold
    }


def _softmax(scores: dict[int, float], temperature: float) -> dict[int, float]:
    weights = {item: math.exp(score / temperature) for item, score in scores.items()}
    total = sum(weights.values())
    return {item: weight / total for item, weight in weights.items()}


def _no_history(batch: int) -> torch.Tensor:
    return torch.zeros(batch, 1, dtype=torch.int64)


def test_shapes_and_dtypes(overlap):
    sampler = NeighbourhoodNegativeSampler(overlap, N_ITEMS, HardNegativeConfig(n_negatives=5))
    targets = torch.tensor([[1, 2, 0], [3, 4, 5]])
    sampled = sampler.sample(targets, _no_history(2), 0.5, torch.Generator().manual_seed(0))
    assert sampled.items.shape == sampled.log_q.shape == sampled.valid.shape == (2, 3, 5)
    assert sampled.items.dtype == torch.int64 and sampled.log_q.dtype == torch.float32
    assert sampled.valid.dtype == torch.bool
    real = targets != 0
    assert ((sampled.items[real] >= 1) & (sampled.items[real] <= N_ITEMS)).all()
    # nothing is drawn for padding: item 0, never valid
    assert (sampled.items[~real] == 0).all() and not sampled.valid[~real].any()


def test_respects_the_threshold(overlap):
    sampler = NeighbourhoodNegativeSampler(overlap, N_ITEMS, HardNegativeConfig(n_negatives=64, uniform_share=0.0))
    targets = torch.tensor([[1, 2, 3]]).repeat(20, 1)
    sampled = sampler.sample(targets, _no_history(20), 0.45, torch.Generator().manual_seed(1))
    # Target 1: only 3 (0.4) and 4 (0.2) are admissible; 2 (0.6) overlaps too much.
    assert set(sampled.items[:, 0].unique().tolist()) == {3, 4}
    # Target 2: 1 (0.5) is excluded, leaving 5 (0.1).
    assert set(sampled.items[:, 1].unique().tolist()) == {5}
    # Target 3: its only candidate (0.9) is above the threshold, so it falls back to uniform.
    assert len(sampled.items[:, 2].unique()) == N_ITEMS
    torch.testing.assert_close(sampled.log_q[:, 2], torch.full((20, 64), -math.log(N_ITEMS)))
    view = overlap.as_csr()
    for column, target in enumerate([1, 2]):
        drawn = sampled.items[:, column][sampled.valid[:, column]].numpy()
        hardness = np.asarray(view[target, drawn].todense()).ravel()
        assert ((hardness > 0) & (hardness <= 0.45)).all()


def test_threshold_zero_draws_uniformly(overlap):
    sampler = NeighbourhoodNegativeSampler(overlap, N_ITEMS, HardNegativeConfig(n_negatives=64, uniform_share=0.0))
    targets = torch.tensor([[1, 2, 3]]).repeat(200, 1)
    sampled = sampler.sample(targets, _no_history(200), 0.0, torch.Generator().manual_seed(2))
    torch.testing.assert_close(sampled.log_q, torch.full_like(sampled.log_q, -math.log(N_ITEMS)))
    frequencies = torch.bincount(sampled.items.reshape(-1), minlength=N_ITEMS + 1)[1:] / sampled.items.numel()
    torch.testing.assert_close(frequencies, torch.full((N_ITEMS,), 1 / N_ITEMS), atol=0.01, rtol=0)


def test_frequencies_follow_the_softmax_of_scores(overlap):
    temperature = 0.5
    config = HardNegativeConfig(n_negatives=16, uniform_share=0.0, temperature=temperature)
    sampler = NeighbourhoodNegativeSampler(overlap, N_ITEMS, config)
    targets = torch.ones(64, 64, dtype=torch.int64)
    sampled = sampler.sample(targets, _no_history(64), 1.0, torch.Generator().manual_seed(3))
    expected = _softmax(_admissible(overlap, 1, 1.0), temperature)
    counts = torch.bincount(sampled.items.reshape(-1), minlength=N_ITEMS + 1)
    assert set(torch.nonzero(counts).ravel().tolist()) == {2, 3, 4}
    for item, probability in expected.items():
        assert counts[item].item() / sampled.items.numel() == pytest.approx(probability, abs=0.01)
        drawn_here = sampled.items == item
        torch.testing.assert_close(
            sampled.log_q[drawn_here], torch.full((int(drawn_here.sum()),), math.log(probability))
        )


def test_log_q_is_the_mixture_probability(overlap):
    share, threshold, temperature = 0.5, 0.45, 0.7
    config = HardNegativeConfig(n_negatives=32, uniform_share=share, temperature=temperature)
    sampler = NeighbourhoodNegativeSampler(overlap, N_ITEMS, config)
    targets = torch.tensor([[1, 2, 3, 4], [2, 1, 0, 1]])
    sampled = sampler.sample(targets, _no_history(2), threshold, torch.Generator().manual_seed(4))
    kinds = set()
    for b in range(2):
        for position in range(4):
            target = int(targets[b, position])
            if target == 0:  # padding: no draws
                continue
            hood = _softmax(_admissible(overlap, target, threshold), temperature)
            for slot in range(32):
                item = int(sampled.items[b, position, slot])
                if hood:
                    expected = (1 - share) * hood.get(item, 0.0) + share / N_ITEMS
                    kinds.add("in hood" if item in hood else "outside hood")
                else:
                    expected = 1 / N_ITEMS
                    kinds.add("no hood")
                assert sampled.log_q[b, position, slot].item() == pytest.approx(math.log(expected), rel=1e-5)
    assert kinds == {"in hood", "outside hood", "no hood"}


def _expected_validity(targets: torch.Tensor, histories: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
    expected = torch.zeros_like(items, dtype=torch.bool)
    for b in range(items.shape[0]):
        history = set(histories[b].tolist()) - {0}
        for position in range(items.shape[1]):
            target = int(targets[b, position])
            for slot in range(items.shape[2]):
                item = int(items[b, position, slot])
                expected[b, position, slot] = target != 0 and item != target and item not in history
    return expected


@pytest.mark.parametrize("kind", ["neighbourhood", "uniform"])
def test_target_history_and_padding_are_never_valid(overlap, kind):
    generator = torch.Generator().manual_seed(5)
    targets = torch.randint(0, N_ITEMS + 1, (6, 5), generator=generator)
    targets[:, 0] = 0
    histories = torch.randint(0, N_ITEMS + 1, (6, 4), generator=generator)
    sampler = (
        NeighbourhoodNegativeSampler(overlap, N_ITEMS, HardNegativeConfig(n_negatives=12))
        if kind == "neighbourhood"
        else UniformNegativeSampler(N_ITEMS, n_negatives=12)
    )
    sampled = sampler.sample(targets, histories, 0.6, generator)
    assert not sampled.valid[:, 0].any()
    torch.testing.assert_close(sampled.valid, _expected_validity(targets, histories, sampled.items))
    assert 0 < sampled.valid.float().mean() < 1
    for b in range(6):
        valid_items = sampled.items[b][sampled.valid[b]]
        assert not torch.isin(valid_items, histories[b][histories[b] != 0]).any()
        assert not (sampled.items[b] == targets[b].unsqueeze(-1))[sampled.valid[b]].any()


def test_same_seed_same_output(overlap):
    sampler = NeighbourhoodNegativeSampler(overlap, N_ITEMS)
    targets = torch.tensor([[1, 2, 3, 0], [4, 1, 2, 3]])
    histories = torch.tensor([[1, 2, 0], [3, 4, 5]])
    first = sampler.sample(targets, histories, 0.5, torch.Generator().manual_seed(6))
    again = sampler.sample(targets, histories, 0.5, torch.Generator().manual_seed(6))
    other = sampler.sample(targets, histories, 0.5, torch.Generator().manual_seed(7))
    for name in ("items", "log_q", "valid"):
        torch.testing.assert_close(getattr(first, name), getattr(again, name))
    assert not torch.equal(first.items, other.items)


def test_uniform_sampler_ignores_threshold():
    sampler = UniformNegativeSampler(N_ITEMS, n_negatives=4)
    targets = torch.tensor([[1, 2], [3, 0]])
    easy = sampler.sample(targets, _no_history(2), 0.0, torch.Generator().manual_seed(8))
    hard = sampler.sample(targets, _no_history(2), 0.9, torch.Generator().manual_seed(8))
    torch.testing.assert_close(easy.items, hard.items)
    assert easy.items.shape == (2, 2, 4)
    torch.testing.assert_close(easy.log_q[targets != 0], torch.full((3, 4), -math.log(N_ITEMS)))
    assert not easy.valid[1, 1].any()  # the padding position


def test_rejects_bad_configuration(overlap):
    with pytest.raises(ValueError, match="uniform_share"):
        HardNegativeConfig(uniform_share=1.5)
    with pytest.raises(ValueError, match="temperature"):
        HardNegativeConfig(temperature=0.0)
    with pytest.raises(ValueError, match="n_negatives"):
        HardNegativeConfig(n_negatives=0)
    with pytest.raises(ValueError, match="n_items=9"):
        NeighbourhoodNegativeSampler(overlap, N_ITEMS + 1)


def test_real_graph_negatives_stay_under_the_threshold(ml100k_small_raw):
    interactions = Interactions.from_frame(ml100k_small_raw)
    graph = item_transition_graph(interactions.sequences(), interactions.n_items)
    overlap = neighbourhood_overlap(graph, NeighbourhoodConfig(top_m=50))
    config = HardNegativeConfig(n_negatives=8, uniform_share=0.0)
    sampler = NeighbourhoodNegativeSampler(overlap, interactions.n_items, config)
    histories, _ = interactions.sequences().padded(np.arange(64), max_len=50)
    histories = torch.from_numpy(histories)
    targets = histories[:, 1:]
    threshold = 0.15
    sampled = sampler.sample(targets, histories, threshold, torch.Generator().manual_seed(9))

    view = overlap.as_csr()
    has_hood = torch.from_numpy(((overlap.scores > 0) & (overlap.scores <= threshold)).any(axis=1))[targets]
    hood_slots = sampled.valid & has_hood.unsqueeze(-1)
    rows = targets.unsqueeze(-1).expand_as(sampled.items)[hood_slots].numpy().copy()
    hardness = np.asarray(view[rows, sampled.items[hood_slots].numpy().copy()]).ravel()
    assert hood_slots.sum() > 1_000
    assert ((hardness > 0) & (hardness <= threshold)).all()
    for b in range(64):
        assert not torch.isin(sampled.items[b][sampled.valid[b]], histories[b]).any()
