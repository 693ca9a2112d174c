"""Baselines every paper model must beat: MostPopular, ItemKNN, EASE.

All three read histories, never user ids, so they are served and exported like
the neural models.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Self

import numpy as np
import scipy.sparse as sp
import torch

from recmodels.data.splits import SplitData
from recmodels.models.base import HistoryBatch, ModelConfig, Recommender
from recmodels.sparse import top_per_row


class MostPopular(Recommender):
    """Ranks items by how many training users interacted with them."""

    family = "most_popular"

    def fit(self, split: SplitData) -> Self:
        self.popularity = torch.as_tensor(split.train.item_user_counts(), dtype=torch.float32)
        self.n_items = split.n_items
        return self

    def score(self, batch: HistoryBatch) -> torch.Tensor:
        self._require_fitted()
        return self.popularity.expand(batch.items.shape[0], -1).clone()

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"popularity": self.popularity}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.popularity = state["popularity"]


@dataclass(frozen=True)
class ItemKNNConfig(ModelConfig):
    neighbours: int = 100
    shrink: float = 0.0


class ItemKNN(Recommender):
    """Item-based neighbourhood model with sparse cosine similarity.

    ``sim(i, j) = |U_i & U_j| / (sqrt(|U_i| |U_j|) + shrink)``, each item keeping its
    ``neighbours`` most similar items; a history scores ``sum_{i in history} sim(i, j)``.
    Everything stays sparse, items x items included.
    """

    family = "item_knn"
    config_class = ItemKNNConfig
    config: ItemKNNConfig

    def fit(self, split: SplitData) -> Self:
        if self.config.neighbours < 1:
            raise ValueError(f"neighbours must be >= 1, got {self.config.neighbours}")
        users_items = split.train.csr(binary=True)
        norms = np.sqrt(np.asarray(users_items.sum(axis=0)).ravel())
        co_counts = (users_items.T @ users_items).tocoo()
        off_diagonal = co_counts.row != co_counts.col
        rows, cols = co_counts.row[off_diagonal], co_counts.col[off_diagonal]
        values = co_counts.data[off_diagonal] / (norms[rows] * norms[cols] + self.config.shrink)
        self.similarity = top_per_row(rows, cols, values.astype(np.float32), users_items.shape[1], self.config.neighbours)
        self.n_items = split.n_items
        return self

    def score(self, batch: HistoryBatch) -> torch.Tensor:
        n_items = self._require_fitted()
        scores = batch.to_csr(n_items + 1) @ self.similarity
        return torch.from_numpy(np.asarray(scores.todense(), dtype=np.float32))

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {
            "indptr": torch.from_numpy(self.similarity.indptr.astype(np.int64)),
            "indices": torch.from_numpy(self.similarity.indices.astype(np.int64)),
            "data": torch.from_numpy(self.similarity.data),
        }

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        size = self._require_fitted() + 1
        self.similarity = sp.csr_matrix(
            (state["data"].numpy(), state["indices"].numpy(), state["indptr"].numpy()), shape=(size, size)
        )


@dataclass(frozen=True)
class EASEConfig(ModelConfig):
    l2: float = 500.0
    max_items: int = 40_000


class EASE(Recommender):
    """Embarrassingly Shallow Autoencoder (Steck, 2019), closed form.

    ``B = I - P diagMat(1 / diag(P))`` with ``P = (X^T X + l2 I)^-1``. The item x item
    weight matrix is dense by construction, so ``max_items`` guards memory (40k items
    is about 6.4 GB in float32).
    """

    family = "ease"
    config_class = EASEConfig
    config: EASEConfig

    def fit(self, split: SplitData) -> Self:
        n_items = split.n_items
        if n_items > self.config.max_items:
            raise ValueError(
                f"EASE needs a dense {n_items}x{n_items} matrix; catalogue exceeds max_items={self.config.max_items}"
            )
        users_items = split.train.csr(binary=True)[:, 1:]
        gram = (users_items.T @ users_items).toarray().astype(np.float64)
        gram[np.diag_indices_from(gram)] += self.config.l2
        precision = np.linalg.inv(gram)
        weights = -precision / np.diag(precision)
        weights[np.diag_indices_from(weights)] = 0.0
        padded = np.zeros((n_items + 1, n_items + 1), dtype=np.float32)
        padded[1:, 1:] = weights
        self.weights = torch.from_numpy(padded)
        self.n_items = n_items
        return self

    def score(self, batch: HistoryBatch) -> torch.Tensor:
        n_items = self._require_fitted()
        history = batch.to_csr(n_items + 1)
        return torch.from_numpy(np.asarray(history @ self.weights.numpy(), dtype=np.float32))

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"weights": self.weights}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.weights = state["weights"]
