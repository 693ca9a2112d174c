"""Row-level validation: keep the rows that make sense, quarantine the others with their reasons.

A bad row must not fail a whole pipeline run, but it must not vanish silently either: every
rejected row comes back once, with every check it failed. A cell the reader could not parse
(described in its `malformed_<column>` column) is one of those reasons, e.g.
`rating: not a number ('abc')`; the checks that only fail because that cell is missing are not
repeated. Problems that concern a whole column (missing, wrong dtype) are not row problems and
raise `DataFormatError` instead.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pandera.pandas as pa

from recmodels.data.readers import MALFORMED_PREFIX, DataFormatError

SPLITS = ("train", "valid", "test")
INTERACTION_KEY = ["user_id", "item_id", "timestamp"]
PLAUSIBLE_YEARS = (1870, 2100)
DUPLICATE_CHECK = "multiple_fields_uniqueness"
MALFORMED_KEY = "malformed"  # by_reason key `<column>: malformed`


@dataclass(frozen=True)
class ValidationRules:
    """Dataset-specific limits; None means no rating bound, or 'now' for max_timestamp."""

    rating_min: float | None = None
    rating_max: float | None = None
    max_timestamp: int | None = None


@dataclass(frozen=True, eq=False)
class ValidationResult:
    """Rows that passed, rows that did not (with a `reasons` column), and counts per failed check."""

    valid: pd.DataFrame
    quarantined: pd.DataFrame
    by_reason: dict[str, int]

    @property
    def summary(self) -> dict[str, object]:
        return {
            "rows_in": len(self.valid) + len(self.quarantined),
            "rows_kept": len(self.valid),
            "rows_quarantined": len(self.quarantined),
            "by_reason": dict(self.by_reason),
        }


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
    result = _validate(df, interactions_schema(rules))
    return dataclasses.replace(result, valid=result.valid.astype({"timestamp": "int64"}))


def validate_items(df: pd.DataFrame) -> ValidationResult:
    """Split items into valid and quarantined rows."""
    return _validate(df, items_schema())


def _not_empty() -> pa.Check:
    return pa.Check(lambda values: values.str.strip().str.len() > 0, name="not_empty")


def _validate(df: pd.DataFrame, schema: pa.DataFrameSchema) -> ValidationResult:
    """Run the schema lazily and map each failure back to its row through the (reset) index.

    The reader's `malformed_<column>` descriptions become reasons of their own and leave the output.
    """
    rows = df.reset_index(drop=True)
    malformed_columns = [name for name in rows.columns if str(name).startswith(MALFORMED_PREFIX)]
    malformed = _describe_malformed_cells(rows[malformed_columns])
    rows = rows.drop(columns=malformed_columns)
    failures = _failure_cases(schema, rows)
    column_level = failures["index"].isna() | _fails_for_whole_column(failures, len(rows))
    _raise_column_errors(failures[column_level], rows)
    row_failures = _describe_row_failures(failures[~column_level], tuple(schema.unique or ()))
    row_failures = pd.concat(
        [_without_checks_on_malformed_cells(row_failures, malformed), malformed], ignore_index=True
    ).sort_values("row", kind="stable")
    reasons = row_failures.groupby("row")["text"].agg("; ".join)
    rejected = rows.index.isin(reasons.index)
    valid = rows[~rejected].reset_index(drop=True)
    quarantined = rows[rejected].assign(reasons=reasons).reset_index(drop=True)
    if len(valid) + len(quarantined) != len(rows):
        raise RuntimeError(f"validation lost rows: {len(rows)} in, {len(valid)} kept + {len(quarantined)} quarantined")
    by_reason = row_failures.drop_duplicates(["row", "key"])["key"].value_counts().to_dict()
    return ValidationResult(valid, quarantined, by_reason)


def _failure_cases(schema: pa.DataFrameSchema, rows: pd.DataFrame) -> pd.DataFrame:
    """Every failure pandera finds (one row per failing value), or none."""
    try:
        schema.validate(rows, lazy=True)
    except pa.errors.SchemaErrors as errors:
        return errors.failure_cases
    return pd.DataFrame(columns=["schema_context", "column", "check", "check_number", "failure_case", "index"])


def _fails_for_whole_column(failures: pd.DataFrame, row_count: int) -> pd.Series:
    """Per-value dtype failures that hit every row: the column has the wrong type, not some rows."""
    is_dtype_failure = failures["check"].astype(str).str.startswith("dtype(") & failures["index"].notna()
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


def _describe_row_failures(failures: pd.DataFrame, unique_key: tuple[str, ...]) -> pd.DataFrame:
    """One entry per (row, failed check): `key` for counting, `text` with the offending value,
    `columns` the tuple of columns the check read (a duplicate reads the whole `unique_key`).

    pandera reports a duplicate once per key column (none for a missing value); those entries are
    merged into one.
    """
    failures = failures.assign(row=failures["index"].astype("int64"))
    is_duplicate = failures["check"].eq(DUPLICATE_CHECK)
    single = failures[~is_duplicate]
    single_keys = single["column"].astype(str) + ": " + single["check"].astype(str)
    entries = [
        pd.DataFrame(
            {
                "row": single["row"],
                "key": single_keys,
                "value": single["failure_case"].map(_show),
                "columns": single["column"].map(lambda column: (column,)),
            }
        )
    ]
    duplicates = failures[is_duplicate].groupby("row", sort=False)
    entries.append(
        pd.DataFrame(
            {
                "key": duplicates["column"].agg(", ".join) + ": duplicate",
                "value": duplicates["failure_case"].agg(lambda values: "(" + ", ".join(map(_show, values)) + ")"),
                "columns": [unique_key] * duplicates.ngroups,
            }
        ).reset_index()
    )
    described = pd.concat(entries, ignore_index=True).sort_values("row", kind="stable")
    return described.assign(text=described["key"] + " (value=" + described["value"] + ")")


def _describe_malformed_cells(malformed: pd.DataFrame) -> pd.DataFrame:
    """One entry per cell the reader could not parse, in the shape of `_describe_row_failures`."""
    cells = (
        malformed.rename(columns=lambda name: name.removeprefix(MALFORMED_PREFIX))
        .rename_axis("row")
        .reset_index()
        .melt(id_vars="row", var_name="column", value_name="description")
        .dropna(subset="description")
    )
    return pd.DataFrame(
        {
            "row": cells["row"].astype("int64"),
            "key": cells["column"] + f": {MALFORMED_KEY}",
            "columns": cells["column"].map(lambda column: (column,)),
            "text": cells["column"] + ": " + cells["description"],
        }
    )


def _without_checks_on_malformed_cells(failures: pd.DataFrame, malformed: pd.DataFrame) -> pd.DataFrame:
    """Drop failures that read a malformed cell: it is missing only because it did not parse."""
    if malformed.empty:
        return failures
    bad_cells = {(row, column) for row, columns in zip(malformed["row"], malformed["columns"]) for column in columns}
    reads_bad_cell = [
        any((row, column) in bad_cells for column in columns)
        for row, columns in zip(failures["row"], failures["columns"])
    ]
    return failures[~np.array(reads_bad_cell, dtype=bool)]


def _show(value: object) -> str:
    """repr of the plain Python value, so messages read `-5`, not `np.int64(-5)`."""
    return repr(value.item() if isinstance(value, np.generic) else value)
