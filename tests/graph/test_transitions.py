"""Weighted item transition graph: hand-computed weights, user boundaries, real Beauty."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recmodels.data.interactions import Interactions, Sequences
from recmodels.graph import item_transition_graph


def _interactions(sequences: dict[str, list[str]]) -> Interactions:
    rows = [(user, item, position) for user, items in sequences.items() for position, item in enumerate(items)]
    return Interactions.from_frame(pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"]))


def _sequences(*sequences: list[int]) -> Sequences:
    items = np.concatenate([np.asarray(sequence, dtype=np.int64) for sequence in sequences])
    indptr = np.concatenate([[0], np.cumsum([len(sequence) for sequence in sequences])])
    return Sequences(indptr=indptr, items=items, timestamps=np.zeros(len(items), dtype=np.int64))


def test_weights_match_hand_computation():
    # Raw (1/k, both directions): w12 = 1, w13 = 1/2 (k = 2), w23 = 1, w24 = 1; item 5 has no pair.
    # Row-normalised: row1 (2/3, 1/3), row2 (1/3, 1/3, 1/3), row3 (1/3, 2/3), row4 (1).
    # Degrees 2, 3, 2, 1; edge (i, j) scaled by 1/deg(i) + 1/deg(j), e.g.
    # (1, 2): 2/3 * (1/2 + 1/3) = 5/9, (2, 4): 1/3 * (1/3 + 1) = 4/9, (4, 2): 1 * (1 + 1/3) = 4/3.
    interactions = _interactions({"a": ["1", "2", "3"], "b": ["2", "4"], "c": ["5"]})
    graph = item_transition_graph(interactions.sequences(), interactions.n_items, max_distance=2)
    expected = np.array(
        [
            [0, 0, 0, 0, 0, 0],
            [0, 0, 5 / 9, 1 / 3, 0, 0],
            [0, 5 / 18, 0, 5 / 18, 4 / 9, 0],
            [0, 1 / 3, 5 / 9, 0, 0, 0],
            [0, 0, 4 / 3, 0, 0, 0],
            [0, 0, 0, 0, 0, 0],
        ]
    )
    assert graph.shape == (6, 6)
    assert graph.dtype == np.float32
    assert graph.nnz == 8
    np.testing.assert_allclose(graph.toarray(), expected, rtol=1e-6)


def test_max_distance_limits_the_window():
    graph = item_transition_graph(_sequences([1, 2, 3, 4]), n_items=4, max_distance=1)
    support = graph.toarray() > 0
    expected = np.zeros((5, 5), dtype=bool)
    for i, j in [(1, 2), (2, 3), (3, 4)]:
        expected[i, j] = expected[j, i] = True
    np.testing.assert_array_equal(support, expected)


def test_no_pairs_across_users_and_no_self_loops():
    # [1, 2] then [3, 3, 4]: 2 -> 3 would cross users, 3 -> 3 is a repeat.
    graph = item_transition_graph(_sequences([1, 2], [3, 3, 4]), n_items=4, max_distance=3)
    expected = np.zeros((5, 5))
    # Each node has one neighbour: weight 1 after row-normalisation, times 1/1 + 1/1.
    expected[1, 2] = expected[2, 1] = expected[3, 4] = expected[4, 3] = 2.0
    np.testing.assert_allclose(graph.toarray(), expected)


def test_rejects_bad_arguments():
    with pytest.raises(ValueError, match="max_distance"):
        item_transition_graph(_sequences([1, 2]), n_items=2, max_distance=0)
    with pytest.raises(ValueError, match=r"1\.\.2"):
        item_transition_graph(_sequences([1, 3]), n_items=2)


@pytest.fixture(scope="module")
def beauty(data_dir: Path) -> Interactions:
    users: list[str] = []
    items: list[str] = []
    positions: list[int] = []
    with (data_dir / "amazon-yelp-seq" / "Beauty.txt").open() as lines:
        for line in lines:
            user, *sequence = line.split()
            users += [user] * len(sequence)
            items += sequence
            positions += range(len(sequence))
    frame = pd.DataFrame({"user_id": users, "item_id": items, "timestamp": np.asarray(positions, dtype=np.int64)})
    return Interactions.from_frame(frame)


@pytest.mark.needs_shared_data("amazon-yelp-seq/Beauty.txt")
def test_beauty_graph(beauty: Interactions):
    assert (beauty.n_users, beauty.n_items, len(beauty)) == (22_363, 12_101, 198_502)
    sequences = beauty.sequences()
    started = time.perf_counter()
    graph = item_transition_graph(sequences, beauty.n_items)
    elapsed = time.perf_counter() - started

    assert elapsed < 5.0
    assert graph.shape == (12_102, 12_102)
    assert 100_000 < graph.nnz < 5_000_000
    assert graph[0].nnz == 0 and graph[:, 0].nnz == 0
    assert graph.diagonal().sum() == 0
    support = graph != 0
    assert (support != support.T).nnz == 0
    assert np.isfinite(graph.data).all() and (graph.data > 0).all()

    with_transition = set()
    for start, stop in zip(sequences.indptr[:-1], sequences.indptr[1:]):
        sequence = sequences.items[start:stop]
        for distance in range(1, 4):
            differs = sequence[:-distance] != sequence[distance:]
            with_transition.update(sequence[:-distance][differs].tolist())
            with_transition.update(sequence[distance:][differs].tolist())
    assert set(np.flatnonzero(np.diff(graph.indptr)).tolist()) == with_transition
