"""Item clusters: k-means hard assignments (L-DiffRec) and soft memberships (candidate retrieval)."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
from sklearn.cluster import KMeans

from recmodels.cluster.embeddings import svd_item_embeddings

FILE = "item_clusters.npz"
PARAMETERS_FILE = "item_clusters.json"
SVD_SOURCE = "svd of the training matrix"


@dataclass(frozen=True)
class ClusteringConfig:
    """How item clusters are built: ``dim``-d item embeddings (SVD of the training matrix unless a
    file provides them), k-means into ``n_clusters``, soft memberships at ``temperature``.

    The one definition of these settings: the ``item_embeddings`` and ``item_clusters`` assets
    take their launchpad fields from it, L-DiffRec's ``fit`` builds with it when no clusters
    are given, and every ``ItemClusters`` records it. Defaults: L-DiffRec's ML-1M setting (2 clusters).
    """

    dim: int = field(default=64, metadata={"doc": "SVD embedding size (a provided embedding file has its own)."})
    n_clusters: int = field(default=2, metadata={"doc": "k of k-means (L-DiffRec's ML-1M setting: 2)."})
    temperature: float = field(
        default=1.0, metadata={"doc": "Softness of the memberships (softmax of -distance^2 / T)."}
    )
    seed: int = field(default=0, metadata={"doc": "Seed of the SVD and of the k-means that follows it."})

    def __post_init__(self) -> None:
        if self.dim < 1 or self.n_clusters < 1:
            raise ValueError(f"dim and n_clusters must be >= 1, got {self.dim} and {self.n_clusters}")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")

    def build(self, train: sp.csr_matrix) -> ItemClusters:
        """SVD embeddings of the users x items training matrix, then k-means (``fit``'s route without the pipeline).

        A matrix too small for ``dim`` gets narrower embeddings; the clusters record the width used.
        """
        embeddings = svd_item_embeddings(train, self.dim, self.seed)
        return kmeans_item_clusters(embeddings, dataclasses.replace(self, dim=embeddings.shape[1]), SVD_SOURCE)


@dataclass(frozen=True)
class ItemClusters:
    """``labels[i]`` is item i's cluster (-1 for padding); ``memberships`` ``[n_items + 1, k]`` is
    a softmax over negative squared distances to the centroids (row 0 zero).

    ``config`` and ``embedding_source`` are what they were built with, saved beside them, so a
    model trained on them can say so.
    """

    labels: np.ndarray
    centroids: np.ndarray
    memberships: np.ndarray
    config: ClusteringConfig
    embedding_source: str

    def __post_init__(self) -> None:
        if self.centroids.shape != (self.config.n_clusters, self.config.dim):
            raise ValueError(
                f"centroids {self.centroids.shape} do not match n_clusters={self.config.n_clusters}, "
                f"dim={self.config.dim}"
            )

    @property
    def n_clusters(self) -> int:
        return len(self.centroids)

    @property
    def sizes(self) -> np.ndarray:
        return np.bincount(self.labels[1:], minlength=self.n_clusters)

    def parameters(self) -> dict[str, Any]:
        """What they were built with, JSON-safe: what a model trained on them records."""
        return {**dataclasses.asdict(self.config), "embeddings": self.embedding_source}

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        np.savez(folder / FILE, labels=self.labels, centroids=self.centroids, memberships=self.memberships)
        (folder / PARAMETERS_FILE).write_text(json.dumps(self.parameters(), indent=2, sort_keys=True))

    @classmethod
    def load(cls, folder: Path) -> "ItemClusters":
        parameters = json.loads((folder / PARAMETERS_FILE).read_text())
        source = parameters.pop("embeddings")
        with np.load(folder / FILE) as stored:
            return cls(
                stored["labels"], stored["centroids"], stored["memberships"], ClusteringConfig(**parameters), source
            )


def kmeans_item_clusters(embeddings: np.ndarray, config: ClusteringConfig, embedding_source: str) -> ItemClusters:
    """k-means over items 1..n of ``[n_items + 1, config.dim]`` embeddings (row 0 is padding).

    ``embedding_source`` says where the embeddings came from (recorded with the clusters).
    """
    items = embeddings[1:]
    if embeddings.ndim != 2 or embeddings.shape[1] != config.dim:
        raise ValueError(f"embeddings of shape {embeddings.shape} are not {config.dim}-d as the config says")
    if not 1 <= config.n_clusters <= len(items):
        raise ValueError(f"n_clusters must be in [1, {len(items)}], got {config.n_clusters}")
    kmeans = KMeans(n_clusters=config.n_clusters, n_init=10, random_state=config.seed).fit(items)
    distances = kmeans.transform(items) ** 2 / config.temperature
    logits = -distances - (-distances).max(axis=1, keepdims=True)
    soft = np.exp(logits)
    soft /= soft.sum(axis=1, keepdims=True)
    labels = np.concatenate([[-1], kmeans.labels_]).astype(np.int64)
    memberships = np.vstack([np.zeros((1, config.n_clusters)), soft]).astype(np.float32)
    return ItemClusters(labels, kmeans.cluster_centers_.astype(np.float32), memberships, config, embedding_source)
