"""Readers that turn every dataset layout the project meets into one canonical interaction table.

Readers only parse: a file that cannot be read as its layout stops with `DataFormatError`
(naming file, line or byte offset, and reason): text that is not UTF-8, a Parquet file Arrow
cannot read (corrupt, or still being copied), a cut gzip stream. Row problems do not stop the
read: empty fields are kept as missing values, and a cell that does not parse in a numeric column
(rating, timestamp) is kept as missing with its description in a `malformed_<column>` column, so
that validation quarantines the row with that reason. The same column marks a rating missing from
a source that has a rating column (`MISSING`: an empty field, the text 'NaN', a row cut short),
a timestamp beyond int64 seconds (`OUT_OF_RANGE`), and, in `malformed_line`, a CSV table's last
line when it has no line end (`NO_LINE_END`: the file may have been cut while it was written).
A column in which no value parses is a file problem (wrong column mapped, wrong delimiter) and
stops the read.
"""

from __future__ import annotations

import csv
import gzip
import io
import re
import warnings
import zipfile
import zlib
from dataclasses import dataclass, fields
from pathlib import Path, PurePosixPath
from typing import IO

import numpy as np
import pandas as pd
import pyarrow
import pyarrow.compute as pc
import pyarrow.parquet as pq

RECBOLE_TYPES = ("token", "float", "token_seq", "float_seq")
SPLITS_IN_TIME_ORDER = ("train", "test", "valid")  # DiffRec files: test precedes valid in time
MOVIELENS_GENRES = (
    "unknown",
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
)
ISO_ZONE_OFFSET = r"[T ]\S*?(?:Z|[+-]\d{2}(?::?\d{2})?)$"
ISO_YEAR_START = r"\s*\d{4}"
TITLE_WITH_YEAR = r"^(?P<title>.*?)\s*\((?P<year>\d{4})\)\s*$"
MAX_REPORTED_VALUES = 5
UNIX_EPOCH = pd.Timestamp(0, tz="UTC")
ONE_SECOND = pd.Timedelta(seconds=1)
MALFORMED_PREFIX = "malformed_"  # + canonical column: why that row's cell did not parse
LINE_COLUMN = "line"  # `malformed_line`: a problem of the row's whole line
MISSING = "missing"  # a rating absent from a source that has a rating column
OUT_OF_RANGE = "out of range of int64 unix seconds"
NO_LINE_END = "no line end: the file may have been cut while it was written"
# the by_reason key of a description that starts with one of these (any other: `malformed`)
DESCRIPTION_KEYS = {MISSING: "missing", OUT_OF_RANGE: "out of range", NO_LINE_END: "no line end"}
# rating fields read as missing (case-insensitive, surrounding blanks ignored): what pandas reads as NA
MISSING_RATING_TEXTS = ("", "nan", "-nan", "na", "n/a", "null", "none", "<na>", "#n/a")
INT64_SECONDS_BOUND = 2.0**63  # floats at or beyond it do not fit int64 (casting would wrap to INT64_MIN)
CSV_SUFFIXES = (".csv", ".csv.gz")
PARQUET_SUFFIXES = (".parquet",)
TABLE_SUFFIXES = (*CSV_SUFFIXES, *PARQUET_SUFFIXES)
NO_SOURCE_COLUMN = "-"  # in a column map spec: the source has no such column

Values = pd.Series | pd.Index | np.ndarray


class DataFormatError(ValueError):
    """A source that cannot be read as the layout it claims; the message names file, line and reason."""


def table_suffix(path: Path | str) -> str | None:
    """The table suffix a file name ends with, in lower case (`Week1.CSV` -> `.csv`, `w.csv.gz` -> `.csv.gz`),
    or None when it is not a table `read_table` reads."""
    name = Path(path).name.lower()
    return next((suffix for suffix in sorted(TABLE_SUFFIXES, key=len, reverse=True) if name.endswith(suffix)), None)


@dataclass(frozen=True, eq=False)
class RawDataset:
    """A parsed, not yet validated dataset.

    `interactions` columns, in order: user_id (str), item_id (str), timestamp (int64; nullable
    Int64 only when the source left timestamp fields empty), rating (float64, NaN when absent),
    source_row (int64: 1-based file line, or 0-based row for .npy/Parquet) and, for predefined
    splits, split ('train'/'valid'/'test'). `items` columns: item_id, title, year (Int64), genres
    ('|' joined). `has_timestamps` is False when timestamp is the position in the user's sequence.
    """

    name: str
    interactions: pd.DataFrame
    items: pd.DataFrame | None
    has_timestamps: bool
    source: Path


@dataclass(frozen=True)
class ColumnMap:
    """Source column names of a table; timestamp or rating None means the source has none."""

    user_id: str = "user_id"
    item_id: str = "item_id"
    timestamp: str | None = "timestamp"
    rating: str | None = "rating"

    def __post_init__(self) -> None:
        for name in ("user_id", "item_id"):
            if not getattr(self, name):
                raise ValueError(f"{name} needs a source column name; every table has one")
        sources = [source for source in self.sources.values() if source is not None]
        repeated = sorted({source for source in sources if sources.count(source) > 1})
        if repeated:
            raise ValueError(f"source column(s) {', '.join(map(repr, repeated))} mapped to more than one name")

    @classmethod
    def parse(cls, spec: str) -> ColumnMap:
        """`canonical=source` pairs, comma separated (`user_id=customer,rating=stars`).

        Names not given keep their defaults; `timestamp=-` or `rating=-` says the source has no
        such column. Anything else that is not a well-formed pair fails with a ValueError.
        """
        if not spec.strip():
            return cls()
        canonical = [field.name for field in fields(cls)]
        mapping: dict[str, str | None] = {}
        for part in spec.split(","):
            name, equals, source = (piece.strip() for piece in part.partition("="))
            if not equals or not name or not source:
                raise ValueError(f"{part.strip()!r} is not a canonical=source pair")
            if name not in canonical:
                raise ValueError(f"unknown column name {name!r}; expected one of {', '.join(canonical)}")
            if name in mapping:
                raise ValueError(f"{name!r} is given twice")
            mapping[name] = None if source == NO_SOURCE_COLUMN else source
        return cls(**mapping)

    @property
    def sources(self) -> dict[str, str | None]:
        """Canonical name -> source column name (None where the source has none)."""
        return {field.name: getattr(self, field.name) for field in fields(self)}

    @property
    def spec(self) -> str:
        """The map as `parse` reads it, every name spelled out."""
        return ",".join(f"{name}={source or NO_SOURCE_COLUMN}" for name, source in self.sources.items())


@dataclass(frozen=True, eq=False)
class _ParsedColumn:
    """Parsed values (missing where the cell was empty or malformed) and why malformed cells failed."""

    data: pd.Series
    malformed: pd.Series  # a description such as "not a number ('abc')" where a cell did not parse, else None


@dataclass(frozen=True)
class _Origin:
    """Where values came from, so that errors point at a file and a line (text) or row (arrays)."""

    name: str
    unit: str = "line"

    def error(self, reason: str, row: int | None = None) -> DataFormatError:
        where = self.name if row is None else f"{self.name}, {self.unit} {row}"
        return DataFormatError(f"{where}: {reason}")


def read_recbole(folder: Path) -> RawDataset:
    """RecBole atomic files: `<name>.inter` (typed tab-separated header) and optional `<name>.item`."""
    folder = Path(folder)
    inter_files = sorted(folder.glob("*.inter"))
    if len(inter_files) != 1:
        raise DataFormatError(f"{folder}: expected exactly one *.inter file, found {[f.name for f in inter_files]}")
    inter_path = inter_files[0]
    origin = _Origin(str(inter_path))
    table = _read_atomic_file(inter_path, required=("user_id", "item_id"))
    has_timestamps = "timestamp" in table
    parsed = {}
    if has_timestamps:
        parsed["timestamp"] = _whole_seconds(
            _parse_numbers(table["timestamp"], origin, "timestamp"), table["timestamp"]
        )
    if "rating" in table:
        parsed["rating"] = _parse_ratings(table["rating"], origin, "rating")
    interactions = _interaction_frame(
        table["user_id"],
        table["item_id"],
        parsed["timestamp"].data if has_timestamps else _positions_in_user(table["user_id"]),
        parsed["rating"].data if "rating" in parsed else np.nan,
        table.index,
        malformed={name: result.malformed for name, result in parsed.items()},
    )
    item_path = inter_path.with_suffix(".item")
    items = _read_recbole_items(item_path) if item_path.exists() else None
    return RawDataset(inter_path.stem, interactions, items, has_timestamps, folder)


def read_sequences(path: Path) -> RawDataset:
    """One user a line, `user item item ...` in chronological order; timestamp is the position."""
    path = Path(path)
    origin = _Origin(str(path))
    users: list[str] = []
    user_lines: list[int] = []
    lengths: list[int] = []
    items: list[str] = []
    for line_number, line in enumerate(_decoded(path.read_bytes(), origin).splitlines(), start=1):
        tokens = line.split()
        if not tokens:
            continue
        if len(tokens) == 1:
            raise origin.error(f"user {tokens[0]!r} has no items", line_number)
        users.append(tokens[0])
        user_lines.append(line_number)
        lengths.append(len(tokens) - 1)
        items.extend(tokens[1:])
    if not users:
        raise origin.error("file is empty")
    _reject_repeated_users(pd.Series(users), np.array(user_lines), origin)
    lengths_array = np.array(lengths, dtype=np.int64)
    first_index = np.repeat(np.cumsum(lengths_array) - lengths_array, lengths_array)
    interactions = _interaction_frame(
        user_id=np.repeat(np.array(users, dtype=object), lengths_array),
        item_id=np.array(items, dtype=object),
        timestamp=np.arange(len(items), dtype=np.int64) - first_index,
        rating=np.nan,
        source_row=np.repeat(np.array(user_lines, dtype=np.int64), lengths_array),
    )
    movies_path = path.parent / ".." / "ml-1m-meta" / "movies.dat"
    items = _movielens_movies(movies_path) if path.parent.name == "ml-1m-seq" and movies_path.exists() else None
    return RawDataset(path.stem, interactions, items, False, path)


def read_predefined(folder: Path) -> RawDataset:
    """DiffRec splits (`train/valid/test_list.npy`); timestamp is the position in train -> test -> valid."""
    folder = Path(folder)
    pair_arrays = [_load_pairs(folder / f"{split}_list.npy") for split in SPLITS_IN_TIME_ORDER]
    sizes = [len(pairs) for pairs in pair_arrays]
    pairs = np.concatenate(pair_arrays)
    time_order = np.argsort(pairs[:, 0], kind="stable")
    users = pd.Series(pairs[time_order, 0])
    interactions = _interaction_frame(
        user_id=users.astype(str),
        item_id=pd.Series(pairs[time_order, 1]).astype(str),
        timestamp=_positions_in_user(users),
        rating=np.nan,
        source_row=np.concatenate([np.arange(size, dtype=np.int64) for size in sizes])[time_order],
        split=np.repeat(np.array(SPLITS_IN_TIME_ORDER, dtype=object), sizes)[time_order],
    )
    mapping_path = folder / "item_id_to_movielens_id.tsv"
    movies_path = folder / ".." / ".." / "ml-1m-meta" / "movies.dat"
    items = _diffrec_items(mapping_path, movies_path) if mapping_path.exists() and movies_path.exists() else None
    return RawDataset("-".join(folder.resolve().parts[-2:]), interactions, items, False, folder)


def read_table(path: Path, columns: ColumnMap = ColumnMap()) -> RawDataset:
    """CSV or Parquet with configurable column names; timestamps as unix seconds or ISO 8601."""
    path = Path(path)
    wanted = [name for name in (columns.user_id, columns.item_id, columns.timestamp, columns.rating) if name]
    suffix = table_suffix(path)
    line_problems = {}
    if suffix in CSV_SUFFIXES:
        origin = _Origin(str(path))
        data = _table_bytes(path, origin, gzipped=suffix.endswith(".gz"))
        names = _header_names(io.BytesIO(data), origin)
        _require_columns(names, wanted, origin, row=1)
        table = _read_delimited(io.BytesIO(data), origin, names, has_header=True)
        line_problems[LINE_COLUMN] = _unended_last_line(data, table.index)
    elif suffix in PARQUET_SUFFIXES:
        origin = _Origin(str(path), unit="row")
        table = _read_parquet(path, wanted, id_columns=(columns.user_id, columns.item_id), origin=origin)
    else:
        raise DataFormatError(
            f"{path}: read_table reads {', '.join(TABLE_SUFFIXES)} (any letter case), not {path.name!r}"
        )
    parsed = {}
    if columns.timestamp:
        parsed["timestamp"] = _parse_timestamps(table[columns.timestamp], origin, columns.timestamp)
    if columns.rating:
        parsed["rating"] = _parse_ratings(table[columns.rating], origin, columns.rating)
    interactions = _interaction_frame(
        table[columns.user_id],
        table[columns.item_id],
        parsed["timestamp"].data if columns.timestamp else _positions_in_user(table[columns.user_id]),
        parsed["rating"].data if columns.rating else np.nan,
        table.index,
        malformed={name: result.malformed for name, result in parsed.items()} | line_problems,
    )
    return RawDataset(path.name[: -len(suffix)], interactions, None, columns.timestamp is not None, path)


def read_movielens_zip(path: Path) -> RawDataset:
    """GroupLens MovieLens-100K as published: `ml-100k.zip` or its unpacked folder (u.data, u.item)."""
    path = Path(path)
    ratings_member = _movielens_member(path, "u.data")
    if ratings_member is None:
        raise DataFormatError(f"{path}: no u.data found")
    origin = _Origin(ratings_member[0])
    table = _read_delimited(
        io.BytesIO(ratings_member[1]),
        origin,
        ["user_id", "item_id", "rating", "timestamp"],
        has_header=False,
        sep="\t",
        quoting=csv.QUOTE_NONE,
    )
    timestamps = _whole_seconds(_parse_numbers(table["timestamp"], origin, "timestamp"), table["timestamp"])
    ratings = _parse_ratings(table["rating"], origin, "rating")
    interactions = _interaction_frame(
        table["user_id"],
        table["item_id"],
        timestamps.data,
        ratings.data,
        table.index,
        malformed={"timestamp": timestamps.malformed, "rating": ratings.malformed},
    )
    items_member = _movielens_member(path, "u.item")
    items = _movielens_items(*items_member) if items_member else None
    return RawDataset(path.stem if path.suffix == ".zip" else path.name, interactions, items, True, path)


def load_dataset(path: Path, columns: ColumnMap = ColumnMap()) -> RawDataset:
    """Pick the reader from what the path holds, so pipelines only need a path (and a table's column map)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(path)
    if path.is_file() and table_suffix(path):
        return read_table(path, columns)
    if columns != ColumnMap():
        raise ValueError(
            f"{path}: a column map ({columns.spec}) applies to .csv/.parquet tables only; "
            "this layout names its columns itself"
        )
    if path.is_dir() and any(path.glob("*.inter")):
        return read_recbole(path)
    if path.is_dir() and (path / "train_list.npy").exists():
        return read_predefined(path)
    if (path.is_dir() and (path / "u.data").exists()) or path.suffix == ".zip":
        return read_movielens_zip(path)
    if path.suffix == ".txt":
        return read_sequences(path)
    raise DataFormatError(
        f"{path}: unknown dataset layout; looked for a folder with *.inter (RecBole), a folder with "
        "train_list.npy (DiffRec splits), a folder or .zip with u.data (MovieLens), "
        "a .txt of user sequences, or a .csv/.csv.gz/.parquet table"
    )


def _read_atomic_file(path: Path, required: tuple[str, ...]) -> pd.DataFrame:
    """Text columns named by the typed header; the index is the 1-based line number."""
    origin = _Origin(str(path))
    with path.open("rb") as file:
        header = _decoded(file.readline(), origin).rstrip("\r\n")
    if not header:
        raise origin.error("file is empty")
    names = []
    for field in header.split("\t"):
        name, _, field_type = field.partition(":")
        if field_type not in RECBOLE_TYPES:
            raise origin.error(
                f"header field {field!r} has no known :type "
                f"(expected name:type, type one of {', '.join(RECBOLE_TYPES)})",
                row=1,
            )
        names.append(name)
    _require_columns(names, required, origin, row=1)
    return _read_delimited(path, origin, names, has_header=True, sep="\t", quoting=csv.QUOTE_NONE)


def _read_recbole_items(path: Path) -> pd.DataFrame:
    """RecBole `.item`; release_year is a free token (ml-100k has 'unkonwn'), so non-years become missing."""
    table = _read_atomic_file(path, required=("item_id",))
    missing = pd.Series(None, index=table.index, dtype=object)
    return _item_frame(
        item_id=table["item_id"],
        title=table.get("movie_title", missing),
        year=pd.to_numeric(table.get("release_year", missing), errors="coerce"),
        genres=table.get("class", missing).str.split().str.join("|"),
    )


def _read_delimited(
    source: Path | IO[bytes], origin: _Origin, names: list[str], has_header: bool, **options
) -> pd.DataFrame:
    """All fields as text; the index is the 1-based line number.

    Only empty fields are missing; blank lines (also right after the header) are skipped but
    counted. Of text given as bytes only blank lines are skipped: a line of empty fields (`,,,`) is
    a row, which validation quarantines; a file's rows are then exactly its non-blank records. A row with more fields than `names` is an error: the table is read one column wider
    than `names` so that such a row shows (pandas would otherwise shift it into the index or drop
    its fields), and a first row wider still makes pandas warn, which is the same error.
    """
    first_line = 2 if has_header else 1
    width = len(names)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", pd.errors.ParserWarning)
            table = pd.read_csv(
                source,
                header=None,
                names=range(width + 1),
                index_col=False,
                skiprows=first_line - 1,
                dtype=str,
                keep_default_na=False,
                na_values=[""],
                skip_blank_lines=False,
                **options,
            )
    except pd.errors.EmptyDataError as error:
        raise origin.error("file is empty (no data rows)") from error
    except pd.errors.ParserWarning as error:
        raise origin.error(f"more than {width} fields ({', '.join(names)})", first_line) from error
    except pd.errors.ParserError as error:
        wide = re.search(r"Expected \d+ fields in line (\d+), saw (\d+)", str(error))
        if wide:  # pandas counts the spare column: say what the file holds
            raise origin.error(
                f"more than {width} fields ({', '.join(names)}): {wide[2]} fields", int(wide[1])
            ) from error
        raise origin.error(str(error).strip()) from error
    except UnicodeDecodeError as error:
        raise _decoding_error(_source_bytes(source), origin, options.get("encoding", "utf-8")) from error
    table.index = _record_lines(source, origin, options, first_line, len(table))
    overfull = table[width].notna()
    if overfull.any():
        raise origin.error(f"more than {width} fields ({', '.join(names)})", int(overfull.idxmax()))
    table = table.drop(columns=width).set_axis(names, axis="columns")
    empty = table.isna().all(axis="columns")
    if empty.any() and isinstance(source, io.BytesIO):  # only blank lines are skipped; `,,,` is a row with no values
        empty &= table.index.isin(_blank_lines(source.getvalue()))
    table = table[~empty]
    if table.empty:
        raise origin.error("file is empty (no data rows)")
    return table


def _record_lines(source: Path | IO[bytes], origin: _Origin, options: dict, first_line: int, records: int) -> pd.Index:
    """The 1-based line each record starts on: one record a line, unless a quoted field holds a line break."""
    quoted = options.get("quoting", csv.QUOTE_MINIMAL) != csv.QUOTE_NONE
    if not (quoted and isinstance(source, io.BytesIO) and b'"' in source.getvalue()):
        return pd.RangeIndex(first_line, first_line + records)
    text = io.StringIO(source.getvalue().decode(options.get("encoding", "utf-8")), newline="")
    reader = csv.reader(text, delimiter=options.get("sep", ","))
    starts, line = [], 0
    try:
        for _ in reader:
            starts.append(line + 1)
            line = reader.line_num
    except csv.Error as error:
        raise origin.error(f"unreadable quoting: {error}", line + 1) from error
    starts = starts[first_line - 1 :]
    if len(starts) != records:
        raise origin.error(
            f"quoted fields do not pair up: {len(starts)} records by the csv module, {records} by pandas"
        )
    return pd.Index(np.array(starts, dtype=np.int64))


def _blank_lines(data: bytes) -> list[int]:
    """1-based numbers of the lines holding nothing but blanks."""
    return [number for number, line in enumerate(data.split(b"\n"), start=1) if not line.strip()]


def _header_names(source: Path | IO[bytes], origin: _Origin, **options) -> list[str]:
    """Column names from the first line, read with the same quoting rules as the data."""
    try:
        names = list(pd.read_csv(source, nrows=0, skip_blank_lines=False, **options).columns)
    except pd.errors.EmptyDataError as error:
        raise origin.error("file is empty") from error
    except pd.errors.ParserError as error:
        raise origin.error(f"unreadable header: {str(error).strip()}", 1) from error
    except UnicodeDecodeError as error:
        raise _decoding_error(_source_bytes(source), origin, options.get("encoding", "utf-8")) from error
    if not names:
        raise origin.error("the first line is blank: it must be the header", 1)
    return names


def _source_bytes(source: Path | IO[bytes]) -> bytes:
    if isinstance(source, Path):
        return source.read_bytes()
    source.seek(0)
    return source.read()


def _decoding_error(data: bytes, origin: _Origin, encoding: str = "utf-8") -> DataFormatError:
    """Where the text stops being `encoding`: the line and the byte offset of the first bad byte."""
    try:
        data.decode(encoding)
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        return origin.error(
            f"not {encoding} text: byte {data[error.start : error.start + 1]!r} at byte offset {error.start} "
            f"({error.reason}); save the file as {encoding}",
            line,
        )
    return origin.error(f"cannot be decoded as {encoding}")


def _decoded(data: bytes, origin: _Origin) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise _decoding_error(data, origin) from error


def _table_bytes(path: Path, origin: _Origin, gzipped: bool) -> bytes:
    """A CSV table's bytes (decompressed), checked to be UTF-8 text, so a bad byte names its line."""
    data = path.read_bytes()
    if gzipped:
        try:
            data = gzip.decompress(data)
        except (EOFError, OSError, zlib.error) as error:  # a cut stream is EOFError, a non-gzip file OSError
            raise origin.error(f"not a complete gzip stream ({error})") from error
    _decoded(data, origin)
    return data


def _unended_last_line(data: bytes, rows: pd.Index) -> pd.Series:
    """`NO_LINE_END` on the row of the last line when the text does not end with a line end, else None."""
    marks = pd.Series(None, index=rows, dtype=object)
    if data and not data.endswith((b"\n", b"\r")):
        last_line = data.count(b"\n") + 1
        if last_line in marks.index:
            marks[last_line] = NO_LINE_END
    return marks


def _read_parquet(path: Path, wanted: list[str], id_columns: tuple[str, str], origin: _Origin) -> pd.DataFrame:
    """Selected Parquet columns with ids as strings; the index is the 0-based row.

    Anything Arrow cannot read (no footer: corrupt or still being copied; a bad page; ids that do
    not cast to text) is a `DataFormatError` naming the file, its size and Arrow's reason.
    """
    try:
        _require_columns(pq.read_schema(path).names, wanted, origin)
        table = pq.read_table(path, columns=wanted)
        _require_plain_values(table, [name for name in wanted if name not in id_columns], origin)
        for name in id_columns:
            column = pc.cast(table[name], pyarrow.string())
            table = table.set_column(table.schema.get_field_index(name), name, column)
        frame = table.to_pandas().reset_index(drop=True)  # source_row is the position, not a stored index
    except pyarrow.ArrowException as error:
        size = path.stat().st_size
        raise origin.error(f"not a readable Parquet file ({size} bytes; {type(error).__name__}: {error})") from error
    if frame.empty:
        raise origin.error("file is empty (no data rows)")
    return frame


def _require_plain_values(table: pyarrow.Table, columns: list[str], origin: _Origin) -> None:
    """Rating and timestamp columns hold numbers, text or datetimes; a list or struct column is the wrong column."""
    for name in columns:
        kind = table.schema.field(name).type
        if not any(
            check(kind)
            for check in (
                pyarrow.types.is_integer,
                pyarrow.types.is_floating,
                pyarrow.types.is_decimal,
                pyarrow.types.is_boolean,
                pyarrow.types.is_string,
                pyarrow.types.is_large_string,
                pyarrow.types.is_timestamp,
                pyarrow.types.is_null,
            )
        ):
            raise origin.error(f"column {name!r} holds {kind} values, not numbers, text or datetimes")


def _require_columns(
    present: list[str], required: list[str] | tuple[str, ...], origin: _Origin, row: int | None = None
) -> None:
    missing = [name for name in required if name not in present]
    if missing:
        raise origin.error(
            f"missing required column(s) {', '.join(map(repr, missing))} (found {', '.join(map(repr, present))})",
            row,
        )


def _parse_numbers(raw: pd.Series, origin: _Origin, column: str) -> _ParsedColumn:
    """Float64 values; empty fields and cells that are not a finite number are NaN, the latter described."""
    numbers = pd.to_numeric(raw, errors="coerce").astype("float64")
    bad = raw.notna() & ~np.isfinite(numbers)
    _reject_unparsable_column(raw, bad, origin, column, "numbers")
    descriptions = np.where(numbers.isna(), "not a number", "not a finite number")
    return _ParsedColumn(numbers.mask(bad), _describe_malformed(raw, bad, pd.Series(descriptions, index=raw.index)))


def _parse_ratings(raw: pd.Series, origin: _Origin, column: str) -> _ParsedColumn:
    """Numbers, as `_parse_numbers`, where a missing rating (empty, NaN, a `MISSING_RATING_TEXTS` text, a row cut
    short) is described as `MISSING`: the source has a rating column, so validation decides whether it may be."""
    missing = raw.isna().to_numpy()
    if not pd.api.types.is_numeric_dtype(raw):
        codes, distinct = pd.factorize(raw)  # few distinct ratings: look at each text once
        says_missing = np.array([str(text).strip().lower() in MISSING_RATING_TEXTS for text in distinct], dtype=bool)
        if len(distinct):
            missing |= (codes >= 0) & says_missing[codes]
    missing = pd.Series(missing, index=raw.index)
    parsed = _parse_numbers(raw.mask(missing), origin, column)
    return _ParsedColumn(parsed.data, parsed.malformed.mask(missing, MISSING))


def _parse_timestamps(raw: pd.Series, origin: _Origin, column: str) -> _ParsedColumn:
    """Unix seconds from numbers, datetimes or ISO 8601 strings (times without a zone are UTC)."""
    if pd.api.types.is_datetime64_any_dtype(raw):
        moments = raw.dt.tz_localize("UTC") if raw.dt.tz is None else raw
        seconds = (moments - UNIX_EPOCH) / ONE_SECOND
        return _whole_seconds(_ParsedColumn(seconds, pd.Series(None, index=raw.index, dtype=object)), raw)
    if _mostly_numbers(raw):
        return _whole_seconds(_parse_numbers(raw, origin, column), raw)
    moments = _parse_iso_datetimes(raw)
    bad = raw.notna() & moments.isna()
    _reject_unparsable_column(raw, bad, origin, column, "ISO 8601 datetimes")
    return _whole_seconds(
        _ParsedColumn((moments - UNIX_EPOCH) / ONE_SECOND, _describe_malformed(raw, bad, "not an ISO 8601 datetime")),
        raw,
    )


def _parse_iso_datetimes(raw: pd.Series) -> pd.Series:
    """UTC datetimes, NaT where unparsable.

    Values with and without a zone offset are parsed apart: in one pandas call a value without
    offset silently takes the offset of the value before it (pandas 2.3, format="ISO8601").
    Only values that start with a year are parsed: pandas reads 'now' and 'today' as the clock's time.
    """
    has_offset = raw.str.contains(ISO_ZONE_OFFSET, na=False)
    starts_with_year = raw.str.match(ISO_YEAR_START, na=False)
    moments = pd.Series(pd.NaT, index=raw.index, dtype="datetime64[ns, UTC]")
    for part in (starts_with_year & has_offset, starts_with_year & ~has_offset):
        moments[part] = pd.to_datetime(raw[part], utc=True, format="ISO8601", errors="coerce")
    return moments


def _mostly_numbers(raw: pd.Series) -> bool:
    """Timestamps are numbers when at least half the present values are, so a stray first value is a bad row."""
    if pd.api.types.is_numeric_dtype(raw):
        return True
    present = raw.dropna()
    return present.empty or pd.to_numeric(present, errors="coerce").notna().mean() >= 0.5


def _reject_unparsable_column(raw: pd.Series, bad: pd.Series, origin: _Origin, column: str, expected: str) -> None:
    """A column in which no present value parses is the wrong column (or delimiter), not a set of bad rows."""
    if not bad.any() or bad.sum() < raw.notna().sum():
        return
    offenders = raw[bad]
    shown = "; ".join(
        f"{origin.unit} {row}: {_plain(value)!r}" for row, value in offenders.iloc[:MAX_REPORTED_VALUES].items()
    )
    raise DataFormatError(
        f"{origin.name}: column {column!r} must hold {expected}, and none of its {len(offenders)} value(s) does "
        f"(wrong column or delimiter?); first {min(len(offenders), MAX_REPORTED_VALUES)}: {shown}"
    )


def _describe_malformed(raw: pd.Series, bad: pd.Series, description: str | pd.Series) -> pd.Series:
    """`<description> (<value>)` where a cell did not parse, None elsewhere."""
    described = pd.Series(None, index=raw.index, dtype=object)
    if bad.any():
        what = description[bad] if isinstance(description, pd.Series) else description
        described[bad] = what + " (" + raw[bad].map(lambda value: repr(_plain(value))) + ")"
    return described


def _plain(value: object) -> object:
    """The plain Python value, so messages read `inf`, not `np.float64(inf)`."""
    return value.item() if isinstance(value, np.generic) else value


def _whole_seconds(seconds: _ParsedColumn, raw: pd.Series) -> _ParsedColumn:
    """Floor to int64, or nullable Int64 when some are missing (validation quarantines those rows).

    Seconds that do not fit int64 (1e20, 99999999999999999999999) are missing and described as
    `OUT_OF_RANGE` with the value as written: a cast would wrap them to INT64_MIN.
    """
    floored = np.floor(seconds.data.astype("float64"))
    too_large = floored.abs() >= INT64_SECONDS_BOUND
    floored = floored.mask(too_large)
    malformed = seconds.malformed.where(~too_large, _describe_malformed(raw, too_large, OUT_OF_RANGE))
    return _ParsedColumn(floored.astype("Int64" if floored.isna().any() else "int64"), malformed)


def _positions_in_user(user_ids: pd.Series) -> pd.Series:
    """0-based position of each row within its user, in row order: time for order-only sources."""
    return user_ids.groupby(user_ids, dropna=False, sort=False).cumcount().astype("int64")


def _reject_repeated_users(users: pd.Series, user_lines: np.ndarray, origin: _Origin) -> None:
    """A user on two lines would give two sequences the same positions."""
    repeated = users.duplicated()
    if repeated.any():
        user = users[repeated].iloc[0]
        lines = user_lines[users.eq(user).to_numpy()]
        raise origin.error(f"user {user!r} already has a sequence on line {lines[0]}", int(lines[1]))


def _load_pairs(path: Path) -> np.ndarray:
    """An (n, 2) integer array of (user, item) pairs; anything else is a format error."""
    try:
        pairs = np.load(path, allow_pickle=False)
    except ValueError as error:
        raise DataFormatError(f"{path}: not a plain .npy array ({error})") from error
    if pairs.ndim != 2 or pairs.shape[1] != 2 or not np.issubdtype(pairs.dtype, np.integer):
        raise DataFormatError(
            f"{path}: expected integer (user, item) pairs of shape (n, 2), "
            f"got {pairs.dtype} array of shape {pairs.shape}"
        )
    return pairs.astype(np.int64, copy=False)


def _diffrec_items(mapping_path: Path, movies_path: Path) -> pd.DataFrame:
    """Items under DiffRec ids, with title, year and genres joined from MovieLens `movies.dat`."""
    mapping_origin = _Origin(str(mapping_path))
    mapping_names = _header_names(mapping_path, mapping_origin, sep="\t", quoting=csv.QUOTE_NONE)
    _require_columns(mapping_names, ("diffrec_item_id", "movielens_movie_id"), mapping_origin, row=1)
    mapping = _read_delimited(
        mapping_path, mapping_origin, mapping_names, has_header=True, sep="\t", quoting=csv.QUOTE_NONE
    )
    joined = mapping.merge(_movies_table(movies_path), how="left", left_on="movielens_movie_id", right_on="movie_id")
    title, year = _split_title_year(joined["full_title"])
    return _item_frame(joined["diffrec_item_id"], title, year, joined["genres"])


def _movielens_movies(movies_path: Path) -> pd.DataFrame:
    """Items under MovieLens ids (the ML-1M sequences keep them), title, year and genres from `movies.dat`."""
    movies = _movies_table(movies_path)
    title, year = _split_title_year(movies["full_title"])
    return _item_frame(movies["movie_id"].astype(str), title, year, movies["genres"])


def _movies_table(movies_path: Path) -> pd.DataFrame:
    """GroupLens ML-1M `movies.dat`: `id::title (year)::genre|genre`, latin-1."""
    return _read_delimited(
        movies_path,
        _Origin(str(movies_path)),
        ["movie_id", "full_title", "genres"],
        has_header=False,
        sep="::",
        engine="python",
        encoding="latin-1",
        quoting=csv.QUOTE_NONE,
    )


def _movielens_member(path: Path, member: str) -> tuple[str, bytes] | None:
    """Display name and bytes of a GroupLens file, from an unpacked folder or from inside the zip."""
    if path.is_dir():
        file = path / member
        return (str(file), file.read_bytes()) if file.exists() else None
    with zipfile.ZipFile(path) as archive:
        matches = [name for name in archive.namelist() if PurePosixPath(name).name == member]
        return (f"{path}:{matches[0]}", archive.read(matches[0])) if matches else None


def _movielens_items(name: str, content: bytes) -> pd.DataFrame:
    """GroupLens `u.item` (latin-1, '|' separated): year from the title, genres from 19 flag columns."""
    table = _read_delimited(
        io.BytesIO(content),
        _Origin(name),
        ["item_id", "full_title", "release_date", "video_release_date", "url", *MOVIELENS_GENRES],
        has_header=False,
        sep="|",
        encoding="latin-1",
        quoting=csv.QUOTE_NONE,
    )
    title, year = _split_title_year(table["full_title"])
    flags = table[list(MOVIELENS_GENRES)].eq("1")
    genres = flags.apply(lambda row: "|".join(row.index[row]), axis=1)
    return _item_frame(table["item_id"], title, year, genres)


def _split_title_year(full_titles: pd.Series) -> tuple[pd.Series, pd.Series]:
    """'Toy Story (1995)' -> ('Toy Story', 1995); titles without a year keep their text, year missing."""
    parts = full_titles.str.extract(TITLE_WITH_YEAR)
    return parts["title"].fillna(full_titles), pd.to_numeric(parts["year"])


def _interaction_frame(
    user_id: Values,
    item_id: Values,
    timestamp: Values,
    rating: Values | float,
    source_row: Values,
    split: Values | None = None,
    malformed: dict[str, pd.Series] | None = None,
) -> pd.DataFrame:
    """The canonical interaction columns in their fixed order, with a fresh 0-based index.

    A `malformed_<column>` column follows only for columns where some cell did not parse.
    """
    columns = {
        "user_id": user_id,
        "item_id": item_id,
        "timestamp": timestamp,
        "rating": rating,
        "source_row": source_row,
    }
    if split is not None:
        columns["split"] = split
    for name, descriptions in (malformed or {}).items():
        if descriptions.notna().any():
            columns[MALFORMED_PREFIX + name] = descriptions
    frame = pd.DataFrame(columns).reset_index(drop=True)
    return frame.astype({"rating": "float64", "source_row": "int64"})


def _item_frame(item_id: Values, title: Values, year: Values, genres: Values) -> pd.DataFrame:
    """The canonical item columns; year is nullable because some sources lack it."""
    frame = pd.DataFrame({"item_id": item_id, "title": title, "year": year, "genres": genres})
    return frame.reset_index(drop=True).astype({"year": "Int64"})
