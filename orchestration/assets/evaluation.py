"""Evaluation stage: every trained model ranked on the test stage, one leaderboard."""

import dagster as dg
from pydantic import Field

from orchestration.assets.models import MODEL_ASSETS
from orchestration.io import WithFiles
from orchestration.outputs import SavedLeaderboard, ValidatedRows
from orchestration.plots import inline_png, leaderboard_chart, rendered
from recmodels.data.splits import SplitData
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


MODEL_INPUTS = {name: dg.AssetIn(name, dagster_type=Recommender) for name in MODEL_ASSETS}


@dg.asset(
    group_name=GROUP,
    ins={
        "split": dg.AssetIn("split", dagster_type=SplitData),
        "validated_interactions": dg.AssetIn("validated_interactions", dagster_type=ValidatedRows),
        **MODEL_INPUTS,
    },
    kinds={"pandas"},
)
def leaderboard(config: LeaderboardConfig, **inputs) -> dg.Output[WithFiles]:
    """Full-catalogue test ranking of every model, with beyond-accuracy metrics, 95% intervals over users
    and a paired test of every model against the best on the same users."""
    data, validated = inputs.pop("split"), inputs.pop("validated_interactions")
    features = genre_matrix(validated.items, data.train.item_ids)[0] if validated.items is not None else None
    beyond = BeyondAccuracyInputs(
        item_popularity=data.train.item_user_counts(),
        n_train_users=len(data.train.users_with_data()),
        item_features=features,
    )
    evaluations, eval_seconds = {}, {}
    for asset_name in MODEL_ASSETS:
        evaluations[asset_name] = evaluate(inputs[asset_name], data.test, tuple(config.ks), beyond=beyond)
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
    charted = [f"recall@{k}" for k in config.ks] + [f"ndcg@{k}" for k in config.ks]
    chart = rendered(
        lambda path: leaderboard_chart(
            board.table,
            charted,
            board.tied_with_best,
            config.sort_by,
            config.confidence,
            f"Test metrics, {data.protocol} split, {len(board.users)} users (full ranking)",
            path,
        )
    )
    headline = ("recall@", "ndcg@", "hr@", "coverage@", "novelty@", "arp@", "ild@")  # the rest: csv and json
    shown = [name for prefix in headline for name in board.metric_names if name.startswith(prefix)]
    tied = [name for name, is_tied in board.tied_with_best.items() if is_tied and name != board.best]
    return dg.Output(
        WithFiles(SavedLeaderboard(board, data.protocol), {"leaderboard.png": chart}),
        metadata={
            "protocol": data.protocol,
            "test_users": len(board.users),
            "leaderboard": dg.MetadataValue.md(board.markdown(shown)),
            "best_model": board.best,
            "not_significantly_different_from_best": ", ".join(tied) or "none",
            "eval_seconds": dg.MetadataValue.json(eval_seconds),
            "chart_preview": dg.MetadataValue.md(inline_png(chart, "leaderboard")),
        },
    )
