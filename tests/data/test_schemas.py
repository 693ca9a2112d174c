"""Validation on real data: clean data passes untouched, injected bad rows are quarantined with reasons."""

import time

import pandas as pd
import pytest

from recmodels.data import (
    DataFormatError,
    ValidationRules,
    read_predefined,
    read_recbole,
    validate_interactions,
    validate_items,
)

ML100K_RULES = ValidationRules(rating_min=1.0, rating_max=5.0, max_timestamp=1_000_000_000)


@pytest.fixture(scope="module")
def ml100k(data_dir):
    return read_recbole(data_dir / "ml-100k")


def interaction(user_id, item_id, timestamp, rating, source_row) -> dict:
    return {"user_id": user_id, "item_id": item_id, "timestamp": timestamp, "rating": rating, "source_row": source_row}


def test_clean_ml100k_passes_untouched(ml100k):
    result = validate_interactions(ml100k.interactions, ML100K_RULES)
    pd.testing.assert_frame_equal(result.valid, ml100k.interactions)
    assert result.quarantined.empty
    assert list(result.quarantined.columns) == [*ml100k.interactions.columns, "reasons"]
    assert result.summary == {"rows_in": 100_000, "rows_kept": 100_000, "rows_quarantined": 0, "by_reason": {}}


def test_clean_ml100k_items_pass(ml100k):
    result = validate_items(ml100k.items)
    pd.testing.assert_frame_equal(result.valid, ml100k.items)
    assert result.summary["rows_quarantined"] == 0


def test_injected_bad_rows_are_quarantined_with_reasons(ml100k):
    clean = ml100k.interactions.head(200)
    copied = clean.iloc[10]
    bad = pd.DataFrame(
        [
            interaction("1", "1", -1, 3.0, 900_001),
            interaction("1", "2", 880_000_000, 7.0, 900_002),
            interaction("", "3", 880_000_000, 3.0, 900_003),
            copied.to_dict(),
            interaction("1", "4", 4_102_444_800, 3.0, 900_005),
            interaction("1", "", 880_000_000, 0.5, 900_006),
        ]
    ).astype(clean.dtypes.to_dict())
    # bad rows interleaved with clean ones, and a non-unique index, as after a careless concat
    mixed = pd.concat([clean.iloc[:50], bad.iloc[:3], clean.iloc[50:120], bad.iloc[3:], clean.iloc[120:]])

    result = validate_interactions(mixed, ML100K_RULES)

    pd.testing.assert_frame_equal(result.valid, clean.reset_index(drop=True))
    assert result.quarantined.drop(columns="reasons").values.tolist() == bad.values.tolist()
    assert result.quarantined["reasons"].tolist() == [
        "timestamp: greater_than_or_equal_to(0) (value=-1)",
        "rating: less_than_or_equal_to(5.0) (value=7.0)",
        "user_id: not_empty (value='')",
        f"user_id, item_id, timestamp: duplicate (value=('{copied.user_id}', '{copied.item_id}', {copied.timestamp}))",
        "timestamp: less_than_or_equal_to(1000000000) (value=4102444800)",
        "item_id: not_empty (value=''); rating: greater_than_or_equal_to(1.0) (value=0.5)",
    ]
    assert result.summary == {
        "rows_in": 206,
        "rows_kept": 200,
        "rows_quarantined": 6,
        "by_reason": {
            "timestamp: greater_than_or_equal_to(0)": 1,
            "rating: less_than_or_equal_to(5.0)": 1,
            "user_id: not_empty": 1,
            "user_id, item_id, timestamp: duplicate": 1,
            "timestamp: less_than_or_equal_to(1000000000)": 1,
            "item_id: not_empty": 1,
            "rating: greater_than_or_equal_to(1.0)": 1,
        },
    }


def test_a_shared_bad_id_reaches_every_row_and_reasons_follow_the_schema_order():
    """Ids are checked once per distinct value: each row holding a bad one still gets its reason, and a row's
    reasons come in the schema's column order whatever the check path."""
    frame = pd.DataFrame(
        [
            interaction(" ", "", -1, 3.0, 1),
            interaction("1", "5", 880_000_000, 3.0, 2),
            interaction(" ", "6", 880_000_000, 9.0, 3),
            interaction("2", "", 880_000_000, 3.0, 4),
        ]
    )
    result = validate_interactions(frame, ML100K_RULES)
    assert result.valid["source_row"].tolist() == [2]
    assert result.quarantined["reasons"].tolist() == [
        "user_id: not_empty (value=''); item_id: not_empty (value=''); timestamp: greater_than_or_equal_to(0) (value=-1)",
        "user_id: not_empty (value=''); rating: less_than_or_equal_to(5.0) (value=9.0)",
        "item_id: not_empty (value='')",
    ]
    assert result.by_reason == {
        "user_id: not_empty": 2,
        "item_id: not_empty": 2,
        "timestamp: greater_than_or_equal_to(0)": 1,
        "rating: less_than_or_equal_to(5.0)": 1,
    }


def test_default_max_timestamp_is_now():
    now = int(time.time())
    frame = pd.DataFrame(
        [
            interaction("1", "1", now - 3_600, 4.0, 2),
            interaction("1", "2", now + 3_600, 4.0, 3),
        ]
    )
    result = validate_interactions(frame)
    assert result.valid["source_row"].tolist() == [2]
    assert result.quarantined["source_row"].tolist() == [3]
    assert result.quarantined["reasons"].iloc[0].startswith("timestamp: less_than_or_equal_to(")
    bound = int(result.quarantined["reasons"].iloc[0].split("(")[1].split(")")[0])
    assert now <= bound <= now + 60


def test_missing_rating_passes_without_rules_and_with_them():
    frame = pd.DataFrame([interaction("1", "1", 5, float("nan"), 2), interaction("1", "2", 6, 9.0, 3)])
    assert validate_interactions(frame).summary["rows_quarantined"] == 0
    ruled = validate_interactions(frame, ValidationRules(rating_min=1.0, rating_max=5.0))
    assert ruled.valid["source_row"].tolist() == [2]
    assert ruled.quarantined["reasons"].tolist() == ["rating: less_than_or_equal_to(5.0) (value=9.0)"]


def test_empty_source_fields_are_quarantined_and_timestamps_become_int64(tmp_path):
    folder = tmp_path / "gaps"
    folder.mkdir()
    (folder / "gaps.inter").write_text(
        "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
        "1\t10\t4\t100\n"
        "\t11\t3\t101\n"
        "2\t12\t\t102\n"
        "3\t13\t5\t\n"
    )
    result = validate_interactions(read_recbole(folder).interactions, ValidationRules(1.0, 5.0, 1_000))
    assert result.valid["source_row"].tolist() == [2]
    assert str(result.valid["timestamp"].dtype) == "int64"
    assert result.quarantined["source_row"].tolist() == [3, 4, 5]
    assert result.quarantined["reasons"].tolist() == [
        "user_id: not_nullable (value=nan)",
        "rating: missing",
        "timestamp: not_nullable (value=nan)",
    ]
    optional = validate_interactions(
        read_recbole(folder).interactions, ValidationRules(1.0, 5.0, 1_000, ratings_optional=True)
    )
    assert optional.valid["source_row"].tolist() == [2, 4] and optional.valid["rating"].isna().tolist() == [False, True]


@pytest.mark.needs_shared_data("ml-1m-diffrec/clean")
def test_predefined_splits_validate_and_unknown_split_is_quarantined(data_dir):
    interactions = read_predefined(data_dir / "ml-1m-diffrec/clean").interactions
    stray = pd.DataFrame([{**interaction("0", "0", 10_000, float("nan"), 0), "split": "holdout"}])
    result = validate_interactions(pd.concat([interactions, stray], ignore_index=True))
    assert result.summary["rows_kept"] == 571_531
    assert result.quarantined["reasons"].tolist() == ["split: isin(('train', 'valid', 'test')) (value='holdout')"]


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda frame: frame.drop(columns="item_id"), ["missing column 'item_id'"]),
        (lambda frame: frame.astype({"timestamp": "float64"}), ["column 'timestamp'", "float64", "dtype('int64')"]),
        (lambda frame: frame.assign(user_id=range(len(frame))), ["column 'user_id'", "int64", "dtype('str')"]),
    ],
)
def test_whole_column_problems_raise_instead_of_quarantining(ml100k, change, expected):
    with pytest.raises(DataFormatError) as error:
        validate_interactions(change(ml100k.interactions.head(20)))
    for fragment in expected:
        assert fragment in str(error.value)


def test_items_with_bad_rows_are_quarantined(ml100k):
    clean = ml100k.items.head(30)
    bad = pd.DataFrame(
        {
            "item_id": ["5", "901", "", "902"],
            "title": ["Copy of five", "Too old", "No id", "Too far"],
            "year": pd.array([1990, 1850, 2000, 2200], dtype="Int64"),
            "genres": ["Drama", None, "Comedy", None],
        }
    )
    unknown_year = pd.DataFrame(
        {"item_id": ["903"], "title": [None], "year": pd.array([None], dtype="Int64"), "genres": [None]}
    )
    result = validate_items(pd.concat([clean, bad, unknown_year], ignore_index=True))
    pd.testing.assert_frame_equal(result.valid, pd.concat([clean, unknown_year], ignore_index=True))
    assert result.quarantined["item_id"].tolist() == ["5", "901", "", "902"]
    assert result.quarantined["reasons"].tolist() == [
        "item_id: field_uniqueness (value='5')",
        "year: in_range(1870, 2100) (value=1850)",
        "item_id: not_empty (value='')",
        "year: in_range(1870, 2100) (value=2200)",
    ]
    assert result.summary == {
        "rows_in": 35,
        "rows_kept": 31,
        "rows_quarantined": 4,
        "by_reason": {"item_id: field_uniqueness": 1, "year: in_range(1870, 2100)": 2, "item_id: not_empty": 1},
    }


def test_items_without_item_id_column_raise(ml100k):
    with pytest.raises(DataFormatError, match="missing column 'item_id'"):
        validate_items(ml100k.items.drop(columns="item_id"))
