"""Live stage: interactions arriving in time windows, drift reports, challenger training and promotion.

The loop: files land in time windows (``orchestration/automation.py`` senses them) ->
``interaction_window`` per window -> ``drift_report`` per window against the data the
champion was trained on -> (drift sensor or schedule) ``challenger_model`` trained on every
window before the current one -> blocking ``challenger_beats_champion`` gate on the current
window -> ``live_champion``: promoted, exported to ONNX, registered.
"""

import json
import os
import shutil
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
from pydantic import Field

from orchestration.assets.export import (
    PARITY_HISTORY_LENGTH,
    OnnxExportConfig,
    export_checked,
    parity_check_result,
    register_export,
)
from orchestration.assets.models import MODEL_SPECS
from orchestration.drift import drift_report as run_drift_report
from orchestration.drift import save_html, summarise
from orchestration.resources import PROJECT_ROOT, ArtifactStore, DatasetResource
from recmodels.data.interactions import Interactions
from recmodels.data.readers import load_dataset
from recmodels.data.splits import EvalStage, holdout_split, stage_for_item_map
from recmodels.data.stream import landed_windows, read_windows
from recmodels.evaluation import evaluate
from recmodels.models import Recommender, model_family
from recmodels.monitoring.features import (
    CATEGORICAL,
    NUMERICAL,
    RECOMMENDATION_CATEGORICAL,
    FeatureContext,
    coverage,
    interaction_features,
    newcomer_shares,
    recommendation_features,
)
from recmodels.registry import set_champion

GROUP = "live"
WINDOWS = dg.DynamicPartitionsDefinition(name="interaction_windows")
CHAMPION = "live_champion"
CHALLENGER = "challenger_model"
PROMOTION_LOG = "promotions.jsonl"
MODEL_FOLDER = "model"
ITEM_IDS_FILE = "item_ids.json"
RECORD_FILE = "record.json"
PREDICTION_K = 10
STREAM_MODELS = {spec.asset: spec for spec in MODEL_SPECS if not spec.inputs}


class StreamResource(dg.ConfigurableResource):
    """Where interaction files arrive and land, how long a window is, how eagerly to retrain."""

    incoming: str = Field(
        default_factory=lambda: os.environ.get("RECPIPE_INCOMING", str(PROJECT_ROOT / "incoming")),
        description="Folder the incoming-file sensor watches for .csv/.parquet drops (env RECPIPE_INCOMING).",
    )
    landing: str = Field(
        default_factory=lambda: os.environ.get("RECPIPE_LANDING", str(PROJECT_ROOT / "data" / "stream")),
        description="Validated rows per window, quarantined rows, rejected files (env RECPIPE_LANDING).",
    )
    window_days: int = Field(
        default_factory=lambda: int(os.environ.get("RECPIPE_WINDOW_DAYS", "7")),
        description="Length of a time partition in days (7: ISO weeks).",
    )
    bootstrap_windows: int = Field(default=4, description="Windows landed before the first champion is trained.")
    cooldown_windows: int = Field(
        default=2, description="Drift-triggered retrains are at least this many windows apart (data time)."
    )

    @property
    def landing_path(self) -> Path:
        return Path(self.landing).expanduser()

    @property
    def incoming_path(self) -> Path:
        return Path(self.incoming).expanduser()


@dataclass(frozen=True)
class TrainedModel:
    """A model folder of the live loop: weights, its item id map, what it was trained on."""

    model: Recommender
    item_ids: np.ndarray
    record: dict

    @classmethod
    def load(cls, folder: Path) -> "TrainedModel":
        return cls(
            Recommender.load(folder / MODEL_FOLDER),
            np.asarray(json.loads((folder / ITEM_IDS_FILE).read_text()), dtype=object),
            json.loads((folder / RECORD_FILE).read_text()),
        )

    def save(self, folder: Path) -> None:
        self.model.save(folder / MODEL_FOLDER)
        (folder / ITEM_IDS_FILE).write_text(json.dumps([str(item) for item in self.item_ids]))
        (folder / RECORD_FILE).write_text(json.dumps(self.record, indent=2))

    def evaluate_on(self, history: pd.DataFrame, held_out: pd.DataFrame, ks=(10, 20)):
        """Accuracy on raw rows, every held-out row a target (unknown items are misses)."""
        return evaluate(self.model, stage_for_item_map(history, held_out, self.item_ids), ks)

    def recommend(self, stage: EvalStage) -> np.ndarray:
        """Raw item ids ``[users, k]`` for the stage's users with history."""
        top = evaluate(self.model, stage, (PREDICTION_K,)).top_items
        return self.item_ids[top]


def load_champion(store: ArtifactStore) -> TrainedModel | None:
    folder = store.root / "artifacts" / CHAMPION
    return TrainedModel.load(folder) if (folder / RECORD_FILE).exists() else None


def current_window(landing: Path, requested: str) -> tuple[str, list[str]]:
    """The window to hold out (``requested``, or the latest landed) and the windows before it."""
    windows = landed_windows(landing)
    if not windows:
        raise FileNotFoundError(f"no landed windows under {landing}: drop interaction files into the incoming folder")
    window = requested or windows[-1]
    if window not in windows:
        raise ValueError(f"window {window!r} has no landed rows; landed: {windows[0]} .. {windows[-1]}")
    before = [key for key in windows if key < window]
    if not before:
        raise ValueError(f"window {window!r} is the first landed window: nothing to train on before it")
    return window, before


def catalogue_items(dataset: DatasetResource) -> pd.DataFrame | None:
    """Item metadata (genres) of the configured dataset, for genre features."""
    return load_dataset(dataset.source, dataset.column_map).items if dataset.source.exists() else None


@dg.asset(group_name=GROUP, partitions_def=WINDOWS, kinds={"dvc"})
def interaction_window(
    context: dg.AssetExecutionContext, stream: StreamResource, store: ArtifactStore
) -> dg.MaterializeResult:
    """One time window of validated interactions, as landed by the incoming-file sensor."""
    key = context.partition_key
    rows = read_windows(stream.landing_path, [key])
    folder = store.fresh_folder(f"interaction_windows/{key}")
    rows.to_parquet(folder / "rows.parquet", index=False)
    version, dvc_metadata = store.version(folder)
    return dg.MaterializeResult(
        data_version=version,
        metadata={
            "rows": len(rows),
            "users": int(rows["user_id"].nunique()),
            "items": int(rows["item_id"].nunique()),
            "first": datetime.fromtimestamp(int(rows["timestamp"].min()), timezone.utc).isoformat(),
            "last": datetime.fromtimestamp(int(rows["timestamp"].max()), timezone.utc).isoformat(),
            **dvc_metadata,
        },
    )


class DriftConfig(dg.Config):
    drift_share: float = Field(default=0.5, description="Dataset drift when at least this share of columns drift.")


@dg.asset(group_name=GROUP, partitions_def=WINDOWS, deps=[interaction_window], kinds={"evidently"})
def drift_report(
    context: dg.AssetExecutionContext,
    config: DriftConfig,
    stream: StreamResource,
    dataset: DatasetResource,
    store: ArtifactStore,
) -> dg.MaterializeResult:
    """This window against the champion's training data: data drift and prediction drift (evidently)."""
    key = context.partition_key
    champion = load_champion(store)
    if champion is None:
        return dg.MaterializeResult(metadata={"drift_detected": False, "status": "no champion yet: nothing to compare"})
    landing = stream.landing_path
    reference_windows = champion.record["trained_windows"]
    reference = read_windows(landing, reference_windows)
    current = read_windows(landing, [key])
    features = FeatureContext.build(reference, catalogue_items(dataset))
    data = summarise(
        data_snapshot := run_drift_report(
            interaction_features(reference, features),
            interaction_features(current, features),
            NUMERICAL,
            CATEGORICAL,
            config.drift_share,
        )
    )

    # Prediction drift: the champion's lists for the users of its last training window
    # (histories before it) against its lists for this window's users (histories before it).
    last_trained = reference_windows[-1]
    earlier = [window for window in landed_windows(landing) if window < key]
    reference_stage = stage_for_item_map(
        reference[reference["window"] < last_trained], reference[reference["window"] == last_trained], champion.item_ids
    )
    history = read_windows(landing, earlier)
    current_stage = stage_for_item_map(history, current, champion.item_ids)
    reference_lists, current_lists = champion.recommend(reference_stage), champion.recommend(current_stage)
    prediction = summarise(
        prediction_snapshot := run_drift_report(
            recommendation_features(reference_lists, features),
            recommendation_features(current_lists, features),
            (),
            RECOMMENDATION_CATEGORICAL,
            config.drift_share,
        )
    )
    users = min(len(reference_lists), len(current_lists))  # coverage grows with users: compare equal counts
    rng = np.random.default_rng(0)
    catalogue = len(champion.item_ids) - 1
    coverages = {
        "reference": coverage(reference_lists[rng.permutation(len(reference_lists))[:users]], catalogue),
        "current": coverage(current_lists[rng.permutation(len(current_lists))[:users]], catalogue),
    }
    accuracy = champion.evaluate_on(history, current).metrics

    folder = store.fresh_folder(f"drift_report/{key}")
    data_html = save_html(data_snapshot, folder / "data_drift.html")
    prediction_html = save_html(prediction_snapshot, folder / "prediction_drift.html")
    summary = {
        "window": key,
        "reference_windows": reference_windows,
        "champion": champion.record["model"],
        "data": data.as_dict(),
        "prediction": prediction.as_dict(),
        "coverage@10": coverages,
        **newcomer_shares(current, features),
        "champion_metrics": accuracy,
    }
    (folder / "summary.json").write_text(json.dumps(summary, indent=2))
    version, dvc_metadata = store.version(folder)
    drift_detected = data.dataset_drift or prediction.dataset_drift
    return dg.MaterializeResult(
        data_version=version,
        metadata={
            "drift_detected": drift_detected,
            "data_drift": data.dataset_drift,
            "data_drifted_share": data.drifted_share,
            "prediction_drift": prediction.dataset_drift,
            "prediction_drifted_share": prediction.drifted_share,
            "data_columns": dg.MetadataValue.md(data.table().round(4).to_markdown(index=False)),
            "prediction_columns": dg.MetadataValue.md(prediction.table().round(4).to_markdown(index=False)),
            "coverage@10_reference": round(coverages["reference"], 4),
            "coverage@10_current": round(coverages["current"], 4),
            "new_item_share": round(summary["new_item_share"], 4),
            "new_user_share": round(summary["new_user_share"], 4),
            "champion": champion.record["model"],
            "reference": f"{reference_windows[0]} .. {reference_windows[-1]} ({len(reference)} rows)",
            "current_rows": len(current),
            **{f"champion_{name}": round(value, 5) for name, value in accuracy.items()},
            "data_drift_report": dg.MetadataValue.url(store.url(data_html)),
            "prediction_drift_report": dg.MetadataValue.url(store.url(prediction_html)),
            "report_folder": dg.MetadataValue.path(str(folder)),
            **dvc_metadata,
        },
    )


class ChallengerConfig(dg.Config):
    model: str = Field(
        default="ease_model",
        description=f"Model asset whose preset is retrained; one of {sorted(STREAM_MODELS)}.",
    )
    window: str = Field(default="", description="Window held out for validation and the gate; empty = latest landed.")


@dg.asset(group_name=GROUP, deps=[interaction_window], kinds={"pytorch", "dvc"})
def challenger_model(config: ChallengerConfig, stream: StreamResource, store: ArtifactStore) -> dg.MaterializeResult:
    """A fresh model on every window before the current one, validated on the current window."""
    if config.model not in STREAM_MODELS:
        raise ValueError(f"model {config.model!r} cannot retrain on the stream; choose one of {sorted(STREAM_MODELS)}")
    spec = STREAM_MODELS[config.model]
    window, before = current_window(stream.landing_path, config.window)
    rows = read_windows(stream.landing_path, [*before, window])
    interactions = Interactions.from_frame(rows)
    split = holdout_split(interactions, _rows_in_window(interactions, rows, window))
    model = model_family(spec.family)(spec.preset).fit(split)
    valid = evaluate(model, split.valid, (10, 20)).metrics
    record = {
        "model": config.model,
        "trained_windows": before,
        "validation_window": window,
        "valid_metrics": valid,
        "trained_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    folder = store.fresh_folder(CHALLENGER)
    TrainedModel(model, split.train.item_ids, record).save(folder)
    version, dvc_metadata = store.version(folder)
    return dg.MaterializeResult(
        data_version=version,
        metadata={
            "model": config.model,
            "validation_window": window,
            "trained_on": f"{before[0]} .. {before[-1]} ({len(split.train)} rows)",
            **{f"valid_{name}": round(value, 5) for name, value in valid.items()},
            **dvc_metadata,
        },
    )


def _rows_in_window(interactions: Interactions, rows: pd.DataFrame, window: str) -> np.ndarray:
    """Mask over ``interactions.frame`` (re-sorted) of the rows from ``window``."""
    window_start = rows.loc[rows["window"] == window, "timestamp"].min()
    return interactions.frame["timestamp"].to_numpy() >= window_start


class PromotionConfig(dg.Config):
    metric: str = Field(default="ndcg@10", description="Metric both models are judged by on the current window.")
    min_relative_gain: float = Field(
        default=0.01, description="The challenger must beat the champion by at least this fraction."
    )


@dg.asset_check(asset=challenger_model, blocking=True, description="Promote only a challenger that beats the champion.")
def challenger_beats_champion(
    config: PromotionConfig, stream: StreamResource, store: ArtifactStore
) -> dg.AssetCheckResult:
    """Both models ranked on the same current window (histories before it); the verdict is logged."""
    challenger = TrainedModel.load(store.folder(CHALLENGER))
    champion = load_champion(store)
    window = challenger.record["validation_window"]
    held_out = read_windows(stream.landing_path, [window])
    history = read_windows(stream.landing_path, challenger.record["trained_windows"])
    ks = (int(config.metric.partition("@")[2]),)
    challenger_score = challenger.evaluate_on(history, held_out, ks).metrics[config.metric]
    if champion is None:
        passed, champion_score, reason = True, None, "no champion yet"
    else:
        champion_score = champion.evaluate_on(history, held_out, ks).metrics[config.metric]
        needed = champion_score * (1 + config.min_relative_gain)
        passed = challenger_score >= needed
        reason = (
            f"challenger {config.metric} {challenger_score:.4f} "
            f"{'>=' if passed else '<'} champion {champion_score:.4f} x (1 + {config.min_relative_gain})"
        )
    decision = {
        "at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "window": window,
        "challenger": challenger.record["model"],
        "challenger_trained_through": challenger.record["trained_windows"][-1],
        "champion_trained_through": None if champion is None else champion.record["trained_windows"][-1],
        "metric": config.metric,
        "challenger_score": challenger_score,
        "champion_score": champion_score,
        "promoted": passed,
        "reason": reason,
    }
    with (store.root / "artifacts" / PROMOTION_LOG).open("a") as log:
        log.write(json.dumps(decision) + "\n")
    return dg.AssetCheckResult(
        passed=passed,
        severity=dg.AssetCheckSeverity.ERROR,
        description=reason,
        metadata={key: value for key, value in decision.items() if value is not None},
    )


@dg.asset(
    group_name=GROUP,
    deps=[challenger_model],
    kinds={"onnx", "dvc"},
    check_specs=[dg.AssetCheckSpec("live_champion_onnx_parity", asset=CHAMPION, blocking=True)],
)
def live_champion(stream: StreamResource, store: ArtifactStore) -> dg.MaterializeResult:
    """The promoted challenger: kept as the new champion, exported to ONNX, registered, pointed at."""
    challenger = TrainedModel.load(store.folder(CHALLENGER))
    name = challenger.record["model"]
    rows = read_windows(stream.landing_path, [challenger.record["validation_window"]])
    stage = stage_for_item_map(
        read_windows(stream.landing_path, challenger.record["trained_windows"]), rows, challenger.item_ids
    )
    histories, _ = stage.history.sequences().padded(stage.users, PARITY_HISTORY_LENGTH)
    export_config = OnnxExportConfig()
    shapes = [(min(batch, len(histories)), length) for batch, length in export_config.shapes]
    exports = store.fresh_folder("live_exports")
    record = export_checked(challenger.model, exports / name, histories, shapes, export_config)
    check = parity_check_result("live_champion_onnx_parity", record, shapes)
    if not record["parity"]["passed"]:  # the old champion stays in place; the blocking check says why
        return dg.MaterializeResult(metadata={"promoted": False, "reason": "ONNX parity failed"}, check_results=[check])
    folder = store.fresh_folder(CHAMPION)
    shutil.copytree(store.folder(CHALLENGER), folder, dirs_exist_ok=True)
    registry = store.root / "artifacts" / "live_registry"
    registered = register_export(
        registry,
        exports,
        name,
        challenger.model,
        challenger.item_ids,
        data_version=",".join(challenger.record["trained_windows"]),
        metrics=challenger.record["valid_metrics"],
    )
    set_champion(registry, name, registered.name, f"promoted on window {challenger.record['validation_window']}")
    _, registry_metadata = store.version(registry)
    version, dvc_metadata = store.version(folder)
    return dg.MaterializeResult(
        data_version=version,
        metadata={
            "model": challenger.record["model"],
            "trained_through": challenger.record["trained_windows"][-1],
            "promoted": True,
            "registry_version": registered.name,
            "registry_dvc_md5": registry_metadata["dvc_md5"],
            **{f"valid_{name}": round(value, 5) for name, value in challenger.record["valid_metrics"].items()},
            **dvc_metadata,
        },
        check_results=[check],
    )
