"""Interactions arriving over time: incoming files, time windows, and one window's landed rows.

A window is ``window_days`` long and named by its first day (``YYYY-MM-DD``); windows are
aligned to Monday 1970-01-05, so 7-day windows are ISO weeks. Incoming files are read in place
and never moved or changed: a window is *landed* from every file holding rows of it
(``land_window``), which keeps that window's valid rows and quarantines its bad rows with their
reasons, so that per file, rows in = rows kept + rows quarantined.

A row belongs to the window of its timestamp when that timestamp is usable (parsed, and within
the validation bounds: not negative, not in the future). A row whose timestamp is missing, did
not parse or is out of bounds belongs to no window, nor does a CSV's last line without a line end
(cut while the file was written: its timestamp may be cut too, ``504,10,8812``); such a row is
attributed to the file's earliest window, so it is quarantined (and reported) exactly once.

Incoming files are ``.csv``, ``.csv.gz`` or ``.parquet`` in any letter case (``Week1.CSV``);
``incoming_listing`` also says why every other entry of the folder is skipped.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pandas as pd

from recmodels.data.readers import (
    LINE_COLUMN,
    MALFORMED_PREFIX,
    TABLE_SUFFIXES,
    DataFormatError,
    read_table,
    table_suffix,
)
from recmodels.data.schemas import ID_COLUMNS, ValidationRules, validate_interactions

SECONDS_PER_DAY = 86_400
WINDOW_ORIGIN = np.datetime64("1970-01-05")  # a Monday
INCOMING_SUFFIXES = TABLE_SUFFIXES  # matched case-insensitively
FILE_COLUMN = "file"  # in landed and quarantined rows: the incoming file the row came from
ROWS_FILE = "rows.parquet"
QUARANTINE_FILE = "quarantined.parquet"
SUMMARY_FILE = "summary.json"


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


def row_windows(timestamps: pd.Series, window_days: int, rules: ValidationRules = ValidationRules()) -> pd.Series:
    """The window of each row, None where the timestamp is unusable (missing, malformed, out of bounds)."""
    latest = rules.max_timestamp if rules.max_timestamp is not None else int(time.time())
    values = pd.to_numeric(timestamps, errors="coerce")
    usable = values.notna() & (values >= 0) & (values <= latest)
    keys = pd.Series(None, index=timestamps.index, dtype=object)
    if usable.any():
        keys[usable] = window_keys(values[usable].to_numpy(dtype=np.int64), window_days)
    return keys


def read_incoming(path: Path, window_days: int, rules: ValidationRules = ValidationRules()) -> pd.DataFrame:
    """An incoming file's rows with their ``window`` (every row: unusable timestamps take the earliest window).

    Reads with the pipeline's reader, so a file that is not interactions at all (a column missing,
    a column in which nothing parses) raises ``DataFormatError``, as does one in which no row
    has a usable timestamp (there is no window to report it in).
    """
    rows = read_table(Path(path)).interactions
    windows = row_windows(rows["timestamp"], window_days, rules)
    cut_line = MALFORMED_PREFIX + LINE_COLUMN
    if cut_line in rows:
        windows[rows[cut_line].notna()] = None
    if windows.isna().all():
        raise DataFormatError(f"{path}: no row has a usable timestamp, so the file belongs to no window")
    return rows.assign(window=windows.fillna(windows.dropna().min()).astype(str))


def file_windows(path: Path, window_days: int, rules: ValidationRules = ValidationRules()) -> dict[str, int]:
    """Rows per window of an incoming file, oldest first: which windows it must be landed in."""
    counts = read_incoming(path, window_days, rules)["window"].value_counts()
    return {str(key): int(counts[key]) for key in sorted(counts.index)}


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class WindowRows:
    """One landed window: its valid rows, its quarantined rows (with ``reasons``), and per-file counts.

    ``summary["files"][name]`` holds the file's sha256 and size as read, the windows it touches, and
    its rows attributed to this window: ``rows_in`` = ``rows_kept`` + ``rows_quarantined``;
    ``summary["by_reason"]`` counts quarantined rows per failed check. Both tables carry the
    ``file`` and ``source_row`` each row came from.
    """

    rows: pd.DataFrame
    quarantined: pd.DataFrame
    summary: dict[str, Any]

    def save(self, folder: Path) -> None:
        self.rows.to_parquet(Path(folder) / ROWS_FILE, index=False)
        self.quarantined.to_parquet(Path(folder) / QUARANTINE_FILE, index=False)
        (Path(folder) / SUMMARY_FILE).write_text(json.dumps(self.summary, indent=2, sort_keys=True))

    @classmethod
    def load(cls, folder: Path) -> "WindowRows":
        folder = Path(folder)
        return cls(
            pd.read_parquet(folder / ROWS_FILE),
            pd.read_parquet(folder / QUARANTINE_FILE),
            json.loads((folder / SUMMARY_FILE).read_text()),
        )

    @property
    def window(self) -> str:
        return self.summary["window"]

    @property
    def rows_in(self) -> int:
        return sum(entry["rows_in"] for entry in self.summary["files"].values())

    @property
    def quarantined_share(self) -> float:
        return len(self.quarantined) / max(self.rows_in, 1)

    def reconciliation(self) -> dict[str, dict[str, int]]:
        """Per file: rows in, rows kept and quarantined as summarised and as found in the two tables."""
        kept = self.rows[FILE_COLUMN].value_counts()
        quarantined = self.quarantined[FILE_COLUMN].value_counts()
        return {
            name: {
                "rows_in": entry["rows_in"],
                "rows_kept": entry["rows_kept"],
                "rows_quarantined": entry["rows_quarantined"],
                "kept_on_disk": int(kept.get(name, 0)),
                "quarantined_on_disk": int(quarantined.get(name, 0)),
            }
            for name, entry in self.summary["files"].items()
        }

    @property
    def reconciles(self) -> bool:
        """Per file, rows in = kept + quarantined, and the tables hold exactly those rows (no other file's)."""
        per_file = self.reconciliation().values()
        balanced = all(
            entry["rows_in"] == entry["rows_kept"] + entry["rows_quarantined"]
            and entry["rows_kept"] == entry["kept_on_disk"]
            and entry["rows_quarantined"] == entry["quarantined_on_disk"]
            for entry in per_file
        )
        accounted = sum(entry["kept_on_disk"] + entry["quarantined_on_disk"] for entry in per_file)
        return balanced and accounted == len(self.rows) + len(self.quarantined)


def land_window(
    paths: list[Path], window: str, window_days: int, rules: ValidationRules = ValidationRules()
) -> WindowRows:
    """Window ``window`` from the incoming files holding its rows: validated together, so a row repeated
    in two files is a duplicate; later files (by name) and later rows lose to earlier ones."""
    parts, files = [], {}
    for path in sorted(map(Path, paths), key=lambda path: path.name):
        before = file_sha256(path)
        rows = read_incoming(path, window_days, rules)
        if file_sha256(path) != before:
            raise RuntimeError(f"{path} changed while it was read: land the window again once it is complete")
        mine = rows[rows["window"] == window].drop(columns="window").assign(**{FILE_COLUMN: path.name})
        parts.append(mine)
        files[path.name] = {"sha256": before, "bytes": path.stat().st_size, "windows": sorted(rows["window"].unique())}
    frame = pd.concat(parts, ignore_index=True)
    if frame.empty:
        raise ValueError(f"none of {[path.name for path in paths]} holds rows of window {window}")
    result = validate_interactions(frame, rules)
    rows = result.valid.sort_values(["timestamp", "user_id", "item_id"], kind="stable").reset_index(drop=True)
    quarantined = result.quarantined.reset_index(drop=True)
    for name, entry in files.items():
        entry |= {
            "rows_in": int((frame[FILE_COLUMN] == name).sum()),
            "rows_kept": int((rows[FILE_COLUMN] == name).sum()),
            "rows_quarantined": int((quarantined[FILE_COLUMN] == name).sum()),
        }
    by_reason = {str(key): int(count) for key, count in sorted(result.by_reason.items())}
    ids_normalised = {column: int(result.ids_normalised.get(column, 0)) for column in ID_COLUMNS}
    summary = {
        "window": window,
        "window_days": window_days,
        "files": files,
        "by_reason": by_reason,
        "ids_normalised": ids_normalised,
    }
    return WindowRows(rows, quarantined, summary)


def incoming_listing(incoming: Path) -> tuple[list[Path], dict[str, str]]:
    """The incoming folder's interaction files, by name (replays name them in time order), and every other
    entry with the reason it is skipped. Hidden files are writes in progress (publish by renaming)."""
    folder = Path(incoming)
    if not folder.exists():
        return [], {}
    files, skipped = [], {}
    for path in sorted(folder.iterdir()):
        if path.name.startswith("."):
            skipped[path.name] = "hidden: a write in progress (rename it into place when it is complete)"
        elif not path.is_file():
            skipped[path.name] = "not a file"
        elif table_suffix(path) is None:
            skipped[path.name] = f"not one of {', '.join(INCOMING_SUFFIXES)} (any letter case)"
        else:
            files.append(path)
    return files, skipped


def incoming_files(incoming: Path) -> list[Path]:
    """The interaction files of the incoming folder, by name."""
    return incoming_listing(incoming)[0]


def replay_batches(rows: pd.DataFrame, window_days: int) -> Iterator[tuple[str, pd.DataFrame]]:
    """A dataset cut into its windows, oldest first: what a replay drops one by one."""
    keys = window_keys(rows["timestamp"], window_days)
    for key in np.unique(keys):
        yield str(key), rows.loc[keys == key].reset_index(drop=True)
