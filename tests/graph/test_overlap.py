"""Neighbourhood Jaccard overlap: a hand-computed graph, truncation, chunking, persistence."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from recmodels.graph import NeighbourhoodConfig, NeighbourhoodOverlap, neighbourhood_overlap


def _graph(edges: list[tuple[int, int]], size: int, weights: np.ndarray | None = None) -> sp.csr_matrix:
    rows = np.array([i for i, j in edges] + [j for i, j in edges])
    cols = np.array([j for i, j in edges] + [i for i, j in edges])
    values = np.ones(len(rows)) if weights is None else np.concatenate([weights, weights])
    return sp.csr_matrix((values, (rows, cols)), shape=(size, size))


# Path-like graph on items 1..5: N1={2,3}, N2={1,3}, N3={1,2,4}, N4={3,5}, N5={4}.
# Jaccard: (1,2)=1/3, (1,3)=1/4, (1,4)=1/3, (2,3)=1/4, (2,4)=1/3, (3,5)=1/3; all other pairs 0.
EDGES = [(1, 2), (1, 3), (2, 3), (3, 4), (4, 5)]


@pytest.fixture
def tiny_graph() -> sp.csr_matrix:
    # Weights are arbitrary: only the neighbour sets count. An explicit stored zero is no edge.
    graph = _graph(EDGES + [(1, 5)], size=6, weights=np.array([0.7, 2.0, 0.1, 5.0, 1.0, 0.0]))
    assert graph.nnz == 12
    return graph


def test_jaccard_matches_hand_computation(tiny_graph):
    overlap = neighbourhood_overlap(tiny_graph, NeighbourhoodConfig(top_m=3))
    expected_items = np.array([[0, 0, 0], [2, 4, 3], [1, 4, 3], [5, 1, 2], [1, 2, 0], [3, 0, 0]])
    expected_scores = np.array(
        [
            [0, 0, 0],
            [1 / 3, 1 / 3, 1 / 4],
            [1 / 3, 1 / 3, 1 / 4],
            [1 / 3, 1 / 4, 1 / 4],
            [1 / 3, 1 / 3, 0],
            [1 / 3, 0, 0],
        ],
        dtype=np.float32,
    )
    assert overlap.items.dtype == np.int64 and overlap.scores.dtype == np.float32
    np.testing.assert_array_equal(overlap.items, expected_items)
    np.testing.assert_allclose(overlap.scores, expected_scores, rtol=1e-6)
    assert (overlap.n_items, overlap.top_m) == (5, 3)


def test_truncation_keeps_best_and_lower_id_on_ties(tiny_graph):
    overlap = neighbourhood_overlap(tiny_graph, NeighbourhoodConfig(top_m=1))
    np.testing.assert_array_equal(overlap.items[:, 0], [0, 2, 1, 5, 1, 3])
    two = neighbourhood_overlap(tiny_graph, NeighbourhoodConfig(top_m=2))
    np.testing.assert_array_equal(two.items[3], [5, 1])  # 1 and 2 tie at 1/4: the lower id wins


def test_padding_and_no_self_on_a_wider_table(tiny_graph):
    overlap = neighbourhood_overlap(tiny_graph, NeighbourhoodConfig(top_m=6))
    assert overlap.items.shape == (6, 6)
    for item in range(6):
        listed = overlap.items[item][overlap.scores[item] > 0]
        assert item not in listed
        assert (overlap.items[item][len(listed) :] == 0).all()
        assert (overlap.scores[item][len(listed) :] == 0).all()
        assert (np.diff(overlap.scores[item]) <= 0).all()
    np.testing.assert_array_equal((overlap.scores > 0).sum(axis=1), [0, 3, 3, 3, 2, 1])


def _brute_force(graph: sp.csr_matrix, top_m: int) -> tuple[np.ndarray, np.ndarray]:
    """Dense reference: full Jaccard matrix, then a Python sort per row."""
    adjacency = (graph.toarray() != 0).astype(np.int64)
    shared = adjacency @ adjacency.T
    degrees = adjacency.sum(axis=1)
    union = degrees[:, None] + degrees[None, :] - shared
    jaccard = np.where(shared > 0, shared / np.maximum(union, 1), 0.0).astype(np.float32)
    np.fill_diagonal(jaccard, 0)
    items = np.zeros((len(graph.indptr) - 1, top_m), dtype=np.int64)
    scores = np.zeros_like(items, dtype=np.float32)
    for row in range(len(items)):
        ranked = sorted((j for j in range(len(items)) if jaccard[row, j] > 0), key=lambda j: (-jaccard[row, j], j))
        ranked = ranked[:top_m]
        items[row, : len(ranked)] = ranked
        scores[row, : len(ranked)] = jaccard[row, ranked]
    return items, scores


def _random_graph(n_nodes: int, n_edges: int, seed: int) -> sp.csr_matrix:
    rng = np.random.default_rng(seed)
    ends = rng.integers(1, n_nodes + 1, size=(n_edges, 2))
    ends = ends[ends[:, 0] != ends[:, 1]]
    graph = _graph([tuple(pair) for pair in ends.tolist()], size=n_nodes + 1, weights=rng.random(len(ends)))
    graph.sum_duplicates()
    return graph


@pytest.mark.parametrize("top_m", [1, 3, 20])
def test_matches_dense_reference_on_a_random_graph(top_m):
    # Rows here have far more two-hop pairs than 16 * top_m, so the sampled floor is exercised.
    graph = _random_graph(n_nodes=300, n_edges=1_500, seed=top_m)
    overlap = neighbourhood_overlap(graph, NeighbourhoodConfig(top_m=top_m))
    items, scores = _brute_force(graph, top_m)
    np.testing.assert_array_equal(overlap.items, items)
    np.testing.assert_array_equal(overlap.scores, scores)


def test_chunked_equals_unchunked(tiny_graph):
    for graph in (tiny_graph, _random_graph(n_nodes=200, n_edges=800, seed=7)):
        whole = neighbourhood_overlap(graph, NeighbourhoodConfig(top_m=10), chunk_rows=100_000)
        chunked = neighbourhood_overlap(graph, NeighbourhoodConfig(top_m=10), chunk_rows=2)
        np.testing.assert_array_equal(chunked.items, whole.items)
        np.testing.assert_array_equal(chunked.scores, whole.scores)


def test_save_load_round_trip_and_csr_view(tiny_graph, tmp_path: Path):
    overlap = neighbourhood_overlap(tiny_graph, NeighbourhoodConfig(top_m=3))
    path = overlap.save(tmp_path / "overlap")
    assert path.suffix == ".npz"
    loaded = NeighbourhoodOverlap.load(tmp_path / "overlap")
    assert loaded.config == NeighbourhoodConfig(top_m=3) and loaded.parameters() == {"max_distance": 3, "top_m": 3}
    np.testing.assert_array_equal(loaded.items, overlap.items)
    np.testing.assert_array_equal(loaded.scores, overlap.scores)
    assert loaded.items.dtype == np.int64 and loaded.scores.dtype == np.float32

    view = loaded.as_csr()
    assert view.shape == (6, 6) and view.nnz == 12
    assert view[3, 5] == pytest.approx(1 / 3) and view[3, 2] == pytest.approx(1 / 4) and view[4, 5] == 0


def test_rejects_bad_arguments(tiny_graph):
    with pytest.raises(ValueError, match="top_m must be >= 1"):
        NeighbourhoodConfig(top_m=0)
    with pytest.raises(ValueError, match="max_distance"):
        NeighbourhoodConfig(max_distance=0)
    with pytest.raises(ValueError, match="square"):
        neighbourhood_overlap(tiny_graph[:, :4], NeighbourhoodConfig(top_m=2))
    with pytest.raises(ValueError, match="float32"):
        NeighbourhoodOverlap(np.zeros((2, 2), dtype=np.int64), np.zeros((2, 2)), NeighbourhoodConfig(top_m=2))
    with pytest.raises(ValueError, match="top_m=3"):
        NeighbourhoodOverlap(np.zeros((2, 2), np.int64), np.zeros((2, 2), np.float32), NeighbourhoodConfig(top_m=3))
