"""One registry entry loaded for serving: an ONNX Runtime session plus its manifest's id maps."""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnxruntime as ort
from onnxruntime.capi import onnxruntime_pybind11_state as ort_state

from recserve.registry import EXPLAIN_FILE, MANIFEST_FILE, MODEL_FILE, RegistryError, read_json

log = logging.getLogger("recserve")
GPU_PROVIDER = "CUDAExecutionProvider"
CPU_PROVIDER = "CPUExecutionProvider"
PROVIDERS_ENV = "RECSERVE_PROVIDERS"
CUDA_DRIVER_LIBRARY = "nvcuda.dll" if sys.platform == "win32" else "libcuda.so.1"
VERSION_DIGITS = 12  # a version is the first 12 hex digits of model.onnx's SHA-256 (recmodels.registry)
# onnxruntime raises its own exception classes (none of them a RuntimeError) for a file it cannot load
ORT_ERRORS = tuple(
    error for error in vars(ort_state).values() if isinstance(error, type) and issubclass(error, Exception)
)
POPULARITY = "popularity"
NO_POPULARITY = "unavailable"


def cuda_device_present() -> bool:
    """True where the NVIDIA driver loads and reports at least one device (honouring
    CUDA_VISIBLE_DEVICES), asked through ctypes so nothing is printed. onnxruntime-gpu lists CUDA as
    available on every machine, and a session that asks for it without a device prints three lines of
    library errors before falling back to CPU; CUDA runtime libraries alone (a toolkit without a GPU)
    do not mean a device."""
    try:
        driver = ctypes.CDLL(CUDA_DRIVER_LIBRARY)
    except OSError:
        return False
    devices = ctypes.c_int(0)
    return driver.cuInit(0) == 0 and driver.cuDeviceGetCount(ctypes.byref(devices)) == 0 and devices.value > 0


def forced_providers() -> list[str]:
    """RECSERVE_PROVIDERS, comma-separated in order of preference (empty: choose automatically)."""
    forced = [name.strip() for name in os.environ.get(PROVIDERS_ENV, "").split(",") if name.strip()]
    unknown = [name for name in forced if name not in ort.get_available_providers()]
    if unknown:
        raise ValueError(
            f"{PROVIDERS_ENV} names {unknown}, not among this onnxruntime's providers {ort.get_available_providers()}"
        )
    return forced


def session_providers(prefer_gpu: bool) -> list[str]:
    """The providers a session asks for: RECSERVE_PROVIDERS when set, else CUDA then CPU where CUDA is
    preferred, listed and has a device, else CPU."""
    forced = forced_providers()
    if forced:
        return forced
    if prefer_gpu and GPU_PROVIDER in ort.get_available_providers() and cuda_device_present():
        return [GPU_PROVIDER, CPU_PROVIDER]
    return [CPU_PROVIDER]


def open_session(path: Path, prefer_gpu: bool) -> ort.InferenceSession:
    """A session on the providers of ``session_providers``; ``session.get_providers()`` says which
    one it really runs on (onnxruntime falls back to CPU when CUDA's libraries fail to load)."""
    return ort.InferenceSession(str(path), providers=session_providers(prefer_gpu))


@dataclass
class Recommendation:
    items: list[str]
    scores: list[float]
    unknown_items: list[str] = field(default_factory=list)
    history_used: int = 0
    fallback: str | None = None  # None: the model ranked; "popularity" / "unavailable": a cold-start answer


def file_sha256(path: Path, shown: str) -> tuple[bytes, str]:
    """The file's bytes and their SHA-256 (hex): the session is built from the very bytes that were hashed."""
    try:
        content = path.read_bytes()
    except FileNotFoundError:
        raise RegistryError(f"{shown} is missing") from None
    except OSError as error:
        raise RegistryError(f"{shown} cannot be read: {error}") from error
    return content, hashlib.sha256(content).hexdigest()


def _manifest(folder: Path, label: str) -> dict:
    shown = f"{label}/{MANIFEST_FILE}"
    manifest = read_json(folder / MANIFEST_FILE, shown)
    if not isinstance(manifest, dict):
        raise RegistryError(f"{shown} must hold a JSON object")
    missing = [key for key in ("model", "version", "item_ids", "k") if key not in manifest]
    if missing:
        raise RegistryError(f"{shown} has no {', '.join(repr(key) for key in missing)}")
    if manifest["model"] != folder.parent.name or manifest["version"] != folder.name:
        raise RegistryError(
            f"{shown} names {manifest['model']!r}/{manifest['version']!r} but lies in {folder.parent.name}/{folder.name}"
        )
    item_ids = manifest["item_ids"]
    if not isinstance(item_ids, list) or len(item_ids) < 2 or not all(isinstance(item, str) for item in item_ids):
        raise RegistryError(f"{shown}: 'item_ids' must be a list of strings (position 0 = padding, then the items)")
    if len(set(item_ids[1:])) != len(item_ids) - 1:
        raise RegistryError(f"{shown}: 'item_ids' repeats an item id")
    if not isinstance(manifest["k"], int) or manifest["k"] < 1:
        raise RegistryError(f"{shown}: 'k' must be a positive integer, got {manifest['k']!r}")
    return manifest


def _check_contract(session: ort.InferenceSession, manifest: dict, shown: str) -> None:
    """The graph must be the serving contract the manifest describes: ``history`` in, ``items`` and
    ``scores`` out, k columns, and scores for exactly the manifest's items (a history holding every item
    masks them all; a graph with more items scores some of them, one with fewer cannot index them)."""
    inputs = [value.name for value in session.get_inputs()]
    outputs = {value.name: value.shape for value in session.get_outputs()}
    if inputs != ["history"] or not {"items", "scores"} <= set(outputs):
        raise RegistryError(f"{shown} is not the serving contract: inputs {inputs}, outputs {sorted(outputs)}")
    graph_k = outputs["items"][1]
    if graph_k != manifest["k"]:
        raise RegistryError(f"{shown} returns k = {graph_k} items but its manifest says k = {manifest['k']}")
    n_items = len(manifest["item_ids"]) - 1
    every_item = np.arange(1, n_items + 1, dtype=np.int64)[None, :]
    try:
        items, scores = session.run(["items", "scores"], {"history": every_item})
    except ORT_ERRORS as error:
        raise RegistryError(
            f"{shown} cannot score the manifest's {n_items} items (the graph has fewer): {str(error).splitlines()[0]}"
        ) from error
    if items.max() > n_items or not np.isneginf(scores).all():
        raise RegistryError(f"{shown} scores more items than the manifest's {n_items} item_ids")


def _explainer(folder: Path, manifest: dict, label: str, providers: list[str]) -> ort.InferenceSession | None:
    """The explanation graph the manifest announces, checked against the SHA-256 the manifest gives it and
    against its contract (``history`` and ``items`` in, ``contributions [batch, k, modalities]`` out). Its
    file is always ``explain.onnx`` beside the model: the manifest cannot point anywhere else."""
    explanation = manifest.get("explain") or {}
    if not explanation:
        return None
    shown = f"{label}/{EXPLAIN_FILE}"
    modalities = explanation.get("modalities")
    if explanation.get("file") != EXPLAIN_FILE or not isinstance(explanation.get("sha256"), str):
        raise RegistryError(f"{label}/{MANIFEST_FILE}: 'explain' must name {EXPLAIN_FILE} and its 'sha256'")
    if not isinstance(modalities, list) or not modalities or not all(isinstance(name, str) for name in modalities):
        raise RegistryError(f"{label}/{MANIFEST_FILE}: 'explain' must list its 'modalities' by name")
    content, digest = file_sha256(folder / EXPLAIN_FILE, shown)
    if digest != explanation["sha256"]:
        raise RegistryError(
            f"{shown} has SHA-256 {digest[:VERSION_DIGITS]}..., not the manifest's "
            f"{explanation['sha256'][:VERSION_DIGITS]}...: the file was replaced or corrupted after it was registered"
        )
    try:
        session = ort.InferenceSession(content, providers=providers)
    except ORT_ERRORS as error:
        raise RegistryError(f"{shown} cannot be loaded by ONNX Runtime: {str(error).splitlines()[0]}") from error
    inputs = [value.name for value in session.get_inputs()]
    outputs = {value.name: value.shape for value in session.get_outputs()}
    if inputs != ["history", "items"] or list(outputs) != ["contributions"]:
        raise RegistryError(f"{shown} is not the explanation contract: inputs {inputs}, outputs {sorted(outputs)}")
    if outputs["contributions"][2] != len(modalities):
        raise RegistryError(
            f"{shown} explains {outputs['contributions'][2]} modalities, its manifest names {len(modalities)}"
        )
    return session


def _popularity(manifest: dict, index: dict[str, int], shown: str) -> tuple[tuple[str, float], ...] | None:
    """The manifest's cold-start list (most popular first), each item checked to be one of its items."""
    ranking = manifest.get(POPULARITY) or []
    entries = []
    for entry in ranking:
        if not isinstance(entry, dict) or entry.get("item_id") not in index or not isinstance(entry.get("users"), int):
            raise RegistryError(f"{shown}: popularity entry {entry!r} is not {{'item_id': <an item>, 'users': <int>}}")
        entries.append((entry["item_id"], float(entry["users"])))
    return tuple(entries) or None


@dataclass(frozen=True)
class LoadedModel:
    name: str
    version: str
    manifest: dict
    session: ort.InferenceSession
    item_ids: np.ndarray
    item_index: dict[str, int]
    max_history_length: int | None  # None: the model reads the whole history
    popularity: tuple[tuple[str, float], ...] | None  # the cold-start answer: (item id, training users)
    explainer: ort.InferenceSession | None = None  # per-modality contributions, where the family has them

    @property
    def modalities(self) -> list[str]:
        return list(self.manifest["explain"]["modalities"]) if self.explainer is not None else []

    @property
    def provider(self) -> str:
        return self.session.get_providers()[0]

    @property
    def max_k(self) -> int:
        return int(self.manifest["k"])

    @classmethod
    def load(cls, folder: Path, prefer_gpu: bool = True) -> "LoadedModel":
        """Load ``<model>/<version>/`` after checking that it is what it claims to be: the SHA-256 of
        ``model.onnx`` starts with the version, which is the folder's name and the manifest's version, and
        the graph is the contract its manifest describes. Anything else is a ``RegistryError`` naming the file."""
        folder = Path(folder)
        label = f"{folder.parent.name}/{folder.name}"
        manifest = _manifest(folder, label)
        shown = f"{label}/{MODEL_FILE}"
        content, digest = file_sha256(folder / MODEL_FILE, shown)
        if digest[:VERSION_DIGITS] != folder.name:
            raise RegistryError(
                f"{shown} has SHA-256 {digest[:VERSION_DIGITS]}..., not its version {folder.name}: "
                "the file was replaced or corrupted after it was registered"
            )
        requested = session_providers(prefer_gpu)
        try:
            session = ort.InferenceSession(content, providers=requested)
        except ORT_ERRORS as error:
            raise RegistryError(f"{shown} cannot be loaded by ONNX Runtime: {str(error).splitlines()[0]}") from error
        _check_contract(session, manifest, shown)
        index = {item: internal for internal, item in enumerate(manifest["item_ids"]) if internal > 0}
        model = cls(
            name=manifest["model"],
            version=manifest["version"],
            manifest=manifest,
            session=session,
            item_ids=np.asarray(manifest["item_ids"], dtype=object),
            item_index=index,
            max_history_length=manifest.get("max_history_length"),
            popularity=_popularity(manifest, index, f"{label}/{MANIFEST_FILE}"),
            explainer=_explainer(folder, manifest, label, requested),
        )
        if model.provider != requested[0]:
            note = f" ({requested[0]} was requested but did not load: onnxruntime's error above says why)"
        elif prefer_gpu and GPU_PROVIDER not in requested and GPU_PROVIDER in ort.get_available_providers():
            note = " (onnxruntime lists CUDA, but no usable CUDA device here: running on CPU)"
        else:
            note = ""
        log.info("loaded %s/%s, running on %s%s", model.name, model.version, model.provider, note)
        if model.popularity is None:
            log.warning(
                "%s/%s has no popularity list (registered before recpipe recorded one): empty or all-unknown "
                "histories get no items (fallback %r)",
                model.name,
                model.version,
                NO_POPULARITY,
            )
        return model

    def recommend(self, histories: list[list[str]], k: int) -> list[Recommendation]:
        """Top ``k`` unseen items for each history of external ids (oldest first).

        Unknown ids are skipped and reported. The whole known history goes to the
        graph, which masks every item of it and whose model reads its most recent
        ``max_history_length`` items: the rule evaluation applies, so a long history
        is never served an item it already holds. A history with no known item gets
        the cold-start answer instead: the manifest's most popular items.
        """
        if not 1 <= k <= self.max_k:
            raise ValueError(f"k must be in [1, {self.max_k}], got {k}")
        rows, results = [], []
        for history in histories:
            known = [self.item_index[item] for item in history if item in self.item_index]
            unknown = [item for item in history if item not in self.item_index]
            rows.append(known)
            read = len(known) if self.max_history_length is None else min(len(known), self.max_history_length)
            results.append(Recommendation([], [], unknown, read))
        ranked = [position for position, row in enumerate(rows) if row]
        for position in set(range(len(rows))) - set(ranked):
            cold = self.popularity[:k] if self.popularity else ()
            results[position].items = [item for item, _ in cold]
            results[position].scores = [users for _, users in cold]
            results[position].fallback = POPULARITY if self.popularity else NO_POPULARITY
        if not ranked:
            return results
        width = max(len(rows[position]) for position in ranked)
        padded = np.zeros((len(ranked), width), dtype=np.int64)
        for line, position in enumerate(ranked):
            padded[line, width - len(rows[position]) :] = rows[position]
        items, scores = self.session.run(["items", "scores"], {"history": padded})
        for position, item_row, score_row in zip(ranked, items[:, :k], scores[:, :k]):
            usable = np.isfinite(score_row)
            results[position].items = [str(item) for item in self.item_ids[item_row[usable]]]
            results[position].scores = [float(score) for score in score_row[usable]]
        return results

    def explain(self, history: list[str], items: list[str]) -> tuple[list[dict[str, float]], list[str], int]:
        """Each of ``items``' per-modality contributions to its score for ``history`` (external ids, oldest
        first): the score minus the score with that modality masked in the history. Returns the
        contributions in the order of ``items``, the history's unknown ids and how many history items the
        model read. A model without an explanation graph, an unknown item to explain or a history with no
        known item is a ``ValueError``."""
        if self.explainer is None:
            raise ValueError(f"{self.name}/{self.version} has no explanation graph (its family has no modalities)")
        unknown_targets = [item for item in items if item not in self.item_index]
        if unknown_targets:
            raise ValueError(f"items not in the catalogue: {unknown_targets[:10]}")
        known = [self.item_index[item] for item in history if item in self.item_index]
        unknown = [item for item in history if item not in self.item_index]
        if not known:
            raise ValueError("the history holds no item of the catalogue: there is nothing to explain from")
        feed = {
            "history": np.asarray([known], dtype=np.int64),
            "items": np.asarray([[self.item_index[item] for item in items]], dtype=np.int64),
        }
        (contributions,) = self.explainer.run(["contributions"], feed)
        names = self.modalities
        rows = [{name: float(value) for name, value in zip(names, row)} for row in contributions[0]]
        read = len(known) if self.max_history_length is None else min(len(known), self.max_history_length)
        return rows, unknown, read
