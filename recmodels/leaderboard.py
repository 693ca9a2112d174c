"""A leaderboard that states its uncertainty: every model's test metrics with 95% intervals over
users, and a paired test of every model against the best on the same users.

Built from ``Evaluation`` results of one stage (so every model is judged on the same users);
written as ``leaderboard.csv`` (plain metric columns plus ``<metric>_ci_low`` / ``_ci_high``),
``leaderboard.json`` (value, interval and the test against the best for every model, with the
settings that produced them) and ``per_user/<model>.npz`` (the per-user values, so every figure
can be recomputed). Catalogue coverage is a property of the whole set of lists, not a mean
over users: a resample holds about 63% distinct users and so covers less of the catalogue,
which would bias its interval low, so coverage is reported without one.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from recmodels.significance import compare_with_best, confidence_intervals

if TYPE_CHECKING:
    from recmodels.evaluation import Evaluation

TEST_NAME = "two-sided paired sign-flip (randomisation) test of the mean per-user difference, Holm-adjusted"


@dataclass(frozen=True)
class UncertaintySettings:
    """How intervals and tests are computed; recorded beside the numbers they produced."""

    sort_by: str = "ndcg@10"
    confidence: float = 0.95
    bootstrap_resamples: int = 1_000
    permutations: int = 10_000
    alpha: float = 0.05
    seed: int = 0


@dataclass(frozen=True)
class Leaderboard:
    table: pd.DataFrame  # best first: model, users, metric columns, then <metric>_ci_low / _ci_high
    records: list[dict[str, Any]]  # one per model, in table order: metrics with intervals, the test vs best
    best: str
    settings: UncertaintySettings
    per_user: dict[str, dict[str, np.ndarray]]
    users: np.ndarray

    @property
    def metric_names(self) -> list[str]:
        return list(self.records[0]["metrics"])

    @property
    def tied_with_best(self) -> pd.Series:
        """Per model (table order): True where not significantly different from the best on ``sort_by``."""
        return pd.Series([record["vs_best"]["tied_with_best"] for record in self.records], index=self.table["model"])

    def markdown(self, columns: list[str]) -> str:
        """Value [low, high] per metric and the comparison with the best on the sort metric."""
        mark_header = f"vs best ({self.settings.sort_by})"
        rows = []
        for record in self.records:
            row = {"model": record["model"], mark_header: _mark(record["vs_best"])}
            for name in columns:
                metric = record["metrics"][name]
                interval = "" if metric["ci_low"] is None else f" [{metric['ci_low']:.4g}, {metric['ci_high']:.4g}]"
                row[name] = f"{metric['value']:.4g}{interval}"
            rows.append(row)
        level = f"{self.settings.confidence:.0%}"
        note = (
            f"{len(self.users)} test users; [low, high] = {level} bootstrap interval over users "
            f"({self.settings.bootstrap_resamples} resamples); ≈ best = not significantly different from "
            f"{self.best} on {self.settings.sort_by} ({TEST_NAME}, alpha {self.settings.alpha})."
        )
        return pd.DataFrame(rows).to_markdown(index=False) + "\n\n" + note

    def save(self, folder: Path, **context: Any) -> None:
        """``leaderboard.csv``, ``leaderboard.json`` (with ``context`` such as the protocol) and per-user npz files."""
        self.table.to_csv(folder / "leaderboard.csv", index=False)
        document = {
            **context,
            "best": self.best,
            "users": len(self.users),
            "settings": asdict(self.settings),
            "test": TEST_NAME,
            "models": self.records,
        }
        (folder / "leaderboard.json").write_text(json.dumps(document, indent=2))
        per_user_folder = folder / "per_user"
        per_user_folder.mkdir()
        for model, values in self.per_user.items():
            np.savez_compressed(per_user_folder / f"{model}.npz", users=self.users, **values)


def build_leaderboard(evaluations: Mapping[str, Evaluation], settings: UncertaintySettings) -> Leaderboard:
    """Rank models on ``settings.sort_by`` (higher is better) with intervals and tests against the best."""
    if not evaluations:
        raise ValueError("no model to rank")
    names = list(evaluations)
    users = evaluations[names[0]].users
    for name in names[1:]:
        if not np.array_equal(evaluations[name].users, users):
            raise ValueError(
                f"{name} was evaluated on other users than {names[0]}: paired tests need the same users in the same "
                "order (evaluate every model on the same stage)"
            )
    per_user_metrics = list(evaluations[names[0]].per_user)
    if settings.sort_by not in per_user_metrics:
        raise ValueError(
            f"sort_by {settings.sort_by!r} must be a metric averaged over users, one of {per_user_metrics} "
            "(catalogue coverage has no per-user value to test)"
        )
    intervals = {  # same seed and users: every model is resampled with the same draws
        name: confidence_intervals(
            {metric: values for metric, values in result.per_user.items() if np.isfinite(values).any()},
            settings.confidence,
            settings.bootstrap_resamples,
            settings.seed,
        )
        for name, result in evaluations.items()
    }
    best, comparisons = compare_with_best(
        {name: result.per_user[settings.sort_by] for name, result in evaluations.items()},
        settings.alpha,
        settings.permutations,
        settings.seed,
    )
    rows, records = [], {}
    for name, result in evaluations.items():
        row: dict[str, Any] = {"model": name, "users": len(result.users), **result.metrics}
        metrics: dict[str, dict[str, float | None]] = {}
        for metric, value in result.metrics.items():
            interval = intervals[name].get(metric)
            if interval is not None:
                row[f"{metric}_ci_low"], row[f"{metric}_ci_high"] = interval.low, interval.high
            metrics[metric] = {
                "value": _finite_or_none(value),
                "ci_low": None if interval is None else _finite_or_none(interval.low),
                "ci_high": None if interval is None else _finite_or_none(interval.high),
            }
        rows.append(row)
        records[name] = {
            "model": name,
            "users": len(result.users),
            "metrics": metrics,
            "vs_best": {"metric": settings.sort_by, "best": best, **asdict(comparisons[name])},
        }
    table = pd.DataFrame(rows)
    plain = [column for column in table.columns if not column.endswith(("_ci_low", "_ci_high"))]
    bounds = [column for column in table.columns if column not in plain]
    table = table[plain + bounds].sort_values(settings.sort_by, ascending=False, kind="stable")
    table = table.reset_index(drop=True)  # a stable sort keeps the first of equal means first, as the test's best
    return Leaderboard(
        table=table,
        records=[records[name] for name in table["model"]],
        best=best,
        settings=settings,
        per_user={name: dict(result.per_user) for name, result in evaluations.items()},
        users=users,
    )


def load_per_user(folder: Path) -> tuple[np.ndarray, dict[str, dict[str, np.ndarray]]]:
    """The users and every model's per-user metrics a saved leaderboard folder holds."""
    files = sorted((folder / "per_user").glob("*.npz"))
    if not files:
        raise FileNotFoundError(f"{folder / 'per_user'} holds no per-user metrics (*.npz)")
    per_user, users = {}, None
    for path in files:
        with np.load(path) as arrays:
            values = {key: arrays[key] for key in arrays.files}
        model_users = values.pop("users")
        if users is not None and not np.array_equal(model_users, users):
            raise ValueError(f"{path}: other users than the other models' files")
        users = model_users
        per_user[path.stem] = values
    return users, per_user


def _finite_or_none(value: float) -> float | None:
    """JSON has no NaN: an undefined metric (e.g. ILD with one item per list) is null."""
    return float(value) if math.isfinite(value) else None


def _mark(comparison: dict[str, Any]) -> str:
    if comparison["p_value"] is None:
        return "best"
    p_value = comparison["p_value_holm"]
    return f"≈ best (p {p_value:.2g})" if comparison["tied_with_best"] else f"below (p {p_value:.2g})"
