"""Asset checks. Blocking ones stop downstream work when a result must not be used."""

import json

import dagster as dg
import numpy as np
import pandas as pd

from orchestration.resources import ArtifactStore, DatasetResource
from recmodels.data.splits import load_split


@dg.asset_check(asset="validated_interactions", blocking=True)
def quarantine_share_within_limit(dataset: DatasetResource, store: ArtifactStore) -> dg.AssetCheckResult:
    """Too many rejected rows means the source changed shape: stop before training on it."""
    summary = json.loads((store.folder("quarantined_rows") / "summary.json").read_text())
    share = summary["rows_quarantined"] / max(summary["rows_in"], 1)
    reconciles = summary["rows_in"] == summary["rows_kept"] + summary["rows_quarantined"]
    return dg.AssetCheckResult(
        passed=bool(share <= dataset.max_quarantined_share and reconciles),
        metadata={
            "quarantined_share": share,
            "limit": dataset.max_quarantined_share,
            "rows_reconcile": reconciles,
        },
    )


@dg.asset_check(asset="split", blocking=True)
def split_is_usable(store: ArtifactStore) -> dg.AssetCheckResult:
    """Both stages have users to evaluate and, for time splits, no training row is later than a held-out row."""
    data = load_split(store.folder("split"))
    valid_users, test_users = len(data.valid.users), len(data.test.users)
    metadata: dict[str, float | int | str] = {"valid_users": valid_users, "test_users": test_users}
    leak_free = True
    if data.protocol == "temporal":
        latest_train = int(data.train.frame["timestamp"].max())
        earliest_held_out = int(min(data.valid_rows.frame["timestamp"].min(), data.test_rows.frame["timestamp"].min()))
        leak_free = latest_train < earliest_held_out
        metadata.update({"latest_train_timestamp": latest_train, "earliest_held_out_timestamp": earliest_held_out})
    return dg.AssetCheckResult(passed=bool(valid_users > 0 and test_users > 0 and leak_free), metadata=metadata)


@dg.asset_check(asset="leaderboard")
def models_beat_most_popular(store: ArtifactStore) -> dg.AssetCheckResult:
    """A personalised model that loses to popularity is a bug or a bad config: flag it."""
    table = pd.read_csv(store.folder("leaderboard") / "leaderboard.csv")
    bar = float(table.loc[table["model"] == "most_popular_model", "ndcg@10"].iloc[0])
    losers = table.loc[(table["model"] != "most_popular_model") & (table["ndcg@10"] <= bar), "model"].tolist()
    finite = bool(np.isfinite(table.select_dtypes("number").to_numpy()).all())
    return dg.AssetCheckResult(
        passed=not losers and finite,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"most_popular_ndcg@10": bar, "models_not_above": ", ".join(losers) or "none", "all_finite": finite},
    )
