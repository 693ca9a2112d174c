"""Per-row features whose distributions mean something for a recommender, for drift reports.

Every feature is defined the same way for the reference and the current window, so a
difference is drift and not an artefact of window length: activity is counted per user
per window, popularity buckets come from the reference alone. The shares of new items
and new users are one-sided (the reference has none by definition), so they are
reported as shares of the current window (``newcomer_shares``), not tested; only the
popularity column's ``unseen`` bucket (items the reference lacks) carries them into a
test, which matters only when the reference is short.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

POPULARITY_BUCKETS = ("head", "torso", "tail", "unseen")
HEAD_SHARE, TORSO_SHARE = 0.1, 0.4  # top 10% of reference items by interactions, then the next 30%
ACTIVITY_EDGES = (0, 5, 20, 50, np.inf)
ACTIVITY_LABELS = ("1-5", "6-20", "21-50", "51+")
NUMERICAL = ("rating",)
CATEGORICAL = ("item_popularity", "user_activity", "item_genre", "hour", "weekday")
RECOMMENDATION_CATEGORICAL = ("item_popularity", "item_genre")


@dataclass(frozen=True)
class FeatureContext:
    """What features are measured against: reference popularity, genres, first appearances."""

    item_bucket: pd.Series  # item_id -> popularity bucket in the reference
    item_genre: pd.Series  # item_id -> primary genre
    reference_users: pd.Index

    @classmethod
    def build(cls, reference: pd.DataFrame, items: pd.DataFrame | None) -> "FeatureContext":
        """``reference``: the champion's training rows; ``items``: metadata with '|'-joined genres."""
        counts = reference["item_id"].astype(str).value_counts()  # descending
        rank_share = np.arange(1, len(counts) + 1) / max(len(counts), 1)
        buckets = np.where(rank_share <= HEAD_SHARE, "head", np.where(rank_share <= TORSO_SHARE, "torso", "tail"))
        genre = pd.Series(dtype=object)
        if items is not None and "genres" in items.columns:
            primary = items["genres"].fillna("").astype(str).str.split("|").str[0].replace("", "unknown")
            genre = pd.Series(primary.to_numpy(), index=items["item_id"].astype(str).to_numpy())
        return cls(
            item_bucket=pd.Series(buckets, index=counts.index),
            item_genre=genre[~genre.index.duplicated()],
            reference_users=pd.Index(reference["user_id"].astype(str).unique()),
        )

    def popularity(self, item_ids: pd.Series) -> np.ndarray:
        return item_ids.map(self.item_bucket).fillna("unseen").to_numpy(dtype=object)

    def genre(self, item_ids: pd.Series) -> np.ndarray:
        return item_ids.map(self.item_genre).fillna("unknown").to_numpy(dtype=object)


def interaction_features(rows: pd.DataFrame, context: FeatureContext) -> pd.DataFrame:
    """One row per interaction (``user_id``, ``item_id``, ``timestamp``, ``rating``, ``window``)."""
    items = rows["item_id"].astype(str)
    users = rows["user_id"].astype(str)
    per_user_window = rows.groupby([users, rows["window"]])["item_id"].transform("size")
    times = pd.to_datetime(rows["timestamp"], unit="s", utc=True)
    return pd.DataFrame(
        {
            "rating": rows["rating"].astype(float).to_numpy(),
            "item_popularity": context.popularity(items),
            "user_activity": pd.cut(per_user_window, ACTIVITY_EDGES, labels=ACTIVITY_LABELS).astype(str).to_numpy(),
            "item_genre": context.genre(items),
            "hour": times.dt.hour.astype(str).to_numpy(),
            "weekday": times.dt.day_name().to_numpy(),
        }
    )


def newcomer_shares(rows: pd.DataFrame, context: FeatureContext) -> dict[str, float]:
    """Share of the window's interactions on items, and of its users, absent from the reference."""
    users = rows["user_id"].astype(str).unique()
    return {
        "new_item_share": float(np.mean(~rows["item_id"].astype(str).isin(context.item_bucket.index)))
        if len(rows)
        else 0.0,
        "new_user_share": float(np.mean(~pd.Index(users).isin(context.reference_users))) if len(users) else 0.0,
    }


def recommendation_features(recommended: np.ndarray, context: FeatureContext) -> pd.DataFrame:
    """One row per recommended item (raw ids ``[users, k]``): what the model pushes to users."""
    items = pd.Series(recommended.ravel().astype(str))
    return pd.DataFrame({"item_popularity": context.popularity(items), "item_genre": context.genre(items)})


def coverage(recommended: np.ndarray, catalogue_size: int) -> float:
    """Share of the catalogue that appears in any recommendation list."""
    return len(np.unique(recommended)) / max(catalogue_size, 1)
