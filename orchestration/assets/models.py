"""Model stage: one asset per model, trained on the split, saved and versioned."""

import dataclasses
import json
import time
import typing

import dagster as dg
import pydantic

from orchestration.resources import ArtifactStore
from recmodels.data.splits import load_split
from recmodels.evaluation import evaluate
from recmodels.models import model_family

GROUP = "models"
MODEL_ASSETS: dict[str, str] = {}


def asset_config_class(cls: type) -> type[dg.Config]:
    """A Dagster config class mirroring the family's config dataclass: typed fields in the UI,
    defaults taken from the dataclass, so each setting has one source of truth."""
    hints = typing.get_type_hints(cls.config_class)
    fields = {
        field.name: (hints[field.name], field.default) for field in dataclasses.fields(cls.config_class)
    }
    fields["valid_ks"] = (list[int], pydantic.Field(default=[10, 20], description="Cutoffs reported on validation."))
    return pydantic.create_model(f"{cls.__name__}AssetConfig", __base__=dg.Config, **fields)


def model_asset(family: str) -> dg.AssetsDefinition:
    """A training asset for ``family``: fit on train, report validation metrics, save, version."""
    name = f"{family}_model"
    cls = model_family(family)
    MODEL_ASSETS[name] = family

    def train_model(config, store: ArtifactStore) -> dg.MaterializeResult:
        data = load_split(store.folder("split"))
        model = cls(cls.config_class.from_dict(config.model_dump(exclude={"valid_ks"})))
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

    train_model.__annotations__["config"] = asset_config_class(cls)
    return dg.asset(
        name=name,
        group_name=GROUP,
        deps=["split"],
        kinds={"pytorch"},
        description=f"{cls.__name__}: {(cls.__doc__ or '').strip().splitlines()[0]}",
    )(train_model)


baseline_models = [model_asset(family) for family in ("most_popular", "item_knn", "ease")]
