"""Sparse-matrix helpers shared by the neighbourhood models and the item graphs."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp


def top_per_row(rows: np.ndarray, cols: np.ndarray, values: np.ndarray, size: int, keep: int) -> sp.csr_matrix:
    """Sparse ``size x size`` matrix keeping the ``keep`` largest values of each row (vectorised).

    Ties keep the lower column id, so the result does not depend on input order.
    """
    order = np.lexsort((cols, -values, rows))
    rows, cols, values = rows[order], cols[order], values[order]
    row_starts = np.searchsorted(rows, rows, side="left")
    rank_in_row = np.arange(len(rows)) - row_starts
    kept = rank_in_row < keep
    matrix = sp.csr_matrix((values[kept], (rows[kept], cols[kept])), shape=(size, size))
    matrix.sort_indices()
    return matrix
