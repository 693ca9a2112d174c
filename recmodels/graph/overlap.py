"""Neighbourhood overlap (Jaccard) between items of an item graph: GNNO's hardness measure.

Two items sharing most of their graph neighbours are hard to tell apart, so the
overlap score ranks candidate negatives from easy (0) to likely-false (near 1).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from recmodels.data.interactions import Sequences
from recmodels.graph.transitions import item_transition_graph
from recmodels.sparse import top_per_row

OVERLAP_FILE = "overlap.npz"
PARAMETERS_FILE = "overlap.json"
# Values per row (in units of top_m) that bound a row's top_m-th overlap from below; see _row_floor.
FLOOR_SAMPLE = 16


@dataclass(frozen=True)
class NeighbourhoodConfig:
    """How GNNO's candidate neighbourhoods are built: a WITG over distances ``1..max_distance``,
    then each item's ``top_m`` most overlapping items (GNNO's Beauty settings: 3 and 100).

    The one definition of these settings: the ``item_transition_graph`` and
    ``item_neighbourhood_overlap`` assets take their launchpad fields from it, SASRec's
    ``fit`` builds with it when no overlap is given, and every overlap records it.
    """

    max_distance: int = field(default=3, metadata={"doc": "Items up to this many steps apart are linked (1/k)."})
    top_m: int = field(default=100, metadata={"doc": "Overlapping items kept per item (candidate hard negatives)."})

    def __post_init__(self) -> None:
        if self.max_distance < 1 or self.top_m < 1:
            raise ValueError(f"max_distance and top_m must be >= 1, got {self.max_distance} and {self.top_m}")

    def build(self, sequences: Sequences, n_items: int) -> NeighbourhoodOverlap:
        """The overlap of the training sequences' WITG, in one call (what ``fit`` does without the pipeline)."""
        return neighbourhood_overlap(item_transition_graph(sequences, n_items, self.max_distance), self)


@dataclass(frozen=True, eq=False)
class NeighbourhoodOverlap:
    """Each item's ``M`` most overlapping items, best first; padded with item 0 / score 0.

    Row ``i`` describes item ``i`` (row 0, padding, is empty); an item never lists itself.
    ``config`` is what it was built with, saved beside it, so a model trained on it can say so.
    """

    items: np.ndarray
    scores: np.ndarray
    config: NeighbourhoodConfig

    def __post_init__(self) -> None:
        if self.items.ndim != 2 or self.items.shape != self.scores.shape:
            raise ValueError(f"items {self.items.shape} and scores {self.scores.shape} must be equal 2-D shapes")
        if self.items.dtype != np.int64 or self.scores.dtype != np.float32:
            raise ValueError(f"expected int64 items and float32 scores, got {self.items.dtype} / {self.scores.dtype}")
        if self.items.shape[1] != self.config.top_m:
            raise ValueError(
                f"a table of {self.items.shape[1]} candidates per item cannot have top_m={self.config.top_m}"
            )

    @property
    def n_items(self) -> int:
        return self.items.shape[0] - 1

    @property
    def top_m(self) -> int:
        return self.items.shape[1]

    def as_csr(self) -> sp.csr_matrix:
        """Sparse ``[n_items + 1, n_items + 1]`` view (padding dropped) for inspection."""
        size = self.items.shape[0]
        present = self.scores > 0
        rows = np.broadcast_to(np.arange(size)[:, None], self.items.shape)
        return sp.csr_matrix((self.scores[present], (rows[present], self.items[present])), shape=(size, size))

    def parameters(self) -> dict[str, Any]:
        """What it was built with, JSON-safe: what a model trained on it records."""
        return dataclasses.asdict(self.config)

    def save(self, folder: Path) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / OVERLAP_FILE
        np.savez(path, items=self.items, scores=self.scores)
        (folder / PARAMETERS_FILE).write_text(json.dumps(self.parameters(), indent=2, sort_keys=True))
        return path

    @classmethod
    def load(cls, folder: Path) -> "NeighbourhoodOverlap":
        config = NeighbourhoodConfig(**json.loads((folder / PARAMETERS_FILE).read_text()))
        with np.load(folder / OVERLAP_FILE, allow_pickle=False) as stored:
            return cls(items=stored["items"], scores=stored["scores"], config=config)


def neighbourhood_overlap(
    graph: sp.csr_matrix, config: NeighbourhoodConfig, chunk_rows: int = 4096
) -> NeighbourhoodOverlap:
    """Top-``config.top_m`` Jaccard overlaps ``|N(i) & N(j)| / |N(i) | N(j)|`` of the graph's neighbour sets.

    ``graph`` is the WITG built with ``config.max_distance``; the overlap records ``config``.
    Intersections come from the binary ``A @ A^T``, ``chunk_rows`` rows at a time, so memory
    follows the chunk's two-hop neighbourhoods, never ``items x items``.
    """
    top_m = config.top_m
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be >= 1, got {chunk_rows}")
    size = graph.shape[0]
    if graph.shape != (size, size):
        raise ValueError(f"graph must be square, got {graph.shape}")
    structure = sp.csr_matrix(graph, copy=True)
    structure.eliminate_zeros()
    structure.data = np.ones_like(structure.data, dtype=np.int32)
    degrees = np.diff(structure.indptr)
    transposed = structure.T.tocsr()
    items = np.zeros((size, top_m), dtype=np.int64)
    scores = np.zeros((size, top_m), dtype=np.float32)
    for start in range(0, size, chunk_rows):
        stop = min(start + chunk_rows, size)
        shared = structure[start:stop] @ transposed
        rows = np.repeat(np.arange(stop - start), np.diff(shared.indptr))
        cols, counts = shared.indices, shared.data
        jaccard = (counts / (degrees[rows + start] + degrees[cols] - counts)).astype(np.float32)
        # An item's pair with itself scores 0, which no real pair (sharing a neighbour) does.
        jaccard[cols == rows + start] = 0.0
        floor = _row_floor(shared.indptr, rows, jaccard, top_m)
        contenders = (jaccard >= floor[rows]) & (jaccard > 0)
        kept = top_per_row(rows[contenders], cols[contenders], jaccard[contenders], size, top_m).tocoo()
        order = np.lexsort((kept.col, -kept.data, kept.row))
        kept_rows, kept_cols, kept_scores = kept.row[order], kept.col[order], kept.data[order]
        ranks = np.arange(len(kept_rows)) - np.searchsorted(kept_rows, kept_rows, side="left")
        items[start + kept_rows, ranks] = kept_cols
        scores[start + kept_rows, ranks] = kept_scores
    return NeighbourhoodOverlap(items=items, scores=scores, config=config)


def _row_floor(indptr: np.ndarray, rows: np.ndarray, values: np.ndarray, keep: int) -> np.ndarray:
    """Per CSR row, a lower bound of its ``keep``-th largest value (-inf for rows with fewer values).

    The ``keep``-th largest of an evenly strided sample of at most ``FLOOR_SAMPLE * keep`` of a
    row's values cannot beat the row's true one (exact when the sample is the whole row), so
    values below it can be dropped before the exact, sorting selection. A dense partition of
    ``rows x FLOOR_SAMPLE * keep`` spares sorting most of a chunk's two-hop pairs.
    """
    width = FLOOR_SAMPLE * keep
    strides = np.maximum(-(-np.diff(indptr) // width), 1)
    rank_in_row = np.arange(len(rows)) - indptr[rows]
    row_strides = strides[rows]
    sampled = rank_in_row % row_strides == 0
    block = np.full((len(indptr) - 1, width), -np.inf, dtype=values.dtype)
    block[rows[sampled], rank_in_row[sampled] // row_strides[sampled]] = values[sampled]
    return np.partition(block, width - keep, axis=1)[:, width - keep]
