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
from torch import nn

from recmodels.data.splits import SplitData
from recmodels.models.base import ModelConfig, Recommender
from recmodels.sparse import top_per_row


def multi_hot(history: torch.Tensor, width: int) -> torch.Tensor:
    """``[B, width]`` with 1 at every item of each padded history (padding column 0 stays 0)."""
    ones = (history > 0).float()
    return torch.zeros(history.shape[0], width, device=history.device).scatter_reduce(1, history, ones, reduce="amax")


class PopularityScorer(nn.Module):
    def __init__(self, popularity: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("popularity", popularity)

    def forward(self, history: torch.Tensor) -> torch.Tensor:
        return self.popularity.expand(history.shape[0], -1)


class DenseItemScorer(nn.Module):
    """``multi_hot(history) @ W`` for an item x item weight matrix (EASE)."""

    def __init__(self, weights: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("weights", weights)

    def forward(self, history: torch.Tensor) -> torch.Tensor:
        return multi_hot(history, self.weights.shape[0]) @ self.weights


class NeighbourScorer(nn.Module):
    """Sum of each distinct history item's neighbour similarities, from padded neighbour tables.

    Exportable (gathers and a scatter-add, no sparse tensors), and what ``score`` runs
    too, so evaluated and served scores are one function. Memory grows with
    ``batch x length x neighbours``: ItemKNN evaluates small batches.
    """

    def __init__(self, similarity: sp.csr_matrix) -> None:
        super().__init__()
        lengths = np.diff(similarity.indptr)
        width = max(int(lengths.max(initial=0)), 1)
        rows = np.repeat(np.arange(similarity.shape[0]), lengths)
        slots = np.arange(similarity.nnz) - similarity.indptr[rows]
        neighbours = np.zeros((similarity.shape[0], width), dtype=np.int64)
        weights = np.zeros((similarity.shape[0], width), dtype=np.float32)
        neighbours[rows, slots] = similarity.indices
        weights[rows, slots] = similarity.data
        self.register_buffer("neighbours", torch.from_numpy(neighbours))
        self.register_buffer("weights", torch.from_numpy(weights))

    def forward(self, history: torch.Tensor) -> torch.Tensor:
        batch, length = history.shape
        positions = torch.arange(length, device=history.device).expand(batch, length)
        width = self.neighbours.shape[0]
        last_position = torch.zeros(batch, width, dtype=torch.long, device=history.device).scatter_reduce(
            1, history, positions, reduce="amax"
        )
        once = ((last_position.gather(1, history) == positions) & (history > 0)).float()  # repeats count once
        values = self.weights[history] * once.unsqueeze(-1)
        scores = torch.zeros(batch, width, device=history.device)
        return scores.scatter_add(1, self.neighbours[history].reshape(batch, -1), values.reshape(batch, -1))


class MostPopular(Recommender):
    """Ranks items by how many training users interacted with them."""

    family = "most_popular"

    def fit(self, split: SplitData) -> Self:
        self.popularity = torch.as_tensor(split.train.item_user_counts(), dtype=torch.float32)
        self.n_items = split.n_items
        return self

    def scorer(self) -> nn.Module:
        self._require_fitted()
        return PopularityScorer(self.popularity)

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
    # NeighbourScorer gathers batch x length x neighbours: ML-1M test ranks in 0.9 s at 128
    # histories a batch, 4.7 s at 512 (same metrics as the SciPy product it replaced).
    evaluation_batch_size = 128

    def fit(self, split: SplitData) -> Self:
        if self.config.neighbours < 1:
            raise ValueError(f"neighbours must be >= 1, got {self.config.neighbours}")
        users_items = split.train.csr(binary=True)
        norms = np.sqrt(np.asarray(users_items.sum(axis=0)).ravel())
        co_counts = (users_items.T @ users_items).tocoo()
        off_diagonal = co_counts.row != co_counts.col
        rows, cols = co_counts.row[off_diagonal], co_counts.col[off_diagonal]
        values = co_counts.data[off_diagonal] / (norms[rows] * norms[cols] + self.config.shrink)
        self.similarity = top_per_row(
            rows, cols, values.astype(np.float32), users_items.shape[1], self.config.neighbours
        )
        self.n_items = split.n_items
        return self

    def scorer(self) -> nn.Module:
        self._require_fitted()
        return NeighbourScorer(self.similarity)

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

    def scorer(self) -> nn.Module:
        self._require_fitted()
        return DenseItemScorer(self.weights)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"weights": self.weights}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.weights = state["weights"]
