"""The Dagster code location: every asset, check, resource, job, schedule and sensor."""

from __future__ import annotations

import dagster as dg

from orchestration import automation, checks
from orchestration.assets import clusters, data, evaluation, export, graph, live, models
from orchestration.resources import ArtifactStore, ComputeResource, DatasetResource, parallel_steps

batch_assets = [
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
batch_checks = [checks.quarantine_share_within_limit, checks.split_is_usable, checks.models_beat_most_popular]
live_assets = [live.interaction_window, live.drift_report, live.challenger_model, live.live_champion]
live_checks = [live.challenger_beats_champion]
all_assets = batch_assets + live_assets
all_checks = batch_checks + live_checks

full_pipeline = dg.define_asset_job(
    "full_pipeline",
    selection=dg.AssetSelection.all() - dg.AssetSelection.groups(live.GROUP),
    description="Materialise every batch asset on the configured dataset (the live loop runs from sensors).",
    executor_def=dg.multiprocess_executor.configured({"max_concurrent": parallel_steps()}),
)

defs = dg.Definitions(
    assets=all_assets,
    asset_checks=all_checks,
    jobs=[full_pipeline, *automation.jobs],
    sensors=automation.sensors,
    schedules=automation.schedules,
    resources={
        "dataset": DatasetResource(),
        "store": ArtifactStore(),
        "stream": live.StreamResource(),
        "compute": ComputeResource(),
    },
)
