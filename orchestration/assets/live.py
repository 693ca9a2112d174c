"""Live stage: interaction windows landed from incoming files, drift reports, a challenger, one champion.

The loop (sensors in ``orchestration/automation.py`` only detect and request runs):

- ``interaction_window[week]`` lands a window from the incoming files holding its rows (validated,
  bad rows quarantined with reasons), guarded by the blocking ``window_quarantine_within_limit``;
- ``drift_report[week]`` compares the window with the data the champion trained on;
- ``challenger_model`` trains on every landed window before a validation window;
- ``live_champion`` decides once, on a window neither model trained on, whether the challenger
  replaces the champion; its output is the resulting champion, exported and registered.

Every output goes through the IO layer (``orchestration/io.py``): an immutable, DVC-versioned
folder per materialisation. Windows are read through the same layer's folders and helpers: the
latest materialisation of each *landed* window (a partition the sensor added whose run has not
landed it yet is not read, where Dagster's partition inputs would fail on it), and models record
the exact window versions they were trained and validated on, so later readers use those versions.
"""

import fcntl
import hashlib
import json
import os
import shutil
import tempfile
import uuid
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import dagster as dg
import numpy as np
import pandas as pd
from dagster._core.definitions.data_version import DATA_VERSION_TAG
from dagster._core.event_api import PartitionKeyFilter
from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus
from pydantic import Field, field_validator

from orchestration import versioning
from orchestration.assets.export import (
    OnnxExportConfig,
    export_checked,
    parity_check_result,
    parity_histories,
    registry_entry,
)
from orchestration.assets.models import MODEL_SPECS, TRAINING_POOL
from orchestration.drift import drift_report as run_drift_report
from orchestration.drift import save_html, summarise
from orchestration.io import (
    PATH_METADATA,
    WithFiles,
    asset_parent,
    input_version,
    recorded_folder,
    safe_component,
)
from orchestration.kubernetes import training_step_tags
from orchestration.outputs import ExportedModel, RegisteredModel
from orchestration.resources import PROJECT_ROOT, ArtifactStore, DatasetResource
from recmodels.data.interactions import Interactions
from recmodels.data.readers import load_dataset, table_suffix
from recmodels.data.splits import EvalStage, holdout_split, stage_for_item_map
from recmodels.data.stream import FILE_COLUMN, INCOMING_SUFFIXES, SUMMARY_FILE, WindowRows, land_window
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
from recmodels.registry import MANIFEST_FILE, MODEL_FILE, set_champion

GROUP = "live"
WINDOWS = dg.DynamicPartitionsDefinition(name="interaction_windows")
WINDOW = "interaction_window"
CHAMPION = "live_champion"
CHALLENGER = "challenger_model"
PROMOTION_LOG = "promotions.jsonl"
LIVE_REGISTRY = "live_registry"
QUARANTINE_CHECK = "window_quarantine_within_limit"
BEATS_CHECK = "challenger_beats_champion"
PARITY_CHECK = "live_champion_onnx_parity"
TRAINED_THROUGH = "trained_through"  # live_champion metadata: the last window the champion trained on
VALIDATION_WINDOW = "validation_window"  # live_champion metadata: the window the champion won its gate on
CHAMPION_VERSION = "champion_version"  # drift_report metadata: the champion's data version it compared against
WINDOW_VERSION = "window_version"  # drift_report metadata: the window's data version it read
MODEL_FOLDER = "model"
ITEM_IDS_FILE = "item_ids.json"
RECORD_FILE = "record.json"
PREDICTION_K = 10
STREAM_MODELS = {spec.asset: spec for spec in MODEL_SPECS if not spec.inputs}
CHECK_PASSED = AssetCheckExecutionRecordStatus.SUCCEEDED
ALL_WINDOWS = dg.AssetDep(WINDOW, partition_mapping=dg.AllPartitionMapping())


class StreamResource(dg.ConfigurableResource):
    """Where interaction files arrive, how long a window is, what and how eagerly to retrain."""

    incoming: str = Field(
        default_factory=lambda: os.environ.get("RECPIPE_INCOMING", str(PROJECT_ROOT / "incoming")),
        description="Folder of incoming .csv/.parquet files (env RECPIPE_INCOMING); read in place, never changed.",
    )
    window_days: int = Field(
        default_factory=lambda: int(os.environ.get("RECPIPE_WINDOW_DAYS", "7")),
        description="Length of a time partition in days (7: ISO weeks).",
    )
    wait_until_stable: bool = Field(
        default=True,
        description="Take a new or changed incoming file only once its size and mtime held still from one sensor "
        "tick to the next, so a file still being copied in is never read. False: read files at first sight, for "
        "writers that publish by atomic rename (write a hidden file, then rename it into place, as make replay does).",
    )
    model: str = Field(
        default_factory=lambda: os.environ.get("RECPIPE_LIVE_MODEL", "ease_model"),
        description=f"Model asset the sensors and the schedule retrain (env RECPIPE_LIVE_MODEL); one of "
        f"{sorted(STREAM_MODELS)}.",
    )
    bootstrap_windows: int = Field(default=4, description="Windows landed before the first champion is trained.")
    cooldown_windows: int = Field(
        default=2, description="Drift-triggered retrains are at least this many windows apart (data time)."
    )

    @field_validator("model")
    @classmethod
    def _model_retrains_on_the_stream(cls, model: str) -> str:
        """A bad model name fails when the resource is built (at load time for the environment), not mid-run."""
        if model not in STREAM_MODELS:
            raise ValueError(f"stream model {model!r} (env RECPIPE_LIVE_MODEL) is not one of {sorted(STREAM_MODELS)}")
        return model

    @property
    def incoming_path(self) -> Path:
        return Path(self.incoming).expanduser()


# ---------------------------------------------------------------- windows as consumers read them


@dataclass(frozen=True)
class WindowVersion:
    """One materialisation of a window: its data version (DVC md5) and version folder (from the project root)."""

    data_version: str
    path: str

    @classmethod
    def of(cls, record: dg.EventLogRecord) -> "WindowVersion":
        materialization = record.asset_materialization
        return cls(materialization.tags[DATA_VERSION_TAG], materialization.metadata[PATH_METADATA].value)


def landed_windows(instance: dg.DagsterInstance) -> dict[str, WindowVersion]:
    """Every landed window at its latest materialisation, oldest window first.

    Landed = materialised, and that materialisation passed ``window_quarantine_within_limit`` in
    its run: a window over the quarantine limit feeds no drift report, no training and no gate.
    A partition the incoming-file sensor has added but whose run has not landed it yet has no
    materialisation, and is not landed either.
    """
    key = dg.AssetKey(WINDOW)
    check = dg.AssetCheckKey(key, QUARANTINE_CHECK)
    landed = {}
    for window in sorted(instance.get_materialized_partitions(key)):
        (record,) = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=key, asset_partitions=[window]), limit=1
        ).records
        checked = instance.event_log_storage.get_asset_check_execution_history(
            check, limit=1, partition_filter=PartitionKeyFilter(key=window)
        )
        if checked and checked[0].run_id == record.run_id and checked[0].status == CHECK_PASSED:
            landed[window] = WindowVersion.of(record)
    return landed


def read_windows(store: ArtifactStore, versions: Mapping[str, WindowVersion]) -> dict[str, WindowRows]:
    """Each window at exactly the given version (fetched from DVC when this checkout lacks the folder)."""
    windows = {}
    for window, version in sorted(versions.items()):
        folder = store.root / version.path
        if not folder.exists():
            versioning.fetch(store.artifacts_root, folder)
        windows[window] = WindowRows.load(folder)
    return windows


def window_frame(windows: Mapping[str, WindowRows], keys: list[str] | None = None) -> pd.DataFrame:
    """The kept rows of the given windows (default all), in time order, with a ``window`` column."""
    keys = sorted(windows) if keys is None else keys
    if not keys:
        raise ValueError("no windows to read rows from")
    frame = pd.concat([windows[key].rows.assign(window=key) for key in keys], ignore_index=True)
    return frame.sort_values(["timestamp", "user_id", "item_id"], kind="stable").reset_index(drop=True)


def _versions_table(versions: Mapping[str, WindowVersion]) -> dg.MetadataValue:
    return dg.MetadataValue.json({window: version.data_version for window, version in sorted(versions.items())})


# ---------------------------------------------------------------- models of the loop


@dataclass(frozen=True)
class TrainedModel:
    """A model folder of the live loop: weights, its item id map, and the window versions it was trained
    and validated on (``record``)."""

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
        (folder / RECORD_FILE).write_text(json.dumps(self.record, indent=2, sort_keys=True))

    @property
    def name(self) -> str:
        return self.record["model"]

    @property
    def trained_versions(self) -> dict[str, WindowVersion]:
        return {window: WindowVersion(**version) for window, version in self.record["trained_windows"].items()}

    @property
    def trained_through(self) -> str:
        """The last window this model was trained on."""
        return max(self.record["trained_windows"])

    @property
    def validation_window(self) -> str:
        return self.record["validation_window"]

    @property
    def validation_version(self) -> WindowVersion:
        return WindowVersion(**self.record["validation_version"])

    def evaluate_on(self, history: pd.DataFrame, held_out: pd.DataFrame, ks=(10, 20)):
        """Accuracy on raw rows, every held-out row a target (unknown items are misses)."""
        return evaluate(self.model, stage_for_item_map(history, held_out, self.item_ids), ks)

    def recommend(self, stage: EvalStage) -> np.ndarray:
        """Raw item ids ``[users, k]`` for the stage's users with history."""
        top = evaluate(self.model, stage, (PREDICTION_K,)).top_items
        return self.item_ids[top]


@dataclass(frozen=True)
class KeptChampion:
    """The champion's own version folder, copied byte for byte: a refused promotion stores the same content,
    so the champion keeps its version folder and its data version."""

    folder: Path

    def save(self, folder: Path) -> None:
        shutil.copytree(self.folder, folder, dirs_exist_ok=True)


@dataclass(frozen=True)
class StoredChampion:
    """The current champion: its latest materialisation, as loaded through the IO layer's folders."""

    model: TrainedModel
    folder: Path
    data_version: str


def current_champion(instance: dg.DagsterInstance, store: ArtifactStore) -> StoredChampion | None:
    """The latest ``live_champion`` materialisation, loaded from its version folder.

    ``live_champion`` reads its own previous output this way: Dagster lets only time-partitioned
    assets declare a dependency on themselves.
    """
    records = instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=dg.AssetKey(CHAMPION)), limit=1).records
    if not records:
        return None
    folder = recorded_folder(store, records[0])
    return StoredChampion(TrainedModel.load(folder), folder, records[0].asset_materialization.tags[DATA_VERSION_TAG])


def catalogue_items(dataset: DatasetResource) -> pd.DataFrame | None:
    """Item metadata (genres) of the configured dataset, for genre features."""
    return load_dataset(dataset.source, dataset.column_map).items if dataset.source.exists() else None


# ---------------------------------------------------------------- landing


class WindowFilesConfig(dg.Config):
    files: list[str] = Field(
        default_factory=list,
        description="Every file in the incoming folder holding rows of this window, by name (the incoming-file "
        "sensor lists them).",
    )


def incoming_paths(incoming: Path, names: list[str]) -> list[Path]:
    """The named files inside the incoming folder; any other name (a path, a hidden file, another type) is refused."""
    if not names:
        raise ValueError(f"no files given: name the files in {incoming} that hold rows of this window")
    paths = []
    for name in names:
        path = incoming / safe_component(name, "incoming file name")
        if table_suffix(path) is None:
            raise ValueError(f"incoming file {name!r} is not one of {', '.join(INCOMING_SUFFIXES)} (any letter case)")
        if not path.is_file():
            raise FileNotFoundError(f"incoming file {name!r} is not in {incoming}")
        paths.append(path)
    return paths


def _md(frame: pd.DataFrame) -> dg.MetadataValue:
    return dg.MetadataValue.md(frame.to_markdown(index=False) if len(frame) else "none")


def file_changes(previous: Mapping[str, dict], current: Mapping[str, dict]) -> pd.DataFrame:
    """Per file of either landing of a window: new, unchanged, changed (another sha256) or gone, with its rows in."""
    changes = []
    for name in sorted(set(previous) | set(current)):
        before, after = previous.get(name), current.get(name)
        if before is None:
            change = "new"
        elif after is None:
            change = "gone"
        else:
            change = "unchanged" if before["sha256"] == after["sha256"] else "changed"
        changes.append(
            {
                "file": name,
                "change": change,
                "sha256_before": before["sha256"][:16] if before else "",
                "sha256_now": after["sha256"][:16] if after else "",
                "rows_in_before": before["rows_in"] if before else 0,
                "rows_in_now": after["rows_in"] if after else 0,
            }
        )
    return pd.DataFrame(changes)


def previous_landing(
    instance: dg.DagsterInstance, store: ArtifactStore, window: str
) -> tuple[dict[str, dict], str | None]:
    """The per-file summary and version folder of the window's latest materialisation (none: first landing)."""
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(WINDOW), asset_partitions=[window]), limit=1
    ).records
    if not records:
        return {}, None
    folder = recorded_folder(store, records[0])
    return json.loads((folder / SUMMARY_FILE).read_text())["files"], str(folder.relative_to(store.root))


@dg.asset(group_name=GROUP, partitions_def=WINDOWS, kinds={"pandas", "pandera"})
def interaction_window(
    context: dg.AssetExecutionContext,
    config: WindowFilesConfig,
    stream: StreamResource,
    dataset: DatasetResource,
    store: ArtifactStore,
) -> dg.Output[WindowRows]:
    """One time window of interactions, landed from every incoming file holding its rows.

    The files are read in place (never moved or changed; their sha256 is recorded) and validated
    with the batch pipeline's pandera rules: valid rows of this window are kept, bad rows are
    quarantined with their reasons, and per file rows in = kept + quarantined. A row whose
    timestamp is missing, malformed or out of bounds belongs to no window: it is attributed to
    its file's earliest window, so it is quarantined and reported exactly once. A file that cannot
    be read any more (changed into something unreadable after the sensor read it) fails the run,
    naming the file, line and reason; the window keeps its previous landing.

    Nothing landed is overwritten: each landing is a new version folder named by its content. When a
    file of the previous landing changed or is gone, ``file_changes`` says so and where the previous
    landing's rows stay.
    """
    paths = incoming_paths(stream.incoming_path, config.files)
    window = land_window(paths, context.partition_key, stream.window_days, dataset.validation_rules)
    previous, previous_folder = previous_landing(context.instance, store, context.partition_key)
    changes = file_changes(previous, window.summary["files"])
    replaced = changes[changes["change"].isin(["changed", "gone"])]
    if len(replaced):
        context.log.warning(
            f"window {context.partition_key}: {', '.join(f'{row.file} {row.change}' for row in replaced.itertuples())} "
            f"since its last landing; that landing's rows stay in {previous_folder}"
        )
    rows = window.rows
    files = pd.DataFrame(
        [
            {"file": name, "sha256": entry["sha256"][:16], "bytes": entry["bytes"]}
            | {key: entry[key] for key in ("rows_in", "rows_kept", "rows_quarantined")}
            for name, entry in window.summary["files"].items()
        ]
    )
    reasons = pd.DataFrame(list(window.summary["by_reason"].items()), columns=["reason", "rows"])
    preview = window.quarantined[[FILE_COLUMN, "source_row", "reasons"]].head(20)
    span = {}
    if len(rows):
        span = {
            "first": datetime.fromtimestamp(int(rows["timestamp"].min()), timezone.utc).isoformat(),
            "last": datetime.fromtimestamp(int(rows["timestamp"].max()), timezone.utc).isoformat(),
        }
    return dg.Output(
        window,
        metadata={
            "rows": len(rows),
            "users": int(rows["user_id"].nunique()),
            "items": int(rows["item_id"].nunique()),
            **span,
            "rows_in": window.rows_in,
            "rows_quarantined": len(window.quarantined),
            "quarantined_share": round(window.quarantined_share, 6),
            "files": _md(files),
            "by_reason": _md(reasons),
            "ids_normalised": dg.MetadataValue.json(window.summary["ids_normalised"]),
            "quarantined_preview": _md(preview),
            "file_changes": _md(changes),
            **({"previous_version": dg.MetadataValue.path(previous_folder)} if previous_folder else {}),
        },
    )


# Per-partition check records are what ``landed_windows`` reads; Dagster (1.13) marks a partitioned check as a
# preview and warns on every import, in every run's log: the choice is made here, once, knowingly.
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", "Specifying a partitions_def on an AssetCheckSpec", dg.PreviewWarning)

    @dg.asset_check(
        asset=interaction_window,
        partitions_def=WINDOWS,
        blocking=True,
        description="A window with too many bad rows (or rows that do not add up) gets no drift report.",
    )
    def window_quarantine_within_limit(dataset: DatasetResource, interaction_window: WindowRows) -> dg.AssetCheckResult:
        """Passes when the window's quarantined share is within ``max_quarantined_share`` and, per file, rows in =
        kept + quarantined, as summarised and as stored."""
        window = interaction_window
        reconciliation = pd.DataFrame([{"file": name, **entry} for name, entry in window.reconciliation().items()])
        return dg.AssetCheckResult(
            passed=bool(window.quarantined_share <= dataset.max_quarantined_share and window.reconciles),
            metadata={
                "quarantined_share": round(window.quarantined_share, 6),
                "limit": dataset.max_quarantined_share,
                "rows_reconcile": window.reconciles,
                "per_file": _md(reconciliation),
            },
        )


# ---------------------------------------------------------------- drift


@dataclass(frozen=True)
class DriftReport:
    """A window's drift summary and evidently's two HTML reports; its folder is named by its content, so the
    asset can link the reports before the IO layer stores them."""

    summary: dict[str, Any]
    html: dict[str, bytes]

    @property
    def version_name(self) -> str:
        digest = hashlib.sha256(json.dumps(self.summary, sort_keys=True).encode())
        for name in sorted(self.html):
            digest.update(name.encode() + self.html[name])
        return digest.hexdigest()[:16]

    def save(self, folder: Path) -> None:
        (folder / "summary.json").write_text(json.dumps(self.summary, indent=2, sort_keys=True))
        for name, content in self.html.items():
            (folder / safe_component(name, "report file")).write_bytes(content)

    @classmethod
    def load(cls, folder: Path) -> "DriftReport":
        html = {path.name: path.read_bytes() for path in sorted(Path(folder).glob("*.html"))}
        return cls(json.loads((Path(folder) / "summary.json").read_text()), html)


class DriftConfig(dg.Config):
    drift_share: float = Field(default=0.5, description="Dataset drift when at least this share of columns drift.")


def _html(snapshot) -> bytes:
    with tempfile.TemporaryDirectory() as scratch:
        return save_html(snapshot, Path(scratch) / "report.html").read_bytes()


@dg.asset(
    group_name=GROUP,
    partitions_def=WINDOWS,
    ins={"champion": dg.AssetIn(CHAMPION, dagster_type=TrainedModel)},
    deps=[ALL_WINDOWS],
    kinds={"evidently"},
)
def drift_report(
    context: dg.AssetExecutionContext,
    config: DriftConfig,
    champion: TrainedModel,
    dataset: DatasetResource,
    store: ArtifactStore,
) -> dg.Output[DriftReport]:
    """This window against the data the champion was trained on (those exact window versions): data drift and
    prediction drift (evidently), newcomer shares, and the champion's accuracy on the window."""
    key = context.partition_key
    landed = {window: version for window, version in landed_windows(context.instance).items() if window <= key}
    if key not in landed:
        raise FileNotFoundError(f"window {key} is not landed: materialise interaction_window[{key}] first")
    reference_windows = read_windows(store, champion.trained_versions)
    windows = read_windows(store, landed)
    reference = window_frame(reference_windows)
    current = window_frame(windows, [key])
    features = FeatureContext.build(reference, catalogue_items(dataset))
    data_snapshot = run_drift_report(
        interaction_features(reference, features),
        interaction_features(current, features),
        NUMERICAL,
        CATEGORICAL,
        config.drift_share,
    )
    data = summarise(data_snapshot)

    # Prediction drift: the champion's lists for the users of its last training window
    # (histories before it) against its lists for this window's users (histories before it).
    last_trained = champion.trained_through
    reference_stage = stage_for_item_map(
        reference[reference["window"] < last_trained], reference[reference["window"] == last_trained], champion.item_ids
    )
    earlier = [window for window in windows if window < key]
    history = window_frame(windows, earlier) if earlier else current.iloc[:0]
    current_stage = stage_for_item_map(history, current, champion.item_ids)
    reference_lists, current_lists = champion.recommend(reference_stage), champion.recommend(current_stage)
    prediction_snapshot = run_drift_report(
        recommendation_features(reference_lists, features),
        recommendation_features(current_lists, features),
        (),
        RECOMMENDATION_CATEGORICAL,
        config.drift_share,
    )
    prediction = summarise(prediction_snapshot)
    users = min(len(reference_lists), len(current_lists))  # coverage grows with users: compare equal counts
    rng = np.random.default_rng(0)
    catalogue = len(champion.item_ids) - 1
    coverages = {
        "reference": coverage(reference_lists[rng.permutation(len(reference_lists))[:users]], catalogue),
        "current": coverage(current_lists[rng.permutation(len(current_lists))[:users]], catalogue),
    }
    accuracy = champion.evaluate_on(history, current).metrics
    champion_version = input_version(context, CHAMPION)
    summary = {
        "window": key,
        "window_version": landed[key].data_version,
        "champion": champion.name,
        "champion_version": champion_version,
        "reference_windows": {window: version.data_version for window, version in champion.trained_versions.items()},
        "data": data.as_dict(),
        "prediction": prediction.as_dict(),
        "coverage@10": coverages,
        **newcomer_shares(current, features),
        "champion_metrics": accuracy,
    }
    report = DriftReport(
        summary, {"data_drift.html": _html(data_snapshot), "prediction_drift.html": _html(prediction_snapshot)}
    )
    folder = asset_parent(store.artifacts_root, context.asset_key, key) / report.version_name
    drift_detected = data.dataset_drift or prediction.dataset_drift
    return dg.Output(
        report,
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
            "champion": champion.name,
            CHAMPION_VERSION: champion_version,
            WINDOW_VERSION: landed[key].data_version,
            "reference": f"{min(reference_windows)} .. {last_trained} ({len(reference)} rows)",
            "reference_windows": dg.MetadataValue.json(summary["reference_windows"]),
            "windows_read": _versions_table(landed),
            "current_rows": len(current),
            **{f"champion_{name}": round(value, 5) for name, value in accuracy.items()},
            "data_drift_report": dg.MetadataValue.url(store.url(folder / "data_drift.html")),
            "prediction_drift_report": dg.MetadataValue.url(store.url(folder / "prediction_drift.html")),
        },
    )


# ---------------------------------------------------------------- challenger


class ChallengerConfig(dg.Config):
    model: str = Field(
        default="ease_model",
        description=f"Model asset whose preset is retrained; one of {sorted(STREAM_MODELS)}.",
    )
    window: str = Field(default="", description="Window held out for validation and the gate; empty = latest landed.")


def training_windows(landed: Mapping[str, WindowVersion], requested: str) -> tuple[str, list[str]]:
    """The validation window (``requested``, or the latest landed) and the landed windows before it."""
    if not landed:
        raise FileNotFoundError("no landed windows: drop interaction files into the incoming folder")
    window = requested or max(landed)
    if window not in landed:
        raise ValueError(f"window {window!r} is not landed; landed: {min(landed)} .. {max(landed)}")
    before = [key for key in sorted(landed) if key < window]
    if not before:
        raise ValueError(f"window {window!r} is the first landed window: nothing to train on before it")
    return window, before


def _kinds_of_stream_models() -> set[str]:
    return set().union(*(spec.kinds for spec in STREAM_MODELS.values()))


@dg.asset(
    group_name=GROUP,
    deps=[ALL_WINDOWS],
    kinds=_kinds_of_stream_models(),
    pool=TRAINING_POOL,
    op_tags=training_step_tags(trains_torch="pytorch" in _kinds_of_stream_models()),
)
def challenger_model(
    context: dg.AssetExecutionContext, config: ChallengerConfig, store: ArtifactStore
) -> dg.Output[TrainedModel]:
    """A fresh model (the configured preset) trained on every landed window before the validation window and
    validated on it; it records the exact window versions it used."""
    if config.model not in STREAM_MODELS:
        raise ValueError(f"model {config.model!r} cannot retrain on the stream; choose one of {sorted(STREAM_MODELS)}")
    spec = STREAM_MODELS[config.model]
    landed = landed_windows(context.instance)
    window, before = training_windows(landed, config.window)
    used = {key: landed[key] for key in [*before, window]}
    rows = window_frame(read_windows(store, used))
    interactions = Interactions.from_frame(rows)
    window_start = rows.loc[rows["window"] == window, "timestamp"].min()
    split = holdout_split(interactions, interactions.frame["timestamp"].to_numpy() >= window_start)
    model = model_family(spec.family)(spec.preset).fit(split)
    valid = evaluate(model, split.valid, (10, 20)).metrics
    record = {
        "model": config.model,
        "trained_windows": {key: landed[key].__dict__ for key in before},
        "validation_window": window,
        "validation_version": landed[window].__dict__,
        "valid_metrics": valid,
    }
    return dg.Output(
        TrainedModel(model, split.train.item_ids, record),
        metadata={
            "model": config.model,
            "validation_window": window,
            TRAINED_THROUGH: before[-1],
            "trained_on": f"{before[0]} .. {before[-1]} ({len(split.train)} rows)",
            "windows_read": _versions_table(used),
            "trained_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            **{f"valid_{name}": round(value, 5) for name, value in valid.items()},
        },
    )


# ---------------------------------------------------------------- the promotion decision


class LeakedComparisonError(ValueError):
    """A gate was asked to judge models on a window one of them was trained on."""


def require_unseen_window(window: str, trained_through: Mapping[str, str]) -> None:
    """Both models must be judged on a window later than the last window each was trained on."""
    leaked = {name: through for name, through in trained_through.items() if through >= window}
    if leaked:
        seen = ", ".join(f"{name} trained through {through}" for name, through in leaked.items())
        raise LeakedComparisonError(
            f"refusing to compare on window {window}: {seen}, on or after it; its score there is not a test score"
        )


@dataclass(frozen=True)
class Verdict:
    """What the gate decided and why; scores are None when nothing was judged."""

    promoted: bool
    reason: str
    challenger_score: float | None = None
    champion_score: float | None = None


def judge(
    challenger: TrainedModel,
    champion: TrainedModel,
    history: pd.DataFrame,
    held_out: pd.DataFrame,
    metric: str,
    min_relative_gain: float,
) -> Verdict:
    """Rank both models on the same held-out window (histories: every earlier window); the challenger wins
    with at least ``(1 + min_relative_gain)`` times the champion's ``metric``."""
    window = challenger.validation_window
    require_unseen_window(window, {"challenger": challenger.trained_through, "champion": champion.trained_through})
    ks = (int(metric.partition("@")[2]),)
    challenger_score = float(challenger.evaluate_on(history, held_out, ks).metrics[metric])
    champion_score = float(champion.evaluate_on(history, held_out, ks).metrics[metric])
    promoted = challenger_score >= champion_score * (1 + min_relative_gain)
    reason = (
        f"challenger {metric} {challenger_score:.4f} {'>=' if promoted else '<'} "
        f"champion {champion_score:.4f} x (1 + {min_relative_gain}) on window {window}"
    )
    return Verdict(promoted, reason, challenger_score, champion_score)


def decide(
    challenger: TrainedModel,
    champion: TrainedModel | None,
    history: pd.DataFrame,
    held_out: pd.DataFrame,
    metric: str,
    min_relative_gain: float,
) -> Verdict:
    """The gate: the first challenger is promoted; a champion trained on the evaluation window is not judged
    against (the challenger is refused, the champion stays); otherwise ``judge``."""
    window = challenger.validation_window
    require_unseen_window(window, {"challenger": challenger.trained_through})
    if champion is None:
        return Verdict(True, "no champion yet")
    if champion.trained_through >= window:
        return Verdict(
            False,
            f"champion trained through {champion.trained_through}, on or after evaluation window {window}: "
            "no fair comparison, the champion stays",
        )
    return judge(challenger, champion, history, held_out, metric, min_relative_gain)


def logged_decision(log: Path, decision: str) -> dict | None:
    """The promotion log's entry for ``decision``, if it was made before."""
    if not log.exists():
        return None
    for line in log.read_text().splitlines():
        entry = json.loads(line)
        if entry["decision"] == decision:
            return entry
    return None


def record_decision(log: Path, entry: dict) -> bool:
    """Append ``entry`` to the promotion log unless its decision is there already (under a file lock, so two
    runs cannot both append it); True when appended."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log.with_name(f".{log.name}.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if logged_decision(log, entry["decision"]) is not None:
            return False
        with log.open("a") as handle:
            handle.write(json.dumps(entry, sort_keys=True) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
    return True


def publish_entry(registry: Path, entry: RegisteredModel) -> Path:
    """``<registry>/<model>/<version>/``, written beside and renamed into place; an existing version holds the
    same bytes (it is named by them) and is kept."""
    manifest = entry.manifest
    folder = registry / safe_component(manifest.model, "model name") / safe_component(manifest.version, "version")
    if (folder / MANIFEST_FILE).exists():
        return folder
    partial = folder.with_name(f".{folder.name}.{uuid.uuid4().hex}.partial")
    partial.mkdir(parents=True)
    entry.save(partial)
    try:
        partial.rename(folder)
    except OSError:
        if not (folder / MANIFEST_FILE).exists():
            raise
        shutil.rmtree(partial)
    return folder


class PromotionConfig(dg.Config):
    metric: str = Field(default="ndcg@10", description="Metric both models are judged by on the evaluation window.")
    min_relative_gain: float = Field(
        default=0.01, description="The challenger must beat the champion by at least this fraction."
    )


@dg.asset(
    group_name=GROUP,
    ins={"challenger": dg.AssetIn(CHALLENGER, dagster_type=TrainedModel)},
    deps=[ALL_WINDOWS],
    kinds={"onnx"},
    check_specs=[
        dg.AssetCheckSpec(
            BEATS_CHECK, asset=CHAMPION, description="The challenger beat the champion on a window neither saw."
        ),
        dg.AssetCheckSpec(
            PARITY_CHECK, asset=CHAMPION, blocking=True, description="The promoted model's ONNX export matches it."
        ),
    ],
)
def live_champion(
    context: dg.AssetExecutionContext, config: PromotionConfig, challenger: TrainedModel, store: ArtifactStore
):
    """The model the live loop serves: the challenger when it wins the gate (then exported to ONNX, parity-checked
    and registered in ``artifacts/live_registry``), else the previous champion, unchanged.

    The gate runs once per decision (challenger version + evaluation window): the outcome goes to
    ``artifacts/promotions.jsonl`` once, and running the same decision again re-judges nothing.
    A refused challenger is a successful run with a WARN check saying why.
    """
    challenger_version = input_version(context, CHALLENGER)
    window = challenger.validation_window
    decision_id = f"{challenger_version}@{window}"
    previous = current_champion(context.instance, store)
    log = store.artifacts_root / PROMOTION_LOG
    logged = logged_decision(log, decision_id) if previous is not None else None
    windows = read_windows(store, {**challenger.trained_versions, window: challenger.validation_version})
    history = window_frame(windows, sorted(challenger.trained_versions))
    held_out = window_frame(windows, [window])
    if logged is None:
        verdict = decide(
            challenger,
            None if previous is None else previous.model,
            history,
            held_out,
            config.metric,
            config.min_relative_gain,
        )
    else:  # the same decision again: nothing is judged or changed
        outcome = "promoted" if logged["promoted"] else "refused"
        reason = f"decided at {logged['at']} ({outcome}: {logged['reason']}); not made again, the champion stays"
        verdict = Verdict(False, reason, logged["challenger_score"], logged["champion_score"])
    promote = verdict.promoted
    context.log.info(f"decision {decision_id}: {'promote' if promote else 'the champion stays'}: {verdict.reason}")
    export = registered = parity = None  # parity: the check of the resulting champion's export
    if promote:
        export_config = OnnxExportConfig()
        histories, shapes = parity_histories(stage_for_item_map(history, held_out, challenger.item_ids), export_config)
        export = export_checked(challenger.model, histories, shapes, export_config)
        parity = _parity(export, "the challenger's export against the challenger in PyTorch")
        if not export.parity_passed:
            yield parity
            raise dg.Failure(
                "the challenger won the gate but its ONNX export disagrees with PyTorch "
                f"(max |diff| {export.record['max_abs_diff']:.2e}): nothing promoted, the champion stays"
            )
        registered = registry_entry(
            export,
            challenger.model,
            challenger.name,
            challenger.item_ids,
            ",".join(f"{key}:{version.data_version}" for key, version in sorted(challenger.trained_versions.items())),
            challenger.record["valid_metrics"],
        )
        publish_entry(store.artifacts_root / LIVE_REGISTRY, registered)
    champion = challenger if promote else previous.model
    yield dg.Output(
        _promoted_value(challenger, export, registered) if promote else KeptChampion(previous.folder),
        metadata={
            "promoted": promote,
            "reason": verdict.reason,
            "decision": decision_id,
            "model": champion.name,
            TRAINED_THROUGH: champion.trained_through,
            VALIDATION_WINDOW: champion.validation_window,
            "previous_champion_version": "none" if previous is None else previous.data_version,
            "challenger": challenger.name,
            "challenger_version": challenger_version,
            **({} if registered is None else {"registry_version": registered.version_name}),
        },
    )
    # Only once the output is stored is the decision logged and the registry pointed at the new champion.
    if logged is None:
        record_decision(log, _log_entry(decision_id, challenger, challenger_version, previous, config, verdict))
    if registered is not None:
        set_champion(
            store.artifacts_root / LIVE_REGISTRY,
            challenger.name,
            registered.version_name,
            f"promoted on window {window}",
        )
    scores = {"challenger_score": verdict.challenger_score, "champion_score": verdict.champion_score}
    yield dg.AssetCheckResult(
        check_name=BEATS_CHECK,
        passed=verdict.promoted,
        severity=dg.AssetCheckSeverity.WARN,
        description=verdict.reason,
        metadata={
            "decision": decision_id,
            "evaluation_window": window,
            "metric": config.metric,
            **{name: score for name, score in scores.items() if score is not None},
        },
    )
    yield parity or _parity(
        ExportedModel.load(previous.folder), "the champion stays: its export as checked on promotion"
    )


def _log_entry(
    decision_id: str,
    challenger: TrainedModel,
    challenger_version: str,
    previous: StoredChampion | None,
    config: PromotionConfig,
    verdict: Verdict,
) -> dict[str, Any]:
    champion = None if previous is None else previous.model
    return {
        "decision": decision_id,
        "at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "window": challenger.validation_window,
        "challenger": challenger.name,
        "challenger_version": challenger_version,
        "challenger_trained_through": challenger.trained_through,
        "champion": None if champion is None else champion.name,
        "champion_version": None if previous is None else previous.data_version,
        "champion_trained_through": None if champion is None else champion.trained_through,
        "metric": config.metric,
        "challenger_score": verdict.challenger_score,
        "champion_score": verdict.champion_score,
        "promoted": verdict.promoted,
        "reason": verdict.reason,
    }


def _parity(export: ExportedModel, description: str) -> dg.AssetCheckResult:
    shapes = [(case["batch"], case["length"]) for case in export.record["parity"]["cases"]]
    return parity_check_result(export, shapes)._replace(check_name=PARITY_CHECK, description=description)


def _promoted_value(challenger: TrainedModel, export: ExportedModel, registered: RegisteredModel) -> WithFiles:
    """The new champion's folder: the model, and the ONNX file and manifest services get from the registry."""
    files = {MODEL_FILE: registered.onnx, MANIFEST_FILE: registered.manifest.to_json().encode()}
    return WithFiles(challenger, files | {"export.json": json.dumps(export.record, indent=2).encode()})


assets = [interaction_window, drift_report, challenger_model, live_champion]
checks = [window_quarantine_within_limit]
