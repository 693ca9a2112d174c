"""Data stage: raw snapshot -> validated rows (+ quarantine) -> interactions -> split."""

import dagster as dg
import pandas as pd
from pydantic import Field

from orchestration.outputs import QuarantinedRows, RawSnapshot, ValidatedRows
from orchestration.resources import DatasetResource
from recmodels.data.bootstrap import KNOWN_DATASETS, obtain_dataset
from recmodels.data.interactions import Interactions, k_core
from recmodels.data.readers import load_dataset
from recmodels.data.schemas import validate_interactions, validate_items
from recmodels.data.splits import SplitData, make_split

GROUP = "data"


@dg.asset(group_name=GROUP, kinds={"dvc"})
def raw_interactions(context: dg.AssetExecutionContext, dataset: DatasetResource) -> dg.Output[RawSnapshot]:
    """A byte-for-byte snapshot of the source dataset: everything downstream reads this version.

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
    raw = load_dataset(source, dataset.column_map)
    return dg.Output(
        RawSnapshot(source),
        metadata={
            "source": dg.MetadataValue.path(str(source)),
            "rows": len(raw.interactions),
            "users": int(raw.interactions["user_id"].nunique()),
            "items": int(raw.interactions["item_id"].nunique()),
            "has_timestamps": raw.has_timestamps,
            "item_metadata_rows": 0 if raw.items is None else len(raw.items),
            "columns": dg.MetadataValue.json(dataset.column_map.sources),
            **obtained,
        },
    )


@dg.multi_asset(
    outs={
        "validated_interactions": dg.AssetOut(
            group_name=GROUP, kinds={"pandera"}, description="Every raw row that passed the pandera schema."
        ),
        "quarantined_rows": dg.AssetOut(
            group_name=GROUP,
            kinds={"pandera"},
            description="Every raw row that failed it, with its reasons; rows in = kept + quarantined.",
        ),
    }
)
def validate_raw(dataset: DatasetResource, raw_interactions: RawSnapshot):
    """Lazy pandera validation: every failing row is quarantined with its reasons."""
    raw = load_dataset(raw_interactions.path, dataset.column_map)
    result = validate_interactions(raw.interactions, dataset.validation_rules)
    summary = result.summary
    items = validate_items(raw.items) if raw.items is not None else None
    if items is not None:
        summary["items"] = items.summary
    quarantined = QuarantinedRows(result.quarantined, None if items is None else items.quarantined, summary)
    counts = {
        "rows_in": summary["rows_in"],
        "rows_kept": summary["rows_kept"],
        "rows_quarantined": summary["rows_quarantined"],
        "quarantined_share": quarantined.share,
    }
    yield dg.Output(
        ValidatedRows(result.valid, None if items is None else items.valid, raw.name, raw.has_timestamps),
        output_name="validated_interactions",
        metadata={**counts, "columns": dg.MetadataValue.json(dataset.column_map.sources)},
    )
    reasons = pd.Series(summary["by_reason"], dtype="int64").rename_axis("reason").reset_index(name="rows")
    yield dg.Output(
        quarantined,
        output_name="quarantined_rows",
        metadata={
            **counts,
            "by_reason": dg.MetadataValue.md(reasons.to_markdown(index=False) if len(reasons) else "none"),
            "preview": dg.MetadataValue.md(result.quarantined.head(20).to_markdown(index=False) or "none"),
        },
    )


class InteractionsConfig(dg.Config):
    min_user_interactions: int = Field(default=5, description="k-core: users with fewer interactions are dropped.")
    min_item_interactions: int = Field(default=5, description="k-core: items with fewer interactions are dropped.")


@dg.asset(group_name=GROUP, kinds={"pandas"})
def interactions(config: InteractionsConfig, validated_interactions: ValidatedRows) -> dg.Output[Interactions]:
    """k-core filtered rows with internal ids (0 = padding item) and id maps."""
    kept, report = k_core(
        validated_interactions.interactions, config.min_user_interactions, config.min_item_interactions
    )
    container = Interactions.from_frame(kept)
    return dg.Output(
        container,
        metadata={
            "rows_in": report.rows_in,
            "rows_kept": report.rows_kept,
            "rows_removed_by_k_core": report.rows_removed,
            "k_core_iterations": report.iterations,
            "users": container.n_users,
            "items": container.n_items,
            "density": container.n_users and len(container) / (container.n_users * container.n_items),
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
    drop_seen_targets: bool = Field(
        default=False,
        description="leave_one_out: a test target the user has already seen is not evaluated (the eSASRec "
        "authors' protocol) rather than counted as a miss.",
    )

    def split_options(self) -> dict[str, float | bool]:
        """The fields the chosen protocol takes; the others take none."""
        return {name: getattr(self, name) for name in PROTOCOL_OPTIONS.get(self.protocol, ())}


PROTOCOL_OPTIONS = {
    "temporal": ("valid_fraction", "test_fraction"),
    "user_temporal": ("valid_fraction", "test_fraction"),
    "leave_one_out": ("drop_seen_targets",),
}


@dg.asset(group_name=GROUP, kinds={"pandas"})
def split(
    config: SplitConfig, interactions: Interactions, validated_interactions: ValidatedRows
) -> dg.Output[SplitData]:
    """Train / validation / test with the protocol's history and masking rules, and the items' side features
    where the dataset has item metadata."""
    result = make_split(interactions, config.protocol, **config.split_options())
    result = result.with_item_features(validated_interactions.items)
    return dg.Output(result, metadata={"protocol": result.protocol, **{k: int(v) for k, v in result.report.items()}})
