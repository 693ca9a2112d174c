"""The item-disjoint protocol: a seeded share of items never enters training; their rows are test targets only."""

from __future__ import annotations

import numpy as np
import pytest

from recmodels.data.interactions import Interactions
from recmodels.data.splits import item_disjoint_split, load_split, make_split, save_split
from recmodels.evaluation import evaluate
from recmodels.models.baselines import MostPopular


@pytest.fixture(scope="module")
def ml100k(ml100k_raw) -> Interactions:
    return Interactions.from_frame(ml100k_raw)


@pytest.fixture(scope="module")
def disjoint(ml100k):
    return item_disjoint_split(ml100k, held_out_share=0.1, seed=0)


def _items(interactions: Interactions) -> set[int]:
    return set(np.unique(interactions.frame["item"].to_numpy()).tolist())


def test_a_held_out_item_never_enters_training_or_validation(disjoint, ml100k):
    held_out = _items(disjoint.test_rows)
    assert len(held_out) == disjoint.report["held_out_items"] == round(0.1 * ml100k.n_items)
    assert not held_out & _items(disjoint.train)
    assert not held_out & _items(disjoint.valid_rows)
    assert not held_out & set(disjoint.test.history.frame["item"].tolist())


def test_every_row_of_a_held_out_item_is_a_kept_test_target(disjoint, ml100k):
    assert len(disjoint.train) + len(disjoint.valid_rows) + len(disjoint.test_rows) == len(ml100k)
    assert disjoint.report["test_targets_dropped_cold_item"] == 0
    targets = disjoint.test.targets
    # every ML-100K user has 20+ rows, so all of them have history and every held-out row is a target
    assert targets.nnz == len(disjoint.test_rows)
    assert set(np.unique(targets.indices).tolist()) == _items(disjoint.test_rows)
    # validation keeps the usual rule: a validation item no training row holds (here an item whose only rows
    # are users' last ones, never a held-out item) is dropped and counted
    untrained_in_validation = _items(disjoint.valid_rows) - _items(disjoint.train)
    dropped = np.isin(disjoint.valid_rows.frame["item"], list(untrained_in_validation)).sum()
    assert disjoint.report["valid_targets_dropped_cold_item"] == dropped
    assert len(disjoint.valid_rows) == len(np.unique(disjoint.valid_rows.frame["user"]))


def test_validation_is_each_users_last_trained_row(disjoint, ml100k):
    frame = ml100k.frame
    held_out = np.zeros(ml100k.n_items + 1, dtype=bool)
    held_out[list(_items(disjoint.test_rows))] = True
    last_trained = frame.loc[~held_out[frame["item"].to_numpy()]].groupby("user").tail(1)
    assert sorted(map(tuple, last_trained[["user", "item"]].to_numpy())) == sorted(
        map(tuple, disjoint.valid_rows.frame[["user", "item"]].to_numpy())
    )


def test_the_held_out_items_are_seeded(ml100k):
    first = _items(item_disjoint_split(ml100k, seed=3).test_rows)
    assert first == _items(item_disjoint_split(ml100k, seed=3).test_rows)
    assert first != _items(item_disjoint_split(ml100k, seed=4).test_rows)


def test_the_split_round_trips_through_disk_with_its_cold_targets(disjoint, tmp_path):
    save_split(disjoint, tmp_path)
    loaded = load_split(tmp_path)
    assert loaded.protocol == "item_disjoint"
    assert (loaded.test.targets != disjoint.test.targets).nnz == 0
    assert loaded.report == disjoint.report


def test_an_id_only_model_cannot_rank_an_item_it_never_trained_on(disjoint, ml100k):
    assert make_split(ml100k, "item_disjoint", seed=0).report == disjoint.report
    evaluation = evaluate(MostPopular().fit(disjoint), disjoint.test, ks=(10,))
    assert len(evaluation.users) == len(np.unique(disjoint.test_rows.frame["user"]))
    assert evaluation.metrics["recall@10"] == 0.0


def test_bad_shares_are_refused(ml100k):
    with pytest.raises(ValueError, match="held_out_share"):
        item_disjoint_split(ml100k, held_out_share=1.0)
    with pytest.raises(ValueError, match="min_length"):
        item_disjoint_split(ml100k, min_length=1)


def test_a_stage_keeps_only_the_targets_of_chosen_items(ml100k):
    split = make_split(ml100k, "leave_one_out")
    counts = np.bincount(split.train.frame["item"], minlength=ml100k.n_items + 1)
    rare = np.flatnonzero(counts <= 5)
    stage = split.test.only_items(rare)
    kept = stage.targets.tocoo()
    assert set(kept.col.tolist()) <= set(rare.tolist())
    everything = split.test.targets.tocoo()
    assert kept.nnz == np.isin(everything.col, rare).sum() > 0
    assert (stage.exclude != split.test.exclude).nnz == 0
