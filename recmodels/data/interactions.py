"""Interactions in internal ids: the one container every split, model and metric reads.

Internal item ids run 1..n_items; id 0 is padding, so a history tensor can be
left-padded with zeros and every user x item matrix has ``n_items + 1`` columns
(column 0 always empty). Internal user ids run 0..n_users-1. Models never see
user ids (history in, top-k out); they exist to group a user's history.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

PADDING_ITEM = 0


@dataclass(frozen=True)
class Sequences:
    """Chronological per-user item sequences in CSR layout (ragged, no padding)."""

    indptr: np.ndarray
    items: np.ndarray
    timestamps: np.ndarray

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.indptr)

    def padded(self, users: np.ndarray, max_len: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Left-padded ``[len(users), L]`` items and timestamps, keeping the most recent items.

        ``L`` is the longest selected history, capped at ``max_len``.
        """
        users = np.asarray(users, dtype=np.int64)
        ends = self.indptr[users + 1]
        lengths = ends - self.indptr[users]
        width = int(lengths.max(initial=0))
        if max_len is not None:
            width = min(width, max_len)
        width = max(width, 1)
        kept = np.minimum(lengths, width)
        columns = np.arange(width)
        first_filled = (width - kept)[:, None]
        source = ends[:, None] - width + columns[None, :]
        filled = columns[None, :] >= first_filled
        source = np.where(filled, source, 0)
        items = np.where(filled, self.items[source] if len(self.items) else 0, PADDING_ITEM)
        times = np.where(filled, self.timestamps[source] if len(self.timestamps) else 0, 0)
        return items.astype(np.int64), times.astype(np.int64)


@dataclass(frozen=True)
class KCoreReport:
    rows_in: int
    rows_kept: int
    rows_removed: int
    iterations: int


@dataclass(frozen=True)
class Interactions:
    """Interactions with internal ids, sorted by user, then time, then source order.

    ``frame`` columns: ``user`` (int64), ``item`` (int64, >= 1), ``timestamp`` (int64),
    ``weight`` (float32), plus any extra columns the source carried (``split``, ``rating``).
    """

    frame: pd.DataFrame
    user_ids: np.ndarray
    item_ids: np.ndarray

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids) - 1

    def __len__(self) -> int:
        return len(self.frame)

    @classmethod
    def from_frame(cls, raw: pd.DataFrame) -> "Interactions":
        """Build id maps from validated rows (``user_id``, ``item_id``, ``timestamp``, ``rating``...).

        Ids are sorted as strings, so the same rows always give the same maps.
        """
        users, user_ids = _sorted_codes(raw["user_id"])
        items, item_ids = _sorted_codes(raw["item_id"])
        frame = pd.DataFrame(
            {
                "user": users,
                "item": items + 1,  # 0 is padding
                "timestamp": raw["timestamp"].to_numpy(dtype=np.int64),
                "weight": np.ones(len(raw), dtype=np.float32),
            }
        )
        for extra in ("rating", "split"):
            if extra in raw.columns:
                frame[extra] = raw[extra].to_numpy()
        return cls(chronological(frame), user_ids, np.concatenate([np.array([""], dtype=object), item_ids]))

    def subset(self, mask: np.ndarray | pd.Series) -> "Interactions":
        """Rows where ``mask`` holds, sharing this container's id maps."""
        return Interactions(self.frame.loc[np.asarray(mask)].reset_index(drop=True), self.user_ids, self.item_ids)

    def concat(self, other: "Interactions") -> "Interactions":
        """Union of two row sets over the same id maps, chronologically re-sorted."""
        if other.user_ids is not self.user_ids or other.item_ids is not self.item_ids:
            raise ValueError("can only concatenate interactions that share id maps")
        frame = pd.concat([self.frame, other.frame], ignore_index=True)
        return Interactions(chronological(frame), self.user_ids, self.item_ids)

    def csr(self, binary: bool = True) -> sp.csr_matrix:
        """Sparse users x (n_items + 1) matrix; repeats are summed unless ``binary``."""
        matrix = sp.csr_matrix(
            (
                self.frame["weight"].to_numpy(dtype=np.float32),
                (self.frame["user"].to_numpy(), self.frame["item"].to_numpy()),
            ),
            shape=(self.n_users, self.n_items + 1),
        )
        matrix.sum_duplicates()
        if binary:
            matrix.data[:] = 1.0
        return matrix

    def sequences(self) -> Sequences:
        users = self.frame["user"].to_numpy()
        indptr = np.zeros(self.n_users + 1, dtype=np.int64)
        np.cumsum(np.bincount(users, minlength=self.n_users), out=indptr[1:])
        return Sequences(
            indptr=indptr,
            items=self.frame["item"].to_numpy(dtype=np.int64),
            timestamps=self.frame["timestamp"].to_numpy(dtype=np.int64),
        )

    def item_user_counts(self) -> np.ndarray:
        """Number of distinct users per item id (length n_items + 1): training popularity."""
        return np.asarray(self.csr(binary=True).sum(axis=0)).ravel()

    def users_with_data(self) -> np.ndarray:
        return np.unique(self.frame["user"].to_numpy())


def k_core(raw: pd.DataFrame, min_user: int, min_item: int) -> tuple[pd.DataFrame, KCoreReport]:
    """Repeatedly drop users and items with fewer interactions than the thresholds.

    Counts interactions (not distinct pairs), the usual definition in RecBole and RecTools. The ids are
    factorised once and each pass counts integer codes of the surviving rows, so a pass costs one
    `bincount` over the rows rather than a hash of every id string (linear in the rows: docs/scale-out.md).
    """
    if min_user < 1 or min_item < 1:
        raise ValueError(f"k-core thresholds must be >= 1, got users={min_user}, items={min_item}")
    user_codes, users = _codes(raw, "user_id")
    item_codes, items = _codes(raw, "item_id")
    alive = np.arange(len(raw))
    iterations = 0
    while True:
        iterations += 1
        users_alive, items_alive = user_codes[alive], item_codes[alive]
        user_counts = np.bincount(users_alive, minlength=len(users))
        item_counts = np.bincount(items_alive, minlength=len(items))
        keep = (user_counts[users_alive] >= min_user) & (item_counts[items_alive] >= min_item)
        if keep.all():
            break
        alive = alive[keep]
    kept = raw.reset_index(drop=True) if len(alive) == len(raw) else raw.take(alive)
    kept.index = pd.RangeIndex(len(kept))
    report = KCoreReport(len(raw), len(kept), len(raw) - len(kept), iterations)
    return kept, report


def _codes(rows: pd.DataFrame, column: str) -> tuple[np.ndarray, pd.Index]:
    """Per row the position of its id among the distinct ids; a missing id is an error naming its row."""
    codes, distinct = pd.factorize(rows[column])
    missing = np.flatnonzero(codes < 0)
    if len(missing):
        raise ValueError(f"{column} is missing in {len(missing)} rows, the first at position {missing[0]}")
    return codes, distinct


def _sorted_codes(ids: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Per row the position of its id (as text) among the sorted distinct ids, and those ids: one hash per row."""
    codes, distinct = pd.factorize(ids.astype(str))
    distinct = np.asarray(distinct, dtype=object)
    order = np.argsort(distinct, kind="stable")
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))
    return rank[codes], distinct[order]


def chronological(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows by user, then time; rows of one user and time keep their order (``np.lexsort`` is stable)."""
    order = np.lexsort((frame["timestamp"].to_numpy(), frame["user"].to_numpy()))
    return frame.iloc[order].reset_index(drop=True)


def save_interactions(interactions: Interactions, folder: Path) -> None:
    """Parquet rows plus the two id maps, readable without this library."""
    folder.mkdir(parents=True, exist_ok=True)
    interactions.frame.to_parquet(folder / "interactions.parquet", index=False)
    pd.DataFrame({"user_id": interactions.user_ids.astype(str)}).to_parquet(folder / "users.parquet", index=False)
    pd.DataFrame({"item_id": interactions.item_ids.astype(str)}).to_parquet(folder / "items.parquet", index=False)


def load_interactions(folder: Path) -> Interactions:
    user_ids = pd.read_parquet(folder / "users.parquet")["user_id"].to_numpy(dtype=object)
    item_ids = pd.read_parquet(folder / "items.parquet")["item_id"].to_numpy(dtype=object)
    return Interactions(pd.read_parquet(folder / "interactions.parquet"), user_ids, item_ids)
