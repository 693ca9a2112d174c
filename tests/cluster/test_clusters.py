"""Item embeddings (PureSVD of the training matrix, or a provided file) and k-means item clusters."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from recmodels.cluster import (
    ClusteringConfig,
    ItemClusters,
    aligned_item_embeddings,
    kmeans_item_clusters,
    svd_item_embeddings,
)
from recmodels.data.interactions import Interactions
from recmodels.data.readers import load_dataset
from recmodels.data.splits import SplitData, leave_one_out_split

SEED = 5


@pytest.fixture(scope="module")
def small_split(ml100k_small_raw) -> SplitData:
    return leave_one_out_split(Interactions.from_frame(ml100k_small_raw))


# --- SVD embeddings -------------------------------------------------------------------------------


def test_svd_embeddings_shape_padding_and_unit_rows(small_split):
    train = small_split.train.csr()
    embeddings = svd_item_embeddings(train, 16, SEED)
    assert embeddings.shape == (small_split.n_items + 1, 16)
    assert embeddings.dtype == np.float32
    assert not embeddings[0].any()  # padding
    seen = np.asarray(train.sum(axis=0)).ravel() > 0
    unseen = np.flatnonzero(~seen[1:]) + 1
    assert len(unseen) > 0  # items only in validation / test: nothing to embed them from
    assert not embeddings[unseen].any()
    norms = np.linalg.norm(embeddings[1:][seen[1:]], axis=1)
    np.testing.assert_allclose(norms, 1.0, rtol=1e-5)


def test_svd_embeddings_are_deterministic_for_a_seed(small_split):
    train = small_split.train.csr()
    assert np.array_equal(svd_item_embeddings(train, 8, SEED), svd_item_embeddings(train, 8, SEED))


def test_svd_embeddings_ignore_counts_and_group_co_consumed_items():
    # users 0-2 take items 1 and 2, users 3-5 take items 3 and 4; item 5 nobody
    rows = [0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5]
    cols = [1, 2, 1, 2, 1, 2, 3, 4, 3, 4, 3, 4]
    counts = [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1]
    train = sp.csr_matrix((counts, (rows, cols)), shape=(6, 6), dtype=np.float32)
    embeddings = svd_item_embeddings(train, 2, SEED)
    assert embeddings.shape == (6, 2)
    np.testing.assert_allclose(embeddings[1], embeddings[2], atol=1e-5)  # the same users
    np.testing.assert_allclose(embeddings[3], embeddings[4], atol=1e-5)
    assert abs(float(embeddings[1] @ embeddings[3])) < 1e-5  # no user in common: orthogonal
    assert not embeddings[5].any()
    repeated = train.copy()
    repeated.data[:] = [7, 1, 1, 3, 1, 1, 2, 1, 1, 1, 9, 1]  # counts: binarised first
    np.testing.assert_allclose(svd_item_embeddings(repeated, 2, SEED), embeddings, atol=1e-6)


def test_svd_dimension_is_capped_by_the_matrix():
    train = sp.csr_matrix(np.array([[0, 1, 1, 0], [0, 0, 1, 1], [0, 1, 0, 1], [0, 1, 1, 1], [0, 0, 0, 1]], np.float32))
    assert svd_item_embeddings(train, 10, SEED).shape == (4, 2)  # min(10, n_cols - 2, n_users - 1)
    with pytest.raises(ValueError, match="too small"):
        svd_item_embeddings(sp.csr_matrix(np.ones((1, 3), np.float32)), 4, SEED)  # one user
    with pytest.raises(ValueError, match="at least one item"):
        svd_item_embeddings(sp.csr_matrix(np.ones((3, 1), np.float32)), 4, SEED)


# --- provided embeddings --------------------------------------------------------------------------


def test_aligned_embeddings_map_source_ids_to_internal_rows():
    external = np.arange(18, dtype=np.float32).reshape(6, 3)
    item_ids = np.array(["", "2", "0", "5"], dtype=object)
    aligned = aligned_item_embeddings(item_ids, external)
    assert aligned.dtype == np.float32
    assert aligned.tolist() == [[0, 0, 0], external[2].tolist(), external[0].tolist(), external[5].tolist()]


@pytest.mark.parametrize(
    "bad, message",
    [
        ("x7", r"item id 'x7' \(internal 2\) is not an integer row index"),
        ("1.5", r"item id '1.5' \(internal 2\) is not an integer row index"),
        ("6", r"item id '6' \(internal 2\) has no row in embeddings of 6 items"),
        ("-1", r"item id '-1' \(internal 2\) has no row in embeddings of 6 items"),
    ],
)
def test_aligned_embeddings_name_the_bad_id(bad, message):
    external = np.zeros((6, 3), np.float32)
    with pytest.raises(ValueError, match=message):
        aligned_item_embeddings(np.array(["", "1", bad, "3"], dtype=object), external)


@pytest.mark.needs_shared_data("ml-1m-diffrec/clean")
def test_aligned_embeddings_on_the_diffrec_files(data_dir: Path):
    """L-DiffRec's LightGCN item embeddings are indexed by the DiffRec item ids."""
    folder = data_dir / "ml-1m-diffrec" / "clean"
    external = np.load(folder / "item_emb.npy")
    rows = load_dataset(folder).interactions
    interactions = Interactions.from_frame(rows.loc[rows["user_id"].astype(np.int64) < 50])
    aligned = aligned_item_embeddings(interactions.item_ids, external)
    assert aligned.shape == (interactions.n_items + 1, external.shape[1])
    assert not aligned[0].any()
    source_rows = [int(raw) for raw in interactions.item_ids[1:]]
    assert source_rows != sorted(source_rows)  # ids are sorted as strings: internal order differs
    np.testing.assert_array_equal(aligned[1:], external[source_rows])


# --- k-means clusters ------------------------------------------------------------------------------


def _kmeans(embeddings: np.ndarray, n_clusters: int, temperature: float = 1.0) -> ItemClusters:
    settings = ClusteringConfig(dim=embeddings.shape[1], n_clusters=n_clusters, temperature=temperature, seed=SEED)
    return kmeans_item_clusters(embeddings, settings, "blobs")


def _two_blobs() -> tuple[np.ndarray, np.ndarray]:
    """12 items around (5, 5) and 8 around (-5, -5), interleaved; row 0 is padding."""
    rng = np.random.default_rng(SEED)
    blob = np.array([i % 5 in (0, 2, 4) for i in range(20)])
    assert blob.sum() == 12
    points = np.where(blob[:, None], 5.0, -5.0) + rng.normal(0, 0.3, (20, 2))
    return np.vstack([np.zeros((1, 2)), points]).astype(np.float32), blob


def test_kmeans_separates_two_blobs():
    embeddings, blob = _two_blobs()
    clusters = _kmeans(embeddings, 2)
    assert clusters.labels.dtype == np.int64 and clusters.labels.shape == (21,)
    assert clusters.labels[0] == -1
    labels = clusters.labels[1:]
    first = labels[blob][0]
    assert (labels[blob] == first).all() and (labels[~blob] == 1 - first).all()
    assert clusters.n_clusters == 2
    assert clusters.sizes.tolist() == ([12, 8] if first == 0 else [8, 12])
    np.testing.assert_allclose(clusters.centroids[first], embeddings[1:][blob].mean(axis=0), rtol=1e-5)
    np.testing.assert_allclose(clusters.centroids[1 - first], embeddings[1:][~blob].mean(axis=0), rtol=1e-5)


def test_kmeans_memberships_are_a_softmax_over_squared_distances():
    embeddings, _ = _two_blobs()
    clusters = _kmeans(embeddings, 3, temperature=20.0)
    memberships = clusters.memberships
    assert memberships.shape == (21, 3) and memberships.dtype == np.float32
    assert not memberships[0].any()
    np.testing.assert_allclose(memberships[1:].sum(axis=1), 1.0, rtol=1e-6)
    distances = ((embeddings[1:, None, :] - clusters.centroids[None, :, :]) ** 2).sum(axis=2)
    logits = -distances / 20.0
    expected = np.exp(logits - logits.max(axis=1, keepdims=True))
    expected /= expected.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(memberships[1:], expected, rtol=1e-4, atol=1e-6)
    assert (memberships[1:].argmax(axis=1) == clusters.labels[1:]).all()
    sharper = _kmeans(embeddings, 3, temperature=1.0).memberships
    assert sharper[1:].max(axis=1).mean() > memberships[1:].max(axis=1).mean()


def test_kmeans_on_real_svd_embeddings(small_split):
    embeddings = svd_item_embeddings(small_split.train.csr(), 16, SEED)
    clusters = _kmeans(embeddings, 4)
    assert clusters.labels[0] == -1 and set(clusters.labels[1:].tolist()) == {0, 1, 2, 3}
    assert clusters.sizes.sum() == small_split.n_items and (clusters.sizes > 0).all()
    assert np.array_equal(_kmeans(embeddings, 4).labels, clusters.labels)


@pytest.mark.parametrize("n_clusters", [0, -1])
def test_config_rejects_a_bad_number_of_clusters(n_clusters):
    with pytest.raises(ValueError, match="n_clusters must be >= 1"):
        ClusteringConfig(n_clusters=n_clusters)


def test_kmeans_rejects_more_clusters_than_items_and_embeddings_of_another_width():
    embeddings, _ = _two_blobs()
    with pytest.raises(ValueError, match=r"n_clusters must be in \[1, 20\]"):
        _kmeans(embeddings, 21)
    with pytest.raises(ValueError, match="not 3-d"):
        kmeans_item_clusters(embeddings, ClusteringConfig(dim=3, seed=SEED), "blobs")


def test_kmeans_accepts_one_cluster_per_item_and_rejects_a_bad_temperature():
    embeddings, _ = _two_blobs()
    clusters = _kmeans(embeddings, 20)
    assert sorted(clusters.labels[1:].tolist()) == list(range(20))
    with pytest.raises(ValueError, match="temperature must be > 0"):
        ClusteringConfig(temperature=0.0)


def test_item_clusters_save_load_round_trip(tmp_path):
    embeddings, _ = _two_blobs()
    clusters = _kmeans(embeddings, 3)
    clusters.save(tmp_path / "nested" / "clusters")
    loaded = ItemClusters.load(tmp_path / "nested" / "clusters")
    for name in ("labels", "centroids", "memberships"):
        original, restored = getattr(clusters, name), getattr(loaded, name)
        assert restored.dtype == original.dtype
        assert np.array_equal(restored, original), name
    assert loaded.n_clusters == 3 and loaded.sizes.tolist() == clusters.sizes.tolist()
    assert loaded.config == clusters.config == ClusteringConfig(dim=2, n_clusters=3, seed=SEED)
    assert loaded.parameters() == {"dim": 2, "n_clusters": 3, "temperature": 1.0, "seed": SEED, "embeddings": "blobs"}


def test_config_build_clusters_svd_embeddings_and_records_what_it_used(small_split):
    settings = ClusteringConfig(dim=16, n_clusters=3, temperature=2.0, seed=SEED)
    clusters = settings.build(small_split.train.csr())
    assert clusters.config == settings and clusters.n_clusters == 3 and clusters.centroids.shape == (3, 16)
    embeddings = svd_item_embeddings(small_split.train.csr(), 16, SEED)
    assert np.array_equal(clusters.labels, _kmeans(embeddings, 3, temperature=2.0).labels)
    # A matrix too small for the asked width gets narrower embeddings, and the clusters say so.
    tiny = sp.random(10, 8, density=0.5, random_state=SEED, format="csr", dtype=np.float32)
    assert ClusteringConfig(dim=64, n_clusters=2).build(tiny).config.dim == 6  # min(64, n_cols - 2, n_users - 1)
