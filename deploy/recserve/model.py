"""One registry entry loaded for serving: an ONNX Runtime session plus its manifest's id maps."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnxruntime as ort

log = logging.getLogger("recserve")
GPU_PROVIDER = "CUDAExecutionProvider"
CPU_PROVIDER = "CPUExecutionProvider"


def open_session(path: Path, prefer_gpu: bool) -> ort.InferenceSession:
    """CUDA only where the session really runs on it: onnxruntime-gpu lists CUDA among the
    available providers even without a GPU and then silently falls back to CPU."""
    wanted = (
        [GPU_PROVIDER, CPU_PROVIDER] if prefer_gpu and GPU_PROVIDER in ort.get_available_providers() else [CPU_PROVIDER]
    )
    return ort.InferenceSession(str(path), providers=wanted)


@dataclass
class Recommendation:
    items: list[str]
    scores: list[float]
    unknown_items: list[str] = field(default_factory=list)
    history_used: int = 0


@dataclass(frozen=True)
class LoadedModel:
    name: str
    version: str
    manifest: dict
    session: ort.InferenceSession
    item_ids: np.ndarray
    item_index: dict[str, int]
    max_history_length: int | None  # None: the model reads the whole history

    @property
    def provider(self) -> str:
        return self.session.get_providers()[0]

    @property
    def max_k(self) -> int:
        return int(self.manifest["k"])

    @classmethod
    def load(cls, folder: Path, prefer_gpu: bool = True) -> "LoadedModel":
        folder = Path(folder)
        manifest = json.loads((folder / "manifest.json").read_text())
        session = open_session(folder / "model.onnx", prefer_gpu)
        item_ids = np.asarray(manifest["item_ids"], dtype=object)
        index = {item: internal for internal, item in enumerate(manifest["item_ids"]) if internal > 0}
        model = cls(
            name=manifest["model"],
            version=manifest["version"],
            manifest=manifest,
            session=session,
            item_ids=item_ids,
            item_index=index,
            max_history_length=manifest.get("max_history_length"),
        )
        fallback = prefer_gpu and GPU_PROVIDER in ort.get_available_providers() and model.provider != GPU_PROVIDER
        note = (
            " (onnxruntime lists CUDA, but no usable CUDA device or library here: running on CPU)" if fallback else ""
        )
        log.info("loaded %s/%s, running on %s%s", model.name, model.version, model.provider, note)
        return model

    def recommend(self, histories: list[list[str]], k: int) -> list[Recommendation]:
        """Top ``k`` unseen items for each history of external ids (oldest first).

        Unknown ids are skipped and reported. The whole known history goes to the
        graph, which masks every item of it and whose model reads its most recent
        ``max_history_length`` items: the rule evaluation applies, so a long history
        is never served an item it already holds.
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
        width = max(1, max(len(row) for row in rows))
        padded = np.zeros((len(rows), width), dtype=np.int64)
        for position, row in enumerate(rows):
            if row:
                padded[position, width - len(row) :] = row
        items, scores = self.session.run(["items", "scores"], {"history": padded})
        for result, item_row, score_row in zip(results, items[:, :k], scores[:, :k]):
            usable = np.isfinite(score_row)
            result.items = [str(item) for item in self.item_ids[item_row[usable]]]
            result.scores = [float(score) for score in score_row[usable]]
        return results
