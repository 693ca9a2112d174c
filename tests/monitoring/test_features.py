"""Drift features: reference popularity buckets, primary genres, per-window activity, newcomer shares."""

from __future__ import annotations

import csv

import numpy as np
import pandas as pd
import pytest

from recmodels.monitoring.features import (
    ACTIVITY_LABELS,
    CATEGORICAL,
    NUMERICAL,
    POPULARITY_BUCKETS,
    FeatureContext,
    coverage,
    interaction_features,
    newcomer_shares,
    recommendation_features,
)

MONDAY = int(pd.Timestamp("2024-01-08", tz="UTC").timestamp())  # Monday 00:00 UTC
HOUR, DAY = 3_600, 86_400


@pytest.fixture(scope="module")
def reference(ml100k_weeks) -> pd.DataFrame:
    """The first four weeks of ML-100K."""
    first_four = sorted(ml100k_weeks["window"].unique())[:4]
    return ml100k_weeks[ml100k_weeks["window"].isin(first_four)].reset_index(drop=True)


@pytest.fixture(scope="module")
def current(ml100k_weeks) -> pd.DataFrame:
    """The last full week of ML-100K."""
    return ml100k_weeks[ml100k_weeks["window"] == "1998-04-13"].reset_index(drop=True)


@pytest.fixture(scope="module")
def context(reference, ml100k_items) -> FeatureContext:
    return FeatureContext.build(reference, ml100k_items)


def hand_rows(*rows) -> pd.DataFrame:
    users, items, times, windows = zip(*rows)
    return pd.DataFrame(
        {
            "user_id": users,
            "item_id": items,
            "timestamp": np.asarray(times, dtype=np.int64),
            "rating": np.arange(len(rows), dtype=np.float64) % 5 + 1,
            "window": windows,
        }
    )


# ---------------------------------------------------------------- FeatureContext


def test_popularity_buckets_split_reference_items_10_30_60(context, reference):
    counts = reference["item_id"].value_counts()
    n = len(counts)
    assert set(context.item_bucket.index) == set(counts.index)
    sizes = context.item_bucket.value_counts()
    assert (sizes["head"], sizes["torso"], sizes["tail"]) == (n // 10, int(n * 0.4) - n // 10, n - int(n * 0.4))
    assert abs(sizes["head"] / n - 0.1) < 0.01
    assert abs(sizes["torso"] / n - 0.3) < 0.01
    assert abs(sizes["tail"] / n - 0.6) < 0.01
    # buckets follow reference popularity: no torso item is more popular than a head item, and so on
    by_bucket = counts.groupby(context.item_bucket.reindex(counts.index)).agg(["min", "max"])
    assert by_bucket.loc["head", "min"] >= by_bucket.loc["torso", "max"]
    assert by_bucket.loc["torso", "min"] >= by_bucket.loc["tail", "max"]
    assert by_bucket.loc["head", "min"] > by_bucket.loc["tail", "max"]


def test_items_missing_from_reference_are_unseen(context, reference, current):
    seen = set(reference["item_id"])
    new_items = current.loc[~current["item_id"].isin(seen), "item_id"]
    assert len(new_items) > 0
    assert set(context.popularity(new_items)) == {"unseen"}
    old_items = current.loc[current["item_id"].isin(seen), "item_id"]
    assert set(context.popularity(old_items)) <= {"head", "torso", "tail"}
    assert set(context.popularity(pd.Series(["no-such-item"]))) == {"unseen"}
    assert set(context.popularity(current["item_id"])) <= set(POPULARITY_BUCKETS)


def test_genre_is_the_first_listed_genre(context, data_dir):
    """Checked against the raw .item file: its `class` column lists genres separated by spaces."""
    raw = pd.read_csv(
        data_dir / "ml-100k" / "ml-100k.item", sep="\t", dtype=str, keep_default_na=False, quoting=csv.QUOTE_NONE
    )
    expected = raw["class:token_seq"].str.split().str[0].fillna("unknown")
    ids = raw["item_id:token"]
    np.testing.assert_array_equal(context.genre(ids), expected.to_numpy())
    assert context.genre(pd.Series(["1", "2"])).tolist() == ["Animation", "Action"]  # Toy Story, GoldenEye
    assert context.genre(pd.Series(["no-such-item"])).tolist() == ["unknown"]
    assert len(context.item_genre) == 1682 and context.item_genre.index.is_unique


def test_genres_without_items_metadata_are_unknown(reference):
    context = FeatureContext.build(reference, None)
    assert set(context.genre(reference["item_id"].iloc[:100])) == {"unknown"}
    assert len(context.item_bucket) == reference["item_id"].nunique()


def test_reference_users(context, reference):
    assert set(context.reference_users) == set(reference["user_id"])
    assert context.reference_users.is_unique


# ---------------------------------------------------------------- interaction_features


def test_interaction_features_on_real_week(context, current):
    features = interaction_features(current, context)
    assert len(features) == len(current)
    assert list(features.columns) == [*NUMERICAL, *CATEGORICAL]
    assert not features.isna().any().any()
    np.testing.assert_array_equal(features["rating"].to_numpy(), current["rating"].to_numpy())
    assert set(features["user_activity"]) <= set(ACTIVITY_LABELS)
    # activity is the user's row count in the row's window, cut at 5 / 20 / 50
    counts = current.groupby("user_id")["item_id"].transform("size")
    expected = np.select([counts <= 5, counts <= 20, counts <= 50], ACTIVITY_LABELS[:3], ACTIVITY_LABELS[3])
    np.testing.assert_array_equal(features["user_activity"].to_numpy(), expected)
    moments = pd.to_datetime(current["timestamp"], unit="s", utc=True)
    np.testing.assert_array_equal(features["hour"].to_numpy(), moments.dt.hour.astype(str).to_numpy())
    np.testing.assert_array_equal(features["weekday"].to_numpy(), moments.dt.day_name().to_numpy())
    np.testing.assert_array_equal(features["item_popularity"].to_numpy(), context.popularity(current["item_id"]))


def test_user_activity_counts_per_user_per_window():
    """User a: 6 rows in week 1 and 1 in week 2; activity must not mix the two windows."""
    rows = hand_rows(
        *[("a", f"i{n}", MONDAY + n * HOUR, "2024-01-08") for n in range(6)],
        ("a", "i9", MONDAY + 8 * DAY, "2024-01-15"),
        ("b", "i0", MONDAY + 9 * DAY, "2024-01-15"),
    )
    context = FeatureContext.build(rows.iloc[:3], None)
    features = interaction_features(rows, context)
    assert features["user_activity"].tolist() == ["6-20"] * 6 + ["1-5", "1-5"]
    assert features["hour"].tolist() == ["0", "1", "2", "3", "4", "5", "0", "0"]
    assert features["weekday"].tolist() == ["Monday"] * 6 + ["Tuesday", "Wednesday"]
    assert features["item_popularity"].tolist()[3:6] == ["unseen"] * 3
    assert features["item_genre"].tolist() == ["unknown"] * 8


def test_interaction_features_follow_input_order_with_any_index():
    """A shuffled frame with a non-default index gives row i's features on row i."""
    rows = hand_rows(
        *[("a", "x", MONDAY + n, "2024-01-08") for n in range(21)],  # a: 21 rows -> "21-50"
        *[("b", "y", MONDAY + HOUR + n, "2024-01-08") for n in range(7)],  # b: 7 rows -> "6-20"
        ("c", "z", MONDAY + 2 * HOUR, "2024-01-08"),
    )
    shuffled = rows.sample(frac=1.0, random_state=3)
    shuffled.index = shuffled.index * 10 + 5
    features = interaction_features(shuffled, FeatureContext.build(rows, None))
    expected = shuffled["user_id"].map({"a": "21-50", "b": "6-20", "c": "1-5"}).to_numpy()
    np.testing.assert_array_equal(features["user_activity"].to_numpy(), expected)
    np.testing.assert_array_equal(features["rating"].to_numpy(), shuffled["rating"].to_numpy())
    hours = shuffled["timestamp"].sub(MONDAY).floordiv(HOUR).astype(str).to_numpy()
    np.testing.assert_array_equal(features["hour"].to_numpy(), hours)


def test_user_activity_top_bucket():
    rows = hand_rows(*[("a", f"i{n}", MONDAY + n, "2024-01-08") for n in range(51)])
    features = interaction_features(rows, FeatureContext.build(rows, None))
    assert set(features["user_activity"]) == {"51+"}


# ---------------------------------------------------------------- newcomers, recommendations, coverage


def test_newcomer_shares_by_hand():
    reference = hand_rows(("u1", "i1", 0, "w"), ("u2", "i2", 1, "w"))
    context = FeatureContext.build(reference, None)
    current = hand_rows(("u1", "i1", 5, "v"), ("u3", "i3", 6, "v"), ("u3", "i1", 7, "v"), ("u4", "i2", 8, "v"))
    shares = newcomer_shares(current, context)
    assert shares == {"new_item_share": 0.25, "new_user_share": pytest.approx(2 / 3)}
    assert newcomer_shares(current.iloc[:0], context) == {"new_item_share": 0.0, "new_user_share": 0.0}
    assert newcomer_shares(reference, context) == {"new_item_share": 0.0, "new_user_share": 0.0}


def test_newcomer_shares_on_real_weeks(context, reference, current):
    shares = newcomer_shares(current, context)
    expected_items = float(np.mean(~current["item_id"].isin(set(reference["item_id"]))))
    users = current["user_id"].unique()
    expected_users = float(np.mean(~np.isin(users, reference["user_id"].unique())))
    assert shares["new_item_share"] == pytest.approx(expected_items)
    assert shares["new_user_share"] == pytest.approx(expected_users)
    assert 0 < shares["new_item_share"] < 1 and 0 < shares["new_user_share"] <= 1


def test_recommendation_features(context):
    recommended = np.array([["1", "2"], ["no-such-item", "1"]], dtype=object)
    features = recommendation_features(recommended, context)
    assert list(features.columns) == ["item_popularity", "item_genre"]
    assert len(features) == 4
    assert features["item_genre"].tolist() == ["Animation", "Action", "unknown", "Animation"]
    assert features["item_popularity"].tolist()[2] == "unseen"


def test_coverage_by_hand():
    assert coverage(np.array([["a", "b"], ["b", "c"]]), catalogue_size=10) == pytest.approx(0.3)
    assert coverage(np.array([[1, 2, 3], [3, 2, 1]]), catalogue_size=3) == 1.0
    assert coverage(np.array([[1, 1]]), catalogue_size=4) == 0.25
    assert coverage(np.empty((0, 10)), catalogue_size=5) == 0.0
    assert coverage(np.array([[7]]), catalogue_size=0) == 1.0  # an empty catalogue does not divide by zero
