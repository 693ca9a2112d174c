"""Asset checks called directly on hand-made values: per-user time order, models against popularity."""

import dataclasses

import numpy as np
import pandas as pd
import pytest

from orchestration.checks import models_beat_most_popular, split_is_usable
from orchestration.outputs import LeaderboardTables
from recmodels.data.interactions import Interactions
from recmodels.data.splits import predefined_split, user_temporal_split
from recmodels.evaluation import Evaluation
from recmodels.leaderboard import UncertaintySettings, build_leaderboard


def rows(*triples, split=None) -> Interactions:
    users, items, times = zip(*triples)
    frame = pd.DataFrame({"user_id": users, "item_id": items, "timestamp": np.asarray(times, dtype=np.int64)})
    return Interactions.from_frame(frame if split is None else frame.assign(split=split))


def test_split_is_usable_checks_time_order_per_user():
    # u2's training rows are later than all of u1's held-out rows: allowed for a per-user split
    u1 = [("u1", item, time) for time, item in enumerate("abcd")]
    u2 = [("u2", item, time + 100) for time, item in enumerate("dcba")]
    result = split_is_usable(split=user_temporal_split(rows(*u1, *u2)))
    assert result.passed
    assert result.metadata["users_train_after_held_out"].value == 0 and result.metadata["test_users"].value == 2


def test_split_is_usable_fails_when_a_users_training_row_is_later_than_their_held_out_row():
    data = rows(("u1", "a", 1), ("u1", "b", 2), ("u1", "c", 9), ("u2", "a", 1), ("u2", "b", 2), ("u2", "c", 3),
                split=["train", "valid", "train", "train", "valid", "test"])  # fmt: skip
    as_if_split_per_user = dataclasses.replace(predefined_split(data), protocol="user_temporal")
    result = split_is_usable(split=as_if_split_per_user)
    assert not result.passed
    assert result.metadata["users_train_after_held_out"].value == 1


def test_models_beat_most_popular_uses_the_paired_test(tmp_path):
    rng = np.random.default_rng(0)
    users = np.arange(80)
    popular = rng.random(80) * 0.3

    def evaluation(values: np.ndarray) -> Evaluation:
        return Evaluation(
            {"ndcg@10": float(values.mean())}, users, np.zeros((80, 1), np.int64), 0.0, {"ndcg@10": values}
        )

    noise = rng.normal(scale=0.2, size=80)
    models = {
        "most_popular_model": evaluation(popular),
        "better_model": evaluation(popular + 0.1),
        "a_hair_above_model": evaluation(popular + 0.002 + noise - noise.mean()),  # above on average, by chance
        "worse_model": evaluation(popular - 0.1),
    }
    board = build_leaderboard(models, UncertaintySettings(permutations=2_000))
    board.save(tmp_path, protocol="user_temporal")  # the check reads the leaderboard as the IO layer loads it
    result = models_beat_most_popular(leaderboard=LeaderboardTables.load(tmp_path))
    assert not result.passed
    assert result.metadata["models_not_significantly_above"].value == "a_hair_above_model, worse_model"
    assert result.metadata["models_significantly_below"].value == "worse_model"
    assert result.metadata["most_popular_ndcg@10"].value == pytest.approx(popular.mean())
