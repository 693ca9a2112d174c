"""Train / validation / test splits, each with its own evaluation protocol.

A split says, per evaluation stage, three things: the history a model reads
(``history``), the items it must find (``targets``) and the items ranking must
skip (``exclude``). Models train on ``train`` only.

Cold start, the same rule for every protocol: models learn items from ``train``,
so a target item never seen in ``train`` cannot be ranked meaningfully and is
dropped from the targets; a user with no history at a stage is not evaluated
there. Both are counted in ``SplitData.report``, never dropped silently. The one
exception is the item-disjoint protocol, whose test targets are items held out of
training on purpose, for models that rank them from their features.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recmodels.data.interactions import Interactions, chronological, load_interactions, save_interactions
from recmodels.features.side import ItemSideFeatures

StageName = Literal["valid", "test"]


@dataclass(frozen=True)
class EvalStage:
    """What a model reads, must find and must skip at one evaluation stage."""

    history: Interactions
    targets: sp.csr_matrix
    exclude: sp.csr_matrix

    @property
    def users(self) -> np.ndarray:
        """Users with at least one target: the ones metrics average over."""
        return np.flatnonzero(np.diff(self.targets.indptr) > 0)

    def only(self, users: np.ndarray) -> "EvalStage":
        """This stage evaluated on ``users`` alone (the others keep their history but lose their targets), so a
        group of users is measured by the same evaluation as everyone."""
        keep = np.zeros(self.targets.shape[0], dtype=bool)
        keep[np.asarray(users, dtype=np.int64)] = True
        targets = sp.diags(keep.astype(np.float32)) @ self.targets
        targets.eliminate_zeros()
        return EvalStage(history=self.history, targets=targets.tocsr(), exclude=self.exclude)

    def only_items(self, items: np.ndarray) -> "EvalStage":
        """This stage with only the targets among ``items`` (e.g. the rarely trained ones): users left with no
        target are not evaluated; histories and exclusions are unchanged."""
        keep = np.zeros(self.targets.shape[1], dtype=np.float32)
        keep[np.asarray(items, dtype=np.int64)] = 1.0
        targets = self.targets @ sp.diags(keep)
        targets.eliminate_zeros()
        return EvalStage(history=self.history, targets=targets.tocsr(), exclude=self.exclude)

    def batches(self, batch_size: int, max_len: int | None = None) -> Iterator["StageBatch"]:
        """Users in order of history length, so a batch carries little padding."""
        sequences = self.history.sequences()
        users = self.users[np.argsort(sequences.lengths[self.users], kind="stable")]
        for start in range(0, len(users), batch_size):
            chunk = users[start : start + batch_size]
            items, times = sequences.padded(chunk, max_len)
            yield StageBatch(chunk, items, times, self.targets[chunk], self.exclude[chunk])


@dataclass(frozen=True)
class StageBatch:
    users: np.ndarray
    history_items: np.ndarray
    history_timestamps: np.ndarray
    targets: sp.csr_matrix
    exclude: sp.csr_matrix


@dataclass(frozen=True)
class SplitData:
    """``context_rows``: rows that are only ever history, never trained on and never targets (the earlier
    history of users kept out of training by the user-disjoint protocol); empty for the other protocols.
    ``item_features``: the items' genres and years where the dataset has metadata (models may read them)."""

    protocol: str
    train: Interactions
    valid_rows: Interactions
    test_rows: Interactions
    valid: EvalStage
    test: EvalStage
    report: dict[str, int] = field(default_factory=dict)
    context_rows: Interactions | None = None
    item_features: ItemSideFeatures | None = None

    def with_item_features(self, items: pd.DataFrame | None) -> "SplitData":
        """This split with the side features of the item table ``items`` (``None``: a dataset without one)."""
        features = None if items is None else ItemSideFeatures.from_metadata(items, self.train.item_ids)
        return dataclasses.replace(self, item_features=features)

    def stage(self, name: StageName) -> EvalStage:
        return {"valid": self.valid, "test": self.test}[name]

    @property
    def unseen_users(self) -> np.ndarray:
        """Users evaluated at test with no training row: served from their history alone."""
        trained = np.zeros(self.train.n_users, dtype=bool)
        trained[self.train.frame["user"].to_numpy()] = True
        return self.test.users[~trained[self.test.users]]

    @property
    def n_items(self) -> int:
        return self.train.n_items


def temporal_split(interactions: Interactions, valid_fraction: float = 0.1, test_fraction: float = 0.1) -> SplitData:
    """Global time split: the latest ``test_fraction`` of interactions is test, the
    ``valid_fraction`` before it validation, the rest train.

    Thresholds are timestamps, so no training interaction is later than any validation
    or test interaction. The test stage reads train + validation history.
    """
    if not (0 < valid_fraction and 0 < test_fraction and valid_fraction + test_fraction < 1):
        raise ValueError(f"need 0 < valid_fraction, 0 < test_fraction, sum < 1; got {valid_fraction}, {test_fraction}")
    times = interactions.frame["timestamp"].to_numpy()
    valid_start = np.quantile(times, 1 - valid_fraction - test_fraction, method="higher")
    test_start = np.quantile(times, 1 - test_fraction, method="higher")
    if not valid_start < test_start:
        raise ValueError("timestamps too coarse for a temporal split: validation window is empty")
    train = interactions.subset(times < valid_start)
    valid = interactions.subset((times >= valid_start) & (times < test_start))
    test = interactions.subset(times >= test_start)
    return _assemble("temporal", train, valid, test, test_reads_valid=True)


def user_temporal_split(
    interactions: Interactions, valid_fraction: float = 0.1, test_fraction: float = 0.1, min_length: int = 3
) -> SplitData:
    """Per user, by time: the latest ``test_fraction`` of each user's rows is test, the
    ``valid_fraction`` before it validation, the rest train (shares rounded half up).

    Every user with at least ``min_length`` rows gets at least one test row, one
    validation row and one training row; shorter users stay whole in train and are
    counted, not evaluated. No row of a user's training history is later than that
    user's held-out rows, but another user's training rows may be: models learn from
    the whole population's later behaviour, as leave-one-out lets them. The test stage
    reads train + validation history.
    """
    if not (0 < valid_fraction and 0 < test_fraction and valid_fraction + test_fraction < 1):
        raise ValueError(f"need 0 < valid_fraction, 0 < test_fraction, sum < 1; got {valid_fraction}, {test_fraction}")
    if min_length < 3:
        raise ValueError(f"user_temporal needs min_length >= 3 (one train, valid and test row), got {min_length}")
    users = interactions.frame["user"].to_numpy()
    lengths = np.bincount(users, minlength=interactions.n_users)
    n_test = np.clip(np.floor(test_fraction * lengths + 0.5), 1, np.maximum(lengths - 2, 1)).astype(np.int64)
    n_valid = np.clip(np.floor(valid_fraction * lengths + 0.5), 1, np.maximum(lengths - 1 - n_test, 1)).astype(np.int64)
    position_from_end = _position_from_end(users)
    evaluated = lengths[users] >= min_length
    test_mask = evaluated & (position_from_end < n_test[users])
    valid_mask = evaluated & ~test_mask & (position_from_end < n_test[users] + n_valid[users])
    train = interactions.subset(~(test_mask | valid_mask))
    valid = interactions.subset(valid_mask)
    test = interactions.subset(test_mask)
    split = _assemble("user_temporal", train, valid, test, test_reads_valid=True)
    split.report["users_too_short_to_evaluate"] = int(np.sum((lengths > 0) & (lengths < min_length)))
    return split


def leave_one_out_split(interactions: Interactions, min_length: int = 3, drop_seen_targets: bool = False) -> SplitData:
    """Per user: last interaction is test, second-last validation, the rest train.

    Users with fewer than ``min_length`` interactions stay whole in train and are not
    evaluated. The test stage reads train + the validation item. ``drop_seen_targets``: a test
    target the user already has in that history is not evaluated (the eSASRec authors' splitter,
    ``filter_already_seen``) instead of counting as a miss, since seen items are never ranked.
    """
    if min_length < 3:
        raise ValueError(f"leave-one-out needs min_length >= 3, got {min_length}")
    users = interactions.frame["user"].to_numpy()
    lengths = np.bincount(users, minlength=interactions.n_users)
    position_from_end = _position_from_end(users)
    evaluated = lengths[users] >= min_length
    test_mask = evaluated & (position_from_end == 0)
    valid_mask = evaluated & (position_from_end == 1)
    train = interactions.subset(~(test_mask | valid_mask))
    valid = interactions.subset(valid_mask)
    test = interactions.subset(test_mask)
    split = _assemble("leave_one_out", train, valid, test, test_reads_valid=True, drop_seen_targets=drop_seen_targets)
    split.report["users_too_short_to_evaluate"] = int(np.sum((lengths > 0) & (lengths < min_length)))
    return split


def user_disjoint_split(
    interactions: Interactions,
    unseen_share: float = 0.2,
    target: Literal["last_item", "last_fraction"] = "last_item",
    test_fraction: float = 0.2,
    min_length: int = 3,
    seed: int = 0,
) -> SplitData:
    """A seeded ``unseen_share`` of the users with at least ``min_length`` rows never enters training; every
    evaluated user's target is their last item (``last_item``) or their latest ``test_fraction`` of rows
    (``last_fraction``; at least one, shares rounded half up), and the earlier rows are the history.

    Seen users are split like leave-one-out (or per-user temporal): their rows before the validation
    rows train, one validation item (or the same share) before the test rows. Unseen users have no
    training and no validation row: early stopping never looks at them, and their earlier rows are
    context, read only as history at test. ``SplitData.unseen_users`` and ``EvalStage.only`` report
    the two groups with one evaluation.
    """
    if not 0 < unseen_share < 1:
        raise ValueError(f"unseen_share must be in (0, 1), got {unseen_share}")
    if target not in ("last_item", "last_fraction"):
        raise ValueError(f"target must be 'last_item' or 'last_fraction', got {target!r}")
    if not 0 < test_fraction < 0.5:
        raise ValueError(f"test_fraction must be in (0, 0.5), got {test_fraction}")
    if min_length < 3:
        raise ValueError(f"user_disjoint needs min_length >= 3 (one train, valid and test row), got {min_length}")
    users = interactions.frame["user"].to_numpy()
    lengths = np.bincount(users, minlength=interactions.n_users)
    eligible = np.flatnonzero(lengths >= min_length)
    n_unseen = int(np.floor(unseen_share * len(eligible) + 0.5))
    unseen = np.zeros(interactions.n_users, dtype=bool)
    unseen[np.random.default_rng(seed).choice(eligible, size=n_unseen, replace=False)] = True
    if target == "last_item":
        n_test = np.ones(interactions.n_users, dtype=np.int64)
    else:
        n_test = np.clip(np.floor(test_fraction * lengths + 0.5), 1, np.maximum(lengths - 2, 1)).astype(np.int64)
    position_from_end = _position_from_end(users)
    evaluated = lengths[users] >= min_length
    test_mask = evaluated & (position_from_end < n_test[users])
    held_back = unseen[users]
    n_valid = np.clip(n_test, 1, np.maximum(lengths - 1 - n_test, 1))  # a seen user keeps a training row
    valid_mask = evaluated & ~held_back & ~test_mask & (position_from_end < (n_test + n_valid)[users])
    context_mask = held_back & ~test_mask
    train = interactions.subset(~(test_mask | valid_mask | held_back))
    split = _assemble(
        "user_disjoint",
        train,
        interactions.subset(valid_mask),
        interactions.subset(test_mask),
        test_reads_valid=True,
        context=interactions.subset(context_mask),
    )
    split.report["users_too_short_to_evaluate"] = int(np.sum((lengths > 0) & (lengths < min_length)))
    split.report["unseen_users"] = n_unseen
    split.report["context_rows"] = int(context_mask.sum())
    return split


def item_disjoint_split(
    interactions: Interactions, held_out_share: float = 0.1, min_length: int = 3, seed: int = 0
) -> SplitData:
    """A seeded ``held_out_share`` of the catalogue's items never enters training: every row with one of
    them is a test target, ranked over the whole catalogue with the user's other rows as history.

    What a model knows of a held-out item is its features alone, so this split measures what features
    buy (an id-only model cannot rank an item it never trained on). Validation, for early stopping, stays
    on trained items: each user's last row of a trained item is validation where the user has at least
    ``min_length`` such rows. The test history is every row of a trained item (train + validation), so
    the question at test is which of the never-trained items this user took, given the rest of their
    history. The protocol's one exception to the cold-start rule: its test targets are cold items and are
    kept. A user with no row of a trained item has no history and is not evaluated (counted in the report).
    """
    if not 0 < held_out_share < 1:
        raise ValueError(f"held_out_share must be in (0, 1), got {held_out_share}")
    if min_length < 2:
        raise ValueError(f"item_disjoint needs min_length >= 2 (one train and one validation row), got {min_length}")
    items = interactions.frame["item"].to_numpy()
    present = np.flatnonzero(np.bincount(items, minlength=interactions.n_items + 1)[1:] > 0) + 1
    held_out = np.zeros(interactions.n_items + 1, dtype=bool)
    n_held_out = int(np.floor(held_out_share * len(present) + 0.5))
    held_out[np.random.default_rng(seed).choice(present, size=n_held_out, replace=False)] = True
    test_mask = held_out[items]
    trained_rows = np.flatnonzero(~test_mask)
    users = interactions.frame["user"].to_numpy()[trained_rows]
    lengths = np.bincount(users, minlength=interactions.n_users)
    valid_mask = np.zeros(len(items), dtype=bool)
    valid_mask[trained_rows] = (lengths[users] >= min_length) & (_position_from_end(users) == 0)
    split = _assemble(
        "item_disjoint",
        interactions.subset(~test_mask & ~valid_mask),
        interactions.subset(valid_mask),
        interactions.subset(test_mask),
        test_reads_valid=True,
    )
    split.report["held_out_items"] = n_held_out
    return split


def predefined_split(interactions: Interactions) -> SplitData:
    """Split given by the source (a ``split`` column of 'train' / 'valid' / 'test').

    Follows the DiffRec protocol: both stages read the training history; the test stage
    also skips the validation items.
    """
    if "split" not in interactions.frame.columns:
        raise ValueError("predefined split needs a 'split' column in the interactions")
    labels = interactions.frame["split"].to_numpy()
    unknown = set(np.unique(labels)) - {"train", "valid", "test"}
    if unknown:
        raise ValueError(f"unknown split labels {sorted(unknown)}; expected train/valid/test")
    train = interactions.subset(labels == "train")
    valid = interactions.subset(labels == "valid")
    test = interactions.subset(labels == "test")
    return _assemble("predefined", train, valid, test, test_reads_valid=False)


def holdout_split(interactions: Interactions, holdout: np.ndarray) -> SplitData:
    """Train on the rows outside ``holdout``; validate and test on the held-out rows.

    For a stream: the latest window is held out, so early stopping and the promotion
    gate judge a model on data it never saw. Both stages read the training history.
    """
    holdout = np.asarray(holdout, dtype=bool)
    train = interactions.subset(~holdout)
    held_out = interactions.subset(holdout)
    return _assemble("holdout", train, held_out, held_out, test_reads_valid=False)


def stage_for_item_map(history: pd.DataFrame, held_out: pd.DataFrame, item_ids: np.ndarray) -> EvalStage:
    """An evaluation stage from raw rows (``user_id``, ``item_id``, ``timestamp``) in a model's own item ids.

    Models trained on different data know different items; judged on the same rows, each
    reads only the history items it knows and every held-out row stays a target, so an
    item a model never saw is a miss for it rather than a dropped target. Users without
    any history are not evaluated (no model can read them).
    """
    users = pd.Index(np.unique(held_out["user_id"].astype(str)))
    item_index = pd.Index(np.asarray(item_ids, dtype=object))
    history_items = item_index.get_indexer(history["item_id"].astype(str))
    history_users = users.get_indexer(history["user_id"].astype(str))
    readable = (history_items > 0) & (history_users >= 0)
    frame = pd.DataFrame(
        {
            "user": history_users[readable].astype(np.int64),
            "item": history_items[readable].astype(np.int64),
            "timestamp": history["timestamp"].to_numpy(dtype=np.int64)[readable],
            "weight": np.ones(int(readable.sum()), dtype=np.float32),
        }
    )
    history_rows = Interactions(chronological(frame), users.to_numpy(dtype=object), item_index.to_numpy(dtype=object))
    n_columns = len(item_index)
    target_items = item_index.get_indexer(held_out["item_id"].astype(str))
    unknown = target_items < 0
    # items the model cannot rank get columns past its catalogue: they count as targets, never as hits
    unknown_codes = pd.factorize(held_out["item_id"].astype(str)[unknown])[0]
    target_items[unknown] = n_columns + unknown_codes
    target_users = users.get_indexer(held_out["user_id"].astype(str))
    has_history = np.zeros(len(users), dtype=bool)
    has_history[history_rows.frame["user"].to_numpy()] = True
    evaluated = has_history[target_users]
    targets = sp.csr_matrix(
        (np.ones(int(evaluated.sum()), dtype=np.float32), (target_users[evaluated], target_items[evaluated])),
        shape=(len(users), n_columns + int(unknown_codes.max(initial=-1)) + 1),
    )
    targets.sum_duplicates()
    targets.data[:] = 1.0
    return EvalStage(history=history_rows, targets=targets, exclude=history_rows.csr())


def _assemble(
    protocol: str,
    train: Interactions,
    valid: Interactions,
    test: Interactions,
    *,
    test_reads_valid: bool,
    context: Interactions | None = None,
    drop_seen_targets: bool = False,
) -> SplitData:
    """The stages of a split. ``context``: rows read as test history only (and skipped by its ranking);
    ``drop_seen_targets``: test targets already in the user's test history are not evaluated."""
    report: dict[str, int] = {
        "train_rows": len(train),
        "valid_rows": len(valid),
        "test_rows": len(test),
    }
    known_items = np.zeros(train.n_items + 1, dtype=bool)
    known_items[train.frame["item"].to_numpy()] = True
    train_matrix = train.csr()
    valid_matrix = valid.csr()

    valid_stage = _stage(train, valid, known_items, train_matrix, "valid", report)
    if protocol == "holdout":  # one held-out set behind both stages: the same targets, the same exclusions
        report.update(
            {key.replace("valid_", "test_", 1): value for key, value in report.items() if key.startswith("valid_")}
        )
        return SplitData(protocol, train, valid, test, valid_stage, valid_stage, report)
    test_history = train.concat(valid) if test_reads_valid else train
    test_exclude = train_matrix + valid_matrix
    if context is not None and len(context):
        test_history = test_history.concat(context)
        test_exclude = test_exclude + context.csr()
    if protocol in _TESTS_COLD_ITEMS:
        known_items = known_items.copy()
        known_items[test.frame["item"].to_numpy()] = True
    test_stage = _stage(
        test_history, test, known_items, test_exclude.sign().tocsr(), "test", report, drop_seen=drop_seen_targets
    )
    return SplitData(protocol, train, valid, test, valid_stage, test_stage, report, context)


def _stage(
    history: Interactions,
    held_out: Interactions,
    known_items: np.ndarray,
    exclude: sp.csr_matrix,
    name: str,
    report: dict[str, int],
    drop_seen: bool = False,
) -> EvalStage:
    frame = held_out.frame
    users, items = frame["user"].to_numpy(), frame["item"].to_numpy()
    has_history = np.zeros(history.n_users, dtype=bool)
    has_history[history.frame["user"].to_numpy()] = True
    cold_item = ~known_items[items]
    cold_user = ~has_history[users]
    report[f"{name}_targets_dropped_cold_item"] = int(np.sum(cold_item))
    report[f"{name}_targets_dropped_cold_user"] = int(np.sum(cold_user & ~cold_item))
    kept = ~cold_item & ~cold_user
    if drop_seen:
        seen = np.asarray(exclude[users, items]).ravel() > 0
        report[f"{name}_targets_dropped_seen"] = int(np.sum(seen & kept))
        kept &= ~seen
    targets = held_out.subset(kept).csr()
    report[f"{name}_users_evaluated"] = int(np.sum(np.diff(targets.indptr) > 0))
    return EvalStage(history=history, targets=targets, exclude=exclude.tocsr())


def _position_from_end(users: np.ndarray) -> np.ndarray:
    """0 for each user's last row, 1 for the second-last... (rows sorted by user)."""
    index = np.arange(len(users))
    is_last = np.ones(len(users), dtype=bool)
    is_last[:-1] = users[1:] != users[:-1]
    last_index = np.flip(np.minimum.accumulate(np.flip(np.where(is_last, index, len(users)))))
    return last_index - index


SPLITTERS: dict[str, Callable[..., SplitData]] = {
    "temporal": temporal_split,
    "user_temporal": user_temporal_split,
    "leave_one_out": leave_one_out_split,
    "user_disjoint": user_disjoint_split,
    "item_disjoint": item_disjoint_split,
    "predefined": predefined_split,
}
SEEN_TARGETS_DROPPED = "test_targets_dropped_seen"  # in a split's report when drop_seen_targets applied
# Protocols whose test targets are items no training row holds, kept on purpose (ranked from features).
_TESTS_COLD_ITEMS = frozenset({"item_disjoint"})
_TEST_READS_VALID = {
    "temporal": True,
    "user_temporal": True,
    "leave_one_out": True,
    "user_disjoint": True,
    "item_disjoint": True,
    "predefined": False,
    "holdout": False,
}


def make_split(interactions: Interactions, protocol: str, **options: Any) -> SplitData:
    if protocol not in SPLITTERS:
        raise ValueError(f"unknown split protocol {protocol!r}; choose one of {sorted(SPLITTERS)}")
    return SPLITTERS[protocol](interactions, **options)


def save_split(split: SplitData, folder: Path) -> None:
    """The three row sets and the report; stages are rebuilt on load, so they cannot drift."""
    parts = {"train": split.train, "valid": split.valid_rows, "test": split.test_rows}
    if split.context_rows is not None:
        parts["context"] = split.context_rows
    frame = pd.concat([part.frame.assign(part=name) for name, part in parts.items()], ignore_index=True)
    save_interactions(Interactions(frame, split.train.user_ids, split.train.item_ids), folder)
    (folder / "split.json").write_text(json.dumps({"protocol": split.protocol, "report": split.report}, indent=2))
    if split.item_features is not None:
        split.item_features.save(folder)


def load_split(folder: Path) -> SplitData:
    meta = json.loads((folder / "split.json").read_text())
    rows = load_interactions(folder)
    part = rows.frame["part"].to_numpy()
    train, valid, test, context = (
        Interactions(
            rows.frame.loc[part == name].drop(columns="part").reset_index(drop=True), rows.user_ids, rows.item_ids
        )
        for name in ("train", "valid", "test", "context")
    )
    split = _assemble(
        meta["protocol"],
        train,
        valid,
        test,
        test_reads_valid=_TEST_READS_VALID[meta["protocol"]],
        context=context if len(context) else None,
        drop_seen_targets=SEEN_TARGETS_DROPPED in meta["report"],  # the report names the rule it applied
    )
    split.report.update({k: v for k, v in meta["report"].items() if k not in split.report})
    return dataclasses.replace(split, item_features=ItemSideFeatures.load(folder))
