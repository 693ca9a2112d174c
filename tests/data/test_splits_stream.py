"""Stream splits: a held-out latest window (holdout_split) and stages in a model's own item ids."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from recmodels.data.interactions import Interactions
from recmodels.data.splits import SplitData, holdout_split, load_split, save_split, stage_for_item_map
from recmodels.data.stream import window_keys


def pairs(matrix: sp.csr_matrix) -> set[tuple[int, int]]:
    rows, cols = matrix.nonzero()
    return set(zip(rows.tolist(), cols.tolist()))


def frame_pairs(frame: pd.DataFrame) -> set[tuple[int, int]]:
    return set(zip(frame["user"].tolist(), frame["item"].tolist()))


def raw_rows(*triples) -> pd.DataFrame:
    users, items, times = zip(*triples)
    return pd.DataFrame({"user_id": users, "item_id": items, "timestamp": np.asarray(times, dtype=np.int64)})


# ---------------------------------------------------------------- holdout_split (real ml-100k)


@pytest.fixture(scope="module")
def weeks(ml100k_raw) -> np.ndarray:
    return window_keys(ml100k_raw["timestamp"], 7)


@pytest.fixture(scope="module")
def last_week(weeks) -> str:
    """The last full week of ML-100K (the final one, 1998-04-20, is cut off after Wednesday)."""
    return sorted(set(weeks))[-2]


@pytest.fixture(scope="module")
def stream_rows(ml100k_raw, weeks, last_week) -> pd.DataFrame:
    """Every row up to and including the last full week: what a replay has landed by then."""
    return ml100k_raw.loc[weeks <= last_week].reset_index(drop=True)


@pytest.fixture(scope="module")
def ml100k(stream_rows) -> Interactions:
    return Interactions.from_frame(stream_rows)


@pytest.fixture(scope="module")
def holdout_mask(ml100k, last_week) -> np.ndarray:
    return window_keys(ml100k.frame["timestamp"], 7) == last_week


@pytest.fixture(scope="module")
def holdout(ml100k, holdout_mask) -> SplitData:
    return holdout_split(ml100k, holdout_mask)


def test_holdout_rows_partition_the_input(holdout, ml100k, holdout_mask, last_week):
    assert holdout.protocol == "holdout"
    assert len(holdout.train) == int((~holdout_mask).sum()) and len(holdout.valid_rows) == int(holdout_mask.sum())
    assert len(holdout.train) + len(holdout.valid_rows) == len(ml100k)
    assert len(holdout.valid_rows) > 1000
    # no held-out row in train: train ends before the held-out week starts
    train_keys = window_keys(holdout.train.frame["timestamp"], 7)
    assert last_week not in set(train_keys)
    assert not frame_pairs(holdout.train.frame) & frame_pairs(holdout.valid_rows.frame)
    # validation and test are the very same rows
    pd.testing.assert_frame_equal(holdout.valid_rows.frame, holdout.test_rows.frame)
    assert set(window_keys(holdout.test_rows.frame["timestamp"], 7)) == {last_week}
    report = holdout.report
    assert (report["train_rows"], report["valid_rows"], report["test_rows"]) == (
        len(holdout.train),
        len(holdout.valid_rows),
        len(holdout.test_rows),
    )


def test_holdout_stages_evaluate_the_same_users_on_the_training_history(holdout):
    valid, test = holdout.valid, holdout.test
    np.testing.assert_array_equal(valid.users, test.users)
    assert len(valid.users) > 30  # most of that week's users are new to ML-100K
    assert pairs(valid.targets) == pairs(test.targets)
    # both stages read the training history only
    pd.testing.assert_frame_equal(valid.history.frame, holdout.train.frame)
    pd.testing.assert_frame_equal(test.history.frame, holdout.train.frame)
    # targets are held-out pairs of known items and users with training history
    held_out = holdout.valid_rows.frame
    train = holdout.train.frame
    kept = held_out[held_out["item"].isin(set(train["item"])) & held_out["user"].isin(set(train["user"]))]
    assert pairs(valid.targets) == frame_pairs(kept)
    report = holdout.report
    assert valid.targets.nnz + report["valid_targets_dropped_cold_item"] + report[
        "valid_targets_dropped_cold_user"
    ] == len(held_out)
    assert report["valid_users_evaluated"] == report["test_users_evaluated"] == len(valid.users)


def test_holdout_test_stage_does_not_mask_its_own_targets(holdout):
    """Validation and test are the same held-out rows, so the test stage must skip exactly what the
    validation stage skips (the training items): masking the held-out items would hide every target
    and make every test metric zero."""
    train_pairs = frame_pairs(holdout.train.frame)
    assert pairs(holdout.valid.exclude) == train_pairs
    assert not pairs(holdout.valid.targets) & pairs(holdout.valid.exclude)
    masked = pairs(holdout.test.targets) & pairs(holdout.test.exclude)
    assert not masked, f"{len(masked)} of {holdout.test.targets.nnz} test targets are in the test stage's exclude mask"
    assert pairs(holdout.test.exclude) == train_pairs


def test_holdout_save_load_round_trip(holdout, tmp_path):
    save_split(holdout, tmp_path / "split")
    loaded = load_split(tmp_path / "split")
    assert loaded.protocol == "holdout"
    assert loaded.report == holdout.report
    for name in ("train", "valid_rows", "test_rows"):
        pd.testing.assert_frame_equal(getattr(loaded, name).frame, getattr(holdout, name).frame)
    for stage in ("valid", "test"):
        assert pairs(loaded.stage(stage).targets) == pairs(holdout.stage(stage).targets)
        assert pairs(loaded.stage(stage).exclude) == pairs(holdout.stage(stage).exclude)
        pd.testing.assert_frame_equal(loaded.stage(stage).history.frame, holdout.stage(stage).history.frame)
    np.testing.assert_array_equal(loaded.train.item_ids, holdout.train.item_ids)


# ---------------------------------------------------------------- stage_for_item_map (real ml-100k)


@pytest.fixture(scope="module")
def model_view(stream_rows, weeks, last_week):
    """History = rows before the last full week, held out = that week; the model's item map lacks
    30 items that occur in both, as a model trained on other data would."""
    keys = window_keys(stream_rows["timestamp"], 7)
    history = stream_rows.loc[keys < last_week].reset_index(drop=True)
    held_out = stream_rows.loc[keys == last_week].reset_index(drop=True)
    shared = sorted(set(history["item_id"]) & set(held_out["item_id"]))
    missing = set(shared[:: len(shared) // 30][:30])
    item_ids = np.asarray([""] + sorted(set(history["item_id"]) - missing), dtype=object)
    return history, held_out, item_ids, missing


def test_stage_for_item_map_counts_unknown_targets_as_misses(model_view):
    history, held_out, item_ids, missing = model_view
    stage = stage_for_item_map(history, held_out, item_ids)
    users = np.asarray(sorted(held_out["user_id"].unique()), dtype=object)
    np.testing.assert_array_equal(stage.history.user_ids, users)
    np.testing.assert_array_equal(stage.history.item_ids, item_ids)

    unknown_items = set(held_out["item_id"]) - set(item_ids)
    assert missing <= unknown_items and len(unknown_items) > len(missing)  # plus the week's brand-new items
    assert stage.targets.shape == (len(users), len(item_ids) + len(unknown_items))
    # every held-out row of an evaluated user stays a target: row sums are the user's row counts
    per_user = held_out.groupby("user_id").size().reindex(users).to_numpy()
    row_sums = np.asarray(stage.targets.sum(axis=1)).ravel()
    evaluated = stage.users
    np.testing.assert_array_equal(row_sums[evaluated], per_user[evaluated])
    # unknown items sit past the catalogue, so no score over len(item_ids) columns can hit them
    known_part = stage.targets[:, : len(item_ids)]
    unknown_part = stage.targets[:, len(item_ids) :]
    index = pd.Index(users)
    is_unknown = ~held_out["item_id"].isin(set(item_ids))
    on_evaluated = np.isin(index.get_indexer(held_out["user_id"]), evaluated)
    assert unknown_part.nnz == int((is_unknown & on_evaluated).sum()) > 0
    assert known_part.nnz == int((~is_unknown & on_evaluated).sum())
    assert known_part[:, 0].nnz == 0
    assert stage.exclude.shape == (len(users), len(item_ids))


def test_stage_for_item_map_history_keeps_known_items_of_held_out_users(model_view):
    history, held_out, item_ids, missing = model_view
    stage = stage_for_item_map(history, held_out, item_ids)
    users = pd.Index(sorted(held_out["user_id"].unique()))
    readable = history[history["user_id"].isin(users) & history["item_id"].isin(set(item_ids[1:]))]
    frame = stage.history.frame
    assert len(frame) == len(readable) > 0
    assert frame["item"].min() >= 1 and frame["item"].max() < len(item_ids)
    missing_codes = set(pd.Index(item_ids).get_indexer(sorted(missing)))
    assert missing_codes == {-1}  # the dropped items really are absent from the map
    decoded = set(zip(users[frame["user"]].tolist(), item_ids[frame["item"]].tolist()))
    assert decoded == set(zip(readable["user_id"], readable["item_id"]))
    assert not {item for _, item in decoded} & missing
    assert pairs(stage.exclude) == frame_pairs(frame)
    # users without readable history are not evaluated; every user with history and a target is
    with_history = set(frame["user"].tolist())
    newcomers = set(users.get_indexer(sorted(set(held_out["user_id"]) - set(history["user_id"]))).tolist())
    assert newcomers and not newcomers & with_history
    assert set(stage.users.tolist()) == with_history
    assert not newcomers & set(stage.users.tolist())


def test_stage_for_item_map_by_hand():
    """Users a, b, c hold out rows; the model knows items x, y only (index 0 is padding)."""
    history = raw_rows(
        ("a", "x", 1),
        ("a", "z", 2),  # z unknown to the model: dropped from a's history
        ("b", "z", 3),  # b's only history item is unknown: b cannot be read, so is not evaluated
        ("d", "x", 4),  # d has nothing held out: not a user of this stage
    )
    held_out = raw_rows(
        ("a", "y", 10),
        ("a", "w", 11),
        ("a", "v", 12),  # w and v unknown: targets, never hits
        ("b", "x", 13),
        ("c", "y", 14),  # c has no history at all
    )
    item_ids = np.array(["", "x", "y"], dtype=object)
    stage = stage_for_item_map(history, held_out, item_ids)

    np.testing.assert_array_equal(stage.history.user_ids, np.array(["a", "b", "c"], dtype=object))
    np.testing.assert_array_equal(stage.users, [0])
    assert stage.targets.shape == (3, 5)
    assert pairs(stage.targets) == {(0, 2), (0, 3), (0, 4)}  # y, then w and v past the catalogue
    assert stage.targets.sum() == 3
    assert stage.history.frame[["user", "item", "timestamp"]].values.tolist() == [[0, 1, 1]]
    assert stage.exclude.shape == (3, 3)
    assert pairs(stage.exclude) == {(0, 1)}


def test_stage_for_item_map_same_unknown_item_shares_one_column():
    """Two users holding out the same unseen item share one extra column (one item, two targets)."""
    history = raw_rows(("a", "x", 1), ("b", "x", 2))
    held_out = raw_rows(("a", "new", 5), ("b", "new", 6), ("b", "x", 7))
    stage = stage_for_item_map(history, held_out, np.array(["", "x"], dtype=object))
    assert stage.targets.shape == (2, 3)
    assert pairs(stage.targets) == {(0, 2), (1, 2), (1, 1)}
