"""Evaluation stage: every trained model ranked on the test stage, one leaderboard."""

import dagster as dg
import pandas as pd
from pydantic import Field

from orchestration.assets.models import MODEL_ASSETS
from orchestration.plots import inline_png, leaderboard_chart
from orchestration.resources import ArtifactStore
from recmodels.data.splits import load_split
from recmodels.evaluation import BeyondAccuracyInputs, evaluate
from recmodels.features.genres import genre_matrix
from recmodels.leaderboard import UncertaintySettings, build_leaderboard
from recmodels.models import Recommender

GROUP = "evaluation"


class LeaderboardConfig(dg.Config):
    ks: list[int] = Field(default_factory=lambda: [10, 20], description="Ranking cutoffs.")
    sort_by: str = Field(
        default="ndcg@10", description="Metric the leaderboard is sorted and tested by (higher is better)."
    )
    confidence: float = Field(default=0.95, description="Level of the bootstrap intervals over users.")
    bootstrap_resamples: int = Field(default=1_000, description="User resamples behind every interval.")
    permutations: int = Field(default=10_000, description="Sign flips of the paired test against the best.")
    alpha: float = Field(default=0.05, description="Holm-adjusted p-value below which a model is worse than the best.")
    seed: int = Field(default=0, description="Seed of the resamples and sign flips.")


@dg.asset(group_name=GROUP, deps=list(MODEL_ASSETS))
def leaderboard(config: LeaderboardConfig, store: ArtifactStore) -> dg.MaterializeResult:
    """Full-catalogue test ranking of every model, with beyond-accuracy metrics, 95% intervals over users
    and a paired test of every model against the best on the same users."""
    data = load_split(store.folder("split"))
    items_file = store.folder("validated_interactions") / "items.parquet"
    features = genre_matrix(pd.read_parquet(items_file), data.train.item_ids)[0] if items_file.exists() else None
    beyond = BeyondAccuracyInputs(
        item_popularity=data.train.item_user_counts(),
        n_train_users=len(data.train.users_with_data()),
        item_features=features,
    )
    evaluations, eval_seconds = {}, {}
    for asset_name in MODEL_ASSETS:
        model = Recommender.load(store.folder(asset_name))
        evaluations[asset_name] = evaluate(model, data.test, tuple(config.ks), beyond=beyond)
        eval_seconds[asset_name] = round(evaluations[asset_name].seconds, 3)
    settings = UncertaintySettings(
        sort_by=config.sort_by,
        confidence=config.confidence,
        bootstrap_resamples=config.bootstrap_resamples,
        permutations=config.permutations,
        alpha=config.alpha,
        seed=config.seed,
    )
    board = build_leaderboard(evaluations, settings)

    folder = store.fresh_folder("leaderboard")
    board.save(folder, protocol=data.protocol)
    charted = [f"recall@{k}" for k in config.ks] + [f"ndcg@{k}" for k in config.ks]
    chart = leaderboard_chart(
        board.table,
        charted,
        board.tied_with_best,
        config.sort_by,
        config.confidence,
        f"Test metrics, {data.protocol} split, {len(board.users)} users (full ranking)",
        folder / "leaderboard.png",
    )
    headline = ("recall@", "ndcg@", "hr@", "coverage@", "novelty@", "arp@", "ild@")  # the rest: csv and json
    shown = [name for prefix in headline for name in board.metric_names if name.startswith(prefix)]
    tied = [name for name, is_tied in board.tied_with_best.items() if is_tied and name != board.best]
    version, dvc_metadata = store.version(folder)
    return dg.MaterializeResult(
        data_version=version,
        metadata={
            "protocol": data.protocol,
            "test_users": len(board.users),
            "leaderboard": dg.MetadataValue.md(board.markdown(shown)),
            "best_model": board.best,
            "not_significantly_different_from_best": ", ".join(tied) or "none",
            "eval_seconds": dg.MetadataValue.json(eval_seconds),
            "chart": dg.MetadataValue.path(str(chart.relative_to(store.root))),
            "chart_preview": dg.MetadataValue.md(inline_png(chart, "leaderboard")),
            **dvc_metadata,
        },
    )
