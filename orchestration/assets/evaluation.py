"""Evaluation stage: every trained model ranked on the test stage, one leaderboard."""

import json

import dagster as dg
import pandas as pd
from pydantic import Field

from orchestration.assets.models import MODEL_ASSETS
from orchestration.plots import bar_chart, inline_png
from orchestration.resources import ArtifactStore
from recmodels.data.splits import load_split
from recmodels.evaluation import BeyondAccuracyInputs, evaluate
from recmodels.features.genres import genre_matrix
from recmodels.models import Recommender

GROUP = "evaluation"


class LeaderboardConfig(dg.Config):
    ks: list[int] = Field(default_factory=lambda: [10, 20], description="Ranking cutoffs.")
    sort_by: str = Field(default="ndcg@10", description="Metric the leaderboard is sorted by (higher is better).")


@dg.asset(group_name=GROUP, deps=list(MODEL_ASSETS))
def leaderboard(config: LeaderboardConfig, store: ArtifactStore) -> dg.MaterializeResult:
    """Full-catalogue test ranking of every model, with beyond-accuracy metrics."""
    data = load_split(store.folder("split"))
    items_file = store.folder("validated_interactions") / "items.parquet"
    features = genre_matrix(pd.read_parquet(items_file), data.train.item_ids)[0] if items_file.exists() else None
    beyond = BeyondAccuracyInputs(
        item_popularity=data.train.item_user_counts(),
        n_train_users=len(data.train.users_with_data()),
        item_features=features,
    )
    rows, eval_seconds = [], {}
    for asset_name in MODEL_ASSETS:
        model = Recommender.load(store.folder(asset_name))
        result = evaluate(model, data.test, tuple(config.ks), beyond=beyond)
        rows.append({"model": asset_name, "users": len(result.users), **result.metrics})
        eval_seconds[asset_name] = round(result.seconds, 3)
    table = pd.DataFrame(rows).sort_values(config.sort_by, ascending=False).reset_index(drop=True)

    folder = store.fresh_folder("leaderboard")
    table.to_csv(folder / "leaderboard.csv", index=False)
    (folder / "leaderboard.json").write_text(json.dumps(table.to_dict(orient="records"), indent=2))
    columns = [f"recall@{k}" for k in config.ks] + [f"ndcg@{k}" for k in config.ks]
    chart = bar_chart(table, "model", columns, "test metric (full ranking)", "Leaderboard", folder / "leaderboard.png")
    version, dvc_metadata = store.version(folder)
    return dg.MaterializeResult(
        data_version=version,
        metadata={
            "protocol": data.protocol,
            "leaderboard": dg.MetadataValue.md(table.round(4).to_markdown(index=False)),
            "best_model": table.loc[0, "model"],
            "eval_seconds": dg.MetadataValue.json(eval_seconds),
            "chart": dg.MetadataValue.path(str(chart.relative_to(store.root))),
            "chart_preview": dg.MetadataValue.md(inline_png(chart, "leaderboard")),
            **dvc_metadata,
        },
    )
