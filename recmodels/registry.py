"""A file-system model registry: ``<root>/<model>/<version>/model.onnx`` plus ``manifest.json``.

The version is the first 12 hex digits of the ONNX file's SHA-256, so the same
model always gets the same version and a version always names the same bytes.
The manifest holds everything a downstream service needs without this library:
the contract (opset, input and output spec), the item id map back to external
ids, the config, the upstream inputs it trained with (with their parameters and
versions), metrics and the training data version. Nothing is pickled.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

MODEL_FILE = "model.onnx"
EXPLAIN_FILE = "explain.onnx"  # the explanation graph, beside model.onnx, for families that have one
MANIFEST_FILE = "manifest.json"
CHAMPION_FILE = "champion.json"


@dataclass(frozen=True)
class Manifest:
    model: str
    version: str
    family: str
    config: dict[str, Any]
    training_data_version: str
    metrics: dict[str, float]
    item_ids: list[str]
    max_history_length: int | None
    opset: int
    k: int
    inputs: dict[str, Any]
    outputs: dict[str, Any]
    parity: dict[str, Any]
    created_at: str
    # What the model trained with besides the split (clusters, neighbourhood overlap): each one's
    # construction parameters and, from the pipeline, its asset and DVC md5. Empty for most families.
    upstream: dict[str, Any] = dataclasses.field(default_factory=dict)
    # The cold-start answer for a history with no known item: the export's k most popular training items,
    # most first, as {"item_id": <external id>, "users": <distinct training users>}. Empty in manifests
    # written before it was recorded.
    popularity: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    # The explanation graph beside model.onnx, for families that have one: its file, full SHA-256, the
    # modalities its last axis names, its inputs and outputs and its parity against PyTorch. Empty otherwise.
    explain: dict[str, Any] = dataclasses.field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

    @classmethod
    def read(cls, folder: Path) -> "Manifest":
        values = json.loads((Path(folder) / MANIFEST_FILE).read_text())
        unknown = set(values) - {field.name for field in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"{folder / MANIFEST_FILE}: unknown fields {sorted(unknown)}")
        return cls(**values)


def popularity_ranking(item_ids: Sequence[Any], users_per_item: Sequence[int], k: int) -> list[dict[str, Any]]:
    """The ``k`` items with the most distinct training users (``users_per_item[i]`` for internal id ``i``, 0 =
    padding, skipped), most first, ties to the lower internal id: the manifest's ``popularity``."""
    if len(users_per_item) != len(item_ids):
        raise ValueError(f"{len(users_per_item)} popularity counts for {len(item_ids)} item ids (padding included)")
    ranked = sorted(range(1, len(item_ids)), key=lambda item: (-int(users_per_item[item]), item))[:k]
    return [{"item_id": str(item_ids[item]), "users": int(users_per_item[item])} for item in ranked]


def file_version(path: Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:12]


def bytes_version(onnx: bytes) -> str:
    """The version of an ONNX file held in memory: the same digits ``file_version`` gives its file."""
    return hashlib.sha256(onnx).hexdigest()[:12]


def build_manifest(onnx: bytes, **fields: Any) -> Manifest:
    """The manifest of ``onnx``: ``fields`` are every field except ``version`` and ``created_at``."""
    created = datetime.now(timezone.utc).isoformat(timespec="seconds")
    return Manifest(version=bytes_version(onnx), created_at=created, **fields)


def register(root: Path, onnx_file: Path, explain_file: Path | None = None, **fields: Any) -> Path:
    """Copy ``onnx_file`` (and ``explain_file``, the explanation graph, if any) to ``root/<model>/<version>/``
    beside its manifest; returns that folder.

    ``fields`` are the manifest's fields except ``version`` and ``created_at``.
    Registering the same bytes again keeps the first manifest (the version exists).
    """
    version = file_version(onnx_file)
    folder = Path(root) / fields["model"] / version
    if (folder / MANIFEST_FILE).exists():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(onnx_file, folder / MODEL_FILE)
    if explain_file is not None:
        shutil.copyfile(explain_file, folder / EXPLAIN_FILE)
    manifest = build_manifest((folder / MODEL_FILE).read_bytes(), **fields)
    (folder / MANIFEST_FILE).write_text(manifest.to_json())
    return folder


def versions(root: Path, model: str) -> list[Manifest]:
    """Every registered version of ``model``, oldest first."""
    folder = Path(root) / model
    found = (
        [Manifest.read(entry) for entry in folder.iterdir() if (entry / MANIFEST_FILE).exists()]
        if folder.exists()
        else []
    )
    return sorted(found, key=lambda manifest: (manifest.created_at, manifest.version))


def set_champion(root: Path, model: str, version: str, reason: str) -> None:
    """Point ``champion.json`` at a registered version: what services load by default."""
    if not (Path(root) / model / version / MANIFEST_FILE).exists():
        raise FileNotFoundError(f"{model}/{version} is not registered under {root}")
    pointer = {"model": model, "version": version, "reason": reason}
    partial = Path(root) / f".{CHAMPION_FILE}.partial"  # a service watching the file never reads half of it
    partial.write_text(json.dumps(pointer, indent=2))
    partial.replace(Path(root) / CHAMPION_FILE)
