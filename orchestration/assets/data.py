"""Data stage: raw snapshot -> validated rows (+ quarantine) -> interactions -> split."""

import json
import shutil

import dagster as dg
import pandas as pd
from pydantic import Field

from orchestration.resources import ArtifactStore, DatasetResource
from recmodels.data.bootstrap import KNOWN_DATASETS, obtain_dataset
from recmodels.data.interactions import Interactions, k_core, load_interactions, save_interactions
from recmodels.data.readers import load_dataset
from recmodels.data.schemas import ValidationRules, validate_interactions, validate_items
from recmodels.data.splits import make_split, save_split

GROUP = "data"


@dg.asset(group_name=GROUP, kinds={"dvc"})
def raw_interactions(
    context: dg.AssetExecutionContext, dataset: DatasetResource, store: ArtifactStore
) -> dg.MaterializeResult:
    """Snapshot of the source dataset under ``data/raw/``, tracked by ``data.dvc``.

    A missing dataset the bootstrap knows (MovieLens-100K) is obtained from the package
    registry, checksummed, so a fresh clone runs with nothing beside it.
    """
    source = dataset.source.resolve()
    obtained = {}
    if not source.exists():
        if dataset.dataset not in KNOWN_DATASETS:
            raise FileNotFoundError(
                f"dataset {source} not found (data_dir={dataset.data_dir!r}, dataset={dataset.dataset!r}). "
                "Set RECPIPE_DATA_DIR to the folder holding it and RECPIPE_DATASET to its path inside that folder; "
                f"datasets obtained automatically when missing: {sorted(KNOWN_DATASETS)}"
            )
        bootstrap = obtain_dataset(dataset.dataset, source)
        context.log.info(bootstrap.summary())
        obtained = {"obtained_from": dg.MetadataValue.json(bootstrap.metadata())}
    snapshot = store.snapshot_folder() / "raw" / dataset.dataset
    if source != snapshot.resolve():
        if snapshot.exists():
            shutil.rmtree(snapshot) if snapshot.is_dir() else snapshot.unlink()
        snapshot.parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if source.is_dir() else shutil.copy2)(source, snapshot)
    raw = load_dataset(snapshot, dataset.column_map)
    data_version, dvc_metadata = store.version(store.snapshot_folder())
    return dg.MaterializeResult(
        data_version=data_version,
        metadata={
            "source": dg.MetadataValue.path(str(source)),
            "snapshot": dg.MetadataValue.path(str(snapshot.relative_to(store.root))),
            "rows": len(raw.interactions),
            "users": int(raw.interactions["user_id"].nunique()),
            "items": int(raw.interactions["item_id"].nunique()),
            "has_timestamps": raw.has_timestamps,
            "item_metadata_rows": 0 if raw.items is None else len(raw.items),
            "columns": dg.MetadataValue.json(dataset.column_map.sources),
            **obtained,
            **dvc_metadata,
        },
    )


@dg.multi_asset(
    specs=[
        dg.AssetSpec("validated_interactions", deps=[raw_interactions], group_name=GROUP, kinds={"pandera"}),
        dg.AssetSpec("quarantined_rows", deps=[raw_interactions], group_name=GROUP, kinds={"pandera"}),
    ]
)
def validate_raw(dataset: DatasetResource, store: ArtifactStore):
    """Lazy pandera validation: every failing row is quarantined with its reasons."""
    raw = load_dataset(store.snapshot_folder() / "raw" / dataset.dataset, dataset.column_map)
    rules = ValidationRules(rating_min=dataset.rating_min, rating_max=dataset.rating_max)
    result = validate_interactions(raw.interactions, rules)
    summary = result.summary

    valid_folder = store.fresh_folder("validated_interactions")
    result.valid.to_parquet(valid_folder / "interactions.parquet", index=False)
    items = validate_items(raw.items) if raw.items is not None else None
    if items is not None:
        items.valid.to_parquet(valid_folder / "items.parquet", index=False)
    (valid_folder / "dataset.json").write_text(
        json.dumps({"name": raw.name, "has_timestamps": raw.has_timestamps}, indent=2)
    )
    quarantine_folder = store.fresh_folder("quarantined_rows")
    result.quarantined.to_parquet(quarantine_folder / "rows.parquet", index=False)
    if items is not None:
        items.quarantined.to_parquet(quarantine_folder / "items.parquet", index=False)
        summary["items"] = items.summary
    (quarantine_folder / "summary.json").write_text(json.dumps(summary, indent=2, default=int))

    counts = {
        "rows_in": summary["rows_in"],
        "rows_kept": summary["rows_kept"],
        "rows_quarantined": summary["rows_quarantined"],
        "quarantined_share": summary["rows_quarantined"] / max(summary["rows_in"], 1),
    }
    version, dvc_metadata = store.version(valid_folder)
    yield dg.MaterializeResult(
        asset_key="validated_interactions",
        data_version=version,
        metadata={**counts, "columns": dg.MetadataValue.json(dataset.column_map.sources), **dvc_metadata},
    )
    version, dvc_metadata = store.version(quarantine_folder)
    reasons = pd.Series(summary["by_reason"], dtype="int64").rename_axis("reason").reset_index(name="rows")
    yield dg.MaterializeResult(
        asset_key="quarantined_rows",
        data_version=version,
        metadata={
            **counts,
            "by_reason": dg.MetadataValue.md(reasons.to_markdown(index=False) if len(reasons) else "none"),
            "preview": dg.MetadataValue.md(result.quarantined.head(20).to_markdown(index=False) or "none"),
            **dvc_metadata,
        },
    )


class InteractionsConfig(dg.Config):
    min_user_interactions: int = Field(default=5, description="k-core: users with fewer interactions are dropped.")
    min_item_interactions: int = Field(default=5, description="k-core: items with fewer interactions are dropped.")


@dg.asset(group_name=GROUP, deps=["validated_interactions"])
def interactions(config: InteractionsConfig, store: ArtifactStore) -> dg.MaterializeResult:
    """k-core filtered rows with internal ids (0 = padding item) and id maps."""
    rows = pd.read_parquet(store.folder("validated_interactions") / "interactions.parquet")
    kept, report = k_core(rows, config.min_user_interactions, config.min_item_interactions)
    container = Interactions.from_frame(kept)
    folder = store.fresh_folder("interactions")
    save_interactions(container, folder)
    version, dvc_metadata = store.version(folder)
    return dg.MaterializeResult(
        data_version=version,
        metadata={
            "rows_in": report.rows_in,
            "rows_kept": report.rows_kept,
            "rows_removed_by_k_core": report.rows_removed,
            "k_core_iterations": report.iterations,
            "users": container.n_users,
            "items": container.n_items,
            "density": container.n_users and len(container) / (container.n_users * container.n_items),
            **dvc_metadata,
        },
    )


class SplitConfig(dg.Config):
    """Default: per-user temporal, so every user with 3+ rows is evaluated (all 943 on MovieLens-100K).

    The global temporal split evaluates only the users active both before and after one
    cut-off (85 on MovieLens-100K); leave-one-out evaluates everyone but on a single item
    each, which leaves intervals about twice as wide (``benchmarks/protocols.py``).
    """

    protocol: str = Field(
        default="user_temporal",
        description="user_temporal (each user's latest rows) | temporal (global time cut) | leave_one_out | predefined",
    )
    valid_fraction: float = Field(
        default=0.1,
        description="user_temporal / temporal: share of the latest rows (per user / overall) for validation.",
    )
    test_fraction: float = Field(
        default=0.1, description="user_temporal / temporal: share of the latest rows (per user / overall) for test."
    )

    def split_options(self) -> dict[str, float]:
        """The fractions for the protocols that take them; the others have none."""
        takes_fractions = {"temporal", "user_temporal"}
        if self.protocol not in takes_fractions:
            return {}
        return {"valid_fraction": self.valid_fraction, "test_fraction": self.test_fraction}


@dg.asset(group_name=GROUP, deps=[interactions])
def split(config: SplitConfig, store: ArtifactStore) -> dg.MaterializeResult:
    """Train / validation / test with the protocol's history and masking rules."""
    container = load_interactions(store.folder("interactions"))
    result = make_split(container, config.protocol, **config.split_options())
    folder = store.fresh_folder("split")
    save_split(result, folder)
    version, dvc_metadata = store.version(folder)
    return dg.MaterializeResult(
        data_version=version,
        metadata={"protocol": result.protocol, **{k: int(v) for k, v in result.report.items()}, **dvc_metadata},
    )
