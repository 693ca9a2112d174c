"""One registry entry loaded for serving: an ONNX Runtime session plus its manifest's id maps."""

from __future__ import annotations

import ctypes
import json
import logging
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnxruntime as ort

log = logging.getLogger("recserve")
GPU_PROVIDER = "CUDAExecutionProvider"
CPU_PROVIDER = "CPUExecutionProvider"
PROVIDERS_ENV = "RECSERVE_PROVIDERS"
CUDA_DRIVER_LIBRARY = "nvcuda.dll" if sys.platform == "win32" else "libcuda.so.1"


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
        requested = session_providers(prefer_gpu)
        session = ort.InferenceSession(str(folder / "model.onnx"), providers=requested)
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
        if model.provider != requested[0]:
            note = f" ({requested[0]} was requested but did not load: onnxruntime's error above says why)"
        elif prefer_gpu and GPU_PROVIDER not in requested and GPU_PROVIDER in ort.get_available_providers():
            note = " (onnxruntime lists CUDA, but no usable CUDA device here: running on CPU)"
        else:
            note = ""
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
