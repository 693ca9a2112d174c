"""Split protocols: temporal, leave-one-out, predefined; cold-start accounting; persistence."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from recmodels.data.interactions import Interactions
from recmodels.data.splits import (
    EvalStage,
    SplitData,
    leave_one_out_split,
    load_split,
    make_split,
    predefined_split,
    save_split,
    temporal_split,
    user_temporal_split,
)


def pairs(matrix: sp.csr_matrix) -> set[tuple[int, int]]:
    rows, cols = matrix.nonzero()
    return set(zip(rows.tolist(), cols.tolist()))


def same_entries(matrix: sp.csr_matrix, frame: pd.DataFrame) -> bool:
    """``matrix`` has exactly the (user, item) pairs of ``frame`` (built independently of ``Interactions.csr``)."""
    expected = sp.coo_matrix(
        (np.ones(len(frame)), (frame["user"].to_numpy(), frame["item"].to_numpy())), shape=matrix.shape
    ).tocsr()
    return (matrix.astype(bool) != expected.astype(bool)).nnz == 0


def frame_pairs(frame: pd.DataFrame) -> set[tuple[int, int]]:
    return set(zip(frame["user"].tolist(), frame["item"].tolist()))


def hand_rows(*triples) -> pd.DataFrame:
    users, items, times = zip(*triples)
    return pd.DataFrame({"user_id": users, "item_id": items, "timestamp": np.asarray(times, dtype=np.int64)})


# ---------------------------------------------------------------- temporal (real ml-100k)


@pytest.fixture(scope="module")
def ml100k(ml100k_raw) -> Interactions:
    return Interactions.from_frame(ml100k_raw)


@pytest.fixture(scope="module")
def temporal(ml100k) -> SplitData:
    return temporal_split(ml100k, valid_fraction=0.1, test_fraction=0.1)


def test_temporal_no_leakage(temporal):
    train_t = temporal.train.frame["timestamp"]
    valid_t = temporal.valid_rows.frame["timestamp"]
    test_t = temporal.test_rows.frame["timestamp"]
    assert train_t.max() < valid_t.min()
    assert valid_t.max() < test_t.min()
    # the test stage reads train + valid history, all older than the test window
    test_history = temporal.test.history.frame
    assert test_history["timestamp"].max() < test_t.min()
    assert len(test_history) == len(temporal.train) + len(temporal.valid_rows)
    # the valid stage reads train only
    pd.testing.assert_frame_equal(temporal.valid.history.frame, temporal.train.frame)
    assert temporal.protocol == "temporal"


def test_temporal_rows_reconcile_and_fractions(temporal, ml100k):
    n = len(ml100k)
    report = temporal.report
    assert report["train_rows"] + report["valid_rows"] + report["test_rows"] == n
    assert (report["train_rows"], report["valid_rows"], report["test_rows"]) == (
        len(temporal.train),
        len(temporal.valid_rows),
        len(temporal.test_rows),
    )
    # the union of the three row sets is the input (no row lost or duplicated)
    columns = ["user", "item", "timestamp"]
    union = pd.concat([temporal.train.frame, temporal.valid_rows.frame, temporal.test_rows.frame])[columns]
    pd.testing.assert_frame_equal(
        union.sort_values(columns).reset_index(drop=True),
        ml100k.frame[columns].sort_values(columns).reset_index(drop=True),
    )
    # thresholds are timestamps, so fractions are approximate but close
    assert abs(report["test_rows"] / n - 0.1) < 0.01
    assert abs(report["valid_rows"] / n - 0.1) < 0.01


def _expected_targets(held_out: pd.DataFrame, train: pd.DataFrame, history: pd.DataFrame):
    train_items = set(train["item"])
    history_users = set(history["user"])
    cold_item = ~held_out["item"].isin(train_items)
    cold_user = ~held_out["user"].isin(history_users)
    kept = held_out[~cold_item & ~cold_user]
    return int(cold_item.sum()), int((cold_user & ~cold_item).sum()), frame_pairs(kept)


@pytest.mark.parametrize("stage_name", ["valid", "test"])
def test_temporal_cold_targets_dropped_and_counted(temporal, stage_name):
    train = temporal.train.frame
    if stage_name == "valid":
        held_out, history = temporal.valid_rows.frame, train
    else:
        held_out = temporal.test_rows.frame
        history = pd.concat([train, temporal.valid_rows.frame])
    cold_items, cold_users, kept = _expected_targets(held_out, train, history)
    stage = temporal.stage(stage_name)
    report = temporal.report

    assert report[f"{stage_name}_targets_dropped_cold_item"] == cold_items
    assert report[f"{stage_name}_targets_dropped_cold_user"] == cold_users
    assert cold_items > 0 and cold_users > 0  # ml-100k's time split really has both
    assert pairs(stage.targets) == kept
    assert stage.targets.nnz + cold_items + cold_users == len(held_out)
    assert report[f"{stage_name}_users_evaluated"] == len({user for user, _ in kept})
    np.testing.assert_array_equal(stage.users, sorted({user for user, _ in kept}))
    assert stage.targets.shape == stage.exclude.shape == (943, 1683)
    assert stage.targets.getcol(0).nnz == 0
    # no target item is unknown to training
    assert set(stage.targets.indices.tolist()) <= set(train["item"])


def test_temporal_exclude_masks(temporal):
    train = frame_pairs(temporal.train.frame)
    valid = frame_pairs(temporal.valid_rows.frame)
    assert pairs(temporal.valid.exclude) == train
    assert pairs(temporal.test.exclude) == train | valid
    assert same_entries(temporal.test.exclude, pd.concat([temporal.train.frame, temporal.valid_rows.frame]))
    assert len(valid - train) > 0  # the test mask really adds something
    assert temporal.test.exclude.data.max() == 1.0


def test_temporal_batches_carry_stage_history(temporal):
    stage = temporal.test
    batch = next(stage.batches(batch_size=7, max_len=30))
    lengths = stage.history.sequences().lengths[stage.users]
    shortest_first = stage.users[np.argsort(lengths, kind="stable")]
    np.testing.assert_array_equal(batch.users, shortest_first[:7])
    assert batch.history_items.shape[0] == 7 and batch.history_items.shape[1] <= 30
    history = stage.history.frame
    for row, user in enumerate(batch.users):
        tail = history.loc[history["user"] == user, "item"].to_numpy()[-30:]
        np.testing.assert_array_equal(batch.history_items[row, batch.history_items.shape[1] - len(tail) :], tail)
    assert (batch.targets != stage.targets[batch.users]).nnz == 0
    assert (batch.exclude != stage.exclude[batch.users]).nnz == 0


@pytest.mark.parametrize("fractions", [(0.0, 0.1), (0.1, 0.0), (0.5, 0.5), (0.6, 0.5)])
def test_temporal_rejects_bad_fractions(ml100k, fractions):
    with pytest.raises(ValueError, match="valid_fraction"):
        temporal_split(ml100k, *fractions)


def test_temporal_rejects_coarse_timestamps():
    data = Interactions.from_frame(hand_rows(("u1", "a", 1), ("u1", "b", 1), ("u2", "a", 1), ("u2", "b", 1)))
    with pytest.raises(ValueError, match="too coarse"):
        temporal_split(data)


# ---------------------------------------------------------------- leave-one-out (real ML-1M)


@pytest.fixture(scope="module")
def ml1m_loo(ml1m_seq_raw):
    data = Interactions.from_frame(ml1m_seq_raw)
    return data, leave_one_out_split(data)


@pytest.mark.needs_shared_data("ml-1m-seq/ml-1m.txt")
def test_leave_one_out_real_positions(ml1m_loo, ml1m_seq_raw):
    data, split = ml1m_loo
    lengths = ml1m_seq_raw.groupby("user_id").size()
    assert lengths.min() >= 3  # every ML-1M user is evaluated
    last = ml1m_seq_raw[ml1m_seq_raw["timestamp"] == ml1m_seq_raw["user_id"].map(lengths) - 1]
    second = ml1m_seq_raw[ml1m_seq_raw["timestamp"] == ml1m_seq_raw["user_id"].map(lengths) - 2]

    def as_ids(frame: pd.DataFrame) -> pd.DataFrame:
        return (
            pd.DataFrame(
                {
                    "user_id": data.user_ids[frame["user"]].astype(str),
                    "item_id": data.item_ids[frame["item"]].astype(str),
                    "timestamp": frame["timestamp"].to_numpy(),
                }
            )
            .sort_values("user_id")
            .reset_index(drop=True)
        )

    columns = ["user_id", "item_id", "timestamp"]
    pd.testing.assert_frame_equal(
        as_ids(split.test_rows.frame), last[columns].sort_values("user_id").reset_index(drop=True)
    )
    pd.testing.assert_frame_equal(
        as_ids(split.valid_rows.frame), second[columns].sort_values("user_id").reset_index(drop=True)
    )
    assert len(split.test_rows) == len(split.valid_rows) == 6040
    assert len(split.train) == 1_000_209 - 2 * 6040

    # train holds every earlier position and nothing else
    train = split.train.frame
    train_max = train.groupby("user")["timestamp"].max()
    train_len = train.groupby("user").size()
    user_lengths = lengths.reindex(data.user_ids[train_max.index]).to_numpy()
    np.testing.assert_array_equal(train_max.to_numpy(), user_lengths - 3)
    np.testing.assert_array_equal(train_len.to_numpy(), user_lengths - 2)
    assert split.report["users_too_short_to_evaluate"] == 0


@pytest.mark.needs_shared_data("ml-1m-seq/ml-1m.txt")
def test_leave_one_out_real_stages(ml1m_loo):
    _, split = ml1m_loo
    train = split.train.frame
    valid = split.valid_rows.frame
    test = split.test_rows.frame
    train_items = set(train["item"])
    expected_cold_test = int((~test["item"].isin(train_items)).sum())
    expected_cold_valid = int((~valid["item"].isin(train_items)).sum())
    assert split.report["test_targets_dropped_cold_item"] == expected_cold_test
    assert split.report["valid_targets_dropped_cold_item"] == expected_cold_valid
    assert split.report["test_targets_dropped_cold_user"] == 0
    assert split.report["test_users_evaluated"] == 6040 - expected_cold_test
    assert pairs(split.test.targets) == frame_pairs(test[test["item"].isin(train_items)])
    assert pairs(split.valid.targets) == frame_pairs(valid[valid["item"].isin(train_items)])
    # test stage reads train + the validation item; valid stage reads train
    assert len(split.test.history) == len(train) + len(valid)
    assert len(split.valid.history) == len(train)
    assert same_entries(split.valid.exclude, train)
    assert same_entries(split.test.exclude, pd.concat([train, valid]))
    # the last history item at the test stage is the validation item
    users = split.test.users[:50]
    items, _ = split.test.history.sequences().padded(users)
    valid_item = valid.set_index("user")["item"]
    np.testing.assert_array_equal(items[:, -1], valid_item.loc[users].to_numpy())


def test_leave_one_out_short_users_stay_in_train(tmp_path):
    frame = hand_rows(
        ("a", "x", 1),  # length 1
        ("b", "x", 1),  # length 2
        ("b", "y", 2),
        ("c", "x", 1),  # length 3
        ("c", "y", 2),
        ("c", "z", 3),
        ("d", "z", 1),  # length 4, out of time order in the source
        ("d", "y", 4),
        ("d", "w", 3),
        ("d", "x", 2),
    )
    data = Interactions.from_frame(frame)
    split = leave_one_out_split(data)
    ids = data.item_ids

    def named(rows: Interactions) -> list[tuple[str, str]]:
        return [(data.user_ids[u], ids[i]) for u, i in zip(rows.frame["user"], rows.frame["item"])]

    assert named(split.test_rows) == [("c", "z"), ("d", "y")]
    assert named(split.valid_rows) == [("c", "y"), ("d", "w")]
    assert named(split.train) == [("a", "x"), ("b", "x"), ("b", "y"), ("c", "x"), ("d", "z"), ("d", "x")]
    assert split.report["users_too_short_to_evaluate"] == 2
    # short users a (0) and b (1) are never evaluated
    # item w is only in d's validation row: d's valid target is cold and dropped, so only c
    # is evaluated at the valid stage
    np.testing.assert_array_equal(split.valid.users, [2])
    np.testing.assert_array_equal(split.test.users, [2, 3])
    assert split.report["valid_targets_dropped_cold_item"] == 1
    assert pairs(split.valid.targets) == {(2, int(np.flatnonzero(ids == "y")[0]))}
    assert split.report["test_targets_dropped_cold_item"] == 0
    # the short-user count survives persistence
    save_split(split, tmp_path)
    loaded = load_split(tmp_path)
    assert loaded.report["users_too_short_to_evaluate"] == 2
    assert_same_split(loaded, split)


def test_leave_one_out_can_leave_out_a_test_target_the_user_has_already_seen(tmp_path):
    """The eSASRec authors' splitter (filter_already_seen): c's last item x is in c's history, so c is not
    tested rather than counted as a miss; the default keeps c (a miss, since seen items are never ranked)."""
    frame = hand_rows(
        ("c", "x", 1),
        ("c", "y", 2),
        ("c", "z", 3),
        ("c", "x", 4),
        ("d", "x", 1),
        ("d", "y", 2),
        ("d", "z", 3),
        ("d", "w", 4),
        ("e", "w", 1),
        ("e", "z", 2),
        ("e", "x", 3),
    )
    data = Interactions.from_frame(frame)
    kept = leave_one_out_split(data)
    dropped = leave_one_out_split(data, drop_seen_targets=True)
    c, d, e = (int(np.flatnonzero(data.user_ids == name)[0]) for name in "cde")
    np.testing.assert_array_equal(kept.test.users, [c, d, e])
    np.testing.assert_array_equal(dropped.test.users, [d, e])
    assert dropped.report["test_targets_dropped_seen"] == 1 and "test_targets_dropped_seen" not in kept.report
    np.testing.assert_array_equal(dropped.valid.users, kept.valid.users)  # validation is untouched
    save_split(dropped, tmp_path)
    assert_same_split(load_split(tmp_path), dropped)  # the rule survives persistence


def test_leave_one_out_min_length():
    data = Interactions.from_frame(hand_rows(("a", "x", 1), ("a", "y", 2), ("a", "z", 3), ("a", "w", 4)))
    with pytest.raises(ValueError, match="min_length"):
        leave_one_out_split(data, min_length=2)
    split = leave_one_out_split(data, min_length=5)
    assert len(split.train) == 4 and len(split.test_rows) == 0 and len(split.valid_rows) == 0
    assert split.report["users_too_short_to_evaluate"] == 1


# ---------------------------------------------------------------- predefined


@pytest.fixture
def predefined_data() -> Interactions:
    frame = hand_rows(
        ("u1", "a", 1),
        ("u1", "b", 2),
        ("u1", "c", 3),
        ("u1", "d", 4),
        ("u2", "a", 1),
        ("u2", "c", 2),
        ("u2", "b", 3),
        ("u3", "e", 1),
    ).assign(split=["train", "train", "valid", "test", "train", "test", "valid", "test"])
    return Interactions.from_frame(frame)


def test_predefined_split_protocol(predefined_data):
    split = predefined_split(predefined_data)
    # ids: users u1=0, u2=1, u3=2; items a=1, b=2, c=3, d=4, e=5
    assert frame_pairs(split.train.frame) == {(0, 1), (0, 2), (1, 1)}
    assert frame_pairs(split.valid_rows.frame) == {(0, 3), (1, 2)}
    assert frame_pairs(split.test_rows.frame) == {(0, 4), (1, 3), (2, 5)}
    # test stage reads train only, excludes train + valid
    pd.testing.assert_frame_equal(split.test.history.frame, split.train.frame)
    pd.testing.assert_frame_equal(split.valid.history.frame, split.train.frame)
    assert pairs(split.valid.exclude) == {(0, 1), (0, 2), (1, 1)}
    assert pairs(split.test.exclude) == {(0, 1), (0, 2), (1, 1), (0, 3), (1, 2)}
    # targets: valid c (3) is not in train -> cold; valid b kept. Test d (4), c (3), e (5) cold items
    assert pairs(split.valid.targets) == {(1, 2)}
    assert split.report["valid_targets_dropped_cold_item"] == 1
    assert pairs(split.test.targets) == set()
    assert split.report["test_targets_dropped_cold_item"] == 3
    assert split.report["test_users_evaluated"] == 0


def test_predefined_split_cold_user_and_labels():
    # ids: users u1=0, u2=1, u3=2; items a=1, b=2, c=3
    frame = hand_rows(
        ("u1", "a", 1),
        ("u1", "b", 2),
        ("u2", "b", 1),
        ("u2", "a", 5),
        ("u2", "c", 6),
        ("u3", "a", 9),
    ).assign(split=["train", "test", "train", "valid", "test", "test"])
    split = predefined_split(Interactions.from_frame(frame))
    # test rows: u1 b kept; u2 c is a cold item; u3 a is a cold user (no training history)
    assert pairs(split.test.targets) == {(0, 2)}
    assert split.report["test_targets_dropped_cold_item"] == 1
    assert split.report["test_targets_dropped_cold_user"] == 1
    assert pairs(split.valid.targets) == {(1, 1)}
    assert split.report["valid_targets_dropped_cold_item"] == 0
    assert split.report["valid_targets_dropped_cold_user"] == 0
    assert pairs(split.test.exclude) == {(0, 1), (1, 2), (1, 1)}
    with pytest.raises(ValueError, match="unknown split labels"):
        predefined_split(Interactions.from_frame(frame.assign(split=["train"] * 5 + ["holdout"])))
    with pytest.raises(ValueError, match="'split' column"):
        predefined_split(Interactions.from_frame(frame.drop(columns="split")))


# ---------------------------------------------------------------- make_split and persistence


def test_make_split_dispatches_and_rejects_unknown(predefined_data):
    split = make_split(predefined_data, "leave_one_out", min_length=3)
    assert split.protocol == "leave_one_out"
    assert split.report == leave_one_out_split(predefined_data).report
    with pytest.raises(ValueError, match="unknown split protocol 'random'"):
        make_split(predefined_data, "random")


def assert_same_stage(a: EvalStage, b: EvalStage) -> None:
    assert a.targets.shape == b.targets.shape
    assert a.exclude.shape == b.exclude.shape
    assert (a.targets != b.targets).nnz == 0
    assert (a.exclude != b.exclude).nnz == 0
    pd.testing.assert_frame_equal(a.history.frame, b.history.frame)
    np.testing.assert_array_equal(a.history.user_ids, b.history.user_ids)
    np.testing.assert_array_equal(a.history.item_ids, b.history.item_ids)


def assert_same_split(a: SplitData, b: SplitData) -> None:
    assert a.protocol == b.protocol
    assert a.report == b.report
    for name in ("train", "valid_rows", "test_rows"):
        pd.testing.assert_frame_equal(getattr(a, name).frame, getattr(b, name).frame)
    assert_same_stage(a.valid, b.valid)
    assert_same_stage(a.test, b.test)


def test_save_load_split_round_trip_temporal(temporal, tmp_path):
    save_split(temporal, tmp_path / "split")
    assert_same_split(load_split(tmp_path / "split"), temporal)


def test_save_load_split_round_trip_leave_one_out(ml100k_small_raw, tmp_path):
    split = leave_one_out_split(Interactions.from_frame(ml100k_small_raw))
    assert split.test.targets.nnz > 250
    save_split(split, tmp_path)
    loaded = load_split(tmp_path)
    assert_same_split(loaded, split)
    assert loaded.report["users_too_short_to_evaluate"] == 0


def test_item_side_features_are_saved_and_loaded_with_the_split(ml100k_small_raw, ml100k_items, tmp_path):
    split = leave_one_out_split(Interactions.from_frame(ml100k_small_raw)).with_item_features(ml100k_items)
    save_split(split, tmp_path)
    loaded = load_split(tmp_path).item_features
    assert loaded.vocabulary == split.item_features.vocabulary and loaded.genres.nnz > split.n_items
    assert (loaded.genres != split.item_features.genres).nnz == 0
    np.testing.assert_array_equal(loaded.years, split.item_features.years)
    save_split(split.with_item_features(None), tmp_path / "without")
    assert load_split(tmp_path / "without").item_features is None


def test_save_load_split_round_trip_predefined(tmp_path):
    frame = hand_rows(
        ("u1", "a", 1), ("u1", "b", 2), ("u1", "c", 3), ("u2", "a", 1), ("u2", "c", 2), ("u2", "b", 3)
    ).assign(split=["train", "train", "test", "train", "valid", "test"])
    split = predefined_split(Interactions.from_frame(frame))
    assert split.test.targets.nnz == 1  # u2's b (a and b are in train via u1)
    save_split(split, tmp_path)
    loaded = load_split(tmp_path)
    assert_same_split(loaded, split)
    # the test history is still train only after loading (not train + valid)
    assert len(loaded.test.history) == 3


# ---------------------------------------------------------------- per-user temporal


def test_user_temporal_hand_made_shares_rounding_and_short_users(tmp_path):
    frame = hand_rows(
        ("a", "x", 1),  # length 2: stays in train
        ("a", "y", 2),
        ("b", "x", 1),  # length 3: one train, one valid, one test row
        ("b", "y", 2),
        ("b", "z", 3),
        *[("c", item, time) for time, item in enumerate("xyzwvutsrq", start=1)],  # length 10
        ("d", "q", 40),  # length 4, out of time order in the source
        ("d", "x", 10),
        ("d", "y", 30),
        ("d", "z", 20),
    )
    data = Interactions.from_frame(frame)
    split = user_temporal_split(data, valid_fraction=0.2, test_fraction=0.25)

    def named(rows: Interactions) -> list[tuple[str, str]]:
        return [(data.user_ids[u], data.item_ids[i]) for u, i in zip(rows.frame["user"], rows.frame["item"])]

    # c: 0.25 * 10 = 2.5 rounds up to 3 test rows, 0.2 * 10 = 2 validation rows; b and d: at least one of each
    assert named(split.test_rows) == [("b", "z"), ("c", "s"), ("c", "r"), ("c", "q"), ("d", "q")]
    assert named(split.valid_rows) == [("b", "y"), ("c", "u"), ("c", "t"), ("d", "y")]
    assert named(split.train) == [
        ("a", "x"),
        ("a", "y"),
        ("b", "x"),
        *[("c", i) for i in "xyzwv"],
        ("d", "x"),
        ("d", "z"),
    ]
    assert split.protocol == "user_temporal"
    assert split.report["users_too_short_to_evaluate"] == 1
    # a (0) is never evaluated; c's held-out items u, t, s, r, q are in no training row: cold, dropped, counted
    assert 0 not in split.test.users and 0 not in split.valid.users
    assert split.report["test_targets_dropped_cold_item"] == 4  # c's s, r, q and d's q
    assert split.report["valid_targets_dropped_cold_item"] == 2  # c's u and t
    np.testing.assert_array_equal(split.test.users, [1])
    np.testing.assert_array_equal(split.valid.users, [1, 3])
    # the test stage reads train + validation, and masks both
    assert len(split.test.history) == len(split.train) + len(split.valid_rows)
    assert same_entries(split.test.exclude, pd.concat([split.train.frame, split.valid_rows.frame]))
    save_split(split, tmp_path)
    assert_same_split(load_split(tmp_path), split)


def test_user_temporal_keeps_a_training_row_when_fractions_are_large():
    data = Interactions.from_frame(hand_rows(*[("u", item, time) for time, item in enumerate("abcd")]))
    split = user_temporal_split(data, valid_fraction=0.45, test_fraction=0.45)
    # 0.45 * 4 = 1.8 -> 2 test rows; validation gets what is left after one training row
    assert (len(split.train), len(split.valid_rows), len(split.test_rows)) == (1, 1, 2)


@pytest.mark.parametrize("options", [{"valid_fraction": 0.0}, {"test_fraction": 0.6, "valid_fraction": 0.4}])
def test_user_temporal_rejects_bad_fractions(options):
    data = Interactions.from_frame(hand_rows(("u", "a", 1), ("u", "b", 2), ("u", "c", 3)))
    with pytest.raises(ValueError, match="valid_fraction"):
        user_temporal_split(data, **options)
    with pytest.raises(ValueError, match="min_length"):
        user_temporal_split(data, min_length=2)


@pytest.fixture(scope="module")
def user_temporal(ml100k) -> SplitData:
    return make_split(ml100k, "user_temporal", valid_fraction=0.1, test_fraction=0.1)


def test_user_temporal_real_counts(user_temporal, ml100k):
    split = user_temporal
    lengths = ml100k.frame.groupby("user").size()
    expected_test = np.floor(0.1 * lengths + 0.5).astype(int)
    assert lengths.min() >= 20  # every MovieLens-100K user has 20+ ratings, so every user is evaluated
    pd.testing.assert_series_equal(split.test_rows.frame.groupby("user").size(), expected_test, check_names=False)
    pd.testing.assert_series_equal(split.valid_rows.frame.groupby("user").size(), expected_test, check_names=False)
    assert len(split.test_rows) == len(split.valid_rows) == int(expected_test.sum()) == 10_037
    assert len(split.train) + 2 * 10_037 == 100_000
    assert split.report["users_too_short_to_evaluate"] == 0
    assert split.report["test_targets_dropped_cold_user"] == split.report["valid_targets_dropped_cold_user"] == 0
    cold = int((~split.test_rows.frame["item"].isin(set(split.train.frame["item"]))).sum())
    assert split.report["test_targets_dropped_cold_item"] == cold
    assert split.report["test_users_evaluated"] == len(split.test.users) == 943
    assert split.report["valid_users_evaluated"] == 943
    # per user, nothing in train is later than validation, nothing in validation later than test
    latest_train = split.train.frame.groupby("user")["timestamp"].max()
    assert (latest_train <= split.valid_rows.frame.groupby("user")["timestamp"].min()).all()
    assert (
        split.valid_rows.frame.groupby("user")["timestamp"].max()
        <= split.test_rows.frame.groupby("user")["timestamp"].min()
    ).all()
    # but other users' training rows are later than most test rows: the caveat of a per-user split
    assert split.train.frame["timestamp"].max() > split.test_rows.frame["timestamp"].median()
