"""Interactions container: id maps, chronological order, CSR, padded sequences, k-core, persistence."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from recmodels.data.interactions import (
    PADDING_ITEM,
    Interactions,
    KCoreReport,
    k_core,
    load_interactions,
    save_interactions,
)


def rows(*triples: tuple[str, str, int]) -> pd.DataFrame:
    users, items, times = zip(*triples)
    return pd.DataFrame(
        {
            "user_id": list(users),
            "item_id": list(items),
            "timestamp": np.asarray(times, dtype=np.int64),
            "rating": np.arange(len(triples), dtype=np.float64),
        }
    )


@pytest.fixture
def hand_frame() -> pd.DataFrame:
    """Three users; ids chosen so string order differs from numeric order.

    u10: b@5, a@1, c@3            -> chronological a, c, b
    u2 : c@7, a@7 (tie: source order), b@2 -> b, c, a
    u9 : a@4
    """
    return rows(
        ("u10", "b", 5),
        ("u2", "c", 7),
        ("u10", "a", 1),
        ("u9", "a", 4),
        ("u2", "a", 7),
        ("u10", "c", 3),
        ("u2", "b", 2),
    )


# ---------------------------------------------------------------- id maps


def test_id_maps_reserve_padding_and_sort_ids_as_strings(hand_frame):
    data = Interactions.from_frame(hand_frame)

    assert list(data.user_ids) == ["u10", "u2", "u9"]
    assert list(data.item_ids) == ["", "a", "b", "c"]
    assert data.n_users == 3
    assert data.n_items == 3
    assert PADDING_ITEM == 0
    assert set(data.frame["user"]) == {0, 1, 2}
    assert set(data.frame["item"]) == {1, 2, 3}
    assert data.frame["user"].dtype == np.int64
    assert data.frame["item"].dtype == np.int64
    assert data.frame["timestamp"].dtype == np.int64
    assert data.frame["weight"].dtype == np.float32
    assert (data.frame["weight"] == 1.0).all()
    # mapping back through the id maps reproduces the source rows exactly
    back = pd.DataFrame(
        {
            "user_id": data.user_ids[data.frame["user"]],
            "item_id": data.item_ids[data.frame["item"]],
            "timestamp": data.frame["timestamp"],
            "rating": data.frame["rating"],
        }
    )
    key = ["rating"]  # unique per source row
    pd.testing.assert_frame_equal(
        back.sort_values(key).reset_index(drop=True),
        hand_frame.astype({"user_id": object, "item_id": object}).sort_values(key).reset_index(drop=True),
        check_dtype=False,
    )


def test_id_maps_are_reproducible_under_row_shuffles(ml100k_small_raw):
    first = Interactions.from_frame(ml100k_small_raw)
    shuffled = ml100k_small_raw.sample(frac=1.0, random_state=3).reset_index(drop=True)
    second = Interactions.from_frame(shuffled)

    np.testing.assert_array_equal(first.user_ids, second.user_ids)
    np.testing.assert_array_equal(first.item_ids, second.item_ids)
    # ml-100k has no duplicate (user, item) pairs, so the row multiset identifies the frame
    columns = ["user", "item", "timestamp"]
    pd.testing.assert_frame_equal(
        first.frame[columns].sort_values(columns).reset_index(drop=True),
        second.frame[columns].sort_values(columns).reset_index(drop=True),
    )


def test_real_ml100k_maps_cover_every_user_and_item(ml100k_raw):
    data = Interactions.from_frame(ml100k_raw)

    assert data.n_users == 943
    assert data.n_items == 1682
    assert len(data) == 100_000
    assert data.frame["user"].min() == 0 and data.frame["user"].max() == 942
    assert data.frame["item"].min() == 1 and data.frame["item"].max() == 1682
    assert data.item_ids[0] == ""
    assert list(data.user_ids) == sorted(ml100k_raw["user_id"].unique())
    mapped = pd.DataFrame(
        {
            "user_id": data.user_ids[data.frame["user"]].astype(str),
            "item_id": data.item_ids[data.frame["item"]].astype(str),
            "timestamp": data.frame["timestamp"].to_numpy(),
        }
    )
    columns = ["user_id", "item_id", "timestamp"]
    pd.testing.assert_frame_equal(
        mapped.sort_values(columns).reset_index(drop=True),
        ml100k_raw[columns].sort_values(columns).reset_index(drop=True),
        check_dtype=False,
    )


# ---------------------------------------------------------------- order


def test_rows_sorted_by_user_then_time_then_source_order(hand_frame):
    data = Interactions.from_frame(hand_frame)
    got = list(zip(data.user_ids[data.frame["user"]], data.item_ids[data.frame["item"]], data.frame["timestamp"]))
    assert got == [
        ("u10", "a", 1),
        ("u10", "c", 3),
        ("u10", "b", 5),
        ("u2", "b", 2),
        ("u2", "c", 7),  # tie at 7: c came first in the source
        ("u2", "a", 7),
        ("u9", "a", 4),
    ]


def test_real_rows_are_chronological_per_user(ml100k_raw):
    data = Interactions.from_frame(ml100k_raw)
    frame = data.frame
    users = frame["user"].to_numpy()
    times = frame["timestamp"].to_numpy()
    assert np.all(np.diff(users) >= 0)
    same_user = users[1:] == users[:-1]
    assert np.all(times[1:][same_user] >= times[:-1][same_user])
    # exact order, ties included: a stable sort of the source rows by (user id string, timestamp)
    expected = ml100k_raw.sort_values(["user_id", "timestamp"], kind="stable")
    np.testing.assert_array_equal(data.item_ids[frame["item"]].astype(str), expected["item_id"].to_numpy())
    assert np.sum(times[1:][same_user] == times[:-1][same_user]) > 1000  # ties do occur


# ---------------------------------------------------------------- csr


def test_csr_shape_padding_column_and_repeats():
    frame = rows(("u1", "a", 1), ("u1", "b", 2), ("u1", "a", 3), ("u2", "b", 1), ("u1", "a", 4))
    data = Interactions.from_frame(frame)

    binary = data.csr()
    summed = data.csr(binary=False)

    assert binary.shape == (2, 3)
    assert summed.shape == (2, 3)
    np.testing.assert_array_equal(binary.toarray(), [[0, 1, 1], [0, 0, 1]])
    np.testing.assert_array_equal(summed.toarray(), [[0, 3, 1], [0, 0, 1]])
    assert binary.getcol(0).nnz == 0
    assert binary.dtype == np.float32


def test_real_csr_matches_rows(ml100k_small_raw):
    data = Interactions.from_frame(ml100k_small_raw)
    matrix = data.csr()
    assert matrix.shape == (300, data.n_items + 1)
    assert matrix.getcol(0).nnz == 0
    # no duplicate (user, item) pairs in ml-100k: one entry per row
    assert matrix.nnz == len(ml100k_small_raw)
    np.testing.assert_array_equal(
        np.asarray(matrix.sum(axis=1)).ravel(),
        np.bincount(data.frame["user"], minlength=300),
    )
    popularity = data.item_user_counts()
    assert popularity[0] == 0
    expected = ml100k_small_raw.groupby("item_id")["user_id"].nunique()
    np.testing.assert_array_equal(popularity[1:], expected.reindex(data.item_ids[1:]).to_numpy())


# ---------------------------------------------------------------- sequences


@pytest.fixture
def sequence_data() -> Interactions:
    """Users (ids 0..3): u0 [1, 2, 3, 4] at t 10..40, u1 [3] at t 5, u2 nothing, u3 [2, 1] at t 7, 8.

    u2 exists in the id map (it has a row) but the row is dropped with ``subset``.
    """
    frame = rows(
        ("u0", "i1", 10),
        ("u0", "i2", 20),
        ("u0", "i3", 30),
        ("u0", "i4", 40),
        ("u1", "i3", 5),
        ("u2", "i4", 1),
        ("u3", "i2", 7),
        ("u3", "i1", 8),
    )
    data = Interactions.from_frame(frame)
    return data.subset(data.frame["user"] != 2)


def test_sequences_layout(sequence_data):
    seq = sequence_data.sequences()
    np.testing.assert_array_equal(seq.indptr, [0, 4, 5, 5, 7])
    np.testing.assert_array_equal(seq.lengths, [4, 1, 0, 2])
    np.testing.assert_array_equal(seq.items, [1, 2, 3, 4, 3, 2, 1])
    np.testing.assert_array_equal(seq.timestamps, [10, 20, 30, 40, 5, 7, 8])


def test_padded_left_pads_users_of_different_lengths(sequence_data):
    items, times = sequence_data.sequences().padded(np.array([0, 1, 2, 3]))
    np.testing.assert_array_equal(
        items,
        [
            [1, 2, 3, 4],
            [0, 0, 0, 3],
            [0, 0, 0, 0],
            [0, 0, 2, 1],
        ],
    )
    np.testing.assert_array_equal(
        times,
        [
            [10, 20, 30, 40],
            [0, 0, 0, 5],
            [0, 0, 0, 0],
            [0, 0, 7, 8],
        ],
    )
    assert items.dtype == np.int64 and times.dtype == np.int64


def test_padded_max_len_keeps_most_recent(sequence_data):
    items, times = sequence_data.sequences().padded(np.array([3, 0, 1]), max_len=2)
    np.testing.assert_array_equal(items, [[2, 1], [3, 4], [0, 3]])
    np.testing.assert_array_equal(times, [[7, 8], [30, 40], [0, 5]])


def test_padded_width_is_longest_selected_history(sequence_data):
    seq = sequence_data.sequences()
    items, _ = seq.padded(np.array([1, 3]), max_len=10)
    np.testing.assert_array_equal(items, [[0, 3], [2, 1]])
    # only empty histories: one padding column
    items, times = seq.padded(np.array([2]))
    np.testing.assert_array_equal(items, [[0]])
    np.testing.assert_array_equal(times, [[0]])


def test_real_padded_matches_per_user_tail(ml100k_small_raw):
    data = Interactions.from_frame(ml100k_small_raw)
    seq = data.sequences()
    users = np.array([0, 5, 17, 299])
    items, times = seq.padded(users, max_len=50)
    assert items.shape == (4, 50)
    for row, user in enumerate(users):
        user_rows = data.frame[data.frame["user"] == user]
        tail = user_rows["item"].to_numpy()[-50:]
        tail_times = user_rows["timestamp"].to_numpy()[-50:]
        np.testing.assert_array_equal(items[row, 50 - len(tail) :], tail)
        np.testing.assert_array_equal(items[row, : 50 - len(tail)], 0)
        np.testing.assert_array_equal(times[row, 50 - len(tail) :], tail_times)


# ---------------------------------------------------------------- k-core


def test_k_core_iterates_until_stable():
    """min 2 / 2: dropping e starves u4, which starves d, which starves u3."""
    frame = rows(
        ("u1", "a", 1),
        ("u1", "b", 2),
        ("u2", "a", 1),
        ("u2", "b", 2),
        ("u3", "b", 1),
        ("u3", "d", 2),
        ("u4", "d", 1),
        ("u4", "e", 2),
    )
    kept, report = k_core(frame, 2, 2)

    assert list(zip(kept["user_id"], kept["item_id"])) == [("u1", "a"), ("u1", "b"), ("u2", "a"), ("u2", "b")]
    assert list(kept.index) == [0, 1, 2, 3]
    assert report == KCoreReport(rows_in=8, rows_kept=4, rows_removed=4, iterations=5)
    assert report.rows_in == report.rows_kept + report.rows_removed
    # extra columns travel with the rows
    np.testing.assert_array_equal(kept["rating"], [0.0, 1.0, 2.0, 3.0])


def test_k_core_counts_interactions_not_distinct_pairs():
    frame = rows(("u1", "a", 1), ("u1", "a", 2), ("u2", "a", 1), ("u2", "b", 1))
    kept, report = k_core(frame, 2, 2)
    # u1 has two rows of the same item: it stays; u2's single 'b' row goes, then u2 has one row
    assert list(zip(kept["user_id"], kept["item_id"])) == [("u1", "a"), ("u1", "a")]
    assert report == KCoreReport(rows_in=4, rows_kept=2, rows_removed=2, iterations=3)


def test_k_core_already_core_is_untouched():
    frame = rows(("u1", "a", 1), ("u2", "a", 1))
    kept, report = k_core(frame, 1, 2)
    pd.testing.assert_frame_equal(kept, frame)
    assert report == KCoreReport(rows_in=2, rows_kept=2, rows_removed=0, iterations=1)


@pytest.mark.parametrize("thresholds", [(0, 5), (5, 0), (-1, -1)])
def test_k_core_rejects_thresholds_below_one(thresholds):
    with pytest.raises(ValueError, match="k-core thresholds"):
        k_core(rows(("u1", "a", 1)), *thresholds)


def test_k_core_names_a_missing_id_instead_of_dropping_its_row():
    frame = rows(("u1", "a", 1), ("u2", "a", 1))
    frame.loc[1, "item_id"] = None
    with pytest.raises(ValueError, match="item_id is missing in 1 rows, the first at position 1"):
        k_core(frame, 1, 1)


def _reference_k_core(frame: pd.DataFrame, min_user: int, min_item: int) -> pd.DataFrame:
    """Independent fixpoint in a different removal order: all weak users, then all weak items, repeat.

    The k-core is the unique largest subset meeting both thresholds, so any removal order
    reaches the same rows.
    """
    live = frame
    while True:
        before = len(live)
        live = live[live["user_id"].map(live["user_id"].value_counts()) >= min_user]
        live = live[live["item_id"].map(live["item_id"].value_counts()) >= min_item]
        if len(live) == before:
            return live


@pytest.mark.parametrize("min_user, min_item", [(5, 5), (20, 30)])
def test_real_k_core_is_the_k_core(ml100k_raw, min_user, min_item):
    kept, report = k_core(ml100k_raw, min_user, min_item)

    assert kept["user_id"].value_counts().min() >= min_user
    assert kept["item_id"].value_counts().min() >= min_item
    assert report.rows_in == 100_000
    assert report.rows_kept == len(kept)
    assert report.rows_in == report.rows_kept + report.rows_removed
    assert report.rows_removed > 0  # ml-100k has items with fewer than 5 ratings
    assert report.iterations >= 2
    # same rows (with their ratings and timestamps) as the reference, in source order
    reference = _reference_k_core(ml100k_raw, min_user, min_item).reset_index(drop=True)
    pd.testing.assert_frame_equal(kept, reference)
    if (min_user, min_item) == (5, 5):
        # every ml-100k user has >= 20 ratings; only rare items go
        assert kept["user_id"].nunique() == 943


# ---------------------------------------------------------------- persistence


def test_save_load_round_trip(tmp_path, ml100k_small_raw):
    data = Interactions.from_frame(ml100k_small_raw)
    save_interactions(data, tmp_path / "rows")
    loaded = load_interactions(tmp_path / "rows")

    pd.testing.assert_frame_equal(loaded.frame, data.frame)
    np.testing.assert_array_equal(loaded.user_ids, data.user_ids)
    np.testing.assert_array_equal(loaded.item_ids, data.item_ids)
    assert loaded.user_ids.dtype == object and loaded.item_ids.dtype == object
    assert loaded.n_users == data.n_users and loaded.n_items == data.n_items
    assert (loaded.csr() != data.csr()).nnz == 0
    assert list(loaded.frame.columns) == ["user", "item", "timestamp", "weight", "rating"]


def test_save_load_round_trip_hand_frame_with_split_column(tmp_path, hand_frame):
    frame = hand_frame.assign(split=["train", "valid", "train", "test", "train", "train", "test"])
    data = Interactions.from_frame(frame)
    save_interactions(data, tmp_path)
    loaded = load_interactions(tmp_path)
    pd.testing.assert_frame_equal(loaded.frame, data.frame)
    assert list(loaded.item_ids) == ["", "a", "b", "c"]
    assert list(loaded.user_ids) == ["u10", "u2", "u9"]
