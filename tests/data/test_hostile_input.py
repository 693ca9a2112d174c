"""Hostile and careless input to the readers, the schema and the stream (issue 18, items 7, 9, 10, 12-14).

Each test is named after its item. The sensor and the landing asset on the same files are in
tests/orchestration/test_landing_hostile.py.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import pandas as pd
import pytest

from recmodels.data.readers import ColumnMap, DataFormatError, read_recbole, read_sequences, read_table
from recmodels.data.schemas import ValidationRules, validate_interactions, validate_items
from recmodels.data.stream import file_windows, incoming_listing, land_window, window_keys

HEADER = "user_id,item_id,rating,timestamp\n"
WEEK = 881_250_949  # Thursday 1997-12-04 (UTC), an ML-100K moment
WINDOW = window_keys([WEEK], 7)[0]
INT64_MIN = -(2**63)


def rows_text(count: int, start: int = 0) -> str:
    return "".join(f"{user},{100 + user},4,{WEEK + user}\n" for user in range(start, start + count))


def write(path: Path, text: str | bytes) -> Path:
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return path


def format_error(read, path: Path) -> str:
    with pytest.raises(DataFormatError) as error:
        read(path)
    return str(error.value)


# ---------------------------------------------------------------- 7: unreadable files are format errors


def test_item7_non_utf8_csv_is_a_format_error_naming_the_line_and_byte_offset(tmp_path):
    text = (HEADER + rows_text(3)).encode() + "7,café,4,881250960\n".encode("latin-1") + rows_text(2, 10).encode()
    path = write(tmp_path / "latin1.csv", text)
    offset = text.index(b"\xe9")
    for read in (read_table, lambda p: file_windows(p, 7), lambda p: land_window([p], WINDOW, 7)):
        message = format_error(read, path)
        assert "latin1.csv, line 5" in message and "not utf-8" in message, message
        assert f"byte offset {offset}" in message and "\\xe9" in message


def test_item7_non_utf8_recbole_and_sequence_files_are_format_errors(tmp_path):
    folder = tmp_path / "bad"
    folder.mkdir()
    write(folder / "bad.inter", "user_id:token\titem_id:token\n1\t2\n".encode() + "3\tcaf\xe9\n".encode("latin-1"))
    assert "bad.inter, line 3: not utf-8" in format_error(read_recbole, folder)
    sequences = write(tmp_path / "seq.txt", "1 2 3\n".encode() + "2 \xff\n".encode("latin-1"))
    assert "seq.txt, line 2: not utf-8" in format_error(read_sequences, sequences)


def _parquet_bytes(tmp_path: Path) -> bytes:
    frame = pd.DataFrame({"user_id": ["1", "2"] * 500, "item_id": ["5"] * 1000, "rating": 4.0, "timestamp": WEEK})
    frame.to_parquet(tmp_path / "whole.parquet")
    return (tmp_path / "whole.parquet").read_bytes()


@pytest.mark.parametrize("damage", ["half copied", "garbage", "footer cut", "empty"])
def test_item7_corrupt_or_half_copied_parquet_is_a_format_error(tmp_path, damage):
    whole = _parquet_bytes(tmp_path)
    data = {
        "half copied": whole[: len(whole) // 2],
        "garbage": b"PAR1" + bytes(range(256)) * 4,
        "footer cut": whole[:-3],
        "empty": b"",
    }[damage]
    path = write(tmp_path / "drop.parquet", data)
    for read in (read_table, lambda p: file_windows(p, 7), lambda p: land_window([p], WINDOW, 7)):
        message = format_error(read, path)
        assert "drop.parquet" in message and "not a readable Parquet file" in message
        assert f"{len(data)} bytes" in message


def test_item7_parquet_rating_column_of_lists_is_a_format_error(tmp_path):
    path = tmp_path / "lists.parquet"
    pd.DataFrame({"user_id": ["1"], "item_id": ["2"], "rating": [[1, 2]], "timestamp": [WEEK]}).to_parquet(path)
    assert "column 'rating' holds list<element: int64> values" in format_error(read_table, path)


# ---------------------------------------------------------------- 9: a cut last line


@pytest.mark.parametrize("cut", ["504,10,4,8812", "504,10,8812", "504,1"])
def test_item9_a_last_line_without_line_end_is_quarantined_and_opens_no_window(tmp_path, cut):
    path = write(tmp_path / "copying.csv", HEADER + rows_text(20) + cut)
    assert file_windows(path, 7) == {WINDOW: 21}, "the cut row belongs to no window: 1970 is not opened"
    window = land_window([path], WINDOW, 7)
    (reasons,) = window.quarantined.loc[window.quarantined["source_row"] == 22, "reasons"]
    assert "line: no line end: the file may have been cut while it was written" in reasons
    assert window.summary["by_reason"]["line: no line end"] == 1
    assert len(window.rows) == 20 and window.reconciles
    assert int(window.rows["timestamp"].min()) >= WEEK


def test_item9_a_file_ending_with_a_line_end_keeps_its_last_row(tmp_path):
    for ending in ("\n", "\r\n"):
        path = write(tmp_path / "whole.csv", (HEADER + rows_text(5)).replace("\n", ending))
        window = land_window([path], WINDOW, 7)
        assert len(window.rows) == 5 and window.quarantined.empty


# ---------------------------------------------------------------- 10: names


def test_item10_upper_case_extensions_and_gzip_are_read(tmp_path):
    write(tmp_path / "Week1.CSV", HEADER + rows_text(3))
    write(tmp_path / "week2.csv.gz", gzip.compress((HEADER + rows_text(4, 10)).encode()))
    pd.DataFrame({"user_id": ["9"], "item_id": ["9"], "rating": [3.0], "timestamp": [WEEK]}).to_parquet(
        tmp_path / "Week3.Parquet"
    )
    assert len(read_table(tmp_path / "Week1.CSV").interactions) == 3
    gzipped = read_table(tmp_path / "week2.csv.gz")
    assert gzipped.name == "week2" and gzipped.interactions["user_id"].tolist() == ["10", "11", "12", "13"]
    files, skipped = incoming_listing(tmp_path)
    assert [path.name for path in files] == ["Week1.CSV", "Week3.Parquet", "week2.csv.gz"]
    assert skipped == {}
    window = land_window(files, WINDOW, 7)
    assert sorted(window.summary["files"]) == ["Week1.CSV", "Week3.Parquet", "week2.csv.gz"]
    assert len(window.rows) == 8 and window.reconciles


def test_item10_a_cut_gzip_stream_is_a_format_error(tmp_path):
    data = gzip.compress((HEADER + rows_text(2000)).encode())
    path = write(tmp_path / "week.csv.gz", data[: len(data) // 2])
    assert "week.csv.gz: not a complete gzip stream" in format_error(read_table, path)
    assert "not a complete gzip stream" in format_error(read_table, write(tmp_path / "plain.csv.gz", "a,b\n"))


def test_item10_every_skipped_entry_is_named_with_its_reason(tmp_path):
    for name in ["a.csv", "notes.txt", ".b.csv.partial", "c.json", "d.parquet.gz"]:
        write(tmp_path / name, "x")
    (tmp_path / "folder.csv").mkdir()
    files, skipped = incoming_listing(tmp_path)
    assert [path.name for path in files] == ["a.csv"]
    assert set(skipped) == {"notes.txt", ".b.csv.partial", "c.json", "d.parquet.gz", "folder.csv"}
    assert skipped[".b.csv.partial"].startswith("hidden: a write in progress")
    assert skipped["folder.csv"] == "not a file"
    assert skipped["notes.txt"] == "not one of .csv, .csv.gz, .parquet (any letter case)"


# ---------------------------------------------------------------- 12: ids are normalised text


def _frame(user_ids, item_ids=None, ratings=None) -> pd.DataFrame:
    count = len(user_ids)
    return pd.DataFrame(
        {
            "user_id": user_ids,
            "item_id": item_ids if item_ids is not None else [str(n) for n in range(count)],
            "timestamp": [WEEK + n for n in range(count)],
            "rating": ratings if ratings is not None else [4.0] * count,
            "source_row": range(2, count + 2),
        }
    )


def test_item12_blank_and_compatibility_variants_of_an_id_are_one_id(tmp_path):
    variants = [" 10", "10 ", "\t10", "10\u00a0", "\u200b10", "10\ufeff", "\uff11\uff10", "\u00a010\u200b "]
    result = validate_interactions(_frame(["10", *variants]))
    assert result.valid["user_id"].tolist() == ["10"] * 9
    assert result.quarantined.empty
    assert result.ids_normalised == {"user_id": len(variants), "item_id": 0}
    assert result.summary["ids_normalised"] == {"user_id": len(variants), "item_id": 0}


def test_item12_ids_that_only_look_alike_as_numbers_stay_apart():
    result = validate_interactions(_frame(["1", "01", "1.0", "1e0", "a b"]))
    assert result.valid["user_id"].tolist() == ["1", "01", "1.0", "1e0", "a b"]
    assert result.ids_normalised == {"user_id": 0, "item_id": 0} and "ids_normalised" not in result.summary


def test_item12_an_id_empty_after_normalising_is_quarantined_as_read():
    result = validate_interactions(_frame(["7", "\u200b", " \u00a0 ", "\ufeff"]))
    assert result.valid["user_id"].tolist() == ["7"]
    assert result.quarantined["user_id"].tolist() == ["\u200b", " \u00a0 ", "\ufeff"], "quarantine keeps the raw id"
    assert result.by_reason == {"user_id: not_empty": 3}


def test_item12_normalising_can_make_a_duplicate(tmp_path):
    path = write(tmp_path / "padded.csv", HEADER + f"5,10,4,{WEEK}\n 5 ,10\u00a0,4,{WEEK}\n")
    result = validate_interactions(read_table(path).interactions)
    assert result.valid["user_id"].tolist() == ["5"]
    assert result.quarantined["reasons"].tolist() == [
        f"user_id, item_id, timestamp: duplicate (value=('5', '10', {WEEK}))"
    ]


def test_item12_normalising_is_configurable_and_reaches_items_and_windows(tmp_path):
    raw = validate_interactions(_frame([" 10", "10"]), ValidationRules(normalise_ids=False))
    assert raw.valid["user_id"].tolist() == [" 10", "10"] and raw.ids_normalised == {}
    items = pd.DataFrame({"item_id": ["5", " 5"], "title": ["a", "b"], "year": pd.array([2000, 2001], dtype="Int64")})
    checked = validate_items(items)
    assert checked.valid["item_id"].tolist() == ["5"]
    assert checked.quarantined["reasons"].tolist() == ["item_id: field_uniqueness (value='5')"]
    window = land_window([write(tmp_path / "w.csv", HEADER + f" 1 ,2,4,{WEEK}\n1,3,4,{WEEK}\n")], WINDOW, 7)
    assert window.summary["ids_normalised"] == {"user_id": 1, "item_id": 0}
    assert window.rows["user_id"].tolist() == ["1", "1"]


# ---------------------------------------------------------------- 13: one rule for missing ratings


def test_item13_nan_text_empty_field_and_short_row_are_the_same_missing_rating(tmp_path):
    lines = [f"1,1,NaN,{WEEK}", f"1,2,,{WEEK}", "1,3", f"1,4, nan ,{WEEK}", f"1,5,NULL,{WEEK}", f"1,6,4,{WEEK}"]
    path = write(tmp_path / "gaps.csv", HEADER + "\n".join(lines) + "\n")
    required = validate_interactions(read_table(path).interactions)
    assert required.valid["item_id"].tolist() == ["6"]
    reasons = dict(zip(required.quarantined["item_id"], required.quarantined["reasons"]))
    assert reasons == {
        "1": "rating: missing",
        "2": "rating: missing",
        "3": "timestamp: not_nullable (value=nan); rating: missing",
        "4": "rating: missing",
        "5": "rating: missing",
    }
    assert required.by_reason["rating: missing"] == 5
    optional = validate_interactions(read_table(path).interactions, ValidationRules(1, 5, ratings_optional=True))
    assert optional.valid["item_id"].tolist() == ["1", "2", "4", "5", "6"]
    assert optional.quarantined["reasons"].tolist() == ["timestamp: not_nullable (value=nan)"]


def test_item13_nan_ratings_do_not_refuse_the_file_and_bounds_still_apply(tmp_path):
    path = write(
        tmp_path / "all_nan.csv", HEADER + "".join(f"1,{n},NaN,{WEEK}\n" for n in range(5)) + f"1,9,9,{WEEK}\n"
    )
    result = validate_interactions(read_table(path).interactions, ValidationRules(1, 5, ratings_optional=True))
    assert len(result.valid) == 5 and result.valid["rating"].isna().all()
    assert result.quarantined["reasons"].tolist() == ["rating: less_than_or_equal_to(5) (value=9.0)"]
    only_nan = write(tmp_path / "only_nan.csv", HEADER + "".join(f"1,{n},NaN,{WEEK}\n" for n in range(5)))
    assert read_table(only_nan).interactions["rating"].isna().all()


def test_item13_a_source_without_a_rating_column_has_no_missing_ratings(tmp_path):
    path = write(tmp_path / "clicks.csv", f"user_id,item_id,timestamp\n1,2,{WEEK}\n1,3,{WEEK}\n")
    result = validate_interactions(read_table(path, ColumnMap(rating=None)).interactions)
    assert len(result.valid) == 2 and result.quarantined.empty


# ---------------------------------------------------------------- 14: huge timestamps, blank lines, duplicate keys


@pytest.mark.parametrize("huge", ["1e20", "99999999999999999999999", "-1e300", "9223372036854775808"])
def test_item14_huge_timestamps_are_out_of_range_with_their_value(tmp_path, huge):
    path = write(tmp_path / "huge.csv", HEADER + rows_text(3) + f"9,9,4,{huge}\n")
    raw = read_table(path).interactions
    assert INT64_MIN not in raw["timestamp"].dropna().tolist()
    result = validate_interactions(raw)
    (reasons,) = result.quarantined["reasons"]
    assert reasons == f"timestamp: out of range of int64 unix seconds ('{huge}')"
    assert result.by_reason == {"timestamp: out of range": 1} and len(result.valid) == 3
    window = land_window([path], WINDOW, 7)
    assert window.summary["by_reason"] == {"timestamp: out of range": 1} and window.reconciles


def test_item14_the_largest_float_below_two_to_the_63_is_a_future_timestamp_not_out_of_range(tmp_path):
    path = write(tmp_path / "edge.csv", HEADER + rows_text(2) + "9,9,4,9223372036854774784\n")
    (reasons,) = validate_interactions(read_table(path).interactions).quarantined["reasons"]
    assert reasons.startswith("timestamp: less_than_or_equal_to(") and "(value=9223372036854774784)" in reasons


@pytest.mark.parametrize("blanks", ["\n", "\n\n", "\r\n"])
def test_item14_a_blank_line_after_the_header_is_not_an_empty_file(tmp_path, blanks):
    path = write(tmp_path / "blank.csv", HEADER + blanks + rows_text(2))
    raw = read_table(path).interactions
    skipped = blanks.count("\n")
    assert raw["source_row"].tolist() == [2 + skipped, 3 + skipped] and raw["user_id"].tolist() == ["0", "1"]
    assert "no data rows" in format_error(read_table, write(tmp_path / "only.csv", HEADER + "\n\n"))


def test_item14_a_blank_first_line_is_not_a_header(tmp_path):
    message = format_error(read_table, write(tmp_path / "late.csv", "\n" + HEADER + rows_text(1)))
    assert "late.csv, line 1: the first line is blank: it must be the header" in message


def test_item14_duplicates_are_counted_under_one_key(tmp_path):
    """Repeats of rows whose key values sort differently (pandera reports their key columns in varying order)."""
    pairs = [("b", "a"), ("a", "b"), ("10", "9"), ("9", "10"), ("x", "x"), ("z", "a")]
    lines = [f"{user},{item},4,{WEEK + n}" for n, (user, item) in enumerate(pairs)]
    path = write(tmp_path / "repeats.csv", HEADER + "\n".join(lines * 3) + "\n")
    result = validate_interactions(read_table(path).interactions)
    assert result.by_reason == {"user_id, item_id, timestamp: duplicate": 12}
    assert len(result.valid) == 6
    first = result.quarantined.iloc[0]
    assert first["reasons"] == f"user_id, item_id, timestamp: duplicate (value=('b', 'a', {WEEK}))"


def test_item14_a_row_with_more_fields_names_its_line(tmp_path):
    message = format_error(read_table, write(tmp_path / "wide.csv", HEADER + rows_text(2) + "1,2,3,4,5,6\n"))
    assert "wide.csv, line 4: more than 4 fields" in message and "6 fields" in message
    message = format_error(read_table, write(tmp_path / "first.csv", HEADER + "1,2,3,4,5,6,7\n" + rows_text(2)))
    assert "first.csv, line 2: more than 4 fields" in message


def test_item14_a_quoted_line_break_keeps_every_later_row_on_its_own_line(tmp_path):
    """A field quoted across a line break is one record over two lines: later rows still name their own line, and
    a blank line after it is skipped like any other (found by the property test of any CSV rows)."""
    text = HEADER + '1,"a\nb",4,880000000\n\n2,c,4,880000001\n'
    raw = read_table(write(tmp_path / "quoted.csv", text)).interactions
    assert raw["source_row"].tolist() == [2, 5] and raw["item_id"].tolist() == ["a\nb", "c"]


def test_item14_a_quote_left_open_to_the_end_is_a_format_error(tmp_path):
    assert "open.csv, line 1: unreadable header" in format_error(read_table, write(tmp_path / "open.csv", HEADER + '"'))
