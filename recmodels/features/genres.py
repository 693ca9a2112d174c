"""Item genres as a sparse multi-hot matrix aligned with internal item ids."""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp


def genre_matrix(items: pd.DataFrame, item_ids: np.ndarray) -> tuple[sp.csr_matrix, list[str]]:
    """``[n_items + 1, n_genres]`` multi-hot from the '|'-joined ``genres`` column.

    Row ``i`` belongs to internal item ``i`` (row 0, padding, is empty); catalogue items
    without metadata get an empty row, which diversity metrics treat as dissimilar.
    """
    position = pd.Series(np.arange(len(item_ids)), index=pd.Index(item_ids))
    known = items.loc[items["item_id"].astype(str).isin(position.index), ["item_id", "genres"]]
    exploded = known.assign(genre=known["genres"].fillna("").str.split("|")).explode("genre")
    exploded = exploded.loc[exploded["genre"].str.len() > 0]
    vocabulary = sorted(exploded["genre"].unique())
    genre_index = pd.Series(np.arange(len(vocabulary)), index=vocabulary)
    rows = position.loc[exploded["item_id"].astype(str)].to_numpy()
    cols = genre_index.loc[exploded["genre"]].to_numpy()
    matrix = sp.csr_matrix((np.ones(len(rows), dtype=np.float32), (rows, cols)), shape=(len(item_ids), len(vocabulary)))
    matrix.sum_duplicates()
    matrix.data[:] = 1.0
    return matrix, vocabulary
