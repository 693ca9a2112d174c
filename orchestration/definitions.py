"""The Dagster code location: every asset, check, resource and the full-pipeline job."""

from __future__ import annotations

import dagster as dg

from orchestration import checks
from orchestration.assets import clusters, data, evaluation, export, graph, models
from orchestration.resources import ArtifactStore, DatasetResource

all_assets = [
    data.raw_interactions,
    data.validate_raw,
    data.interactions,
    data.split,
    graph.item_transition_graph,
    graph.item_neighbourhood_overlap,
    clusters.item_embeddings,
    clusters.item_clusters,
    *models.model_assets,
    evaluation.leaderboard,
    export.onnx_models,
    export.model_registry,
]
all_checks = [checks.quarantine_share_within_limit, checks.split_is_usable, checks.models_beat_most_popular]

full_pipeline = dg.define_asset_job("full_pipeline", selection=dg.AssetSelection.all(), description="Materialise every asset.")

defs = dg.Definitions(
    assets=all_assets,
    asset_checks=all_checks,
    jobs=[full_pipeline],
    resources={"dataset": DatasetResource(), "store": ArtifactStore()},
)
