"""Model contract for every registered family, hand-computed ItemKNN / EASE, and baseline quality."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

import recmodels.models  # noqa: F401  (registers every family)
from recmodels.data.interactions import Interactions, k_core
from recmodels.data.splits import SplitData, predefined_split, temporal_split
from recmodels.evaluation import evaluate
from recmodels.models.base import HistoryBatch, Recommender, model_family
from recmodels.models.baselines import EASE, EASEConfig, ItemKNN, ItemKNNConfig, MostPopular


def test_baselines_are_registered():
    assert {"most_popular", "item_knn", "ease"} <= set(Recommender._families)
    assert model_family("ease") is EASE
    with pytest.raises(ValueError, match="unknown model family 'nope'"):
        model_family("nope")


# ---------------------------------------------------------------- hand-computed


def toy_split(triples: list[tuple[str, str]]) -> SplitData:
    frame = pd.DataFrame(
        {
            "user_id": [u for u, _ in triples],
            "item_id": [i for _, i in triples],
            "timestamp": np.arange(len(triples), dtype=np.int64),
            "split": "train",
        }
    )
    return predefined_split(Interactions.from_frame(frame))


def test_most_popular_counts_distinct_users():
    split = toy_split([("u1", "a"), ("u1", "a"), ("u1", "b"), ("u2", "b"), ("u3", "b"), ("u3", "c")])
    model = MostPopular().fit(split)
    scores = model.score(HistoryBatch.from_numpy(np.array([[0, 1], [3, 2]])))
    np.testing.assert_array_equal(scores.numpy(), [[0, 1, 3, 1], [0, 1, 3, 1]])


# Three users over items a..d (ids 1..4):  u1 {a, b, c}, u2 {a, b}, u3 {b, c, d}
KNN_TOY = [("u1", "a"), ("u1", "b"), ("u1", "c"), ("u2", "a"), ("u2", "b"), ("u3", "b"), ("u3", "c"), ("u3", "d")]


def _cosine(shrink: float) -> np.ndarray:
    x = np.array([[1, 1, 1, 0], [1, 1, 0, 0], [0, 1, 1, 1]], dtype=np.float64)
    co = x.T @ x
    counts = x.sum(axis=0)
    sim = np.zeros((5, 5))
    for i in range(4):
        for j in range(4):
            if i != j and co[i, j] > 0:
                sim[i + 1, j + 1] = co[i, j] / (math.sqrt(counts[i] * counts[j]) + shrink)
    return sim


@pytest.mark.parametrize("shrink", [0.0, 2.0])
def test_item_knn_similarity_is_cosine(shrink):
    model = ItemKNN(ItemKNNConfig(neighbours=10, shrink=shrink)).fit(toy_split(KNN_TOY))
    np.testing.assert_allclose(model.similarity.toarray(), _cosine(shrink), rtol=1e-6)
    # spot values by hand (shrink 0): sim(a, b) = 2 / sqrt(2 * 3), sim(c, d) = 1 / sqrt(2)
    if shrink == 0.0:
        assert model.similarity[1, 2] == pytest.approx(2 / math.sqrt(6))
        assert model.similarity[3, 4] == pytest.approx(1 / math.sqrt(2))
        assert model.similarity[1, 4] == 0.0


def test_item_knn_keeps_only_top_neighbours_per_row():
    model = ItemKNN(ItemKNNConfig(neighbours=1)).fit(toy_split(KNN_TOY))
    r6, r2, r3 = 2 / math.sqrt(6), 1 / math.sqrt(2), 1 / math.sqrt(3)
    # row a: b (0.816) beats c (0.5); row b: a and c tie at 0.816 -> lower id a;
    # row c: b (0.816) beats d (0.707) and a (0.5); row d: c (0.707) beats b (0.577)
    expected = np.zeros((5, 5))
    expected[1, 2] = r6
    expected[2, 1] = r6
    expected[3, 2] = r6
    expected[4, 3] = r2
    np.testing.assert_allclose(model.similarity.toarray(), expected, rtol=1e-6)
    assert np.all(np.diff(model.similarity.indptr) <= 1)

    two = ItemKNN(ItemKNNConfig(neighbours=2)).fit(toy_split(KNN_TOY))
    assert np.diff(two.similarity.indptr).tolist() == [0, 2, 2, 2, 2]
    assert two.similarity[2, 4] == 0.0  # b's third neighbour d (0.577) is cut
    assert two.similarity[4, 2] == pytest.approx(r3)  # d keeps both of its neighbours

    # a history scores the sum of its items' rows
    scores = two.score(HistoryBatch.from_numpy(np.array([[0, 1, 4], [0, 0, 2]])))
    sim = two.similarity.toarray()
    np.testing.assert_allclose(scores.numpy(), [sim[1] + sim[4], sim[2]], rtol=1e-6)
    # duplicate history items count once
    dup = two.score(HistoryBatch.from_numpy(np.array([[2, 2, 2]])))
    np.testing.assert_allclose(dup.numpy(), [sim[2]], rtol=1e-6)


def test_item_knn_rejects_zero_neighbours():
    with pytest.raises(ValueError, match="neighbours"):
        ItemKNN(ItemKNNConfig(neighbours=0)).fit(toy_split(KNN_TOY))


EASE_TOY = [
    ("u1", "a"), ("u1", "b"), ("u1", "c"),
    ("u2", "b"), ("u2", "d"),
    ("u3", "a"), ("u3", "d"), ("u3", "e"),
    ("u4", "c"), ("u4", "e"),
]  # fmt: skip


def test_ease_matches_closed_form():
    l2 = 1.5
    model = EASE(EASEConfig(l2=l2)).fit(toy_split(EASE_TOY))
    x = np.zeros((4, 5))
    for u, i in EASE_TOY:
        x[int(u[1]) - 1, "abcde".index(i)] = 1.0
    gram = x.T @ x
    p = np.linalg.solve(gram + l2 * np.eye(5), np.eye(5))
    b = np.eye(5) - p / np.diag(p)[None, :]
    np.fill_diagonal(b, 0.0)

    weights = model.weights.numpy()
    assert weights.shape == (6, 6) and weights.dtype == np.float32
    np.testing.assert_allclose(weights[1:, 1:], b, rtol=1e-5, atol=1e-7)
    assert not weights[0].any() and not weights[:, 0].any()
    assert not np.diag(weights).any()
    # stationarity of the constrained ridge objective: off-diagonal of (G + l2 I) B - G is zero
    residual = (gram + l2 * np.eye(5)) @ weights[1:, 1:].astype(np.float64) - gram
    off_diagonal = residual[~np.eye(5, dtype=bool)]
    np.testing.assert_allclose(off_diagonal, 0.0, atol=1e-5)

    scores = model.score(HistoryBatch.from_numpy(np.array([[0, 1, 2], [4, 5, 5]])))
    history = np.zeros((2, 5))
    history[0, [0, 1]] = 1
    history[1, [3, 4]] = 1
    np.testing.assert_allclose(scores.numpy()[:, 1:], history @ b, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(scores.numpy()[:, 0], 0.0)


def test_ease_guards_catalogue_size():
    with pytest.raises(ValueError, match="max_items=4"):
        EASE(EASEConfig(max_items=4)).fit(toy_split(EASE_TOY))


# ---------------------------------------------------------------- quality on a real temporal split


QUALITY_FAMILIES = ("most_popular", "item_knn", "ease")


@pytest.fixture(scope="module")
def quality_ndcg(ml100k_raw) -> dict[str, float]:
    kept, _ = k_core(ml100k_raw, 5, 5)
    split = temporal_split(Interactions.from_frame(kept))
    assert split.report["test_users_evaluated"] >= 50
    return {
        family: evaluate(model_family(family)().fit(split), split.test, ks=(10,)).metrics["ndcg@10"]
        for family in QUALITY_FAMILIES
    }


def test_personalised_baselines_beat_popularity(quality_ndcg):
    assert 0.05 < quality_ndcg["most_popular"] < quality_ndcg["item_knn"] < quality_ndcg["ease"] < 1.0
    # margins well beyond noise on this split (~0.15 / 0.19 / 0.22)
    assert quality_ndcg["ease"] - quality_ndcg["most_popular"] > 0.03
    assert quality_ndcg["item_knn"] - quality_ndcg["most_popular"] > 0.01
