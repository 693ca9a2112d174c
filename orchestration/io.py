"""The one IO layer: every asset output is a folder, versioned by DVC, read back at the version lineage shows.

An asset returns a typed value (a model, a split, a graph...); ``VersionedFolderIOManager``
saves it into a private staging folder, ``dvc add``-s and pushes it once, and moves it into
``artifacts/<asset key>[/<partition>]/<version>/`` atomically, where ``<version>`` is the
DVC md5 of what this run wrote (or a name the value gives itself, such as a registry
entry's ONNX hash). That md5 becomes the materialisation's Dagster data version and the
folder is recorded in its metadata (``path``), so a version folder is never rewritten and two
runs can never mix files.

A downstream asset receives its input from the exact materialisation Dagster records as its
lineage (the upstream record the step's provenance tags point at), never from "the latest
folder": what a run read is what its lineage shows, even while another run writes a newer
version of the same asset. Partitioned inputs are read partition by partition from each
partition's latest materialisation.
"""

from __future__ import annotations

import re
import typing
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
from dagster._core.definitions.data_version import DataVersion

from orchestration import versioning
from orchestration.resources import ArtifactStore
from recmodels.data.interactions import Interactions, load_interactions, save_interactions
from recmodels.data.splits import SplitData, load_split, save_split

PATH_METADATA = "path"
STAGING = ".staging"
_SAFE_COMPONENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass(frozen=True)
class Codec:
    """How one library type is written to a folder and read back."""

    save: Callable[[Any, Path], None]
    load: Callable[[Path], Any]


# Library types whose folder format is a pair of functions; every other value type has its own
# ``save(folder)`` method and ``load(folder)`` classmethod (models, overlaps, clusters, the
# pipeline's own containers in ``orchestration/outputs.py``).
FUNCTION_CODECS: dict[type, Codec] = {
    SplitData: Codec(lambda value, folder: save_split(value, folder), load_split),
    Interactions: Codec(lambda value, folder: save_interactions(value, folder), load_interactions),
}


@dataclass(frozen=True)
class WithFiles:
    """A value stored with extra files beside it (charts, metrics): readers load the value's type and
    ignore the rest."""

    value: Any
    files: dict[str, bytes]


def save_value(value: Any, folder: Path) -> None:
    if isinstance(value, WithFiles):
        save_value(value.value, folder)
        for name, data in value.files.items():
            (folder / safe_component(name, "file name")).write_bytes(data)
        return
    for klass in type(value).__mro__:
        if klass in FUNCTION_CODECS:
            FUNCTION_CODECS[klass].save(value, folder)
            return
    if not callable(getattr(value, "save", None)):
        raise TypeError(f"{type(value)!r} cannot be stored: give it save(folder), or add it to FUNCTION_CODECS")
    value.save(folder)


def loader_for(value_type: type) -> Callable[[Path], Any]:
    for klass in getattr(value_type, "__mro__", ()):
        if klass in FUNCTION_CODECS:
            return FUNCTION_CODECS[klass].load
    if not callable(getattr(value_type, "load", None)):
        raise TypeError(
            f"an input typed {value_type!r} cannot be loaded: annotate it with a type that has load(folder)"
        )
    return value_type.load


def safe_component(text: str, what: str) -> str:
    """A partition key or version used as one path component: nothing that could leave its folder."""
    if not _SAFE_COMPONENT.match(text) or text in {".", ".."}:
        raise ValueError(f"{what} {text!r} cannot name a folder: use letters, digits, '.', '_' and '-'")
    return text


def asset_parent(artifacts: Path, key: dg.AssetKey, partition: str | None) -> Path:
    """``artifacts/<key path>[/<partition>]``: the folder holding every version of one output."""
    parent = artifacts.joinpath(*(safe_component(part, "asset key part") for part in key.path))
    return parent / safe_component(partition, "partition key") if partition is not None else parent


def recorded_folder(store: ArtifactStore, record: dg.EventLogRecord) -> Path:
    """The version folder a materialisation recorded, fetched from DVC when this checkout lacks it."""
    materialization = record.asset_materialization
    if materialization is None or PATH_METADATA not in materialization.metadata:
        raise ValueError(f"materialisation {record.storage_id} of {record.asset_key} records no folder")
    folder = store.root / materialization.metadata[PATH_METADATA].value
    if not folder.exists():
        versioning.fetch(store.artifacts_root, folder)
    return folder


def _value_type(context: dg.InputContext) -> tuple[type, bool]:
    """The annotated input type, and whether it is a ``dict`` of partitions."""
    annotated = context.dagster_type.typing_type
    if typing.get_origin(annotated) is dict:
        return typing.get_args(annotated)[1], True
    return annotated, False


class VersionedFolderIOManager(dg.ConfigurableIOManager):
    """Outputs into immutable DVC-versioned folders; inputs from the version the lineage records."""

    store: ArtifactStore

    def handle_output(self, context: dg.OutputContext, obj: Any) -> None:
        artifacts = self.store.artifacts_root
        partition = context.partition_key if context.has_partition_key else None
        parent = asset_parent(artifacts, context.asset_key, partition)
        staged = artifacts / STAGING / f"{context.run_id}-{uuid.uuid4().hex}"
        staged.mkdir(parents=True)
        save_value(obj, staged)
        name = getattr(obj.value if isinstance(obj, WithFiles) else obj, "version_name", None)
        tracked = versioning.publish(
            artifacts,
            staged,
            parent,
            name=None if name is None else safe_component(name, "version name"),
            push=self.store.dvc_remote is not None,
        )
        context.add_output_metadata(
            {
                PATH_METADATA: dg.MetadataValue.text(str(tracked.path.relative_to(self.store.root))),
                "dvc_md5": dg.MetadataValue.text(tracked.md5),
                "dvc_file": dg.MetadataValue.path(str(tracked.dvc_file.relative_to(self.store.root))),
                "dvc_pushed": dg.MetadataValue.bool(tracked.pushed),
                "dvc_remote": dg.MetadataValue.text(self.store.remote_label),
                "bytes": dg.MetadataValue.int(tracked.size),
                "files": dg.MetadataValue.int(tracked.files),
            }
        )
        # The data version is the md5 of what this run wrote. Dagster takes a step's data version
        # from this cache when the Output carries none (tests/orchestration/test_io.py holds it).
        context.step_context.set_data_version(context.asset_key, DataVersion(tracked.md5))

    def load_input(self, context: dg.InputContext) -> Any:
        value_type, per_partition = _value_type(context)
        load = loader_for(value_type)
        key = context.asset_key
        if context.has_asset_partitions:
            folders = {
                partition: recorded_folder(self.store, self._latest(context, key, partition))
                for partition in context.asset_partition_keys
            }
            if per_partition:
                return {partition: load(folder) for partition, folder in sorted(folders.items())}
            if len(folders) != 1:
                raise TypeError(f"input {context.name!r} spans {len(folders)} partitions: annotate it dict[str, T]")
            return load(next(iter(folders.values())))
        return load(recorded_folder(self.store, lineage_record(context.instance, context.step_context, key)))

    @staticmethod
    def _latest(context: dg.InputContext, key: dg.AssetKey, partition: str) -> dg.EventLogRecord:
        records = context.instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=key, asset_partitions=[partition]), limit=1
        ).records
        if not records:
            raise FileNotFoundError(f"{key.to_user_string()}[{partition}] was never materialised")
        return records[0]


def lineage_record(instance: dg.DagsterInstance, step_context, key: dg.AssetKey) -> dg.EventLogRecord:
    """The upstream materialisation this step's provenance records (fetched once per step by Dagster)."""
    info = step_context.maybe_fetch_and_get_input_asset_version_info(key)
    if info is None or info.storage_id is None:
        raise FileNotFoundError(f"{key.to_user_string()} was never materialised: materialise it first")
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=key, storage_ids=[info.storage_id]), limit=1
    ).records
    if not records:
        raise FileNotFoundError(
            f"the lineage of this step names {key.to_user_string()} event {info.storage_id}, "
            "which is not a materialisation"
        )
    return records[0]


def input_folder(context: dg.AssetExecutionContext, store: ArtifactStore, key: str | dg.AssetKey) -> Path:
    """The stored folder of the upstream version this step's lineage records: what a subprocess the step
    starts (a distributed training) reads in place of the loaded input."""
    step_context = context.get_step_execution_context()
    return recorded_folder(store, lineage_record(context.instance, step_context, dg.AssetKey.from_coercible(key)))


def input_version(context: dg.AssetExecutionContext, key: str | dg.AssetKey) -> str:
    """The data version (DVC md5) of an upstream as this step's lineage records it: what the input held."""
    asset_key = dg.AssetKey.from_coercible(key)
    info = context.get_step_execution_context().maybe_fetch_and_get_input_asset_version_info(asset_key)
    if info is None or info.data_version is None:
        raise FileNotFoundError(f"{asset_key.to_user_string()} was never materialised")
    return info.data_version.value
