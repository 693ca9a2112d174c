"""Shared real-data fixtures.

The datasets live beside the repository (``<repo>/../shared/data``) or wherever
``RECPIPE_DATA_DIR`` points. They are read here directly with pandas so these
tests do not depend on ``recmodels.data.readers``. A missing data folder is an
error, not a skip: the data is part of the test environment.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

ML100K_COLUMNS = {
    "user_id:token": "user_id",
    "item_id:token": "item_id",
    "rating:float": "rating",
    "timestamp:float": "timestamp",
}
SMALL_SLICE_USERS = 300


def _data_dir() -> Path:
    configured = os.environ.get("RECPIPE_DATA_DIR")
    folder = Path(configured) if configured else Path(__file__).resolve().parents[1].parent / "shared" / "data"
    if not folder.is_dir():
        pytest.fail(
            f"real datasets not found at {folder} (set RECPIPE_DATA_DIR or put them at <repo>/../shared/data)",
            pytrace=False,
        )
    return folder


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return _data_dir()


def _required(path: Path) -> Path:
    if not path.is_file():
        pytest.fail(f"dataset file missing: {path}", pytrace=False)
    return path


@pytest.fixture(scope="session")
def ml100k_raw(data_dir: Path) -> pd.DataFrame:
    """MovieLens-100K as canonical rows: user_id, item_id (str), rating (float), timestamp (int64).

    Callers must not mutate it (copy first).
    """
    path = _required(data_dir / "ml-100k" / "ml-100k.inter")
    frame = pd.read_csv(path, sep="\t", dtype={"user_id:token": str, "item_id:token": str})
    if list(frame.columns) != list(ML100K_COLUMNS):
        pytest.fail(f"{path}: unexpected header {list(frame.columns)}", pytrace=False)
    frame = frame.rename(columns=ML100K_COLUMNS)
    frame["rating"] = frame["rating"].astype(np.float64)
    frame["timestamp"] = frame["timestamp"].astype(np.int64)
    assert len(frame) == 100_000, f"{path}: expected 100,000 rows, got {len(frame)}"
    return frame


@pytest.fixture(scope="session")
def ml100k_small_raw(ml100k_raw: pd.DataFrame) -> pd.DataFrame:
    """The rows of the first 300 users of ml-100k by numerically sorted user id (users 1..300)."""
    users = np.sort(ml100k_raw["user_id"].astype(np.int64).unique())[:SMALL_SLICE_USERS]
    keep = ml100k_raw["user_id"].astype(np.int64).isin(users)
    return ml100k_raw.loc[keep].reset_index(drop=True)


@pytest.fixture(scope="session")
def ml1m_seq_raw(data_dir: Path) -> pd.DataFrame:
    """ML-1M chronological sequences as rows: user_id, item_id (str), timestamp = position in the line."""
    path = _required(data_dir / "ml-1m-seq" / "ml-1m.txt")
    users: list[str] = []
    items: list[str] = []
    positions: list[int] = []
    with path.open() as lines:
        for line in lines:
            parts = line.split()
            if not parts:
                continue
            n = len(parts) - 1
            users.extend([parts[0]] * n)
            items.extend(parts[1:])
            positions.extend(range(n))
    frame = pd.DataFrame({"user_id": users, "item_id": items, "timestamp": np.asarray(positions, dtype=np.int64)})
    assert len(frame) == 1_000_209, f"{path}: expected 1,000,209 interactions, got {len(frame)}"
    return frame


@pytest.fixture(scope="session")
def ml100k_weeks(ml100k_raw) -> pd.DataFrame:
    """MovieLens-100K rows with their ISO-week ``window`` (first day, YYYY-MM-DD)."""
    from recmodels.data.stream import window_keys

    return ml100k_raw.assign(window=window_keys(ml100k_raw["timestamp"], 7))


@pytest.fixture(scope="session")
def ml100k_items(data_dir: Path) -> pd.DataFrame:
    """MovieLens-100K item metadata (title, year, '|'-joined genres) through the project's reader."""
    from recmodels.data.readers import load_dataset

    return load_dataset(data_dir / "ml-100k").items
