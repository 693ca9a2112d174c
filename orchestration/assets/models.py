"""Model stage: one asset per model, trained on the split, saved and versioned."""

from __future__ import annotations

import json
import time
from typing import Any

import dagster as dg
from pydantic import Field

from orchestration.resources import ArtifactStore
from recmodels.data.splits import load_split
from recmodels.evaluation import evaluate
from recmodels.models import model_family

GROUP = "models"
MODEL_ASSETS: dict[str, str] = {}


class ModelAssetConfig(dg.Config):
    params: dict[str, Any] = Field(
        default_factory=dict,
        description="Overrides of the model family's typed config (see its dataclass for names and defaults).",
    )
    valid_ks: list[int] = Field(default_factory=lambda: [10, 20], description="Cutoffs reported on validation.")


def model_asset(family: str) -> dg.AssetsDefinition:
    """A training asset for ``family``: fit on train, report validation metrics, save, version."""
    name = f"{family}_model"
    cls = model_family(family)
    MODEL_ASSETS[name] = family

    @dg.asset(
        name=name,
        group_name=GROUP,
        deps=["split"],
        kinds={"pytorch"},
        description=f"{cls.__name__}: {(cls.__doc__ or '').strip().splitlines()[0]}",
    )
    def train_model(config: ModelAssetConfig, store: ArtifactStore) -> dg.MaterializeResult:
        data = load_split(store.folder("split"))
        defaults = cls.config_class().to_dict()
        model = cls(cls.config_class.from_dict({**defaults, **config.params}))
        started = time.perf_counter()
        model.fit(data)
        train_seconds = time.perf_counter() - started
        valid = evaluate(model, data.valid, tuple(config.valid_ks))
        folder = store.fresh_folder(name)
        model.save(folder)
        (folder / "valid_metrics.json").write_text(json.dumps(valid.metrics, indent=2))
        version, dvc_metadata = store.version(folder)
        return dg.MaterializeResult(
            data_version=version,
            metadata={
                "family": family,
                "config": dg.MetadataValue.json(model.config.to_dict()),
                "train_seconds": round(train_seconds, 3),
                **{f"valid_{metric}": round(value, 5) for metric, value in valid.metrics.items()},
                **dvc_metadata,
            },
        )

    return train_model


baseline_models = [model_asset(family) for family in ("most_popular", "item_knn", "ease")]
