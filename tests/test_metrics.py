import math
from itertools import combinations

import numpy as np
import pytest
import scipy.sparse as sp

from recmodels import metrics
from recmodels.metrics import (
    average_popularity,
    average_popularity_per_user,
    catalogue_coverage,
    hits_matrix,
    intra_list_diversity,
    intra_list_diversity_per_user,
    mean_over_users,
    novelty,
    novelty_per_user,
    ranking_metrics,
)

N_ITEMS = 5
D3 = 1 / math.log2(3)  # discount of rank 2
D4 = 1 / math.log2(4)  # discount of rank 3


def hand_case() -> tuple[np.ndarray, sp.csr_matrix]:
    """Four users over items 1..5, targets in non-canonical CSR form.

    u0: targets {2, 5},  top [5, 3, 2] -> hits at ranks 1 and 3
    u1: targets {1, 4} (4 stored twice, unsorted), top [3, 4, 0] -> hit at rank 2, padding
    u2: no targets (one explicit zero at item 2), top [1, 2, 3]
    u3: targets {3}, top [0, 0, 0] (nothing could be recommended)
    """
    top = np.array([[5, 3, 2], [3, 4, 0], [1, 2, 3], [0, 0, 0]], dtype=np.int64)
    indptr = np.array([0, 2, 5, 6, 7])
    indices = np.array([5, 2, 4, 1, 4, 2, 3])
    data = np.array([1.0, 3.0, 2.0, 1.0, 1.0, 0.0, 1.0])
    targets = sp.csr_matrix((data, indices, indptr), shape=(4, N_ITEMS + 1))
    return top, targets


def test_hits_matrix_hand_case_and_padding_never_hits():
    top, targets = hand_case()
    expected = np.array([[True, False, True], [False, True, False], [False, False, False], [False] * 3])
    np.testing.assert_array_equal(hits_matrix(top, targets), expected)
    # targets are not modified by canonicalisation
    np.testing.assert_array_equal(targets.indices, [5, 2, 4, 1, 4, 2, 3])


@pytest.mark.parametrize(
    ("k", "expected_u0", "expected_u1"),
    [
        # (recall, ndcg, hr, mrr, precision)
        (1, (0.5, 1.0, 1.0, 1.0, 1.0), (0.0, 0.0, 0.0, 0.0, 0.0)),
        (2, (0.5, 1 / (1 + D3), 1.0, 1.0, 0.5), (0.5, D3 / (1 + D3), 1.0, 0.5, 0.5)),
        (3, (1.0, (1 + D4) / (1 + D3), 1.0, 1.0, 2 / 3), (0.5, D3 / (1 + D3), 1.0, 0.5, 1 / 3)),
        # k > K = 3: cutoff uses the 3 columns, precision divides by 5, IDCG to min(n_rel, 5)
        (5, (1.0, (1 + D4) / (1 + D3), 1.0, 1.0, 2 / 5), (0.5, D3 / (1 + D3), 1.0, 0.5, 1 / 5)),
    ],
)
def test_ranking_metrics_hand_case(k, expected_u0, expected_u1):
    top, targets = hand_case()
    result = ranking_metrics(top, targets, [k])
    names = ["recall", "ndcg", "hr", "mrr", "precision"]
    assert set(result) == {f"{name}@{k}" for name in names}
    for name, u0, u1 in zip(names, expected_u0, expected_u1):
        values = result[f"{name}@{k}"]
        assert values.shape == (4,) and values.dtype == np.float64
        np.testing.assert_allclose(values[[0, 1, 3]], [u0, u1, 0.0], rtol=1e-12, err_msg=name)
        assert np.isnan(values[2]), f"{name}: user without targets must be NaN"


def test_ranking_metrics_all_ks_in_one_call():
    top, targets = hand_case()
    result = ranking_metrics(top, targets, (1, 3, 10))
    assert len(result) == 15
    np.testing.assert_allclose(result["recall@10"], [1.0, 0.5, np.nan, 0.0])
    np.testing.assert_allclose(result["precision@10"], [0.2, 0.1, np.nan, 0.0])
    np.testing.assert_allclose(result["ndcg@1"], [1.0, 0.0, np.nan, 0.0])


def test_ndcg_idcg_uses_min_of_n_rel_and_k():
    # 3 relevant items, K = 2, both hits -> ndcg@2 = 1 but ndcg@4 = (1 + D3) / (1 + D3 + D4)
    top = np.array([[1, 2]])
    targets = sp.csr_matrix(np.array([[0, 1, 1, 1]]))
    result = ranking_metrics(top, targets, [2, 4])
    np.testing.assert_allclose(result["ndcg@2"], [1.0])
    np.testing.assert_allclose(result["ndcg@4"], [(1 + D3) / (1 + D3 + D4)])
    np.testing.assert_allclose(result["recall@4"], [2 / 3])


def reference_ranking(top, targets, ks):
    """Straightforward per-user implementation of the module-docstring definitions."""
    dense = targets.toarray()
    out = {f"{m}@{k}": [] for k in ks for m in ("recall", "ndcg", "hr", "mrr", "precision")}
    for u in range(top.shape[0]):
        relevant = set(np.flatnonzero(dense[u]).tolist())
        for k in ks:
            ranked = [int(i) for i in top[u, :k]]
            if not relevant:
                for m in ("recall", "ndcg", "hr", "mrr", "precision"):
                    out[f"{m}@{k}"].append(math.nan)
                continue
            hit_ranks = [r for r, i in enumerate(ranked, start=1) if i != 0 and i in relevant]
            dcg = sum(1 / math.log2(r + 1) for r in hit_ranks)
            idcg = sum(1 / math.log2(r + 1) for r in range(1, min(len(relevant), k) + 1))
            out[f"recall@{k}"].append(len(hit_ranks) / len(relevant))
            out[f"ndcg@{k}"].append(dcg / idcg)
            out[f"hr@{k}"].append(1.0 if hit_ranks else 0.0)
            out[f"mrr@{k}"].append(1 / hit_ranks[0] if hit_ranks else 0.0)
            out[f"precision@{k}"].append(len(hit_ranks) / k)
    return {name: np.array(values) for name, values in out.items()}


def random_case(rng, n_users=200, n_items=50, width=8):
    top = np.stack([rng.permutation(np.arange(1, n_items + 1))[:width] for _ in range(n_users)])
    n_padded = rng.integers(0, width + 1, size=n_users) * (rng.random(n_users) < 0.2)
    top[np.arange(width)[None, :] >= width - n_padded[:, None]] = 0
    shape = (n_users, n_items + 1)
    counts = rng.integers(0, 3, size=shape) * (rng.random(shape) < 0.15)
    counts[:, 0] = 0
    counts[rng.random(n_users) < 0.1] = 0
    return top, sp.csr_matrix(counts)


def test_ranking_metrics_match_per_user_reference_on_random_case():
    rng = np.random.default_rng(20240611)
    top, targets = random_case(rng)
    ks = [1, 5, 10]  # K = 8, so k = 10 exercises the k > K branch
    result = ranking_metrics(top, targets, ks)
    expected = reference_ranking(top, targets, ks)
    assert result.keys() == expected.keys()
    assert np.isnan(expected["recall@1"]).any() and (top == 0).any()
    for name in expected:
        np.testing.assert_allclose(result[name], expected[name], rtol=1e-12, err_msg=name)


# Beyond-accuracy: u0 recommends {1, 2} (+ padding), u1 recommends {2, 3, 4}.
BA_TOP = np.array([[1, 2, 0], [2, 3, 4]])
POPULARITY = np.array([0, 4, 2, 1, 0, 3])  # item 4 never seen in training
N_TRAIN_USERS = 4


@pytest.mark.parametrize(("k", "expected"), [(1, 2 / 5), (3, 4 / 5), (10, 4 / 5)])
def test_catalogue_coverage(k, expected):
    assert catalogue_coverage(BA_TOP, N_ITEMS, k) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("k", "expected"),
    [
        # k=1: u0 item 1 (p=1) -> 0; u1 item 2 (p=1/2) -> 1; mean 0.5
        (1, 0.5),
        # k=3: u0 mean(0, 1) = 0.5; u1 mean(1, 2, 2) = 5/3 (item 4 unseen -> p=1/4); mean 13/12
        (3, 13 / 12),
    ],
)
def test_novelty(k, expected):
    np.testing.assert_allclose(novelty(BA_TOP, POPULARITY, N_TRAIN_USERS, k), expected)


@pytest.mark.parametrize(
    ("k", "expected"),
    [(1, (4 + 2) / 2), (3, ((4 + 2) / 2 + (2 + 1 + 0) / 3) / 2)],  # u0 {1,2}, u1 {2,3,4}
)
def test_average_popularity(k, expected):
    np.testing.assert_allclose(average_popularity(BA_TOP, POPULARITY, k), expected)


GENRES = np.array(
    [
        [0, 0, 0],  # 0 padding
        [1, 0, 0],  # 1
        [1, 1, 0],  # 2: cos(1, 2) = 1/sqrt(2)
        [0, 0, 1],  # 3: orthogonal to 1 and 2
        [0, 0, 0],  # 4: no genre -> similarity 0 to everything
        [1, 0, 0],  # 5: identical to 1
    ]
)
GENRE_TOP = np.array([[1, 2, 3], [1, 5, 0], [4, 1, 0], [3, 0, 0]])  # u3 has one item: excluded
S = 1 / math.sqrt(2)


@pytest.mark.parametrize("as_sparse", [True, False])
@pytest.mark.parametrize(
    ("k", "expected"),
    [
        # u0: (1 - S + 1 + 1) / 3, u1: 1 - 1 = 0, u2: 1 - 0 = 1
        (3, ((3 - S) / 3 + 0 + 1) / 3),
        (2, ((1 - S) + 0 + 1) / 3),
    ],
)
def test_intra_list_diversity_genre_multi_hot(as_sparse, k, expected):
    features = sp.csr_matrix(GENRES) if as_sparse else GENRES
    np.testing.assert_allclose(intra_list_diversity(GENRE_TOP, features, k), expected)


def test_intra_list_diversity_dense_embeddings_with_zero_vector():
    embeddings = np.array([[0, 0], [1, 0], [0, 2], [-3, 0], [0, 0], [1, 1]], dtype=np.float32)
    top = np.array([[1, 2, 3], [5, 4, 0]])
    # u0: pairs (1,2) cos 0 -> 1, (1,3) cos -1 -> 2, (2,3) cos 0 -> 1: 4/3; u1: zero vector -> 1
    np.testing.assert_allclose(intra_list_diversity(top, embeddings, 3), (4 / 3 + 1) / 2)


def test_intra_list_diversity_nan_without_eligible_users():
    assert math.isnan(intra_list_diversity(np.array([[1, 0], [0, 0]]), GENRES, 2))


def test_per_user_beyond_accuracy_values_average_to_the_scalars():
    # per-user values by hand: the scalars are their means over the users where they are defined
    np.testing.assert_allclose(novelty_per_user(BA_TOP, POPULARITY, N_TRAIN_USERS, 3), [0.5, 5 / 3])
    np.testing.assert_allclose(average_popularity_per_user(BA_TOP, POPULARITY, 3), [3.0, 1.0])
    ild = intra_list_diversity_per_user(GENRE_TOP, GENRES, 3)
    np.testing.assert_allclose(ild, [(3 - S) / 3, 0.0, 1.0, np.nan])  # u3 has one item: undefined
    assert mean_over_users(ild) == pytest.approx(intra_list_diversity(GENRE_TOP, GENRES, 3))
    empty_list = np.array([[0, 0], [1, 2]])
    np.testing.assert_allclose(average_popularity_per_user(empty_list, POPULARITY, 2), [np.nan, 3.0])
    assert math.isnan(mean_over_users(np.array([np.nan])))


@pytest.mark.parametrize("as_sparse", [True, False])
def test_intra_list_diversity_chunked_matches_pairwise_reference(monkeypatch, as_sparse):
    rng = np.random.default_rng(7)
    top, _ = random_case(rng, n_users=60, n_items=30, width=6)
    features = (rng.random((31, 4)) < 0.4) * 1.0 if as_sparse else rng.normal(size=(31, 4))
    features[3] = 0.0
    norms = np.linalg.norm(features, axis=1, keepdims=True)
    unit = features / np.where(norms > 0, norms, 1.0)
    per_user = []
    for row in top:
        items = [i for i in row if i != 0]
        if len(items) >= 2:
            per_user.append(np.mean([1 - unit[a] @ unit[b] for a, b in combinations(items, 2)]))
    monkeypatch.setattr(metrics, "_ILD_CHUNK_FLOATS", 50)  # 2 users per chunk
    given = sp.csr_matrix(features) if as_sparse else features
    np.testing.assert_allclose(intra_list_diversity(top, given, 6), np.mean(per_user), rtol=1e-12)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: ranking_metrics(hand_case()[0][:3], hand_case()[1], [1]), "users"),
        (lambda: ranking_metrics(*hand_case(), [0]), "k must be >= 1"),
        (lambda: ranking_metrics(*hand_case(), []), "at least one"),
        (lambda: hits_matrix(np.array([[1, -2]]), sp.csr_matrix((1, 6))), "negative"),
        (lambda: hits_matrix(np.array([[1, 6]]), sp.csr_matrix((1, 6))), "n_items"),
        (lambda: hits_matrix(np.array([[1, 2, 1]]), sp.csr_matrix((1, 6))), "repeats"),
        (lambda: hits_matrix(np.array([1, 2]), sp.csr_matrix((1, 6))), "shape"),
        (lambda: hits_matrix(np.array([[1.0, 2.0]]), sp.csr_matrix((1, 6))), "integer"),
        (lambda: hits_matrix(np.array([[1, 2]]), np.zeros((1, 6))), "CSR"),
        (lambda: hits_matrix(np.array([[1, 2]]), sp.csr_matrix(np.eye(1, 6))), "column 0"),
        (lambda: catalogue_coverage(BA_TOP, 3, 2), "n_items"),
        (lambda: catalogue_coverage(BA_TOP, N_ITEMS, 0), "k must be >= 1"),
        (lambda: novelty(BA_TOP, POPULARITY, 0, 2), "n_train_users"),
        (lambda: novelty(BA_TOP, POPULARITY, 3, 2), "larger than n_train_users"),
        (lambda: novelty(BA_TOP, POPULARITY[:4], N_TRAIN_USERS, 2), "n_items"),
        (lambda: average_popularity(BA_TOP, -POPULARITY, 2), "non-negative"),
        (lambda: average_popularity(BA_TOP, POPULARITY[None, :], 2), "1-D"),
        (lambda: intra_list_diversity(GENRE_TOP, GENRES[:4], 2), "n_items"),
        (lambda: intra_list_diversity(GENRE_TOP, GENRES[:, 0], 2), "2-D"),
        (lambda: intra_list_diversity(GENRE_TOP, GENRES * np.nan, 2), "finite"),
    ],
)
def test_invalid_arguments_raise(call, message):
    with pytest.raises(ValueError, match=message):
        call()
