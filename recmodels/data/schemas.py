"""Row-level validation: keep the rows that make sense, quarantine the others with their reasons.

A bad row must not fail a whole pipeline run, but it must not vanish silently either: every
rejected row comes back once, with every check it failed. A cell the reader could not parse
(described in its `malformed_<column>` column) is one of those reasons, e.g.
`rating: not a number ('abc')`; the checks that only fail because that cell is missing are not
repeated. Problems that concern a whole column (missing, wrong dtype) are not row problems and
raise `DataFormatError` instead.

Ids are text: before the checks, `user_id` and `item_id` are normalised (Unicode NFKC, then
whitespace and zero-width characters stripped from both ends; `ValidationRules.normalise_ids`),
so `" 10"`, `"10\u00a0"` and `"\u200b10"` are the id `"10"`; an id empty after that is quarantined.
Nothing else is equated: `"01"`, `"1"` and `"1.0"` stay three ids. Kept rows carry the normalised
ids, quarantined rows the ids as read; `ids_normalised` counts the rows whose id changed.

A rating a source with a rating column leaves out (the reader marks it `missing`) is quarantined
as `rating: missing` unless `ValidationRules.ratings_optional`; a source without a rating column
(a sequence file, `rating=-` in a column map) has no ratings to miss.

Every step is vectorised, so a mostly bad table validates about as fast as a clean one
(`benchmarks/validation.py`); uniqueness of the interaction key is checked here with
`DataFrame.duplicated` rather than by pandera, whose duplicate report is quadratic in the duplicates.
"""

from __future__ import annotations

import copy
import dataclasses
import re
import time
import unicodedata
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pandera.pandas as pa

from recmodels.data.readers import DESCRIPTION_KEYS, MALFORMED_PREFIX, MISSING, DataFormatError

SPLITS = ("train", "valid", "test")
INTERACTION_KEY = ["user_id", "item_id", "timestamp"]
ID_COLUMNS = ("user_id", "item_id")
PLAUSIBLE_YEARS = (1870, 2100)
MALFORMED_KEY = "malformed"  # by_reason key `<column>: malformed`
DUPLICATE_KEY = "duplicate"  # by_reason key `user_id, item_id, timestamp: duplicate`
ID_EDGES = re.compile(r"^[\s\u200b-\u200d\u2060\ufeff]+|[\s\u200b-\u200d\u2060\ufeff]+$")


@dataclass(frozen=True)
class ValidationRules:
    """Dataset-specific rules; None means no rating bound, or 'now' for max_timestamp.

    ``ratings_optional``: a rating missing from a source with a rating column is kept (NaN) rather
    than quarantined. ``normalise_ids``: NFKC and blank/zero-width stripping of user and item ids.
    """

    rating_min: float | None = None
    rating_max: float | None = None
    max_timestamp: int | None = None
    ratings_optional: bool = False
    normalise_ids: bool = True


@dataclass(frozen=True, eq=False)
class ValidationResult:
    """Rows that passed, rows that did not (with a `reasons` column), counts per failed check, and per id
    column the rows whose id normalisation changed."""

    valid: pd.DataFrame
    quarantined: pd.DataFrame
    by_reason: dict[str, int]
    ids_normalised: dict[str, int] = field(default_factory=dict)

    @property
    def summary(self) -> dict[str, object]:
        """Counts; ``ids_normalised`` is present when normalising changed some id."""
        summary: dict[str, object] = {
            "rows_in": len(self.valid) + len(self.quarantined),
            "rows_kept": len(self.valid),
            "rows_quarantined": len(self.quarantined),
            "by_reason": dict(self.by_reason),
        }
        if any(self.ids_normalised.values()):
            summary["ids_normalised"] = dict(self.ids_normalised)
        return summary


def normalise_id(value: str) -> str:
    """NFKC, then whitespace and zero-width characters stripped from both ends."""
    return ID_EDGES.sub("", unicodedata.normalize("NFKC", value))


def interactions_schema(rules: ValidationRules = ValidationRules()) -> pa.DataFrameSchema:
    """Interaction checks; later duplicates of a (user_id, item_id, timestamp) row are rejected."""
    max_timestamp = rules.max_timestamp if rules.max_timestamp is not None else int(time.time())
    rating_checks = []
    if rules.rating_min is not None:
        rating_checks.append(pa.Check.ge(rules.rating_min))
    if rules.rating_max is not None:
        rating_checks.append(pa.Check.le(rules.rating_max))
    return pa.DataFrameSchema(
        {
            "user_id": pa.Column(str, checks=_not_empty()),
            "item_id": pa.Column(str, checks=_not_empty()),
            "timestamp": pa.Column("int64", checks=[pa.Check.ge(0), pa.Check.le(max_timestamp)]),
            "rating": pa.Column("float64", nullable=True, checks=rating_checks),
            "source_row": pa.Column("int64", required=False),
            "split": pa.Column(str, checks=pa.Check.isin(SPLITS), required=False),
        },
        unique=INTERACTION_KEY,
        report_duplicates="exclude_first",
    )


def items_schema() -> pa.DataFrameSchema:
    """Item checks; later rows repeating an item_id are rejected."""
    return pa.DataFrameSchema(
        {
            "item_id": pa.Column(str, checks=_not_empty(), unique=True, report_duplicates="exclude_first"),
            "title": pa.Column(str, nullable=True),
            "year": pa.Column("Int64", nullable=True, checks=pa.Check.in_range(*PLAUSIBLE_YEARS)),
            "genres": pa.Column(str, nullable=True, required=False),
        }
    )


def validate_interactions(df: pd.DataFrame, rules: ValidationRules = ValidationRules()) -> ValidationResult:
    """Split interactions into valid and quarantined rows; valid timestamps come back as int64."""
    result = _validate(df, interactions_schema(rules), rules)
    if result.valid["timestamp"].dtype == np.int64:
        return result
    return dataclasses.replace(result, valid=result.valid.astype({"timestamp": "int64"}))


def validate_items(df: pd.DataFrame, rules: ValidationRules = ValidationRules()) -> ValidationResult:
    """Split items into valid and quarantined rows (item ids normalised as the interactions' are)."""
    return _validate(df, items_schema(), rules)


def _not_empty() -> pa.Check:
    return pa.Check(_has_text, name="not_empty")


def _has_text(values: pd.Series) -> pd.Series:
    """True where a value is more than blanks (missing values are not_nullable's business); each distinct id once."""
    codes, distinct = pd.factorize(values)
    has_text = np.array([True] + [not isinstance(value, str) or bool(value.strip()) for value in distinct])
    return pd.Series(has_text[codes + 1], index=values.index)  # code -1 (missing) -> True


def _validate(df: pd.DataFrame, schema: pa.DataFrameSchema, rules: ValidationRules) -> ValidationResult:
    """Run the schema lazily and map each failure back to its row through the (reset) index.

    The reader's `malformed_<column>` descriptions become reasons of their own and leave the output.
    Text columns whose checks look at one value at a time (the ids) are checked once per distinct value
    and their failures spread to the rows holding that value; the duplicate key is compared on integer
    codes. Strings are hashed once per column, which keeps validation linear in the rows
    (docs/scale-out.md, "How cost grows with the log").
    """
    rows = df if df.index.equals(pd.RangeIndex(len(df))) else df.reset_index(drop=True)
    malformed_columns = [name for name in rows.columns if str(name).startswith(MALFORMED_PREFIX)]
    malformed = _describe_malformed_cells(rows[malformed_columns], rules.ratings_optional)
    rows = rows.drop(columns=malformed_columns) if malformed_columns else rows
    ids = [name for name in ID_COLUMNS if name in rows.columns] if rules.normalise_ids else []
    per_value = _checked_per_value(schema, rows)
    distinct = {name: _Distinct.of(rows[name]) for name in dict.fromkeys(per_value + ids)}
    ids_normalised: dict[str, int] = {}
    for name in ids:
        distinct[name], ids_normalised[name] = distinct[name].normalised()
    checked = rows.assign(**{name: distinct[name].row_values() for name in ids if ids_normalised[name]})
    distinct = {name: distinct[name] for name in per_value}
    unique_key = tuple(schema.unique or ())
    failures = _failure_cases(schema, checked, distinct)
    column_level = failures["index"].isna() | _fails_for_whole_column(failures, len(checked))
    _raise_column_errors(failures[column_level], checked)
    key_columns = pd.DataFrame(
        {name: distinct[name].codes if name in distinct else checked[name] for name in unique_key}
    )
    entries = pd.concat(
        [
            _without_checks_on_malformed_cells(_describe_row_failures(failures[~column_level]), malformed),
            _describe_duplicates(checked, key_columns, malformed),
            malformed,
        ],
        ignore_index=True,
    ).sort_values("row", kind="stable")
    reasons = _joined_per_row(entries)
    rejected = rows.index.isin(reasons.index)
    valid = checked[~rejected].reset_index(drop=True)
    quarantined = rows[rejected].assign(reasons=reasons).reset_index(drop=True)
    if len(valid) + len(quarantined) != len(rows):
        raise RuntimeError(f"validation lost rows: {len(rows)} in, {len(valid)} kept + {len(quarantined)} quarantined")
    by_reason = entries.drop_duplicates(["row", "key"])["key"].value_counts().to_dict()
    return ValidationResult(valid, quarantined, {str(k): int(v) for k, v in by_reason.items()}, ids_normalised)


@dataclass(frozen=True)
class _Distinct:
    """A column as its distinct values (a Series, each value once) and per row the position of its value."""

    codes: np.ndarray
    values: pd.Series

    @classmethod
    def of(cls, column: pd.Series) -> "_Distinct":
        """Missing values become one value of their own, after the others (half the cost of factorising them in)."""
        codes, values = pd.factorize(column)
        distinct = pd.Series(values, dtype=column.dtype)
        missing = codes < 0
        if missing.any():
            distinct = pd.concat([distinct, column[missing].iloc[:1]], ignore_index=True)
            codes[missing] = len(distinct) - 1
        return cls(codes, distinct)

    def normalised(self) -> tuple["_Distinct", int]:
        """`normalise_id` applied to each text value once (values that become equal merge), and the number of
        rows whose value changed."""
        values = self.values.to_numpy(dtype=object)
        fixed = np.array([normalise_id(value) if isinstance(value, str) else value for value in values], dtype=object)
        differs = np.array([isinstance(value, str) and value != new for value, new in zip(values, fixed)], dtype=bool)
        changed = int(np.bincount(self.codes, minlength=len(values))[differs].sum())
        if not changed:
            return self, 0
        merged_codes, merged = pd.factorize(fixed, use_na_sentinel=False)
        return _Distinct(merged_codes[self.codes], pd.Series(merged, dtype=object)), changed

    def row_values(self) -> np.ndarray:
        return self.values.to_numpy(dtype=object)[self.codes]


def _checked_per_value(schema: pa.DataFrameSchema, rows: pd.DataFrame) -> list[str]:
    """Text columns present in ``rows`` whose checks need no other row (no column-level uniqueness)."""
    return [
        name
        for name, column in schema.columns.items()
        if name in rows.columns and str(column.dtype) == "str" and not column.unique
    ]


def _failure_cases(schema: pa.DataFrameSchema, rows: pd.DataFrame, distinct: dict[str, _Distinct]) -> pd.DataFrame:
    """Every failure pandera finds (one row per failing value and row), or none, column by column in the schema's order.

    The interaction key is not checked here (`_describe_duplicates` is). The ``distinct`` columns are validated on
    their distinct values, each failure then repeated for every row holding the value; the others on their rows.
    Failing values stay as they were (``-1`` beside ``7.0`` is not ``-1.0``).
    """
    without_key = copy.copy(schema)
    without_key.unique = None
    parts = []
    for name in schema.columns:
        one_column = without_key.select_columns([name])
        if name in distinct:
            parts.append(
                _per_row(_schema_failures(one_column, distinct[name].values.to_frame(name)), distinct[name].codes)
            )
        else:
            parts.append(_schema_failures(one_column, rows[[name]] if name in rows.columns else rows[[]]))
    found = [part.astype({"failure_case": object}) for part in parts if len(part)]
    return pd.concat(found, ignore_index=True) if found else parts[0]


def _schema_failures(schema: pa.DataFrameSchema, rows: pd.DataFrame) -> pd.DataFrame:
    try:
        schema.validate(rows, lazy=True)
    except pa.errors.SchemaErrors as errors:
        return errors.failure_cases
    return pd.DataFrame(columns=["schema_context", "column", "check", "check_number", "failure_case", "index"])


def _per_row(failures: pd.DataFrame, codes: np.ndarray) -> pd.DataFrame:
    """Failures of distinct values, one per row holding such a value; failures of no value (a column's) as they are."""
    of_value = failures["index"].notna().to_numpy()
    positions = failures.loc[of_value, "index"].astype(np.int64).to_numpy()
    holding = np.flatnonzero(np.isin(codes, positions))
    rows = pd.DataFrame({"position": codes[holding], "index": holding.astype(object)})
    spread = failures[of_value].drop(columns="index").assign(position=positions).merge(rows, on="position")
    return pd.concat([failures[~of_value], spread.drop(columns="position")], ignore_index=True)


def _fails_for_whole_column(failures: pd.DataFrame, row_count: int) -> pd.Series:
    """Per-value dtype failures that hit every row: the column has the wrong type, not some rows."""
    codes, checks = pd.factorize(failures["check"].astype(str))
    dtype_checks = np.array([str(check).startswith("dtype(") for check in checks] + [False], dtype=bool)
    is_dtype_failure = pd.Series(dtype_checks[codes], index=failures.index) & failures["index"].notna()
    failing_rows = failures[is_dtype_failure].groupby("column")["index"].nunique()
    wrong_columns = failing_rows.index[failing_rows == row_count]
    return is_dtype_failure & failures["column"].isin(wrong_columns)


def _raise_column_errors(column_failures: pd.DataFrame, rows: pd.DataFrame) -> None:
    """Failures that concern a whole column make the input unusable rather than some rows bad."""
    if column_failures.empty:
        return
    problems = []
    for (column, check), failures in column_failures.groupby(["column", "check"], dropna=False, sort=False):
        first_case = failures["failure_case"].iloc[0]
        if check == "column_in_dataframe":
            problems.append(f"missing column {first_case!r}")
        else:
            problems.append(
                f"column {column!r} (dtype {rows[column].dtype}) fails {check}, first failure: {_show(first_case)}"
            )
    raise DataFormatError("; ".join(problems))


def _describe_row_failures(failures: pd.DataFrame) -> pd.DataFrame:
    """One entry per (row, failed check): `key` for counting, `text` with the offending value, `column` read."""
    column = failures["column"].astype(str)
    keys = _joined(column, ": ", failures["check"].astype(str))
    return _entries(
        failures["index"].astype("int64").to_numpy(),
        column.to_numpy(),
        keys,
        _joined(pd.Series(keys), " (value=", _shown(failures["failure_case"]), ")"),
    )


def _describe_duplicates(rows: pd.DataFrame, key_columns: pd.DataFrame, malformed: pd.DataFrame) -> pd.DataFrame:
    """One entry per later row repeating an earlier row's key (``key_columns``: the key's columns, ids as integer
    codes), keyed by the key in its own order; the values shown are the rows'.

    A row whose key holds a malformed cell is no duplicate: that cell is missing only because it did not parse.
    """
    unique_key = list(key_columns.columns)
    if not unique_key:
        return _entries()
    repeated = key_columns.duplicated(keep="first").to_numpy()
    unreadable = malformed.loc[malformed["column"].isin(unique_key), "row"].to_numpy()
    repeated[unreadable] = False
    if not repeated.any():
        return _entries()
    key = f"{', '.join(unique_key)}: {DUPLICATE_KEY}"
    values = [_shown(rows.loc[repeated, column]) for column in unique_key]
    separated = [part for value in values for part in (", ", value)][1:]
    return _entries(np.flatnonzero(repeated), "", key, _joined(f"{key} (value=(", *separated, "))"))


def _describe_malformed_cells(malformed: pd.DataFrame, ratings_optional: bool) -> pd.DataFrame:
    """One entry per cell the reader marked, in the shape of `_describe_row_failures`; a missing rating only when
    ratings are not optional. The key names the kind (`missing`, `out of range`, `no line end`, else `malformed`)."""
    parts = [_entries()]
    for name in malformed.columns:
        column = name.removeprefix(MALFORMED_PREFIX)
        described = malformed[name]
        marked = described.notna().to_numpy()
        if ratings_optional and column == "rating":
            marked &= described.ne(MISSING).to_numpy()
        codes, distinct = pd.factorize(described[marked])
        keys = np.array([f"{column}: {_kind(str(text))}" for text in distinct], dtype=object)
        texts = np.array([f"{column}: {text}" for text in distinct], dtype=object)
        parts.append(_entries(np.flatnonzero(marked), column, keys[codes], texts[codes]))
    return pd.concat(parts, ignore_index=True).sort_values("row", kind="stable")


def _kind(description: str) -> str:
    return next((key for prefix, key in DESCRIPTION_KEYS.items() if description.startswith(prefix)), MALFORMED_KEY)


def _entries(row=(), column=(), key=(), text=()) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "row": np.asarray(row, dtype=np.int64),
            "column": np.asarray(column, dtype=object),
            "key": np.asarray(key, dtype=object),
            "text": np.asarray(text, dtype=object),
        }
    )


def _without_checks_on_malformed_cells(failures: pd.DataFrame, malformed: pd.DataFrame) -> pd.DataFrame:
    """Drop failures that read a malformed cell: it is missing only because it did not parse."""
    if malformed.empty or failures.empty:
        return failures
    bad_cells = pd.MultiIndex.from_frame(malformed[["row", "column"]])
    reads_bad_cell = pd.MultiIndex.from_frame(failures[["row", "column"]]).isin(bad_cells)
    return failures[~reads_bad_cell]


def _joined_per_row(entries: pd.DataFrame) -> pd.Series:
    """Row -> its reasons joined by '; ', in entry order, built column by column of a row x n-th reason table."""
    if entries.empty:
        return pd.Series(dtype=object)
    nth = entries.groupby("row", sort=False).cumcount().to_numpy()
    wide = pd.DataFrame({"row": entries["row"].to_numpy(), "nth": nth, "text": entries["text"].to_numpy()})
    table = wide.pivot(index="row", columns="nth", values="text")
    joined = table[0].to_numpy(dtype=object, copy=True)
    for position in table.columns[1:]:
        more = table[position].to_numpy(dtype=object)
        present = pd.notna(more)
        joined[present] = joined[present] + "; " + more[present]
    return pd.Series(joined, index=table.index, dtype=object)


def _joined(*parts: str | pd.Series) -> np.ndarray:
    """Per row, the parts (texts, or one text for all rows) concatenated.

    Reasons repeat (one text for every row with `rating: missing`): each distinct combination of the
    varying parts is built once, unless most combinations are distinct (duplicates name their key).
    """
    varying = {f"part{n}": part.to_numpy(dtype=object) for n, part in enumerate(parts) if not isinstance(part, str)}
    frame = pd.DataFrame(varying)
    codes = frame.groupby(list(varying), sort=False, dropna=False).ngroup().to_numpy()
    distinct = frame.drop_duplicates()
    if len(distinct) > len(frame) // 4:
        return _concatenated(parts, {name: values.astype(str) for name, values in varying.items()}, len(frame))
    return _concatenated(parts, {name: distinct[name].astype(str).to_numpy() for name in varying}, len(distinct))[codes]


def _concatenated(parts: tuple[str | pd.Series, ...], varying: dict[str, np.ndarray], size: int) -> np.ndarray:
    built = np.full(size, "", dtype=object)
    for n, part in enumerate(parts):
        built = built + (part if isinstance(part, str) else varying[f"part{n}"].astype(object))
    return built


def _shown(values: pd.Series) -> pd.Series:
    """`_show` of each value, computed once per distinct value; every kind of missing value reads `nan`."""
    codes, distinct = pd.factorize(values, use_na_sentinel=False)
    shown = np.array([_show(value) for value in distinct], dtype=object)
    shown[[value is pd.NA or value is pd.NaT for value in distinct]] = "nan"  # NaN, NA, NaT: one missing value
    return pd.Series(shown[codes], index=values.index, dtype=object)


def _show(value: object) -> str:
    """repr of the plain Python value, so messages read `-5`, not `np.int64(-5)`."""
    return repr(value.item() if isinstance(value, np.generic) else value)
