"""Item side features aligned with internal item ids: multi-hot genres and the release year.

Models that read item metadata (EfficientRec's item encoder) take these from ``SplitData.item_features``;
a dataset without metadata leaves it ``None`` and the models still train on ids alone.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recmodels.features.genres import genre_matrix

FILE = "item_features.npz"


@dataclass(frozen=True)
class ItemSideFeatures:
    """``genres [n_items + 1, G]`` multi-hot (CSR) and ``years [n_items + 1]`` (NaN where unknown); row 0 padding."""

    genres: sp.csr_matrix
    vocabulary: tuple[str, ...]
    years: np.ndarray

    @classmethod
    def from_metadata(cls, items: pd.DataFrame, item_ids: np.ndarray) -> "ItemSideFeatures":
        """From the canonical item table (``item_id``, ``year``, ``genres``); items without a row get no genre and
        an unknown year."""
        genres, vocabulary = genre_matrix(items, item_ids)
        year_of = pd.Series(
            items["year"].astype("Float64").to_numpy(np.float64, na_value=np.nan), index=items["item_id"].astype(str)
        )
        year_of = year_of[~year_of.index.duplicated()]
        years = year_of.reindex(pd.Index(item_ids.astype(str))).to_numpy(np.float64)
        years[0] = np.nan
        return cls(genres, tuple(vocabulary), years)

    @property
    def n_items(self) -> int:
        return self.genres.shape[0] - 1

    def first_genres(self, items: np.ndarray) -> list[str]:
        """Each item's first genre in the vocabulary's order, ``"none"`` where it has none (a label for charts)."""
        genres = self.genres[np.asarray(items, dtype=np.int64)].tocsr()
        return [
            self.vocabulary[genres.indices[start]] if end > start else "none"
            for start, end in zip(genres.indptr[:-1], genres.indptr[1:])
        ]

    def year_buckets(self, buckets: int) -> np.ndarray:
        """``[n_items + 1]`` int64: 0 for an unknown year, else 1..``buckets`` by quantile of the known years."""
        known = ~np.isnan(self.years)
        codes = np.zeros(len(self.years), dtype=np.int64)
        if known.any():
            edges = np.unique(np.quantile(self.years[known], np.linspace(0, 1, buckets + 1)[1:-1]))
            codes[known] = 1 + np.searchsorted(edges, self.years[known], side="right")
        return codes

    def save(self, folder: Path) -> None:
        genres = self.genres.tocsr()
        np.savez(
            folder / FILE,
            data=genres.data,
            indices=genres.indices,
            indptr=genres.indptr,
            shape=np.asarray(genres.shape),
            years=self.years,
            vocabulary=np.asarray(json.dumps(list(self.vocabulary))),
        )

    @classmethod
    def load(cls, folder: Path) -> "ItemSideFeatures | None":
        """The saved features, or ``None`` where the split was saved without any."""
        path = folder / FILE
        if not path.exists():
            return None
        with np.load(path, allow_pickle=False) as saved:
            genres = sp.csr_matrix((saved["data"], saved["indices"], saved["indptr"]), shape=tuple(saved["shape"]))
            return cls(genres, tuple(json.loads(str(saved["vocabulary"]))), saved["years"])
