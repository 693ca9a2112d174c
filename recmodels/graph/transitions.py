"""Weighted item transition graph (WITG) of GCL4SR, the graph GNNO mines negatives from.

Items that follow each other closely in many sequences get strong edges; the
degree scaling boosts edges of rarely connected items so that popular hubs do
not dominate every neighbourhood.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from recmodels.data.interactions import Sequences


def item_transition_graph(sequences: Sequences, n_items: int, max_distance: int = 3) -> sp.csr_matrix:
    """Symmetric-support ``[n_items + 1, n_items + 1]`` WITG; row and column 0 (padding) stay empty.

    Each pair ``(v_j, v_{j+k})`` of the same sequence with ``1 <= k <= max_distance`` adds
    ``1 / k`` in both directions (self-loops dropped); rows are normalised to sum to 1, then
    each edge ``(i, j)`` is scaled by ``1 / deg(i) + 1 / deg(j)`` (deg = number of neighbours).
    """
    if max_distance < 1:
        raise ValueError(f"max_distance must be >= 1, got {max_distance}")
    items = np.asarray(sequences.items, dtype=np.int64)
    if len(items) and (items.min() < 1 or items.max() > n_items):
        raise ValueError(f"sequence items must lie in 1..{n_items}, got {items.min()}..{items.max()}")
    owners = np.repeat(np.arange(len(sequences.lengths)), sequences.lengths)
    sources, targets, weights = [], [], []
    for distance in range(1, max_distance + 1):
        head, tail = items[:-distance], items[distance:]
        kept = (owners[:-distance] == owners[distance:]) & (head != tail)
        sources += [head[kept], tail[kept]]
        targets += [tail[kept], head[kept]]
        weights.append(np.full(2 * int(kept.sum()), 1.0 / distance))
    size = n_items + 1
    graph = sp.csr_matrix(
        (np.concatenate(weights), (np.concatenate(sources), np.concatenate(targets))),
        shape=(size, size),
        dtype=np.float64,
    )
    graph.sum_duplicates()
    rows = np.repeat(np.arange(size), np.diff(graph.indptr))
    row_sums = np.asarray(graph.sum(axis=1)).ravel()
    degrees = np.diff(graph.indptr).astype(np.float64)
    graph.data *= (1.0 / degrees[rows] + 1.0 / degrees[graph.indices]) / row_sums[rows]
    return graph.astype(np.float32)
