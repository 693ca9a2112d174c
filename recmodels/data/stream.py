"""Interactions arriving over time: files land, pass the same validation, and fall into time windows.

A window is ``window_days`` long and named by its first day (``YYYY-MM-DD``); windows are
aligned to Monday 1970-01-05, so 7-day windows are ISO weeks. A landed file leaves:

- ``<landing>/windows/<window>/<file stem>.parquet``: its valid rows, per window;
- ``<landing>/quarantine/<file stem>.parquet``: its rejected rows with their reasons;
- ``<landing>/rejected/<file name>`` + ``.reason.txt``: a file that could not be read at all.

Rows in = rows kept + rows quarantined, per file; a rejected file keeps every byte.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd

from recmodels.data.readers import DataFormatError, read_table
from recmodels.data.schemas import ValidationRules, validate_interactions

SECONDS_PER_DAY = 86_400
WINDOW_ORIGIN = np.datetime64("1970-01-05")  # a Monday
INCOMING_SUFFIXES = (".csv", ".parquet")


def window_keys(timestamps: np.ndarray | pd.Series, window_days: int) -> np.ndarray:
    """The window (first day, ``YYYY-MM-DD``) each unix timestamp falls in."""
    if window_days < 1:
        raise ValueError(f"window_days must be >= 1, got {window_days}")
    days = np.asarray(timestamps, dtype=np.int64) // SECONDS_PER_DAY - WINDOW_ORIGIN.astype(np.int64)
    starts = WINDOW_ORIGIN + (days // window_days) * window_days
    return np.datetime_as_string(starts.astype("datetime64[D]"), unit="D")


def window_bounds(key: str, window_days: int) -> tuple[int, int]:
    """Unix seconds ``[start, end)`` of a window."""
    start = int(np.datetime64(key, "D").astype(np.int64)) * SECONDS_PER_DAY
    return start, start + window_days * SECONDS_PER_DAY


@dataclass
class LandingReport:
    """What one incoming file became."""

    file: str
    rows_in: int = 0
    rows_kept: int = 0
    rows_quarantined: int = 0
    windows: dict[str, int] = field(default_factory=dict)
    by_reason: dict[str, int] = field(default_factory=dict)
    rejected: str | None = None  # why the whole file was refused, if it was

    def as_dict(self) -> dict[str, object]:
        return dict(self.__dict__)


def land_file(path: Path, landing: Path, window_days: int, rules: ValidationRules = ValidationRules()) -> LandingReport:
    """Validate one incoming CSV/Parquet file and file its rows under their windows.

    A file that cannot be read as interactions (missing columns, unparseable values) is moved
    to ``rejected/`` with its reason instead of raising, so one bad drop never stops the stream.
    """
    path = Path(path)
    report = LandingReport(file=path.name)
    try:
        raw = read_table(path)
        result = validate_interactions(raw.interactions, rules)
    except DataFormatError as error:
        report.rejected = str(error)
        rejected = landing / "rejected"
        rejected.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, rejected / path.name)
        (rejected / f"{path.name}.reason.txt").write_text(report.rejected + "\n")
        return report
    summary = result.summary
    report.rows_in, report.rows_kept = int(summary["rows_in"]), int(summary["rows_kept"])
    report.rows_quarantined, report.by_reason = int(summary["rows_quarantined"]), dict(summary["by_reason"])
    if len(result.quarantined):
        (landing / "quarantine").mkdir(parents=True, exist_ok=True)
        result.quarantined.assign(file=path.name).to_parquet(
            landing / "quarantine" / f"{path.stem}.parquet", index=False
        )
    valid = result.valid.assign(window=window_keys(result.valid["timestamp"], window_days))
    for key, rows in valid.groupby("window", sort=True):
        folder = landing / "windows" / str(key)
        folder.mkdir(parents=True, exist_ok=True)
        rows.drop(columns="window").to_parquet(folder / f"{path.stem}.parquet", index=False)
        report.windows[str(key)] = len(rows)
    return report


def landed_windows(landing: Path) -> list[str]:
    """Windows holding landed rows, oldest first."""
    folder = Path(landing) / "windows"
    return sorted(child.name for child in folder.iterdir() if child.is_dir()) if folder.exists() else []


def read_windows(landing: Path, keys: list[str]) -> pd.DataFrame:
    """Every landed row of the given windows, in time order, with a ``window`` column."""
    parts = [
        pd.read_parquet(file).assign(window=key)
        for key in keys
        for file in sorted((Path(landing) / "windows" / key).glob("*.parquet"))
    ]
    if not parts:
        raise FileNotFoundError(f"no landed rows for windows {keys} under {landing}")
    frame = pd.concat(parts, ignore_index=True)
    return frame.sort_values(["timestamp", "user_id", "item_id"], kind="stable").reset_index(drop=True)


def incoming_files(incoming: Path) -> list[Path]:
    """Files waiting in the incoming folder, by name (replays name them in time order); hidden files are
    writes in progress."""
    folder = Path(incoming)
    if not folder.exists():
        return []
    return sorted(
        path
        for path in folder.iterdir()
        if path.is_file() and path.suffix in INCOMING_SUFFIXES and not path.name.startswith(".")
    )


def replay_batches(rows: pd.DataFrame, window_days: int) -> Iterator[tuple[str, pd.DataFrame]]:
    """A dataset cut into its windows, oldest first: what a replay drops one by one."""
    keys = window_keys(rows["timestamp"], window_days)
    for key in np.unique(keys):
        yield str(key), rows.loc[keys == key].reset_index(drop=True)
