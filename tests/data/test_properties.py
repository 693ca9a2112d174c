"""Property-based tests of the readers, the schema and landing: arbitrary rows in, every row accounted for.

For any rows hypothesis makes up (any text in any field, short and empty rows, numbers of any size,
NaN, infinities, ids of blanks and zero-width characters), reading either fails with a
`DataFormatError` or yields one row per non-blank record, and validation either fails with a
`DataFormatError` or keeps or quarantines each of them: rows in = kept + quarantined. No other
exception gets out. Kept to a few seconds with `max_examples`.
"""

from __future__ import annotations

import csv
import io
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recmodels.data.readers import DataFormatError, read_table
from recmodels.data.schemas import ValidationRules, validate_interactions
from recmodels.data.stream import file_windows, land_window

COLUMNS = ["user_id", "item_id", "rating", "timestamp"]
RULES = ValidationRules(rating_min=1, rating_max=5)
FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# csv.writer leaves a field holding a carriage return unquoted, and a bare CR ends a line for the reader, so such
# records have no one row count to compare with; bare CRs are covered by the any-bytes test below (accounting only).
NO_BARE_CR = st.characters(codec="utf-8", exclude_characters="\r")
ids = st.one_of(
    st.sampled_from(["1", "2", " 1", "1\u00a0", "\u200b", "", " ", "01", "1.0", "\uff11"]),
    st.text(NO_BARE_CR, max_size=6),
)
numbers = st.one_of(
    st.integers(min_value=-(10**25), max_value=10**25).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["", "NaN", "nan", "NULL", "inf", "-inf", "1e20", "abc", "2020-01-01", "1997-12-04T10:00:00Z"]),
    st.integers(min_value=880_000_000, max_value=890_000_000).map(str),
    st.text(NO_BARE_CR, max_size=5),
)
rows = st.lists(
    st.tuples(ids, ids, numbers, numbers).flatmap(lambda row: st.integers(0, 4).map(lambda n: list(row)[: 4 - n])),
    min_size=1,
    max_size=25,
)


def csv_bytes(records: list[list[str]], line_end: bool) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(COLUMNS)
    writer.writerows(records)
    text = buffer.getvalue()
    return (text if line_end else text.removesuffix("\n")).encode()


def assert_accounted(frame: pd.DataFrame) -> None:
    try:
        result = validate_interactions(frame, RULES)
    except DataFormatError:
        return
    assert len(result.valid) + len(result.quarantined) == len(frame)
    assert sorted([*result.valid["source_row"], *result.quarantined["source_row"]]) == sorted(frame["source_row"])
    assert result.quarantined["reasons"].str.len().gt(0).all()
    if len(result.valid):
        assert result.valid["timestamp"].between(0, 2**62).all() and result.valid["user_id"].str.len().gt(0).all()


@FAST
@given(records=rows, line_end=st.booleans())
def test_any_csv_rows_are_read_and_validated_without_losing_one(records, line_end):
    data = csv_bytes(records, line_end)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "drop.csv"
        path.write_bytes(data)
        try:
            frame = read_table(path).interactions
        except DataFormatError:
            return
        blank = sum(1 for record in records if record == [])  # csv writes [""] as '""', a row
        assert len(frame) == len(records) - blank, "one row per non-blank record"
        assert_accounted(frame)


@FAST
@given(records=rows, line_end=st.booleans())
def test_any_csv_file_lands_every_row_in_exactly_one_window(records, line_end):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "drop.csv"
        path.write_bytes(csv_bytes(records, line_end))
        try:
            windows = file_windows(path, 7, RULES)
            frame = read_table(path).interactions
        except DataFormatError:
            return
        landed = [land_window([path], window, 7, RULES) for window in windows]
        assert sum(window.rows_in for window in landed) == len(frame)
        assert all(window.reconciles for window in landed)


@FAST
@given(data=st.binary(max_size=200))
def test_any_bytes_after_a_header_are_a_table_or_a_format_error(data):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "drop.csv"
        path.write_bytes(b"user_id,item_id,rating,timestamp\n" + data)
        try:
            frame = read_table(path).interactions
        except DataFormatError:
            return
        assert_accounted(frame)


columns = st.fixed_dictionaries(
    {
        "user_id": st.lists(st.one_of(st.none(), ids), min_size=1, max_size=1),
        "timestamp": st.one_of(
            st.lists(st.one_of(st.none(), st.integers(-(2**63), 2**63 - 1)), min_size=1, max_size=1),
            st.lists(st.floats(), min_size=1, max_size=1),
            st.lists(st.one_of(st.none(), st.text(max_size=5)), min_size=1, max_size=1),
        ),
        "rating": st.one_of(
            st.lists(st.one_of(st.none(), st.floats()), min_size=1, max_size=1),
            st.lists(st.one_of(st.none(), st.text(max_size=4)), min_size=1, max_size=1),
        ),
    }
)


@FAST
@given(values=st.lists(columns, min_size=1, max_size=20))
def test_any_parquet_rows_are_read_and_validated_without_losing_one(values):
    frame = pd.DataFrame(
        {
            "user_id": [value["user_id"][0] for value in values],
            "item_id": [str(n) for n in range(len(values))],
            "timestamp": pd.Series([value["timestamp"][0] for value in values], dtype=object),
            "rating": pd.Series([value["rating"][0] for value in values], dtype=object),
        }
    )
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "drop.parquet"
        try:
            frame.to_parquet(path)
        except (TypeError, ValueError, OverflowError):  # pyarrow cannot write a column of mixed types: no file
            return
        try:
            read = read_table(path).interactions
        except DataFormatError:
            return
        assert len(read) == len(frame)
        assert_accounted(read)


canonical = st.lists(
    st.tuples(
        st.one_of(st.none(), ids),
        st.one_of(st.none(), ids),
        st.one_of(st.none(), st.integers(-(2**63), 2**63 - 1)),
        st.floats(),
    ),
    min_size=1,
    max_size=30,
)


@FAST
@given(records=canonical)
def test_any_canonical_frame_is_validated_without_losing_a_row(records):
    frame = pd.DataFrame(records, columns=["user_id", "item_id", "timestamp", "rating"], dtype=object)
    frame = frame.astype({"timestamp": "Int64", "rating": "float64"}).assign(source_row=np.arange(len(frame)))
    assert_accounted(frame)
