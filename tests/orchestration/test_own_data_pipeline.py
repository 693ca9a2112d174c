"""A user's CSV with its own column names, set by environment only, through the real data assets in process."""

import json
from pathlib import Path

import pandas as pd
import pytest

from orchestration.resources import DatasetResource

ROWS = 20_000
BAD_ROW = 4_321  # 0-based data row; line 4_323 of the CSV
DATA_ASSETS = ["raw_interactions", "validated_interactions", "quarantined_rows", "interactions"]


@pytest.fixture(scope="module")
def shop_csv(tmp_path_factory, ml100k_raw):
    """MovieLens-100K's earliest rows as a shop exports them: own names, ISO times, one rating typed as text."""
    rows = ml100k_raw.sort_values("timestamp", kind="stable").head(ROWS).reset_index(drop=True)
    table = pd.DataFrame(
        {
            "customer": "c" + rows["user_id"],
            "product": "p" + rows["item_id"],
            "stars": rows["rating"].astype(int).astype(str),
            "ts": pd.to_datetime(rows["timestamp"], unit="s", utc=True).dt.strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
    )
    table.loc[BAD_ROW, "stars"] = "abc"
    folder = tmp_path_factory.mktemp("shop")
    table.to_csv(folder / "shop.csv", index=False)
    return folder / "shop.csv", table


@pytest.fixture(scope="module")
def materialised(tmp_path_factory, shop_csv, materialise_batch):
    path, _ = shop_csv
    root = tmp_path_factory.mktemp("project")
    with pytest.MonkeyPatch.context() as environment:
        environment.setenv("RECPIPE_COLUMNS", "user_id=customer,item_id=product,rating=stars,timestamp=ts")
        environment.setenv("RECPIPE_RATING_MIN", "1")
        environment.setenv("RECPIPE_RATING_MAX", "5")
        dataset = DatasetResource(data_dir=str(path.parent), dataset=path.name)
    return materialise_batch(root, dataset, selection=DATA_ASSETS), root


def _folder(result, root: Path, asset: str) -> Path:
    """The version folder the run recorded for ``asset``."""
    return root / _metadata(result, asset)["path"]


def _metadata(result, asset: str) -> dict:
    [event] = [event for event in result.get_asset_materialization_events() if event.asset_key.path == [asset]]
    return {key: value.value for key, value in event.event_specific_data.materialization.metadata.items()}


def test_the_column_map_from_the_environment_is_used_and_recorded(materialised, shop_csv):
    result, root = materialised
    path, _ = shop_csv
    assert result.success
    expected = {"user_id": "customer", "item_id": "product", "timestamp": "ts", "rating": "stars"}
    assert _metadata(result, "raw_interactions")["columns"] == expected
    assert _metadata(result, "validated_interactions")["columns"] == expected
    assert _metadata(result, "raw_interactions")["rows"] == ROWS
    assert (_folder(result, root, "raw_interactions") / "shop.csv").read_bytes() == path.read_bytes()


def test_the_malformed_row_and_its_reason_are_on_disk_and_the_rest_kept(materialised, shop_csv):
    result, root = materialised
    _, table = shop_csv
    counts = _metadata(result, "quarantined_rows")
    assert (counts["rows_in"], counts["rows_kept"], counts["rows_quarantined"]) == (ROWS, ROWS - 1, 1)
    assert "rating: malformed" in counts["by_reason"]

    quarantined = pd.read_parquet(_folder(result, root, "quarantined_rows") / "rows.parquet")
    assert quarantined[["user_id", "item_id", "source_row", "reasons"]].values.tolist() == [
        [table.loc[BAD_ROW, "customer"], table.loc[BAD_ROW, "product"], BAD_ROW + 2, "rating: not a number ('abc')"]
    ]
    summary = json.loads((_folder(result, root, "quarantined_rows") / "summary.json").read_text())
    assert summary == {
        "rows_in": ROWS,
        "rows_kept": ROWS - 1,
        "rows_quarantined": 1,
        "by_reason": {"rating: malformed": 1},
    }

    valid = pd.read_parquet(_folder(result, root, "validated_interactions") / "interactions.parquet")
    assert list(valid.columns) == ["user_id", "item_id", "timestamp", "rating", "source_row"]
    assert len(valid) == ROWS - 1 and BAD_ROW + 2 not in set(valid["source_row"])
    kept = table.drop(index=BAD_ROW)
    assert valid["user_id"].tolist() == kept["customer"].tolist()
    assert valid["rating"].tolist() == kept["stars"].astype(float).tolist()
    expected_times = (pd.to_datetime(kept["ts"]) - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(seconds=1)
    assert valid["timestamp"].tolist() == expected_times.tolist()


def test_the_quarantine_check_passes_and_interactions_are_built(materialised):
    result, _ = materialised
    evaluations = {
        event.event_specific_data.check_name: event.event_specific_data.passed
        for event in result.all_events
        if event.event_type_value == "ASSET_CHECK_EVALUATION"
    }
    assert evaluations["quarantine_share_within_limit"] is True
    interactions = _metadata(result, "interactions")
    assert interactions["rows_in"] == ROWS - 1
    assert 0 < interactions["rows_kept"] <= ROWS - 1 and interactions["users"] > 100
