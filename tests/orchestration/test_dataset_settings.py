"""The dataset resource's column map and rating bounds: one field each, the environment only their default."""

import pydantic
import pytest

from orchestration.resources import DatasetResource
from recmodels.data import ColumnMap

SETTINGS = ("RECPIPE_COLUMNS", "RECPIPE_RATING_MIN", "RECPIPE_RATING_MAX")


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    for variable in SETTINGS:
        monkeypatch.delenv(variable, raising=False)


def test_defaults_without_environment_are_the_canonical_names_and_no_bounds():
    dataset = DatasetResource()
    assert dataset.columns == ""
    assert dataset.column_map == ColumnMap()
    assert (dataset.rating_min, dataset.rating_max) == (None, None)


def test_environment_sets_the_defaults(monkeypatch):
    monkeypatch.setenv("RECPIPE_COLUMNS", "user_id=customer,item_id=product,rating=stars,timestamp=ts")
    monkeypatch.setenv("RECPIPE_RATING_MIN", "1")
    monkeypatch.setenv("RECPIPE_RATING_MAX", " 5.5 ")
    dataset = DatasetResource()
    assert dataset.column_map == ColumnMap(user_id="customer", item_id="product", timestamp="ts", rating="stars")
    assert (dataset.rating_min, dataset.rating_max) == (1.0, 5.5)


def test_explicit_values_win_over_the_environment(monkeypatch):
    monkeypatch.setenv("RECPIPE_COLUMNS", "rating=stars")
    monkeypatch.setenv("RECPIPE_RATING_MIN", "not even read")
    dataset = DatasetResource(columns="rating=score", rating_min=0)
    assert dataset.column_map == ColumnMap(rating="score")
    assert dataset.rating_min == 0.0


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("", ColumnMap()),
        ("  ", ColumnMap()),
        ("rating=stars", ColumnMap(rating="stars")),
        (" user_id = customer , item_id=product ", ColumnMap(user_id="customer", item_id="product")),
        ("timestamp=-,rating=-", ColumnMap(timestamp=None, rating=None)),
        ("item_id=Product Name", ColumnMap(item_id="Product Name")),
    ],
)
def test_column_map_parses(spec, expected):
    assert ColumnMap.parse(spec) == expected
    assert ColumnMap.parse(expected.spec) == expected  # the spec the metadata shows reads back


@pytest.mark.parametrize(
    ("spec", "reason"),
    [
        ("user=customer", "unknown column name 'user'; expected one of user_id, item_id, timestamp, rating"),
        ("user_id=customer,,item_id=product", "'' is not a canonical=source pair"),
        ("user_id=customer,", "'' is not a canonical=source pair"),
        ("user_id", "'user_id' is not a canonical=source pair"),
        ("user_id=", "'user_id=' is not a canonical=source pair"),
        ("=customer", "'=customer' is not a canonical=source pair"),
        ("rating=stars,rating=score", "'rating' is given twice"),
        ("user_id=id,item_id=id", "source column(s) 'id' mapped to more than one name"),
        ("item_id=user_id", "source column(s) 'user_id' mapped to more than one name"),
        ("user_id=-", "user_id needs a source column name"),
    ],
)
def test_bad_column_maps_fail_naming_the_setting(monkeypatch, spec, reason):
    with pytest.raises(ValueError, match=reason.replace("(", r"\(").replace(")", r"\)")):
        ColumnMap.parse(spec)
    with pytest.raises(pydantic.ValidationError) as explicit:
        DatasetResource(columns=spec)
    monkeypatch.setenv("RECPIPE_COLUMNS", spec)
    with pytest.raises(pydantic.ValidationError) as from_environment:
        DatasetResource()
    for error in (explicit, from_environment):
        assert f"dataset setting columns (env RECPIPE_COLUMNS) = {spec!r}: {reason}" in str(error.value)


@pytest.mark.parametrize("variable", ["RECPIPE_RATING_MIN", "RECPIPE_RATING_MAX"])
@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("abc", "is not a number"),
        ("1,5", "is not a number"),
        ("inf", "is not a finite number"),
        ("nan", "is not a finite number"),
    ],
)
def test_bad_rating_bounds_in_the_environment_fail_naming_the_variable(monkeypatch, variable, text, reason):
    monkeypatch.setenv(variable, text)
    with pytest.raises(ValueError, match=f"{variable}='{text}' {reason}"):
        DatasetResource()


def test_empty_rating_bound_in_the_environment_means_none(monkeypatch):
    monkeypatch.setenv("RECPIPE_RATING_MIN", "")
    assert DatasetResource().rating_min is None


def test_rating_bounds_out_of_order_fail(monkeypatch):
    monkeypatch.setenv("RECPIPE_RATING_MIN", "5")
    monkeypatch.setenv("RECPIPE_RATING_MAX", "1")
    with pytest.raises(pydantic.ValidationError, match="rating_min=5.0 > rating_max=1.0"):
        DatasetResource()
    with pytest.raises(pydantic.ValidationError, match="finite number"):
        DatasetResource(rating_max=float("inf"))


def test_the_dataset_declares_ratings_optional_and_id_normalisation_for_batch_and_live_alike(tmp_path):
    """One home for the row rules: the resource's ``validation_rules`` is what both validations read."""
    from recmodels.data.readers import load_dataset
    from recmodels.data.schemas import validate_interactions

    source = tmp_path / "orders.csv"
    source.write_text("user_id,item_id,rating,timestamp\n1,10,4,5\n 1,11,,6\n")
    rows = load_dataset(source).interactions
    strict = validate_interactions(rows, DatasetResource().validation_rules)
    assert len(strict.valid) == 1 and strict.by_reason == {"rating: missing": 1}
    lenient = validate_interactions(rows, DatasetResource(ratings_optional=True).validation_rules)
    assert len(lenient.valid) == 2 and set(lenient.valid["user_id"]) == {"1"}  # " 1" normalised to "1"
    verbatim = validate_interactions(rows, DatasetResource(ratings_optional=True, normalise_ids=False).validation_rules)
    assert set(verbatim.valid["user_id"]) == {"1", " 1"}
