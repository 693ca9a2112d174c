"""Item clusters: k-means hard assignments (L-DiffRec) and soft memberships (candidate retrieval)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.cluster import KMeans

FILE = "item_clusters.npz"


@dataclass(frozen=True)
class ItemClusters:
    """``labels[i]`` is item i's cluster (-1 for padding); ``memberships`` ``[n_items + 1, k]`` is
    a softmax over negative squared distances to the centroids (row 0 zero)."""

    labels: np.ndarray
    centroids: np.ndarray
    memberships: np.ndarray

    @property
    def n_clusters(self) -> int:
        return len(self.centroids)

    @property
    def sizes(self) -> np.ndarray:
        return np.bincount(self.labels[1:], minlength=self.n_clusters)

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        np.savez(folder / FILE, labels=self.labels, centroids=self.centroids, memberships=self.memberships)

    @classmethod
    def load(cls, folder: Path) -> "ItemClusters":
        with np.load(folder / FILE) as stored:
            return cls(stored["labels"], stored["centroids"], stored["memberships"])


def kmeans_item_clusters(embeddings: np.ndarray, n_clusters: int, seed: int, temperature: float = 1.0) -> ItemClusters:
    """k-means over items 1..n of ``[n_items + 1, d]`` embeddings (row 0 is padding)."""
    items = embeddings[1:]
    if not 1 <= n_clusters <= len(items):
        raise ValueError(f"n_clusters must be in [1, {len(items)}], got {n_clusters}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    kmeans = KMeans(n_clusters=n_clusters, n_init=10, random_state=seed).fit(items)
    distances = kmeans.transform(items) ** 2 / temperature
    logits = -distances - (-distances).max(axis=1, keepdims=True)
    soft = np.exp(logits)
    soft /= soft.sum(axis=1, keepdims=True)
    labels = np.concatenate([[-1], kmeans.labels_]).astype(np.int64)
    memberships = np.vstack([np.zeros((1, n_clusters)), soft]).astype(np.float32)
    return ItemClusters(labels, kmeans.cluster_centers_.astype(np.float32), memberships)
