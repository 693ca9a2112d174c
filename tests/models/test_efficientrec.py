"""EfficientRec's parts: user-ID-free profiles, memberships, the inverted index, restricted against exhaustive."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

from recmodels.cluster import InvertedIndex
from recmodels.cluster.inverted import gather_lists
from recmodels.data.interactions import Interactions
from recmodels.data.splits import user_disjoint_split, user_temporal_split
from recmodels.evaluation import evaluate
from recmodels.models.baselines import MostPopular
from recmodels.models.efficientrec import (
    ClusterHeadConfig,
    ClusterScoringConfig,
    CoInteractionGraphConfig,
    EfficientRec,
    EfficientRecConfig,
    EfficientRecNet,
    ExhaustiveScoringConfig,
    GenreTripletLossConfig,
    ItemEncoderConfig,
    ShortlistsConfig,
    SoftmaxMembershipConfig,
    ThresholdListsConfig,
    _strongest,
)
from recmodels.train import TrainerConfig

SMALL = EfficientRecConfig(
    items=ItemEncoderConfig(dim=16, hidden=32),
    clusters=ClusterHeadConfig(clusters=8),
    max_len=50,
    crops_per_user=2,
    trainer=TrainerConfig(epochs=2, batch_size=128),
)


@pytest.fixture(scope="module")
def split(ml100k_small_raw):
    return user_temporal_split(Interactions.from_frame(ml100k_small_raw))


@pytest.fixture(scope="module")
def model(split):
    return EfficientRec(SMALL).fit(split)


def _histories(split, users=32, length=50) -> torch.Tensor:
    return torch.from_numpy(split.test.history.sequences().padded(split.test.users[:users], length)[0])


def test_the_state_has_no_user_table(split, model):
    """Nothing in the model is sized by users: the same shapes as a model trained on a tenth of them."""
    shapes = {name: tuple(value.shape) for name, value in model.state_dict().items()}
    assert all(split.train.n_users not in shape for shape in shapes.values())
    assert shapes["item_vectors"] == (split.n_items + 1, 16)


def test_a_profile_reads_only_the_history(split, model):
    """Two users with the same history get the same scores; an empty and a 10,000-item history are scored."""
    history = _histories(split, users=1)
    scorer = model.scorer()
    assert torch.equal(scorer(history.repeat(2, 1))[0], scorer(history.repeat(2, 1))[1])
    empty = scorer(torch.zeros(1, 5, dtype=torch.int64))
    assert torch.isfinite(empty).all()
    long = torch.randint(1, split.n_items + 1, (1, 10_000), generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(scorer(long)).all()


def test_softmax_memberships_sum_to_one(model):
    state = model.state_dict()
    memberships = SoftmaxMembershipConfig()(state["item_vectors"] @ state["centroids"].T)
    assert torch.allclose(memberships.sum(-1), torch.ones(len(memberships)), atol=1e-5)


def test_the_inverted_index_lists_every_item_in_its_strongest_cluster_and_only_above_threshold():
    memberships = np.array([[0.0, 0.0, 0.0], [0.7, 0.2, 0.1], [0.4, 0.45, 0.15], [0.1, 0.1, 0.8], [0.3, 0.3, 0.4]])
    index = InvertedIndex.thresholded(memberships, threshold=0.35)
    assert [index.list(cluster).tolist() for cluster in range(3)] == [[1, 2], [2], [3, 4]]
    assert index.offsets.tolist() == [0, 2, 3, 5]


def test_a_shortlist_keeps_each_clusters_strongest_items_ties_to_the_lower_id():
    memberships = np.array([[0, 0], [0.9, 0.1], [0.2, 0.8], [0.5, 0.5], [0.5, 0.5]])
    index = InvertedIndex.shortlisted(memberships, 2)
    assert [index.list(cluster).tolist() for cluster in range(2)] == [[1, 3], [2, 3]]


def test_gathering_lists_lays_the_chosen_lists_end_to_end_without_padding_between_them():
    """Lists of lengths 3, 0, 1, 2; row 0 picks (2, 0), row 1 (1, 3), row 2 two empty lists."""
    index = InvertedIndex(np.array([0, 3, 3, 4, 6]), np.array([5, 6, 7, 9, 1, 2]))
    chosen = torch.tensor([[2, 0], [1, 3], [1, 1]])
    gathered = gather_lists(torch.from_numpy(index.offsets), torch.from_numpy(index.items), chosen)
    assert gathered.tolist() == [[9, 5, 6, 7], [1, 2, 0, 0], [0, 0, 0, 0]]


def test_an_inverted_index_refuses_offsets_that_do_not_cover_its_items():
    with pytest.raises(ValueError, match="offsets"):
        InvertedIndex(np.array([0, 2]), np.array([1, 2, 3]))
    with pytest.raises(ValueError, match="0 is padding"):
        InvertedIndex(np.array([0, 2]), np.array([0, 2]))


def test_the_inverted_index_round_trips_through_its_folder(model, tmp_path):
    index = model.inverted_index
    index.save(tmp_path)
    loaded = InvertedIndex.load(tmp_path)
    assert np.array_equal(loaded.offsets, index.offsets) and np.array_equal(loaded.items, index.items)


def test_restricted_scoring_returns_only_items_of_the_chosen_clusters(split, model):
    restricted = model.with_scoring(ClusterScoringConfig(top_clusters=1, lists=ThresholdListsConfig(threshold=0.5)))
    scorer = restricted.scorer()
    history = _histories(split)
    scores = scorer(history)
    profiles = scorer.profiles(history)
    candidates = scorer.candidates(profiles)
    strongest = (profiles @ restricted.state_dict()["centroids"].T).argmax(1).tolist()
    index = restricted.inverted_index
    floor = scores.min(dim=1, keepdim=True).values
    for row, listed, cluster in zip(scores, candidates, strongest):
        assert set(listed.tolist()) - {0} == set(index.list(cluster).tolist())
        above_floor = set(torch.nonzero(row > row.min()).flatten().tolist())
        assert above_floor <= set(listed.tolist())
    assert (scores >= floor).all() and 0 < restricted.catalogue_share(history) < 1


def test_budget_shortlists_keep_the_chosen_lists_within_their_share_of_the_catalogue(split, model):
    """The default lists: m lists of ``int(share * n / m)`` items each, so no profile scores more than the share."""
    scoring = ClusterScoringConfig(top_clusters=2, lists=ShortlistsConfig(catalogue_share=0.1))
    restricted = model.with_scoring(scoring)
    assert set(restricted.inverted_index.lengths) == {int(0.1 * split.n_items / 2)}
    assert 0 < restricted.catalogue_share(_histories(split)) <= 0.1
    assert ShortlistsConfig(length=7).items_per_list(split.n_items, 2) == 7


def test_restricted_scoring_with_every_cluster_equals_exhaustive(split, model):
    everything = model.with_scoring(
        ClusterScoringConfig(top_clusters=SMALL.clusters.clusters, lists=ThresholdListsConfig())
    )
    exhaustive = model.with_scoring(ExhaustiveScoringConfig())
    assert everything.catalogue_share(_histories(split)) == 1.0
    assert np.array_equal(
        evaluate(everything, split.test, (10,)).top_items, evaluate(exhaustive, split.test, (10,)).top_items
    )


def test_side_features_align_genres_and_years_with_internal_ids(split, ml100k_items):
    features = split.with_item_features(ml100k_items).item_features
    assert features.genres.shape == (split.n_items + 1, len(features.vocabulary)) and features.genres[0].nnz == 0
    table = ml100k_items.set_index(ml100k_items["item_id"].astype(str))
    for item in (1, split.n_items // 2, split.n_items):
        row = table.loc[split.train.item_ids[item]]
        named = {features.vocabulary[column] for column in features.genres[item].indices}
        assert named == set(row["genres"].split("|"))
        assert features.years[item] == row["year"] or (pd.isna(row["year"]) and np.isnan(features.years[item]))
    buckets = features.year_buckets(10)
    assert buckets[0] == 0 and buckets[1:].min() >= 0 and buckets.max() <= 10
    known = ~np.isnan(features.years)
    assert (buckets[known] >= 1).all() and np.all(np.diff(buckets[known][np.argsort(features.years[known])]) >= 0)


def test_side_features_enter_the_item_vectors_and_training_works_without_them(split, ml100k_items):
    """With metadata the genre and year branches are trained; a split without any trains on ids alone, and
    switching the branches off gives that same model."""
    with_items = split.with_item_features(ml100k_items)
    graph = CoInteractionGraphConfig().build(split.train, split.train.sequences())
    net = EfficientRecNet(split.n_items, SMALL, graph, with_items.item_features)
    net.item_vectors().sum().backward()
    assert net.side.genre.weight.grad.abs().sum() > 0 and net.side.year.weight.grad.abs().sum() > 0
    without_branches = dataclasses.replace(SMALL, items=dataclasses.replace(SMALL.items, side_features=False))
    assert EfficientRecNet(split.n_items, without_branches, graph, with_items.item_features).side is None
    plain = EfficientRec(SMALL).fit(split)
    switched_off = EfficientRec(without_branches).fit(with_items)
    assert torch.equal(plain.state_dict()["item_vectors"], switched_off.state_dict()["item_vectors"])


def test_the_papers_genre_triplet_loss_trains_on_genres_and_refuses_a_split_without_them(split, ml100k_items):
    config = dataclasses.replace(SMALL, loss=GenreTripletLossConfig())
    with pytest.raises(ValueError, match="genre_triplet loss .* no item metadata"):
        EfficientRec(config).fit(split)
    model = EfficientRec(config).fit(split.with_item_features(ml100k_items))
    assert np.isfinite(model.history.loss).all() and model.history.loss[-1] < model.history.loss[0]
    assert model.history.best_score > 0


def test_the_graph_keeps_each_items_strongest_neighbours_symmetric():
    counts = sp.csr_matrix(np.array([[0, 5, 1, 3], [5, 0, 2, 0], [1, 2, 0, 4], [3, 0, 4, 0]], dtype=float))
    pruned = _strongest(counts, 1).toarray()
    assert (pruned == pruned.T).all()
    assert pruned[0, 1] == 5 and pruned[2, 3] == 4 and pruned[0, 2] == 0
    built = CoInteractionGraphConfig(neighbours=2).build(
        Interactions.from_frame(
            pd.DataFrame(
                {"user_id": ["a", "a", "b", "b", "b"], "item_id": ["x", "y", "x", "y", "z"], "timestamp": range(5)}
            )
        ),
        None,
    )
    assert built.shape == (4, 4) and np.allclose(built.toarray(), built.T.toarray()) and built[0].nnz == 0


def test_the_cpu_propagation_and_its_gradient_equal_torchs_sparse_product(split):
    """The SciPy product the CPU path uses (its backward assumes the graph is symmetric) against torch's."""
    graph = CoInteractionGraphConfig().build(split.train, split.train.sequences())
    assert abs(graph - graph.T).max() < 1e-7
    net = EfficientRecNet(split.n_items, SMALL, graph, None)
    vectors = torch.randn(split.n_items + 1, 16, generator=torch.Generator().manual_seed(0), requires_grad=True)
    weights = torch.randn(split.n_items + 1, 16, generator=torch.Generator().manual_seed(1))
    (gradient,) = torch.autograd.grad((net._propagate(vectors) * weights).sum(), vectors)
    coo = graph.tocoo()
    reference_graph = torch.sparse_coo_tensor(np.vstack([coo.row, coo.col]), coo.data, graph.shape).coalesce()
    reference = torch.sparse.mm(reference_graph, vectors)
    (reference_gradient,) = torch.autograd.grad((reference * weights).sum(), vectors)
    assert torch.allclose(net._propagate(vectors), reference, atol=1e-5)
    assert torch.allclose(gradient, reference_gradient, atol=1e-5)


def test_a_real_training_run_beats_most_popular(ml100k_raw):
    """ML-100K's per-user temporal split, every user's latest 10% held out: a short run past the baseline."""
    split = user_temporal_split(Interactions.from_frame(ml100k_raw))
    config = dataclasses.replace(SMALL, items=ItemEncoderConfig(dim=32, hidden=64), crops_per_user=4)
    config = dataclasses.replace(config, trainer=TrainerConfig(epochs=6, batch_size=128, patience=3))
    ndcg = evaluate(EfficientRec(config).fit(split), split.test, (10,)).metrics["ndcg@10"]
    baseline = evaluate(MostPopular().fit(split), split.test, (10,)).metrics["ndcg@10"]
    assert ndcg > baseline * 1.05, (ndcg, baseline)


def test_users_never_seen_in_training_are_served_from_their_history(ml100k_small_raw):
    split = user_disjoint_split(Interactions.from_frame(ml100k_small_raw), unseen_share=0.3)
    model = EfficientRec(SMALL).fit(split)
    unseen = evaluate(model, split.test.only(split.unseen_users), (10,))
    assert len(unseen.users) == len(split.unseen_users) > 50
    assert unseen.metrics["hr@10"] > 0
