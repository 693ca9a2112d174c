"""The Dagster code location: every asset, check, resource, job, schedule and sensor."""

from __future__ import annotations

import os

import dagster as dg

from orchestration import automation, checks, kubernetes
from orchestration.assets import clusters, data, evaluation, export, features, graph, live, models
from orchestration.io import VersionedFolderIOManager
from orchestration.resources import (
    ArtifactStore,
    ComputeResource,
    DatasetResource,
    TextEncoderResource,
    parallel_steps,
)

batch_assets = [
    data.raw_interactions,
    data.validate_raw,
    data.interactions,
    data.split,
    features.item_features,
    graph.item_transition_graph,
    graph.item_neighbourhood_overlap,
    clusters.item_embeddings,
    clusters.item_clusters,
    clusters.item_soft_clusters,
    clusters.cluster_retrieval_index,
    *models.model_assets,
    evaluation.leaderboard,
    *export.onnx_assets,
    *export.registry_assets,
    export.registry_champion,
]
batch_checks = [checks.quarantine_share_within_limit, checks.split_is_usable, checks.models_beat_most_popular]
live_assets = live.assets
live_checks = live.checks
all_assets = batch_assets + live_assets
all_checks = batch_checks + live_checks

# One batch run at a time per instance (orchestration/dagster.yaml limits the tag): two runs that
# write the same assets would each be recorded truthfully, but their models would mix splits.
BATCH_RUN_TAGS = {"recpipe/pipeline": "batch"}

# How every job runs its steps, chosen by RECPIPE_EXECUTOR. multiprocess: processes on this machine, forked
# from a forkserver that has imported this code location (11 s of imports, paid once per run instead of once
# per step). kubernetes: one pod per step (orchestration/kubernetes.py; deploy/dagster/ sets it).
EXECUTORS = {
    "multiprocess": dg.multiprocess_executor.configured(
        {
            "max_concurrent": parallel_steps(),
            "start_method": {"forkserver": {"preload_modules": ["orchestration.definitions"]}},
        },
        name="multiprocess",
    ),
    "kubernetes": kubernetes.step_pod_executor,
}


def chosen_executor() -> dg.ExecutorDefinition:
    """The executor RECPIPE_EXECUTOR names (default multiprocess); an unknown name fails at load time."""
    name = os.environ.get("RECPIPE_EXECUTOR", "").strip() or "multiprocess"
    if name not in EXECUTORS:
        raise ValueError(f"RECPIPE_EXECUTOR={name!r}: use one of {', '.join(EXECUTORS)}")
    return EXECUTORS[name]


full_pipeline = dg.define_asset_job(
    "full_pipeline",
    selection=dg.AssetSelection.all() - dg.AssetSelection.groups(live.GROUP),
    description="Materialise every batch asset on the configured dataset (the live loop runs from sensors).",
    tags=BATCH_RUN_TAGS,
)


def resources() -> dict[str, object]:
    """The resources every job runs with; their defaults come from the environment."""
    store = ArtifactStore()
    return {
        "dataset": DatasetResource(),
        "store": store,
        "stream": live.StreamResource(),
        "compute": ComputeResource(),
        "text_encoder": TextEncoderResource(),
        "io_manager": VersionedFolderIOManager(store=store),
    }


defs = dg.Definitions(
    assets=all_assets,
    asset_checks=all_checks,
    jobs=[full_pipeline, *automation.jobs],
    sensors=automation.sensors,
    schedules=automation.schedules,
    resources=resources(),
    executor=chosen_executor(),
)
