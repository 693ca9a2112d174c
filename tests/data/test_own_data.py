"""A user's own table: other column names, one malformed cell, through the real readers and validation."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recmodels.data import ColumnMap, ValidationRules, load_dataset, validate_interactions

USER_COLUMNS = ColumnMap.parse("user_id=customer,item_id=product,rating=stars,timestamp=ts")
RULES = ValidationRules(rating_min=1, rating_max=5, max_timestamp=1_000_000_000)
ROWS = 2_000
BAD_ROW = 1_234  # 0-based data row: line 1_236 of the CSV (header is line 1)


@pytest.fixture(scope="module")
def ratings(ml100k_raw) -> pd.DataFrame:
    """The first rows of MovieLens-100K under a shop's own column names, ratings and times as text."""
    return (
        ml100k_raw.head(ROWS)
        .rename(columns={"user_id": "customer", "item_id": "product", "rating": "stars", "timestamp": "ts"})
        .astype({"stars": str, "ts": str})
        .assign(stars=lambda frame: frame["stars"].str.removesuffix(".0"))
    )


def with_bad_rating(ratings: pd.DataFrame) -> pd.DataFrame:
    return ratings.assign(stars=ratings["stars"].where(ratings.index != BAD_ROW, "abc"))


def assert_quarantined_alone(path: Path, ratings: pd.DataFrame, source_row: int) -> None:
    raw = load_dataset(path, USER_COLUMNS)
    result = validate_interactions(raw.interactions, RULES)

    assert result.summary["rows_in"] == len(raw.interactions) == ROWS
    assert result.summary["rows_kept"] + result.summary["rows_quarantined"] == ROWS
    assert result.summary["by_reason"] == {"rating: malformed": 1}
    [quarantined] = result.quarantined.to_dict("records")
    assert quarantined["reasons"] == "rating: not a number ('abc')"
    assert quarantined["source_row"] == source_row
    assert (quarantined["user_id"], quarantined["item_id"]) == tuple(ratings.loc[BAD_ROW, ["customer", "product"]])
    assert np.isnan(quarantined["rating"]) and quarantined["timestamp"] == int(ratings.loc[BAD_ROW, "ts"])

    kept = ratings.drop(index=BAD_ROW)
    assert list(result.valid.columns) == ["user_id", "item_id", "timestamp", "rating", "source_row"]
    assert result.valid["user_id"].tolist() == kept["customer"].tolist()
    assert result.valid["item_id"].tolist() == kept["product"].tolist()
    assert result.valid["rating"].tolist() == kept["stars"].astype(float).tolist()
    assert result.valid["timestamp"].tolist() == kept["ts"].astype(int).tolist()


def test_csv_with_own_column_names_quarantines_the_malformed_row(ratings, tmp_path):
    path = tmp_path / "shop.csv"
    with_bad_rating(ratings).to_csv(path, index=False)
    assert path.read_text().splitlines()[0] == "customer,product,stars,ts"
    assert_quarantined_alone(path, ratings, source_row=BAD_ROW + 2)


def test_parquet_with_own_column_names_quarantines_the_malformed_row(ratings, tmp_path):
    path = tmp_path / "shop.parquet"
    with_bad_rating(ratings).to_parquet(path, index=False)  # text columns, as a spreadsheet export has them
    assert_quarantined_alone(path, ratings, source_row=BAD_ROW)


def test_typed_parquet_with_an_infinite_rating(ratings, tmp_path):
    path = tmp_path / "shop.parquet"
    typed = ratings.astype({"stars": float, "ts": "int64"})
    typed.loc[BAD_ROW, "stars"] = np.inf
    typed.to_parquet(path, index=False)
    result = validate_interactions(load_dataset(path, USER_COLUMNS).interactions, RULES)
    assert result.quarantined[["source_row", "reasons"]].values.tolist() == [
        [BAD_ROW, "rating: not a finite number (inf)"]
    ]
    assert result.summary["rows_kept"] == ROWS - 1


def test_malformed_timestamps_are_reported_once_not_also_as_missing_or_duplicate(ratings, tmp_path):
    """Two rows of one (user, item) whose times do not parse: each quarantined for its own cell only."""
    broken = pd.concat([ratings, ratings.iloc[[0, 0]].assign(ts=["last week", "last week"])], ignore_index=True)
    broken.loc[1, "customer"] = ""  # an empty user id on a row that is fine otherwise
    path = tmp_path / "shop.csv"
    broken.to_csv(path, index=False)
    result = validate_interactions(load_dataset(path, USER_COLUMNS).interactions, RULES)
    assert result.quarantined[["source_row", "reasons"]].values.tolist() == [
        [3, "user_id: not_nullable (value=nan)"],
        [ROWS + 2, "timestamp: not a number ('last week')"],
        [ROWS + 3, "timestamp: not a number ('last week')"],
    ]
    assert result.summary["by_reason"] == {"user_id: not_nullable": 1, "timestamp: malformed": 2}
    assert result.summary["rows_in"] == ROWS + 2 == result.summary["rows_kept"] + result.summary["rows_quarantined"]


def test_a_row_with_two_malformed_cells_and_a_bound_failure_lists_every_reason(ratings, tmp_path):
    broken = ratings.copy()
    broken.loc[5, ["stars", "ts"]] = ["four", "n/a"]
    broken.loc[6, ["stars", "ts"]] = ["9", "n/a"]  # out of range, and a time that does not parse
    path = tmp_path / "shop.csv"
    broken.to_csv(path, index=False)
    reasons = validate_interactions(load_dataset(path, USER_COLUMNS).interactions, RULES).quarantined["reasons"]
    assert reasons.tolist() == [
        "timestamp: not a number ('n/a'); rating: not a number ('four')",
        "rating: less_than_or_equal_to(5) (value=9.0); timestamp: not a number ('n/a')",
    ]


def test_column_map_on_a_layout_that_names_its_own_columns_is_refused(data_dir):
    with pytest.raises(ValueError, match="applies to .csv/.parquet tables only"):
        load_dataset(data_dir / "ml-100k", USER_COLUMNS)
