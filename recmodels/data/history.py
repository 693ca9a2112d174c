"""A batch of histories: what every model's ``score`` reads."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch


@dataclass(frozen=True)
class HistoryBatch:
    """Left-padded histories, most recent item last; 0 is padding."""

    items: torch.Tensor
    timestamps: torch.Tensor | None = None

    @classmethod
    def from_numpy(cls, items: np.ndarray, timestamps: np.ndarray | None = None) -> "HistoryBatch":
        return cls(
            torch.as_tensor(items, dtype=torch.int64),
            None if timestamps is None else torch.as_tensor(timestamps, dtype=torch.int64),
        )

    def to_csr(self, n_columns: int) -> sp.csr_matrix:
        """Binary multi-hot ``[batch, n_columns]`` of the histories (padding dropped)."""
        items = self.items.numpy()
        rows, cols = np.nonzero(items)
        matrix = sp.csr_matrix(
            (np.ones(len(rows), dtype=np.float32), (rows, items[rows, cols])),
            shape=(items.shape[0], n_columns),
        )
        matrix.sum_duplicates()
        matrix.data[:] = 1.0
        return matrix
