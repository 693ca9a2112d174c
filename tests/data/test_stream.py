"""The interaction stream: week windows, landing files (kept / quarantined / rejected), replays."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recmodels.data.stream import (
    incoming_files,
    land_file,
    landed_windows,
    read_windows,
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


def files_under(folder: Path) -> list[str]:
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*") if path.is_file())


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
    landing = tmp_path / "landing"
    source = write_csv(week, tmp_path / "interactions-week.csv")
    report = land_file(source, landing, window_days=7)

    assert report.rejected is None
    assert report.file == "interactions-week.csv"
    assert report.rows_in == report.rows_kept + report.rows_quarantined == len(week)
    assert report.rows_quarantined == 0 and report.by_reason == {}
    # Thursday..Wednesday crosses one Monday: two windows
    expected = pd.Series(window_keys(week["timestamp"], 7)).value_counts().sort_index().to_dict()
    assert report.windows == expected
    assert list(report.windows) == ["1997-11-10", "1997-11-17"]
    assert sum(report.windows.values()) == len(week)
    assert files_under(landing) == [
        "windows/1997-11-10/interactions-week.parquet",
        "windows/1997-11-17/interactions-week.parquet",
    ]
    assert landed_windows(landing) == ["1997-11-10", "1997-11-17"]

    rows = read_windows(landing, landed_windows(landing))
    assert len(rows) == len(week)
    assert rows["timestamp"].is_monotonic_increasing
    np.testing.assert_array_equal(rows["window"].to_numpy(), window_keys(rows["timestamp"], 7))
    key = ["timestamp", "user_id", "item_id"]
    expected_rows = week.sort_values(key).reset_index(drop=True)
    pd.testing.assert_frame_equal(
        rows[COLUMNS].sort_values(key).reset_index(drop=True), expected_rows[COLUMNS], check_dtype=False
    )
    # one window alone reads back exactly its own rows
    first = read_windows(landing, ["1997-11-10"])
    assert len(first) == report.windows["1997-11-10"]
    assert set(first["window"]) == {"1997-11-10"}
    assert first["timestamp"].max() < window_bounds("1997-11-10", 7)[1]


def test_landed_windows_and_read_windows_on_empty_landing(tmp_path):
    assert landed_windows(tmp_path / "nothing-here") == []
    with pytest.raises(FileNotFoundError):
        read_windows(tmp_path, ["1997-11-10"])


def test_two_files_in_one_window_are_both_read(week, tmp_path):
    """Each file lands as its own parquet in the window; reading the window merges them in time order."""
    landing = tmp_path / "landing"
    half = len(week) // 2
    land_file(write_csv(week.iloc[half:], tmp_path / "b.csv"), landing, window_days=7)
    land_file(write_csv(week.iloc[:half], tmp_path / "a.csv"), landing, window_days=7)
    assert sorted(path.name for path in (landing / "windows" / "1997-11-10").iterdir()) == ["a.parquet", "b.parquet"]
    rows = read_windows(landing, landed_windows(landing))
    assert len(rows) == len(week)
    assert rows["timestamp"].is_monotonic_increasing


# ---------------------------------------------------------------- bad rows are quarantined


def test_bad_rows_are_quarantined_with_reasons(week, tmp_path):
    landing = tmp_path / "landing"
    first = week.iloc[0]
    source = write_csv(week, tmp_path / "drop.csv")
    with source.open("a") as file:
        file.write(f",{first.item_id},3.0,{first.timestamp}\n")  # empty user_id
        file.write(f"{first.user_id},{first.item_id},3.0,-5\n")  # negative timestamp
        file.write(f"{first.user_id},{first.item_id},{first.rating},{first.timestamp}\n")  # repeats row 1
    report = land_file(source, landing, window_days=7)

    n = len(week)
    assert report.rejected is None
    assert (report.rows_in, report.rows_kept, report.rows_quarantined) == (n + 3, n, 3)
    assert report.rows_in == report.rows_kept + report.rows_quarantined
    assert sum(report.windows.values()) == report.rows_kept
    assert sum(report.by_reason.values()) == 3
    assert {key.split(":")[0] for key in report.by_reason} == {"user_id", "timestamp", "user_id, item_id, timestamp"}

    quarantine = pd.read_parquet(landing / "quarantine" / "drop.parquet")
    assert len(quarantine) == 3
    assert set(quarantine["file"]) == {"drop.csv"}
    assert quarantine["reasons"].str.len().gt(0).all()
    # header is line 1, so the appended rows are lines n+2, n+3, n+4
    by_line = quarantine.set_index("source_row")["reasons"]
    assert sorted(by_line.index) == [n + 2, n + 3, n + 4]
    assert by_line[n + 2].startswith("user_id")
    assert "timestamp" in by_line[n + 3] and "-5" in by_line[n + 3]
    assert "duplicate" in by_line[n + 4]
    # only good rows reached the windows
    rows = read_windows(landing, landed_windows(landing))
    assert len(rows) == n
    assert rows["user_id"].notna().all() and (rows["timestamp"] >= 0).all()
    assert not rows.duplicated(["user_id", "item_id", "timestamp"]).any()


def test_a_malformed_rating_is_quarantined_not_the_file(week, tmp_path):
    landing = tmp_path / "landing"
    source = write_csv(week, tmp_path / "drop.csv")
    with source.open("a") as file:
        file.write(f"{week.user_id[0]},{week.item_id[1]},three,{week.timestamp[0]}\n")
    report = land_file(source, landing, window_days=7)

    n = len(week)
    assert report.rejected is None
    assert (report.rows_in, report.rows_kept, report.rows_quarantined) == (n + 1, n, 1)
    assert report.by_reason == {"rating: malformed": 1}
    quarantine = pd.read_parquet(landing / "quarantine" / "drop.parquet")
    assert quarantine[["source_row", "reasons"]].values.tolist() == [[n + 2, "rating: not a number ('three')"]]
    assert not any(column.startswith("malformed_") for column in quarantine.columns)
    rows = read_windows(landing, landed_windows(landing))
    assert len(rows) == n and not any(column.startswith("malformed_") for column in rows.columns)


# ---------------------------------------------------------------- unreadable files are rejected whole


def _missing_item_column(week: pd.DataFrame, path: Path) -> None:
    week.drop(columns="item_id").to_csv(path, index=False)


def _garbage_timestamps(week: pd.DataFrame, path: Path) -> None:
    week.assign(timestamp="yesterday-ish")[COLUMNS].to_csv(path, index=False)


def _garbage_ratings(week: pd.DataFrame, path: Path) -> None:
    week.assign(rating="five stars")[COLUMNS].to_csv(path, index=False)


@pytest.mark.parametrize(
    ("make", "mentions"),
    [
        (_missing_item_column, "item_id"),
        (_garbage_timestamps, "timestamp"),
        (_garbage_ratings, "rating"),
    ],
)
def test_unreadable_file_is_rejected_not_raised(week, tmp_path, make, mentions):
    landing = tmp_path / "landing"
    source = tmp_path / "broken.csv"
    make(week.iloc[:200], source)
    report = land_file(source, landing, window_days=7)  # must not raise

    assert report.rejected and mentions in report.rejected
    assert (report.rows_in, report.rows_kept, report.rows_quarantined, report.windows) == (0, 0, 0, {})
    assert files_under(landing) == ["rejected/broken.csv", "rejected/broken.csv.reason.txt"]
    assert (landing / "rejected" / "broken.csv").read_bytes() == source.read_bytes()  # every byte kept
    assert (landing / "rejected" / "broken.csv.reason.txt").read_text() == report.rejected + "\n"
    assert landed_windows(landing) == []
    assert source.exists()


# ---------------------------------------------------------------- incoming folder


def test_incoming_files_only_finished_csv_and_parquet(tmp_path):
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    for name in ["b.parquet", "a.csv", "notes.txt", "c.csv.gz", ".a.csv.partial", "d.csv.partial", "README"]:
        (incoming / name).write_text("x")
    (incoming / "folder.csv").mkdir()
    assert [path.name for path in incoming_files(incoming)] == ["a.csv", "b.parquet"]
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
