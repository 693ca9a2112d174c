"""The user-disjoint protocol: a seeded share of users never enters training and is served from history alone."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from recmodels.data.interactions import Interactions
from recmodels.data.splits import load_split, make_split, save_split, user_disjoint_split
from recmodels.evaluation import evaluate
from recmodels.models.baselines import EASE, MostPopular


@pytest.fixture(scope="module")
def ml100k(ml100k_raw) -> Interactions:
    return Interactions.from_frame(ml100k_raw)


@pytest.fixture(scope="module")
def disjoint(ml100k):
    return user_disjoint_split(ml100k, unseen_share=0.2, seed=0)


def _users(interactions: Interactions) -> set[int]:
    return set(np.unique(interactions.frame["user"].to_numpy()).tolist())


def test_a_held_out_user_never_enters_training(disjoint, ml100k):
    held_out = _users(disjoint.context_rows)
    assert len(held_out) == disjoint.report["unseen_users"] == round(0.2 * ml100k.n_users)  # every user has 20+ rows
    assert not held_out & _users(disjoint.train)
    assert not held_out & _users(disjoint.valid_rows)  # early stopping never looks at them
    assert held_out <= _users(disjoint.test_rows)
    # evaluated: those whose last item some training user has seen (a cold target is dropped and counted)
    unseen = set(disjoint.unseen_users.tolist())
    assert unseen <= held_out and len(held_out - unseen) <= disjoint.report["test_targets_dropped_cold_item"]
    assert len(unseen) > 0.95 * len(held_out)
    # their earlier rows are the test history, and ranking skips them
    test_history = disjoint.test.history.csr()
    context = disjoint.context_rows.csr()
    assert (context.astype(bool) > test_history.astype(bool)).nnz == 0
    assert (context.astype(bool) > disjoint.test.exclude.astype(bool)).nnz == 0


def test_rows_reconcile_and_every_user_is_tested_on_the_last_item(disjoint, ml100k):
    parts = [disjoint.train, disjoint.valid_rows, disjoint.test_rows, disjoint.context_rows]
    assert sum(len(part) for part in parts) == len(ml100k)
    last = ml100k.frame.groupby("user").tail(1)
    assert len(disjoint.test_rows) == ml100k.n_users
    pd.testing.assert_frame_equal(
        disjoint.test_rows.frame.reset_index(drop=True), last.reset_index(drop=True), check_like=True
    )
    assert len(disjoint.valid_rows) == ml100k.n_users - disjoint.report["unseen_users"]


def test_the_unseen_share_is_seeded(ml100k):
    first = user_disjoint_split(ml100k, seed=3).unseen_users
    assert np.array_equal(first, user_disjoint_split(ml100k, seed=3).unseen_users)
    assert not np.array_equal(first, user_disjoint_split(ml100k, seed=4).unseen_users)


def test_last_fraction_targets_and_seen_users_keep_a_training_row():
    rows = pd.DataFrame(
        {
            "user_id": ["a"] * 4 + ["b"] * 10 + ["c"] * 3,
            "item_id": [str(i) for i in range(4)] + [str(i) for i in range(10)] + ["0", "1", "2"],
            "timestamp": np.arange(17, dtype=np.int64),
        }
    )
    interactions = Interactions.from_frame(rows)
    for seed in range(6):
        split = user_disjoint_split(
            interactions, unseen_share=0.34, target="last_fraction", test_fraction=0.4, seed=seed
        )
        counts = split.test_rows.frame.groupby("user").size()
        lengths = {0: 4, 1: 10, 2: 3}
        # round half up, at least one, at most length - 2
        assert counts.to_dict() == {
            user: min(max(int(np.floor(0.4 * n + 0.5)), 1), n - 2) for user, n in lengths.items()
        }
        (unseen,) = _users(split.context_rows)  # held out (its targets may be items no one else has)
        assert unseen not in _users(split.train)
        assert _users(split.train) == {0, 1, 2} - {unseen}


def test_stages_only_split_one_evaluation_into_seen_and_unseen(disjoint):
    """Every history-in model serves unseen users with no retraining; the two groups add up to everyone."""
    for model in (MostPopular().fit(disjoint), EASE().fit(disjoint)):
        everyone = evaluate(model, disjoint.test, (10,))
        unseen = disjoint.unseen_users
        seen = np.setdiff1d(disjoint.test.users, unseen)
        parts = {
            name: evaluate(model, disjoint.test.only(users), (10,))
            for name, users in [("seen", seen), ("unseen", unseen)]
        }
        assert len(parts["unseen"].users) == len(unseen) and len(parts["seen"].users) == len(seen)
        weighted = sum(part.metrics["ndcg@10"] * len(part.users) for part in parts.values()) / len(everyone.users)
        assert weighted == pytest.approx(everyone.metrics["ndcg@10"], rel=1e-9)
    assert 0.05 < parts["unseen"].metrics["ndcg@10"]  # EASE reads an unseen user's history: well above zero


def test_round_trip_keeps_the_context_rows(disjoint, tmp_path):
    save_split(disjoint, tmp_path)
    loaded = load_split(tmp_path)
    assert loaded.protocol == "user_disjoint"
    assert np.array_equal(loaded.unseen_users, disjoint.unseen_users)
    pd.testing.assert_frame_equal(loaded.context_rows.frame, disjoint.context_rows.frame)
    assert (loaded.test.exclude != disjoint.test.exclude).nnz == 0
    assert loaded.report == disjoint.report


@pytest.mark.parametrize(
    "options",
    [{"unseen_share": 0.0}, {"unseen_share": 1.0}, {"target": "last"}, {"test_fraction": 0.5}, {"min_length": 2}],
)
def test_bad_options_are_refused(ml100k, options):
    with pytest.raises(ValueError):
        make_split(ml100k, "user_disjoint", **options)
