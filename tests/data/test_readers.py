"""Readers on the real datasets, on small hand-made files, and on every malformed case."""

import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recmodels.data import (
    ColumnMap,
    DataFormatError,
    load_dataset,
    read_movielens_zip,
    read_predefined,
    read_recbole,
    read_sequences,
    read_table,
)
from recmodels.data.readers import MOVIELENS_GENRES

CANONICAL_COLUMNS = ["user_id", "item_id", "timestamp", "rating", "source_row"]
CANONICAL_DTYPES = {
    "user_id": "object",
    "item_id": "object",
    "timestamp": "int64",
    "rating": "float64",
    "source_row": "int64",
}


def dtypes(frame: pd.DataFrame) -> dict[str, str]:
    return {column: str(dtype) for column, dtype in frame.dtypes.items()}


@pytest.fixture(scope="module")
def ml100k(data_dir):
    return read_recbole(data_dir / "ml-100k")


@pytest.fixture(scope="module")
def ml1m_sequences(data_dir):
    return read_sequences(data_dir / "ml-1m-seq/ml-1m.txt")


@pytest.fixture(scope="module")
def diffrec_clean(data_dir):
    return read_predefined(data_dir / "ml-1m-diffrec/clean")


# --- real data -------------------------------------------------------------------------------


def test_recbole_ml100k_interactions(ml100k):
    interactions = ml100k.interactions
    assert ml100k.name == "ml-100k"
    assert ml100k.has_timestamps is True
    assert list(interactions.columns) == CANONICAL_COLUMNS
    assert dtypes(interactions) == CANONICAL_DTYPES
    assert len(interactions) == 100_000
    assert interactions["user_id"].nunique() == 943
    assert interactions["item_id"].nunique() == 1_682
    assert interactions.iloc[0].tolist() == ["196", "242", 881250949, 3.0, 2]
    assert interactions["source_row"].iloc[-1] == 100_001
    assert interactions["rating"].value_counts().sort_index().to_dict() == {
        1.0: 6_110,
        2.0: 11_370,
        3.0: 27_145,
        4.0: 34_174,
        5.0: 21_201,
    }
    first, last = pd.to_datetime(interactions["timestamp"].agg(["min", "max"]), unit="s")
    assert (first.year, first.month) == (1997, 9)
    assert (last.year, last.month) == (1998, 4)


def test_recbole_ml100k_items(ml100k):
    items = ml100k.items.set_index("item_id")
    assert len(items) == 1_682
    assert dtypes(ml100k.items) == {"item_id": "object", "title": "object", "year": "Int64", "genres": "object"}
    assert items.loc["1"].tolist() == ["Toy Story", 1995, "Animation|Children's|Comedy"]
    assert items.loc["2", "genres"] == "Action|Adventure|Thriller"
    # the source's own placeholders: 'unkonwn' and 'V' are not years
    assert items.loc["267"].tolist() == ["unkonwn", pd.NA, "unknown"]
    assert pd.isna(items.loc["1412", "year"])
    assert items["year"].isna().sum() == 2
    assert items["genres"].str.split("|").explode().value_counts()["Action"] == 251


@pytest.mark.needs_shared_data("ml-1m-seq/ml-1m.txt")
def test_sequences_ml1m(ml1m_sequences):
    interactions = ml1m_sequences.interactions
    assert (ml1m_sequences.name, ml1m_sequences.has_timestamps) == ("ml-1m", False)
    items = ml1m_sequences.items.set_index("item_id")  # movies.dat beside the sequences, under MovieLens ids
    assert len(items) == 3_883 and set(ml1m_sequences.interactions["item_id"]) <= set(items.index)
    assert items.loc["1", ["title", "year", "genres"]].tolist() == ["Toy Story", 1995, "Animation|Children's|Comedy"]
    assert list(interactions.columns) == CANONICAL_COLUMNS
    assert dtypes(interactions) == CANONICAL_DTYPES
    assert len(interactions) == 1_000_209
    assert interactions["user_id"].nunique() == 6_040
    assert interactions["item_id"].nunique() == 3_706
    assert interactions["rating"].isna().all()
    first_user = interactions[interactions["user_id"] == "1"]
    assert first_user["item_id"].head(3).tolist() == ["3186", "1721", "1022"]
    assert first_user["timestamp"].tolist() == list(range(len(first_user)))
    second_user = interactions[interactions["user_id"] == "2"]
    assert second_user["item_id"].head(2).tolist() == ["1198", "1217"]
    assert set(second_user["source_row"]) == {2}
    assert interactions["timestamp"].equals(interactions.groupby("user_id").cumcount().astype("int64"))


@pytest.mark.needs_shared_data("amazon-yelp-seq/Beauty.txt")
def test_sequences_beauty(data_dir):
    beauty = read_sequences(data_dir / "amazon-yelp-seq/Beauty.txt")
    interactions = beauty.interactions
    assert beauty.name == "Beauty"
    assert len(interactions) == 198_502
    assert interactions["user_id"].nunique() == 22_363
    assert interactions["item_id"].nunique() == 12_101
    assert interactions.head(5)[["user_id", "item_id", "timestamp", "source_row"]].values.tolist() == [
        ["1", "1", 0, 1],
        ["1", "2", 1, 1],
        ["1", "3", 2, 1],
        ["1", "4", 3, 1],
        ["1", "5", 4, 1],
    ]


@pytest.mark.needs_shared_data("ml-1m-diffrec/clean")
def test_predefined_diffrec_splits(diffrec_clean):
    interactions = diffrec_clean.interactions
    assert diffrec_clean.name == "ml-1m-diffrec-clean"
    assert diffrec_clean.has_timestamps is False
    assert list(interactions.columns) == [*CANONICAL_COLUMNS, "split"]
    assert len(interactions) == 571_531
    assert interactions["split"].value_counts().to_dict() == {"train": 403_277, "valid": 110_722, "test": 57_532}
    assert interactions["user_id"].nunique() == 5_949
    assert interactions["item_id"].nunique() == 2_810
    # positions run 0..n-1 per user, in row order
    assert interactions["timestamp"].equals(interactions.groupby("user_id").cumcount().astype("int64"))
    # per user: every train < every test < every valid
    bounds = interactions.groupby(["user_id", "split"])["timestamp"].agg(["min", "max"]).unstack("split")
    assert (bounds[("max", "train")] < bounds[("min", "test")]).all()
    assert (bounds[("max", "test")] < bounds[("min", "valid")]).all()
    first_valid = interactions[(interactions["split"] == "valid") & (interactions["source_row"] == 0)]
    assert first_valid[["user_id", "item_id"]].values.tolist() == [["0", "172"]]


@pytest.mark.needs_shared_data("ml-1m-diffrec/clean", "ml-1m-meta/movies.dat")
def test_predefined_diffrec_items(diffrec_clean):
    items = diffrec_clean.items.set_index("item_id")
    assert len(items) == 2_810
    assert items["title"].notna().all()
    assert items.loc["0"].tolist() == ["Girl, Interrupted", 1999, "Drama"]
    assert items.loc["1"].tolist() == ["Titanic", 1997, "Drama|Romance"]
    assert set(diffrec_clean.interactions["item_id"]) == set(items.index)


# --- hand-made tables and archives -----------------------------------------------------------


def test_table_csv_custom_columns_iso_timestamps(tmp_path):
    path = tmp_path / "events.csv"
    path.write_text(
        "uid,iid,when,stars\n"
        "u1,i1,2020-01-01T00:00:00Z,4.5\n"
        "u1,i2,2020-01-01T01:00:00+01:00,\n"
        "u2,i1,2020-01-02T00:00:30,3\n"
    )
    dataset = read_table(path, ColumnMap(user_id="uid", item_id="iid", timestamp="when", rating="stars"))
    assert (dataset.name, dataset.has_timestamps) == ("events", True)
    assert dtypes(dataset.interactions) == CANONICAL_DTYPES | {"malformed_rating": "object"}
    interactions = dataset.interactions
    assert malformed(interactions, "rating") == {3: "missing"}, "the source has ratings: validation decides"
    assert interactions[["user_id", "item_id", "timestamp", "source_row"]].values.tolist() == [
        ["u1", "i1", 1577836800, 2],
        ["u1", "i2", 1577836800, 3],
        ["u2", "i1", 1577923230, 4],
    ]
    assert interactions["rating"].fillna(-1.0).tolist() == [4.5, -1.0, 3.0]


def test_table_csv_without_timestamp_uses_positions(tmp_path):
    path = tmp_path / "clicks.csv"
    path.write_text("user,item\na,x\nb,x\na,y\na,z\n")
    dataset = read_table(path, ColumnMap(user_id="user", item_id="item", timestamp=None, rating=None))
    assert dataset.has_timestamps is False
    assert dataset.interactions["timestamp"].tolist() == [0, 0, 1, 2]
    assert dataset.interactions["rating"].isna().all()


def test_table_parquet_custom_columns(tmp_path):
    path = tmp_path / "events.parquet"
    pd.DataFrame(
        {
            "customer": [7, 7, 9],
            "product": [42, 43, 42],
            "event_time": pd.to_datetime(
                ["2020-01-01 00:00:00", "2020-01-01 00:01:00", "2021-06-01 12:00:00"], utc=True
            ),
            "score": [1.0, None, 5.0],
            "ignored": ["a", "b", "c"],
        }
    ).to_parquet(path)
    dataset = read_table(path, ColumnMap(user_id="customer", item_id="product", timestamp="event_time", rating="score"))
    interactions = dataset.interactions
    assert dtypes(interactions) == CANONICAL_DTYPES | {"malformed_rating": "object"}
    assert malformed(interactions, "rating") == {1: "missing"}
    assert interactions[["user_id", "item_id", "timestamp", "source_row"]].values.tolist() == [
        ["7", "42", 1577836800, 0],
        ["7", "43", 1577836860, 1],
        ["9", "42", 1622548800, 2],
    ]
    assert interactions["rating"].fillna(-1.0).tolist() == [1.0, -1.0, 5.0]


def test_table_parquet_iso_string_timestamps(tmp_path):
    path = tmp_path / "iso.parquet"
    frame = pd.DataFrame({"user_id": ["a"], "item_id": ["b"], "timestamp": ["1998-04-22T23:10:38Z"], "rating": [2.0]})
    frame.to_parquet(path)
    assert read_table(path).interactions.values.tolist() == [["a", "b", 893286638, 2.0, 0]]


def u_item_line(item_id: int, full_title: str, genres: set[str]) -> str:
    flags = "|".join("1" if genre in genres else "0" for genre in MOVIELENS_GENRES)
    return f"{item_id}|{full_title}|01-Jan-1995||http://example.org|{flags}"


def write_movielens(folder: Path) -> None:
    folder.mkdir(parents=True)
    (folder / "u.data").write_text("1\t10\t4\t881250949\n1\t20\t5\t881250950\n2\t10\t3\t881250951\n")
    (folder / "u.item").write_bytes(
        "\n".join(
            [
                u_item_line(10, "Cité des enfants perdus, La (1995)", {"Drama", "Sci-Fi"}),
                u_item_line(20, "unknown", {"unknown"}),
            ]
        ).encode("latin-1")
        + b"\n"
    )


def zip_folder(folder: Path, archive_path: Path) -> Path:
    with zipfile.ZipFile(archive_path, "w") as archive:
        for file in sorted(folder.iterdir()):
            archive.write(file, f"ml-100k/{file.name}")
    return archive_path


def test_movielens_zip_and_folder(tmp_path):
    folder = tmp_path / "unpacked"
    write_movielens(folder)
    from_zip = read_movielens_zip(zip_folder(folder, tmp_path / "ml-100k.zip"))
    from_folder = read_movielens_zip(folder)
    assert (from_zip.name, from_zip.has_timestamps) == ("ml-100k", True)
    assert dtypes(from_zip.interactions) == CANONICAL_DTYPES
    assert from_zip.interactions.values.tolist() == [
        ["1", "10", 881250949, 4.0, 1],
        ["1", "20", 881250950, 5.0, 2],
        ["2", "10", 881250951, 3.0, 3],
    ]
    assert from_zip.items.values.tolist() == [
        ["10", "Cité des enfants perdus, La", 1995, "Drama|Sci-Fi"],
        ["20", "unknown", pd.NA, "unknown"],
    ]
    pd.testing.assert_frame_equal(from_folder.interactions, from_zip.interactions)
    pd.testing.assert_frame_equal(from_folder.items, from_zip.items)


def test_empty_fields_are_kept_as_missing_values(tmp_path):
    path = tmp_path / "gaps" / "gaps.inter"
    path.parent.mkdir()
    path.write_text(
        "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
        "1\t10\t4\t100\n"
        "\t11\t3\t101\n"
        "2\t12\t\t102\n"
        "\n"
        "3\t13\t5\t\n"
    )
    interactions = read_recbole(path.parent).interactions
    assert interactions["source_row"].tolist() == [2, 3, 4, 6]
    assert interactions["user_id"].isna().tolist() == [False, True, False, False]
    assert interactions["rating"].isna().tolist() == [False, False, True, False]
    assert str(interactions["timestamp"].dtype) == "Int64"
    assert interactions["timestamp"].isna().tolist() == [False, False, False, True]


# --- load_dataset ----------------------------------------------------------------------------


@pytest.mark.needs_shared_data("ml-1m-diffrec/clean")
def test_load_dataset_picks_reader_for_real_folders(data_dir, ml100k):
    assert load_dataset(data_dir / "ml-100k").interactions.equals(ml100k.interactions)
    assert "split" in load_dataset(data_dir / "ml-1m-diffrec/clean").interactions


def test_load_dataset_picks_reader_for_files(tmp_path):
    (tmp_path / "seq.txt").write_text("1 5 6\n2 7\n")
    (tmp_path / "table.csv").write_text("user_id,item_id,timestamp,rating\n1,5,100,2.5\n")
    movielens = tmp_path / "movielens"
    write_movielens(movielens)
    zip_path = zip_folder(movielens, tmp_path / "ml.zip")
    assert load_dataset(tmp_path / "seq.txt").interactions["item_id"].tolist() == ["5", "6", "7"]
    assert load_dataset(tmp_path / "table.csv").interactions.values.tolist() == [["1", "5", 100, 2.5, 2]]
    assert len(load_dataset(movielens).interactions) == 3
    assert load_dataset(zip_path).items["item_id"].tolist() == ["10", "20"]


def test_load_dataset_unknown_layout_lists_what_it_looked_for(tmp_path):
    with pytest.raises(DataFormatError) as error:
        load_dataset(tmp_path)
    message = str(error.value)
    assert str(tmp_path) in message
    for looked_for in ("*.inter", "train_list.npy", "u.data", ".txt", ".csv/.csv.gz/.parquet"):
        assert looked_for in message


# --- malformed files -------------------------------------------------------------------------

INTER_HEADER = "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"


def write_inter(tmp_path: Path, text: str) -> Path:
    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "bad.inter").write_text(text)
    return folder


def good_inter_rows(count: int) -> str:
    return "".join(f"{user}\t{user + 100}\t3\t{880000000 + user}\n" for user in range(count))


def assert_format_error(read, path: Path, *expected: str) -> None:
    with pytest.raises(DataFormatError) as error:
        read(path)
    message = str(error.value)
    for fragment in expected:
        assert fragment in message, f"{fragment!r} not in {message!r}"


def test_inter_without_item_id_field(tmp_path):
    folder = write_inter(tmp_path, "user_id:token\trating:float\n1\t3\n")
    assert_format_error(read_recbole, folder, "bad.inter", "line 1", "missing required column", "'item_id'")


@pytest.mark.parametrize("field", ["item_id", "item_id:int"])
def test_inter_header_field_without_known_type(tmp_path, field):
    folder = write_inter(tmp_path, f"user_id:token\t{field}\n1\t2\n")
    assert_format_error(read_recbole, folder, "bad.inter", "line 1", repr(field), "no known :type")


def malformed(interactions: pd.DataFrame, column: str) -> dict[int, str]:
    """source_row -> the reader's description of the cell of `column` that did not parse."""
    described = interactions.set_index("source_row")[f"malformed_{column}"]
    return described.dropna().to_dict()


def test_inter_non_numeric_timestamp_is_kept_as_a_malformed_row(tmp_path):
    folder = write_inter(tmp_path, INTER_HEADER + good_inter_rows(15) + "99\t5\t4\tabc\n" + good_inter_rows(3))
    interactions = read_recbole(folder).interactions
    assert len(interactions) == 19
    assert list(interactions.columns) == [*CANONICAL_COLUMNS, "malformed_timestamp"]
    assert malformed(interactions, "timestamp") == {17: "not a number ('abc')"}
    row = interactions.set_index("source_row").loc[17]
    assert pd.isna(row["timestamp"]) and row["rating"] == 4.0
    assert interactions["timestamp"].notna().sum() == 18


def test_inter_some_bad_ratings_are_each_described(tmp_path):
    rows = good_inter_rows(3) + "".join(f"{user}\t1\tgood\t5\n" for user in range(7)) + "9\t2\tinf\t5\n"
    interactions = read_recbole(write_inter(tmp_path, INTER_HEADER + rows)).interactions
    assert malformed(interactions, "rating") == {
        **{line: "not a number ('good')" for line in range(5, 12)},
        12: "not a finite number ('inf')",
    }
    assert interactions["rating"].notna().tolist() == [True] * 3 + [False] * 8


def test_inter_column_without_one_number_reports_first_five(tmp_path):
    rows = "".join(f"{user}\t1\tgood\t5\n" for user in range(7)) + "8\t1\t\t5\n"  # an empty field does not count
    folder = write_inter(tmp_path, INTER_HEADER + rows)
    with pytest.raises(DataFormatError) as error:
        read_recbole(folder)
    message = str(error.value)
    assert "'rating'" in message and "none of its 7 value(s)" in message and "wrong column or delimiter" in message
    assert [f"line {line}: 'good'" in message for line in range(2, 9)] == [True] * 5 + [False] * 2


@pytest.mark.parametrize(("text", "reason"), [("", "file is empty"), (INTER_HEADER, "no data rows")])
def test_inter_empty_file(tmp_path, text, reason):
    assert_format_error(read_recbole, write_inter(tmp_path, text), "bad.inter", reason)


def test_inter_row_with_too_many_fields(tmp_path):
    folder = write_inter(tmp_path, INTER_HEADER + good_inter_rows(1) + "1\t2\t3\t4\t5\n")
    assert_format_error(read_recbole, folder, "bad.inter", "line 3", "more than 4 fields")


def test_sequences_outside_ml1m_seq_carry_no_items(tmp_path):
    (tmp_path / "ml-1m-meta").mkdir()
    (tmp_path / "ml-1m-meta" / "movies.dat").write_text("1::Toy Story (1995)::Comedy\n")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "seq.txt").write_text("u1 1 2\n")
    assert read_sequences(tmp_path / "other" / "seq.txt").items is None
    (tmp_path / "ml-1m-seq").mkdir()
    (tmp_path / "ml-1m-seq" / "seq.txt").write_text("u1 1 2\n")
    assert read_sequences(tmp_path / "ml-1m-seq" / "seq.txt").items["genres"].tolist() == ["Comedy"]


def test_sequence_line_without_items(tmp_path):
    path = tmp_path / "seq.txt"
    path.write_text("1 5 6\n2 7\n7\n8 9\n")
    assert_format_error(read_sequences, path, "seq.txt", "line 3", "user '7' has no items")


def test_sequence_empty_file(tmp_path):
    path = tmp_path / "seq.txt"
    path.write_text("\n\n")
    assert_format_error(read_sequences, path, "seq.txt", "file is empty")


def test_sequence_user_on_two_lines(tmp_path):
    path = tmp_path / "seq.txt"
    path.write_text("1 5 6\n2 7\n3 8\n2 9\n")
    assert_format_error(read_sequences, path, "seq.txt", "line 4", "user '2' already has a sequence on line 2")


@pytest.mark.parametrize(
    ("array", "description"),
    [
        (np.zeros((4, 3), dtype=np.int64), "int64 array of shape (4, 3)"),
        (np.zeros((4, 2), dtype=np.float64), "float64 array of shape (4, 2)"),
        (np.zeros(8, dtype=np.int64), "int64 array of shape (8,)"),
    ],
)
def test_predefined_npy_with_wrong_shape_or_dtype(tmp_path, array, description):
    pairs = np.array([[0, 1], [0, 2]], dtype=np.int64)
    np.save(tmp_path / "train_list.npy", pairs)
    np.save(tmp_path / "valid_list.npy", array)
    np.save(tmp_path / "test_list.npy", pairs)
    assert_format_error(read_predefined, tmp_path, "valid_list.npy", "expected integer (user, item) pairs", description)


def test_predefined_file_that_is_not_npy(tmp_path):
    for split in ("train", "valid", "test"):
        np.save(tmp_path / f"{split}_list.npy", np.array([[0, 1]], dtype=np.int64))
    (tmp_path / "test_list.npy").write_text("user item\n")
    assert_format_error(read_predefined, tmp_path, "test_list.npy", "not a plain .npy array")


def test_table_csv_missing_mapped_column(tmp_path):
    path = tmp_path / "events.csv"
    path.write_text("uid,iid,stars\nu1,i1,4\n")
    columns = ColumnMap(user_id="uid", item_id="iid", timestamp="when", rating="stars")
    assert_format_error(
        lambda p: read_table(p, columns), path, "events.csv", "line 1", "missing required column", "'when'"
    )


def test_table_csv_bad_iso_timestamp_is_described(tmp_path):
    path = tmp_path / "events.csv"
    path.write_text("user_id,item_id,timestamp,rating\nu1,i1,2020-01-01T00:00:00,4\nu1,i2,not-a-date,4\n")
    interactions = read_table(path).interactions
    assert interactions["timestamp"].tolist() == [1577836800, pd.NA]
    assert malformed(interactions, "timestamp") == {3: "not an ISO 8601 datetime ('not-a-date')"}


def test_table_csv_bad_numeric_timestamp_is_described(tmp_path):
    path = tmp_path / "events.csv"
    path.write_text("user_id,item_id,timestamp,rating\nu1,i1,100,4\nu1,i2,200,4\nu2,i1,abc,4\n")
    interactions = read_table(path).interactions
    assert interactions["timestamp"].tolist() == [100, 200, pd.NA]
    assert malformed(interactions, "timestamp") == {4: "not a number ('abc')"}


def test_table_csv_stray_first_timestamp_does_not_decide_the_format(tmp_path):
    path = tmp_path / "events.csv"
    path.write_text("user_id,item_id,timestamp,rating\nu1,i1,soon,4\nu1,i2,200,4\nu2,i1,300,4\n")
    interactions = read_table(path).interactions
    assert interactions["timestamp"].tolist() == [pd.NA, 200, 300]
    assert malformed(interactions, "timestamp") == {2: "not a number ('soon')"}


def test_table_csv_now_and_today_are_not_datetimes(tmp_path):
    path = tmp_path / "events.csv"
    path.write_text("user_id,item_id,timestamp,rating\nu1,i1,2020-01-01,4\nu1,i2,now,4\nu2,i1,today,4\n")
    assert malformed(read_table(path).interactions, "timestamp") == {
        3: "not an ISO 8601 datetime ('now')",
        4: "not an ISO 8601 datetime ('today')",
    }


@pytest.mark.parametrize(
    ("column", "expected", "row"),
    [("timestamp", "ISO 8601 datetimes", "u1,i{n},yesterday,4"), ("rating", "numbers", "u1,i{n},{n},five")],
)
def test_table_csv_column_without_one_value_that_parses(tmp_path, column, expected, row):
    path = tmp_path / "events.csv"
    path.write_text("user_id,item_id,timestamp,rating\n" + "".join(row.format(n=n) + "\n" for n in range(3)))
    assert_format_error(read_table, path, "events.csv", f"column {column!r}", expected, "none of its 3 value(s)")


def test_table_semicolon_file_read_as_comma_names_the_missing_columns(tmp_path):
    path = tmp_path / "events.csv"
    path.write_text("user_id;item_id;timestamp;rating\nu1;i1;100;4\n")
    assert_format_error(read_table, path, "events.csv", "line 1", "missing required column", "'user_id;item_id")


def test_table_parquet_missing_column(tmp_path):
    path = tmp_path / "events.parquet"
    pd.DataFrame({"user_id": ["a"], "item_id": ["b"], "timestamp": [1]}).to_parquet(path)
    assert_format_error(read_table, path, "events.parquet", "missing required column", "'rating'")


def test_table_unsupported_suffix(tmp_path):
    path = tmp_path / "events.json"
    path.write_text("{}")
    assert_format_error(read_table, path, "events.json", "reads .csv, .csv.gz, .parquet (any letter case)")


def test_movielens_zip_bad_rating_is_described(tmp_path):
    folder = tmp_path / "unpacked"
    write_movielens(folder)
    (folder / "u.data").write_text("1\t10\t4\t881250949\n1\t20\tx\t881250950\n")
    interactions = read_movielens_zip(zip_folder(folder, tmp_path / "ml-100k.zip")).interactions
    assert interactions["rating"].fillna(-1.0).tolist() == [4.0, -1.0]
    assert malformed(interactions, "rating") == {2: "not a number ('x')"}


def test_movielens_zip_ratings_without_one_number(tmp_path):
    folder = tmp_path / "unpacked"
    write_movielens(folder)
    (folder / "u.data").write_text("1\t10\ty\t881250949\n1\t20\tx\t881250950\n")
    archive = zip_folder(folder, tmp_path / "ml-100k.zip")
    assert_format_error(read_movielens_zip, archive, "ml-100k.zip:ml-100k/u.data", "line 1", "'rating'", "'y'")


def test_movielens_row_with_extra_field_is_not_shifted_into_the_index(tmp_path):
    folder = tmp_path / "unpacked"
    write_movielens(folder)
    (folder / "u.data").write_text("1\t10\t4\t881250949\t99\n1\t20\t5\t881250950\n")
    assert_format_error(read_movielens_zip, folder, "u.data", "line 1", "more than 4 fields")


def test_movielens_zip_without_u_data(tmp_path):
    archive = tmp_path / "other.zip"
    with zipfile.ZipFile(archive, "w") as handle:
        handle.writestr("readme.txt", "nothing here")
    assert_format_error(read_movielens_zip, archive, "other.zip", "no u.data")
