"""Evidently drift reports and the summary the sensors and the UI read from them.

Evidently is used through one entry point (``drift_report``) and its output is parsed in
one place (``summarise``), so an evidently upgrade touches this file only.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

if TYPE_CHECKING:
    from evidently.core.report import Snapshot

COLUMN_DRIFT_METRIC = "evidently:metric_v2:ValueDrift"
SHARE_METRIC = "evidently:metric_v2:DriftedColumnsCount"


@dataclass(frozen=True)
class ColumnDrift:
    method: str
    threshold: float
    score: float
    drifted: bool


@dataclass(frozen=True)
class DriftSummary:
    """Dataset drift when at least ``drift_share`` of the columns drifted (evidently's rule)."""

    dataset_drift: bool
    drifted_columns: int
    drifted_share: float
    drift_share: float
    columns: dict[str, ColumnDrift]

    def as_dict(self) -> dict[str, object]:
        return {
            "dataset_drift": self.dataset_drift,
            "drifted_columns": self.drifted_columns,
            "drifted_share": self.drifted_share,
            "drift_share": self.drift_share,
            "columns": {name: column.__dict__ for name, column in self.columns.items()},
        }

    def table(self) -> pd.DataFrame:
        return pd.DataFrame(
            [{"column": name, **column.__dict__} for name, column in self.columns.items()],
            columns=["column", "method", "threshold", "score", "drifted"],
        )


def drift_report(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    numerical: tuple[str, ...],
    categorical: tuple[str, ...],
    drift_share: float,
) -> Snapshot:
    """Evidently's data drift preset (per-column tests included) over the named columns."""
    if reference.empty or current.empty:
        raise ValueError(f"drift needs rows on both sides: reference {len(reference)}, current {len(current)}")
    # imported here: evidently takes 5 s to import, and every step process of every run loads this module
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    definition = DataDefinition(numerical_columns=list(numerical), categorical_columns=list(categorical))
    columns = [*numerical, *categorical]
    report = Report([DataDriftPreset(columns=columns, drift_share=drift_share)], include_tests=True)
    return report.run(
        current_data=Dataset.from_pandas(current[columns], data_definition=definition),
        reference_data=Dataset.from_pandas(reference[columns], data_definition=definition),
    )


def summarise(snapshot: Snapshot | dict) -> DriftSummary:
    """Dataset verdict, drifted share and per-column method, threshold, score and verdict.

    Column verdicts are evidently's own test outcomes (distance methods drift above the
    threshold, p-value methods below it), never recomputed here.
    """
    content = snapshot if isinstance(snapshot, dict) else snapshot.dict()
    metrics = {metric["id"]: metric for metric in content["metrics"]}
    share_metrics = [metric for metric in metrics.values() if metric["config"]["type"] == SHARE_METRIC]
    if len(share_metrics) != 1:
        raise ValueError(f"expected one drifted-columns metric in the report, found {len(share_metrics)}")
    share = share_metrics[0]
    verdicts: dict[str, bool] = {}
    for test in content.get("tests", []):
        params = test["metric_config"]["params"]
        if params["type"] == COLUMN_DRIFT_METRIC:
            verdicts[params["column"]] = test["status"] == "FAIL"
    columns = {}
    for metric in metrics.values():
        config = metric["config"]
        if config["type"] != COLUMN_DRIFT_METRIC:
            continue
        name = config["column"]
        if name not in verdicts:
            raise ValueError(f"the report has no drift test for column {name!r}: run it with include_tests=True")
        columns[name] = ColumnDrift(
            config["method"], float(config["threshold"]), float(metric["value"]), verdicts[name]
        )
    drift_share = float(share["config"]["drift_share"])
    drifted_share = float(share["value"]["share"])
    return DriftSummary(
        dataset_drift=drifted_share >= drift_share,
        drifted_columns=int(share["value"]["count"]),
        drifted_share=drifted_share,
        drift_share=drift_share,
        columns=columns,
    )


def save_html(snapshot: Snapshot, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    snapshot.save_html(str(path))
    return path
