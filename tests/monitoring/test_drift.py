"""Evidently drift reports on real ML-100K windows, and the summary the sensors read from them."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from evidently import DataDefinition, Dataset, Report
from evidently.presets import DataDriftPreset

from orchestration.drift import DriftSummary, drift_report, save_html, summarise
from recmodels.monitoring.features import CATEGORICAL, NUMERICAL, FeatureContext, interaction_features

FEATURES = (*NUMERICAL, *CATEGORICAL)
DRIFT_SHARE = 0.5  # the pipeline's default
BUSY_WEEK = "1997-11-10"  # ML-100K's busiest week: 9,064 rows
LAST_FULL_WEEK = "1998-04-13"


@pytest.fixture(scope="module")
def busy_week_halves(ml100k_weeks, ml100k_items) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One week's features split at random in two halves; popularity measured on the weeks before it,
    as the pipeline measures a window against the champion's training rows."""
    weeks = ml100k_weeks
    context = FeatureContext.build(weeks[weeks["window"] < BUSY_WEEK], ml100k_items)
    features = interaction_features(weeks[weeks["window"] == BUSY_WEEK].reset_index(drop=True), context)
    first = np.random.default_rng(7).random(len(features)) < 0.5
    return features[first].reset_index(drop=True), features[~first].reset_index(drop=True)


@pytest.fixture(scope="module")
def season_change(ml100k_weeks, ml100k_items) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Reference: the first four weeks; current: the last full week, seven months later."""
    weeks = ml100k_weeks
    first_four = sorted(weeks["window"].unique())[:4]
    reference = weeks[weeks["window"].isin(first_four)].reset_index(drop=True)
    current = weeks[weeks["window"] == LAST_FULL_WEEK].reset_index(drop=True)
    context = FeatureContext.build(reference, ml100k_items)
    return interaction_features(reference, context), interaction_features(current, context)


@pytest.fixture(scope="module")
def same_week_snapshot(busy_week_halves):
    return drift_report(*busy_week_halves, NUMERICAL, CATEGORICAL, DRIFT_SHARE)


@pytest.fixture(scope="module")
def season_snapshot(season_change):
    return drift_report(*season_change, NUMERICAL, CATEGORICAL, DRIFT_SHARE)


def assert_well_formed(summary: DriftSummary, columns: tuple[str, ...]) -> None:
    assert list(summary.columns) == list(columns)
    for name, column in summary.columns.items():
        assert isinstance(column.method, str) and column.method.strip(), name
        assert math.isfinite(column.score) and math.isfinite(column.threshold), name
        assert isinstance(column.drifted, bool)
    assert summary.drifted_columns == sum(column.drifted for column in summary.columns.values())
    assert summary.drifted_share == pytest.approx(summary.drifted_columns / len(columns))
    assert summary.dataset_drift == (summary.drifted_share >= summary.drift_share)


def assert_verdicts_follow_the_method(summary: DriftSummary) -> None:
    """p-value methods drift below the threshold, distance methods above it (evidently's rule)."""
    for name, column in summary.columns.items():
        if "p_value" in column.method:
            assert column.drifted == (column.score < column.threshold), name
        else:
            assert column.drifted == (column.score >= column.threshold), name


# ---------------------------------------------------------------- real windows


def test_two_halves_of_one_week_do_not_drift(same_week_snapshot, busy_week_halves):
    reference, current = busy_week_halves
    assert len(reference) > 4000 and len(current) > 4000
    summary = summarise(same_week_snapshot)
    assert_well_formed(summary, FEATURES)
    assert_verdicts_follow_the_method(summary)
    assert summary.dataset_drift is False
    assert summary.drifted_columns == 0
    assert not any(column.drifted for column in summary.columns.values())
    assert summary.drift_share == DRIFT_SHARE


def test_seven_months_apart_drifts(season_snapshot):
    summary = summarise(season_snapshot)
    assert_well_formed(summary, FEATURES)
    assert_verdicts_follow_the_method(summary)
    assert summary.dataset_drift is True
    assert summary.drifted_share >= summary.drift_share == DRIFT_SHARE
    # autumn-1997 reference vs an April-1998 week: when people rate and what is popular both move
    drifted = {name for name, column in summary.columns.items() if column.drifted}
    assert {"hour", "weekday", "item_popularity"} <= drifted
    table = summary.table()
    assert list(table.columns) == ["column", "method", "threshold", "score", "drifted"]
    assert table["column"].tolist() == list(FEATURES)
    assert table["drifted"].sum() == summary.drifted_columns


def test_drift_share_sets_the_dataset_verdict(season_change, season_snapshot):
    """Same data, stricter share: the column verdicts stay, the dataset verdict flips."""
    strict = summarise(drift_report(*season_change, NUMERICAL, CATEGORICAL, drift_share=0.9))
    default = summarise(season_snapshot)
    assert strict.drift_share == 0.9
    assert strict.drifted_share == default.drifted_share < 0.9
    assert strict.dataset_drift is False and default.dataset_drift is True
    assert {n: c.drifted for n, c in strict.columns.items()} == {n: c.drifted for n, c in default.columns.items()}


def test_ratings_that_move_drift(busy_week_halves):
    """Current = only the 4- and 5-star rows of the same week: the rating distribution clearly moves."""
    reference, _ = busy_week_halves
    current = reference[reference["rating"] >= 4]
    summary = summarise(drift_report(reference, current, ("rating",), (), DRIFT_SHARE))
    assert_well_formed(summary, ("rating",))
    assert summary.columns["rating"].drifted is True
    assert summary.dataset_drift is True and summary.drifted_share == 1.0


def test_small_samples_use_p_value_tests(busy_week_halves):
    """Below evidently's size cut-off the per-column tests are p-values, where drift means score < threshold."""
    reference, _ = busy_week_halves
    current = reference[reference["rating"] >= 4]
    summary = summarise(drift_report(reference.iloc[:300], current.iloc[:300], ("rating",), ("weekday",), 0.5))
    assert_well_formed(summary, ("rating", "weekday"))
    assert_verdicts_follow_the_method(summary)
    assert all("p_value" in column.method for column in summary.columns.values())
    assert summary.columns["rating"].drifted is True
    assert summary.columns["rating"].score < summary.columns["rating"].threshold


# ---------------------------------------------------------------- summarise


def test_summarise_reads_a_dict_like_the_snapshot(season_snapshot, same_week_snapshot):
    """Sensors read the stored JSON, the asset reads the live snapshot: same summary."""
    for snapshot in (season_snapshot, same_week_snapshot):
        from_dict = summarise(snapshot.dict())
        assert from_dict == summarise(snapshot)
        assert from_dict.as_dict() == summarise(snapshot).as_dict()


def test_summarise_refuses_a_report_without_tests(busy_week_halves):
    reference, current = busy_week_halves
    columns = ["rating", "weekday"]
    definition = DataDefinition(numerical_columns=["rating"], categorical_columns=["weekday"])
    snapshot = Report([DataDriftPreset(columns=columns)], include_tests=False).run(
        current_data=Dataset.from_pandas(current[columns], data_definition=definition),
        reference_data=Dataset.from_pandas(reference[columns], data_definition=definition),
    )
    with pytest.raises(ValueError, match="include_tests"):
        summarise(snapshot)
    with pytest.raises(ValueError, match="include_tests"):
        summarise(snapshot.dict())


def test_summarise_refuses_a_report_without_the_share_metric():
    with pytest.raises(ValueError, match="drifted-columns metric"):
        summarise({"metrics": [], "tests": []})


# ---------------------------------------------------------------- drift_report input checks


def test_drift_report_refuses_empty_frames(busy_week_halves):
    reference, current = busy_week_halves
    with pytest.raises(ValueError, match="rows on both sides"):
        drift_report(reference, current.iloc[:0], NUMERICAL, CATEGORICAL, DRIFT_SHARE)
    with pytest.raises(ValueError, match="rows on both sides"):
        drift_report(reference.iloc[:0], current, NUMERICAL, CATEGORICAL, DRIFT_SHARE)


def test_save_html(same_week_snapshot, tmp_path):
    path = save_html(same_week_snapshot, tmp_path / "reports" / "drift.html")
    assert path == tmp_path / "reports" / "drift.html"
    assert path.stat().st_size > 1000
    assert "<html" in path.read_text()[:2000].lower()
