"""The leaderboard with intervals and tests against the best, on hand-made evaluations."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from recmodels.evaluation import Evaluation
from recmodels.leaderboard import UncertaintySettings, build_leaderboard, load_per_user

USERS = np.arange(0, 120, 2)  # 60 users, not 0..n-1: ids are carried, not assumed


def evaluation(ndcg: np.ndarray, novelty: np.ndarray, coverage: float, users: np.ndarray = USERS) -> Evaluation:
    per_user = {"ndcg@10": ndcg, "novelty@10": novelty}
    metrics = {"ndcg@10": float(ndcg.mean()), "coverage@10": coverage, "novelty@10": float(novelty.mean())}
    return Evaluation(
        metrics=metrics, users=users, top_items=np.zeros((len(users), 10), np.int64), seconds=0.0, per_user=per_user
    )


@pytest.fixture(scope="module")
def evaluations() -> dict[str, Evaluation]:
    rng = np.random.default_rng(0)
    strong = rng.random(len(USERS)) * 0.5 + 0.2
    return {
        "worse_everywhere": evaluation(strong - 0.1, np.full(len(USERS), 3.0), 0.2),
        "strong": evaluation(strong, rng.random(len(USERS)) + 2, 0.5),
        "copy_of_strong": evaluation(strong.copy(), rng.random(len(USERS)) + 2, 0.4),
    }


@pytest.fixture(scope="module")
def board(evaluations):
    return build_leaderboard(evaluations, UncertaintySettings(sort_by="ndcg@10", permutations=2_000))


def test_best_first_with_the_tie_and_the_loser_marked(board):
    # equal means: the first listed is the best and the stable sort keeps it first
    assert board.best == "strong"
    assert list(board.table["model"]) == ["strong", "copy_of_strong", "worse_everywhere"]
    assert board.tied_with_best.to_dict() == {"strong": True, "copy_of_strong": True, "worse_everywhere": False}
    records = {record["model"]: record["vs_best"] for record in board.records}
    assert records["strong"]["p_value"] is None
    assert records["copy_of_strong"]["p_value"] == 1.0
    assert records["worse_everywhere"]["p_value"] < 0.05 and records["worse_everywhere"]["mean_difference"] < 0


def test_table_has_plain_columns_then_interval_bounds(board, evaluations):
    table = board.table
    assert list(table.columns) == [
        "model",
        "users",
        "ndcg@10",
        "coverage@10",
        "novelty@10",
        "ndcg@10_ci_low",
        "ndcg@10_ci_high",
        "novelty@10_ci_low",
        "novelty@10_ci_high",
    ]
    row = table.set_index("model").loc["strong"]
    assert row["ndcg@10_ci_low"] < row["ndcg@10"] < row["ndcg@10_ci_high"]
    # a constant per-user metric has an interval of zero width
    worse = table.set_index("model").loc["worse_everywhere"]
    assert worse["novelty@10_ci_low"] == worse["novelty@10_ci_high"] == pytest.approx(3.0)
    # the shared resamples shift a copy's interval exactly like the original's
    copy = table.set_index("model").loc["copy_of_strong"]
    assert (copy["ndcg@10_ci_low"], copy["ndcg@10_ci_high"]) == (row["ndcg@10_ci_low"], row["ndcg@10_ci_high"])
    assert (table["users"] == len(USERS)).all()


def test_saved_files_carry_values_intervals_tests_and_per_user_arrays(board, evaluations, tmp_path):
    board.save(tmp_path, protocol="user_temporal")
    table = pd.read_csv(tmp_path / "leaderboard.csv")
    pd.testing.assert_frame_equal(table, board.table)
    document = json.loads((tmp_path / "leaderboard.json").read_text())
    assert document["protocol"] == "user_temporal" and document["best"] == "strong" and document["users"] == 60
    assert document["settings"]["permutations"] == 2_000 and "sign-flip" in document["test"]
    first = document["models"][0]
    assert first["model"] == "strong"
    assert set(first["metrics"]["ndcg@10"]) == {"value", "ci_low", "ci_high"}
    assert first["metrics"]["coverage@10"] == {"value": 0.5, "ci_low": None, "ci_high": None}
    assert document["models"][2]["vs_best"]["tied_with_best"] is False
    users, per_user = load_per_user(tmp_path)
    np.testing.assert_array_equal(users, USERS)
    assert set(per_user) == set(evaluations)
    for name, result in evaluations.items():
        assert set(per_user[name]) == {"ndcg@10", "novelty@10"}
        np.testing.assert_array_equal(per_user[name]["ndcg@10"], result.per_user["ndcg@10"])


def test_markdown_shows_value_interval_and_mark(board):
    text = board.markdown(["ndcg@10", "coverage@10"])
    lines = {line.split("|")[1].strip(): line for line in text.splitlines() if line.startswith("| ")}
    assert "| best " in lines["strong"]
    assert "≈ best (p 1)" in lines["copy_of_strong"]
    assert "below (p" in lines["worse_everywhere"]
    low, high = board.table.loc[0, ["ndcg@10_ci_low", "ndcg@10_ci_high"]]
    assert f"[{low:.4g}, {high:.4g}]" in lines["strong"]
    assert lines["strong"].endswith(" 0.5 |")  # coverage: a value without an interval
    assert "60 test users" in text


def test_models_on_other_users_or_an_untestable_sort_metric_are_refused(evaluations):
    shifted = dict(
        evaluations, strong=evaluation(evaluations["strong"].per_user["ndcg@10"], np.ones(60), 0.5, USERS + 1)
    )
    with pytest.raises(ValueError, match="other users"):
        build_leaderboard(shifted, UncertaintySettings())
    with pytest.raises(ValueError, match="averaged over users"):
        build_leaderboard(evaluations, UncertaintySettings(sort_by="coverage@10"))
