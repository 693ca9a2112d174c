"""Item embeddings for clustering: learned from the training matrix, or read from a provided file."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from sklearn.decomposition import TruncatedSVD


def svd_item_embeddings(train: sp.csr_matrix, dim: int, seed: int) -> np.ndarray:
    """PureSVD item factors of the binary users x items training matrix, L2-normalised.

    Returns ``[n_items + 1, dim]`` with row 0 (padding) and never-seen items zero.
    Normalised rows make k-means group items by who interacts with them rather
    than by how popular they are.
    """
    if train.shape[1] < 2:
        raise ValueError("need at least one item to embed")
    dim = min(dim, train.shape[1] - 2, train.shape[0] - 1)
    if dim < 1:
        raise ValueError(f"training matrix {train.shape} is too small for an embedding")
    binary = train.astype(np.float32).sign().tocsr()
    svd = TruncatedSVD(n_components=dim, algorithm="randomized", n_iter=7, random_state=seed)
    svd.fit(binary)
    factors = (svd.components_.T * svd.singular_values_).astype(np.float32)
    norms = np.linalg.norm(factors, axis=1, keepdims=True)
    factors = np.divide(factors, norms, out=np.zeros_like(factors), where=norms > 0)
    factors[0] = 0.0
    return factors


def aligned_item_embeddings(item_ids: np.ndarray, external: np.ndarray) -> np.ndarray:
    """Rows of ``external`` (indexed by the source's integer item ids) in internal id order.

    ``item_ids`` is the id map (index 0 = padding). Fails naming the first item
    whose id is not an integer row of ``external``.
    """
    result = np.zeros((len(item_ids), external.shape[1]), dtype=np.float32)
    for internal, raw in enumerate(item_ids[1:], start=1):
        try:
            row = int(raw)
        except ValueError:
            raise ValueError(f"item id {raw!r} (internal {internal}) is not an integer row index") from None
        if not 0 <= row < len(external):
            raise ValueError(f"item id {raw!r} (internal {internal}) has no row in embeddings of {len(external)} items")
        result[internal] = external[row]
    return result
