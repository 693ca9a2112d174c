"""The interaction stream: week windows, a window landed from incoming files (kept / quarantined), replays."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recmodels.data.readers import DataFormatError
from recmodels.data.schemas import ValidationRules
from recmodels.data.stream import (
    WindowRows,
    file_sha256,
    file_windows,
    incoming_files,
    land_window,
    replay_batches,
    window_bounds,
    window_keys,
)

COLUMNS = ["user_id", "item_id", "rating", "timestamp"]
DAY = 86_400
# Thursday 1997-11-13 .. Thursday 1997-11-20 (UTC): one week of ML-100K across a Monday boundary
WEEK_START = int(pd.Timestamp("1997-11-13", tz="UTC").timestamp())
WEEK_END = WEEK_START + 7 * DAY


def unix(moment: str) -> int:
    return int(pd.Timestamp(moment, tz="UTC").timestamp())


@pytest.fixture(scope="module")
def week(ml100k_raw) -> pd.DataFrame:
    """Seven days of real ML-100K rows, in file order."""
    times = ml100k_raw["timestamp"]
    rows = ml100k_raw.loc[(times >= WEEK_START) & (times < WEEK_END), COLUMNS].reset_index(drop=True)
    assert len(rows) > 1000
    return rows


def write_csv(rows: pd.DataFrame, path: Path) -> Path:
    rows[COLUMNS].to_csv(path, index=False)
    return path


# ---------------------------------------------------------------- windows


@pytest.mark.parametrize(
    ("moment", "expected"),
    [
        ("1970-01-05 00:00:00", "1970-01-05"),  # the origin Monday maps to itself
        ("1970-01-01 00:00:00", "1969-12-29"),  # before the origin: still the Monday before
        ("2024-01-07 23:59:59", "2024-01-01"),  # a Sunday maps to the Monday six days before
        ("2024-01-08 00:00:00", "2024-01-08"),  # a Monday at midnight starts its own week
        ("2024-01-07 12:00:00", "2024-01-01"),
        ("1997-09-20 03:05:10", "1997-09-15"),  # ML-100K's first interaction, a Saturday
        ("2000-02-29 13:00:00", "2000-02-28"),  # leap day, a Tuesday
    ],
)
def test_week_windows_are_monday_aligned(moment, expected):
    assert window_keys(np.array([unix(moment)]), 7).tolist() == [expected]


def test_week_windows_match_iso_weeks_on_all_ml100k(ml100k_raw):
    """Every real timestamp falls in the week starting on its ISO Monday (computed by pandas)."""
    times = ml100k_raw["timestamp"]
    moments = pd.to_datetime(times, unit="s", utc=True)
    mondays = (moments.dt.normalize() - pd.to_timedelta(moments.dt.weekday, unit="D")).dt.strftime("%Y-%m-%d")
    keys = window_keys(times, 7)
    np.testing.assert_array_equal(keys, mondays.to_numpy())
    assert set(pd.to_datetime(pd.Series(keys)).dt.weekday) == {0}


def test_one_day_windows_are_the_utc_date(ml100k_raw):
    times = ml100k_raw["timestamp"].iloc[:5000]
    expected = pd.to_datetime(times, unit="s", utc=True).dt.strftime("%Y-%m-%d").to_numpy()
    np.testing.assert_array_equal(window_keys(times, 1), expected)
    assert window_keys(np.array([unix("2024-01-07 23:59:59"), unix("2024-01-08 00:00:00")]), 1).tolist() == [
        "2024-01-07",
        "2024-01-08",
    ]


@pytest.mark.parametrize("days", [0, -1, -7])
def test_window_days_below_one_raise(days):
    with pytest.raises(ValueError, match="window_days"):
        window_keys(np.array([0]), days)


@pytest.mark.parametrize("days", [1, 3, 7, 30])
def test_window_bounds_contain_their_timestamps(ml100k_raw, days):
    """start <= t < end for every real t, bounds are window_days long, and start maps to its own key."""
    times = ml100k_raw["timestamp"].to_numpy()[::50]
    keys = window_keys(times, days)
    bounds = np.array([window_bounds(key, days) for key in keys])
    assert np.all(bounds[:, 0] <= times) and np.all(times < bounds[:, 1])
    assert np.all(bounds[:, 1] - bounds[:, 0] == days * DAY)
    np.testing.assert_array_equal(window_keys(bounds[:, 0], days), keys)
    np.testing.assert_array_equal(window_keys(bounds[:, 1] - 1, days), keys)
    np.testing.assert_array_equal(window_keys(bounds[:, 1], days) > keys, True)  # end opens the next window


# ---------------------------------------------------------------- landing a clean file


def test_land_clean_week(week, tmp_path):
    source = write_csv(week, tmp_path / "interactions-week.csv")
    before = source.read_bytes()
    expected = pd.Series(window_keys(week["timestamp"], 7)).value_counts().sort_index().to_dict()
    # Thursday..Wednesday crosses one Monday: two windows
    assert file_windows(source, 7) == expected
    assert list(expected) == ["1997-11-10", "1997-11-17"]

    landed = {key: land_window([source], key, 7) for key in expected}
    for key, window in landed.items():
        entry = window.summary["files"]["interactions-week.csv"]
        assert (entry["rows_in"], entry["rows_kept"], entry["rows_quarantined"]) == (expected[key], expected[key], 0)
        assert entry["windows"] == ["1997-11-10", "1997-11-17"] and entry["sha256"] == file_sha256(source)
        assert window.reconciles and window.quarantined.empty and window.summary["by_reason"] == {}
        assert window.rows["timestamp"].is_monotonic_increasing
        assert set(window_keys(window.rows["timestamp"], 7)) == {key}
        assert window.rows["timestamp"].max() < window_bounds(key, 7)[1]
    rows = pd.concat([window.rows for window in landed.values()], ignore_index=True)
    key = ["timestamp", "user_id", "item_id"]
    pd.testing.assert_frame_equal(
        rows[COLUMNS].sort_values(key).reset_index(drop=True),
        week.sort_values(key).reset_index(drop=True)[COLUMNS],
        check_dtype=False,
    )
    assert source.read_bytes() == before, "landing reads files in place and never changes them"


def test_window_rows_round_trip_through_a_folder(week, tmp_path):
    window = land_window([write_csv(week, tmp_path / "a.csv")], "1997-11-10", 7)
    folder = tmp_path / "stored"
    folder.mkdir()
    window.save(folder)
    loaded = WindowRows.load(folder)
    pd.testing.assert_frame_equal(loaded.rows, window.rows)
    assert loaded.summary == window.summary and loaded.window == "1997-11-10"


def test_two_files_in_one_window_are_both_read_and_a_repeated_row_is_a_duplicate(week, tmp_path):
    half = len(week) // 2
    write_csv(week.iloc[half:], tmp_path / "b.csv")
    write_csv(week.iloc[: half + 3], tmp_path / "a.csv")  # repeats b.csv's first three rows
    window = land_window([tmp_path / "b.csv", tmp_path / "a.csv"], "1997-11-10", 7)
    files = window.summary["files"]
    assert list(files) == ["a.csv", "b.csv"]
    in_window = window_keys(week["timestamp"], 7) == "1997-11-10"
    assert files["a.csv"]["rows_kept"] + files["b.csv"]["rows_kept"] == int(in_window.sum())
    # the earlier file by name keeps a repeated row; the later one's copy is quarantined as a duplicate
    repeated = week.iloc[half : half + 3]
    repeated_here = int((window_keys(repeated["timestamp"], 7) == "1997-11-10").sum())
    assert files["b.csv"]["rows_quarantined"] == repeated_here
    assert window.quarantined["reasons"].str.contains("duplicate").all()
    assert window.reconciles and window.rows["timestamp"].is_monotonic_increasing


# ---------------------------------------------------------------- bad rows are quarantined


def test_bad_rows_are_quarantined_with_reasons(week, tmp_path):
    first = week[window_keys(week["timestamp"], 7) == "1997-11-10"].iloc[0]
    source = write_csv(week, tmp_path / "drop.csv")
    with source.open("a") as file:
        file.write(f",{first.item_id},3.0,{first.timestamp}\n")  # empty user_id
        file.write(f"{first.user_id},{first.item_id},3.0,-5\n")  # negative timestamp: belongs to no window
        file.write(f"{first.user_id},{first.item_id},{first.rating},{first.timestamp}\n")  # repeats that row
    windows = file_windows(source, 7)
    n = len(week)
    assert sum(windows.values()) == n + 3 and list(windows) == ["1997-11-10", "1997-11-17"]

    earliest, later = (land_window([source], key, 7) for key in windows)
    quarantine = earliest.quarantined
    assert len(quarantine) == 3 and later.quarantined.empty, "the row without a window is reported once"
    assert set(quarantine["file"]) == {"drop.csv"}
    entry = earliest.summary["files"]["drop.csv"]
    assert entry["rows_in"] == entry["rows_kept"] + entry["rows_quarantined"] and entry["rows_quarantined"] == 3
    assert sum(earliest.summary["by_reason"].values()) == 3
    assert {key.split(":")[0] for key in earliest.summary["by_reason"]} == {
        "user_id",
        "timestamp",
        "user_id, item_id, timestamp",
    }
    # header is line 1, so the appended rows are lines n+2, n+3, n+4
    by_line = quarantine.set_index("source_row")["reasons"]
    assert sorted(by_line.index) == [n + 2, n + 3, n + 4]
    assert by_line[n + 2].startswith("user_id")
    assert "timestamp" in by_line[n + 3] and "-5" in by_line[n + 3]
    assert "duplicate" in by_line[n + 4]
    kept = pd.concat([earliest.rows, later.rows])
    assert len(kept) == n and kept["user_id"].notna().all() and (kept["timestamp"] >= 0).all()


def test_a_malformed_rating_is_quarantined_not_the_file(week, tmp_path):
    source = write_csv(week, tmp_path / "drop.csv")
    with source.open("a") as file:
        file.write(f"{week.user_id[0]},{week.item_id[1]},three,{week.timestamp[0]}\n")
    window = land_window([source], window_keys(week["timestamp"].iloc[:1], 7)[0], 7)
    n = len(week)
    assert window.summary["by_reason"] == {"rating: malformed": 1}
    assert window.quarantined[["source_row", "reasons"]].values.tolist() == [[n + 2, "rating: not a number ('three')"]]
    assert not any(column.startswith("malformed_") for column in window.quarantined.columns)
    assert not any(column.startswith("malformed_") for column in window.rows.columns)


def test_ratings_outside_the_rules_are_quarantined(week, tmp_path):
    source = write_csv(week.assign(rating=week["rating"].where(week.index % 10 != 0, 9.0)), tmp_path / "drop.csv")
    key = "1997-11-10"
    window = land_window([source], key, 7, ValidationRules(rating_min=1, rating_max=5))
    in_window = week[window_keys(week["timestamp"], 7) == key]
    assert len(window.quarantined) == int((in_window.index % 10 == 0).sum())
    assert window.quarantined["reasons"].str.startswith("rating").all()
    assert 0.09 < window.quarantined_share < 0.11 and window.reconciles


# ---------------------------------------------------------------- unreadable files are rejected whole


def _missing_item_column(week: pd.DataFrame, path: Path) -> None:
    week.drop(columns="item_id").to_csv(path, index=False)


def _garbage_timestamps(week: pd.DataFrame, path: Path) -> None:
    week.assign(timestamp="yesterday-ish")[COLUMNS].to_csv(path, index=False)


def _garbage_ratings(week: pd.DataFrame, path: Path) -> None:
    week.assign(rating="five stars")[COLUMNS].to_csv(path, index=False)


def _no_usable_timestamp(week: pd.DataFrame, path: Path) -> None:
    week.assign(timestamp=-1)[COLUMNS].to_csv(path, index=False)


@pytest.mark.parametrize(
    ("make", "mentions"),
    [
        (_missing_item_column, "item_id"),
        (_garbage_timestamps, "timestamp"),
        (_garbage_ratings, "rating"),
        (_no_usable_timestamp, "no row has a usable timestamp"),
    ],
)
def test_unreadable_file_raises_a_format_error_and_stays_as_it_is(week, tmp_path, make, mentions):
    source = tmp_path / "broken.csv"
    make(week.iloc[:200], source)
    before = source.read_bytes()
    with pytest.raises(DataFormatError, match=mentions):
        file_windows(source, 7)
    with pytest.raises(DataFormatError, match=mentions):
        land_window([source], "1997-11-10", 7)
    assert source.read_bytes() == before


# ---------------------------------------------------------------- incoming folder


def test_incoming_files_only_finished_tables(tmp_path):
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    for name in ["b.parquet", "a.csv", "notes.txt", "c.csv.gz", ".a.csv.partial", "d.csv.partial", "README", "E.CSV"]:
        (incoming / name).write_text("x")
    (incoming / "folder.csv").mkdir()
    assert [path.name for path in incoming_files(incoming)] == ["E.CSV", "a.csv", "b.parquet", "c.csv.gz"]
    assert incoming_files(tmp_path / "missing") == []


def test_incoming_files_sorted_by_name_like_a_replay(tmp_path):
    names = ["interactions-1997-11-17.csv", "interactions-1997-09-15.csv", "interactions-1997-10-06.csv"]
    for name in names:
        (tmp_path / name).write_text("x")
    assert [path.name for path in incoming_files(tmp_path)] == sorted(names)


# ---------------------------------------------------------------- replay


def test_replay_batches_cover_ml100k_once(ml100k_raw):
    batches = list(replay_batches(ml100k_raw, window_days=7))
    keys = [key for key, _ in batches]
    assert keys == sorted(set(keys)) and len(keys) == 32  # 1997-09-15 .. 1998-04-20
    assert keys[0] == "1997-09-15" and keys[-1] == "1998-04-20"
    combined = pd.concat([rows for _, rows in batches], ignore_index=True)
    assert len(combined) == 100_000
    assert not combined.duplicated().any()
    for key, rows in batches:
        assert len(rows) > 0
        assert set(window_keys(rows["timestamp"], 7)) == {key}
        start, end = window_bounds(key, 7)
        assert rows["timestamp"].between(start, end - 1).all()
        assert list(rows.columns) == list(ml100k_raw.columns)
