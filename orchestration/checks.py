"""Asset checks. Blocking ones stop downstream work when a result must not be used."""

from collections.abc import Callable

import dagster as dg
import numpy as np
import pandas as pd

from orchestration.outputs import LeaderboardTables, QuarantinedRows
from orchestration.resources import DatasetResource
from recmodels.data.splits import SplitData
from recmodels.significance import holm_adjust, sign_flip_p_values

POPULARITY_BASELINE = "most_popular_model"


@dg.asset_check(
    asset="validated_interactions",
    blocking=True,
    additional_ins={"quarantined": dg.AssetIn("quarantined_rows", dagster_type=QuarantinedRows)},
)
def quarantine_share_within_limit(dataset: DatasetResource, quarantined: QuarantinedRows) -> dg.AssetCheckResult:
    """Too many rejected rows means the source changed shape: stop before training on it."""
    return dg.AssetCheckResult(
        passed=bool(quarantined.share <= dataset.max_quarantined_share and quarantined.reconciles),
        metadata={
            "quarantined_share": quarantined.share,
            "limit": dataset.max_quarantined_share,
            "rows_reconcile": quarantined.reconciles,
        },
    )


def _global_time_order(data: SplitData) -> tuple[bool, dict[str, int]]:
    """Global time split: every training row is older than every held-out row."""
    latest_train = int(data.train.frame["timestamp"].max())
    earliest_held_out = int(min(data.valid_rows.frame["timestamp"].min(), data.test_rows.frame["timestamp"].min()))
    metadata = {"latest_train_timestamp": latest_train, "earliest_held_out_timestamp": earliest_held_out}
    return latest_train < earliest_held_out, metadata


def _per_user_time_order(data: SplitData) -> tuple[bool, dict[str, int]]:
    """Per-user splits: no user's training row is later than that user's validation row, nor validation than test.

    Equal timestamps are allowed (MovieLens users rate many films in the same second). Other users'
    training rows may be later: a per-user split lets a model learn from the population's later behaviour.
    """

    def users_out_of_order(earlier: pd.DataFrame, later: pd.DataFrame) -> int:
        """Users whose latest ``earlier`` row is later than their earliest ``later`` row."""
        first_later = later.groupby("user")["timestamp"].min()
        last_earlier = earlier.groupby("user")["timestamp"].max().reindex(first_later.index)
        return int((last_earlier > first_later).sum())

    train, valid, test = data.train.frame, data.valid_rows.frame, data.test_rows.frame
    train_after_held_out = users_out_of_order(train, pd.concat([valid, test]))
    valid_after_test = users_out_of_order(valid, test)
    metadata = {"users_train_after_held_out": train_after_held_out, "users_valid_after_test": valid_after_test}
    return train_after_held_out == 0 and valid_after_test == 0, metadata


_TIME_ORDER_CHECKS: dict[str, Callable[[SplitData], tuple[bool, dict[str, int]]]] = {
    "temporal": _global_time_order,
    "user_temporal": _per_user_time_order,
    "leave_one_out": _per_user_time_order,
}


@dg.asset_check(asset="split", blocking=True)
def split_is_usable(split: SplitData) -> dg.AssetCheckResult:
    """Both stages have users to evaluate and, for time splits, no training row is later than a held-out row
    (overall for the global temporal split, per user for the per-user ones)."""
    data = split
    valid_users, test_users = len(data.valid.users), len(data.test.users)
    metadata: dict[str, float | int | str] = {"valid_users": valid_users, "test_users": test_users}
    leak_free = True
    if data.protocol in _TIME_ORDER_CHECKS:
        leak_free, order_metadata = _TIME_ORDER_CHECKS[data.protocol](data)
        metadata.update(order_metadata)
    return dg.AssetCheckResult(passed=bool(valid_users > 0 and test_users > 0 and leak_free), metadata=metadata)


@dg.asset_check(asset="leaderboard")
def models_beat_most_popular(leaderboard: LeaderboardTables) -> dg.AssetCheckResult:
    """A personalised model that cannot be told apart from popularity is a bug or a bad config: flag it.

    Flags every model whose NDCG@10 is not significantly above MostPopular's on the same test users:
    the leaderboard's paired sign-flip test with its settings, Holm-adjusted over the models, so a
    mean a hair above popularity by chance no longer passes, and a model below it by chance is named
    as "not above" rather than as a loser.
    """
    table, settings, per_user = leaderboard.table, leaderboard.settings, leaderboard.per_user
    reference = per_user[POPULARITY_BASELINE]["ndcg@10"]
    candidates = [name for name in table["model"] if name != POPULARITY_BASELINE]
    differences = np.column_stack([per_user[name]["ndcg@10"] - reference for name in candidates])
    p_values = holm_adjust(sign_flip_p_values(differences, settings["permutations"], settings["seed"]))
    mean_differences = np.nanmean(differences, axis=0)
    significant = p_values < settings["alpha"]
    not_above = [name for name, up, sig in zip(candidates, mean_differences > 0, significant) if not (up and sig)]
    below = [name for name, down, sig in zip(candidates, mean_differences < 0, significant) if down and sig]
    versus = pd.DataFrame({"model": candidates, "ndcg@10 - most_popular": mean_differences, "p (Holm)": p_values})
    finite = bool(np.isfinite(table.select_dtypes("number").to_numpy()).all())
    return dg.AssetCheckResult(
        passed=not not_above and finite,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "most_popular_ndcg@10": float(np.nanmean(reference)),
            "models_not_significantly_above": ", ".join(not_above) or "none",
            "models_significantly_below": ", ".join(below) or "none",
            "paired_tests": dg.MetadataValue.md(versus.round(4).to_markdown(index=False)),
            "all_finite": finite,
        },
    )
