"""The HTTP service: recommendations from the live registry model, hot-swappable without failed requests.

Settings come from the environment (``Settings.from_env``):

- ``RECSERVE_REGISTRY``: the registry folder (default ``artifacts/registry``, what ``make run`` writes);
  with ``RECSERVE_DVC_REPO`` (and ``RECSERVE_DVC_REV``) it is first fetched with ``dvc get`` from that
  repository (default ``release/registry``, what ``make release`` publishes);
- ``RECSERVE_MODEL`` / ``RECSERVE_VERSION``: what to serve (default: the registry's
  ``champion.json``; a model without a version serves its newest version);
- ``RECSERVE_PREFER_GPU`` (default 1: CUDA where a CUDA device is present), ``RECSERVE_MAX_BODY_BYTES``,
  ``RECSERVE_MAX_BATCH``;
- ``RECSERVE_PROVIDERS``: ONNX Runtime providers to ask for, comma-separated in order (overrides
  ``RECSERVE_PREFER_GPU``), e.g. ``CUDAExecutionProvider,CPUExecutionProvider``.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, StrictInt, StrictStr

from recserve.model import LoadedModel

log = logging.getLogger("recserve")
CHAMPION_FILE = "champion.json"
LOCAL_REGISTRY = "artifacts/registry"
RELEASED_REGISTRY = "release/registry"


@dataclass(frozen=True)
class Settings:
    registry: Path
    model: str | None = None
    version: str | None = None
    prefer_gpu: bool = True
    max_body_bytes: int = 1 << 20
    max_batch: int = 1024
    max_history_items: int = 10_000

    @classmethod
    def from_env(cls) -> "Settings":
        repo = os.environ.get("RECSERVE_DVC_REPO")
        # a repository publishes its registry through `make release`; a local run writes artifacts/registry
        registry = Path(os.environ.get("RECSERVE_REGISTRY", RELEASED_REGISTRY if repo else LOCAL_REGISTRY))
        if repo:
            registry = fetch_registry(repo, os.environ.get("RECSERVE_DVC_REV"), str(registry))
        return cls(
            registry=registry,
            model=os.environ.get("RECSERVE_MODEL") or None,
            version=os.environ.get("RECSERVE_VERSION") or None,
            prefer_gpu=os.environ.get("RECSERVE_PREFER_GPU", "1") != "0",
            max_body_bytes=int(os.environ.get("RECSERVE_MAX_BODY_BYTES", 1 << 20)),
            max_batch=int(os.environ.get("RECSERVE_MAX_BATCH", 1024)),
        )


def fetch_registry(repo: str, rev: str | None, path_in_repo: str) -> Path:
    """``dvc get`` the registry folder of a recpipe repository at ``rev`` into a temporary folder."""
    if shutil.which("dvc") is None:
        raise RuntimeError("RECSERVE_DVC_REPO is set but the dvc command is not installed")
    target = Path(tempfile.mkdtemp(prefix="recserve-")) / "registry"
    command = ["dvc", "get", repo, path_in_repo, "-o", str(target)] + (["--rev", rev] if rev else [])
    subprocess.run(command, check=True)
    return target


def resolve(registry: Path, model: str | None, version: str | None) -> Path:
    """The registry folder to serve: the named model and version, its newest version, or the champion."""
    if model is None:
        champion = registry / CHAMPION_FILE
        if not champion.exists():
            raise FileNotFoundError(f"{champion} is missing: name a model (RECSERVE_MODEL) or register a champion")
        pointer = json.loads(champion.read_text())
        model, version = pointer["model"], version or pointer["version"]
    if version is None:
        candidates = [entry for entry in (registry / model).glob("*/manifest.json")]
        if not candidates:
            raise FileNotFoundError(f"no registered version of {model!r} under {registry}")
        newest = max(candidates, key=lambda path: (json.loads(path.read_text())["created_at"], path.parent.name))
        return newest.parent
    folder = registry / model / version
    if not (folder / "manifest.json").exists():
        raise FileNotFoundError(f"{folder} holds no registered model")
    return folder


class ModelSlot:
    """The live model. Readers take one reference per request; a reload builds the new model
    first and swaps the reference under a lock, so in-flight requests finish on the old one."""

    def __init__(self, model: LoadedModel) -> None:
        self.current = model
        self._reload_lock = threading.Lock()

    def reload(self, folder: Path, prefer_gpu: bool) -> LoadedModel:
        with self._reload_lock:
            fresh = LoadedModel.load(folder, prefer_gpu)
            previous, self.current = self.current, fresh
        log.info("swapped %s/%s for %s/%s", previous.name, previous.version, fresh.name, fresh.version)
        return fresh


class RecommendRequest(BaseModel):
    history: list[StrictStr | StrictInt] = Field(description="External item ids, oldest first.")
    k: StrictInt = Field(default=10, description="How many items to return.")


class BatchRequest(BaseModel):
    requests: list[RecommendRequest]


class ReloadRequest(BaseModel):
    model: str | None = None
    version: str | None = None


def _announce_to_console() -> None:
    """uvicorn configures only its own loggers; the provider line must reach the console too."""
    if not log.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s:     recserve: %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)


def create_app(settings: Settings | None = None) -> FastAPI:
    _announce_to_console()
    settings = settings or Settings.from_env()
    slot = ModelSlot(
        LoadedModel.load(resolve(settings.registry, settings.model, settings.version), settings.prefer_gpu)
    )
    app = FastAPI(title="recserve", description="History in, top-k out, from recpipe's ONNX registry.")
    app.state.slot = slot
    log.info("serving %s/%s on %s", slot.current.name, slot.current.version, slot.current.provider)

    @app.middleware("http")
    async def limit_body(request: Request, call_next):
        declared = request.headers.get("content-length")
        if declared is not None and int(declared) > settings.max_body_bytes:
            return JSONResponse(
                {"detail": f"body of {declared} bytes exceeds {settings.max_body_bytes}"}, status_code=413
            )
        return await call_next(request)

    def checked(requests: list[RecommendRequest]) -> None:
        if len(requests) > settings.max_batch:
            raise HTTPException(413, f"{len(requests)} requests in one batch; at most {settings.max_batch}")
        for index, item in enumerate(requests):
            if len(item.history) > settings.max_history_items:
                raise HTTPException(
                    413, f"request {index}: history of {len(item.history)} items; at most {settings.max_history_items}"
                )

    def answer(model: LoadedModel, requests: list[RecommendRequest]) -> list[dict]:
        ks = {item.k for item in requests}
        for index, item in enumerate(requests):
            if not 1 <= item.k <= model.max_k:
                raise HTTPException(422, f"request {index}: k must be in [1, {model.max_k}], got {item.k}")
        results: list[dict | None] = [None] * len(requests)
        for k in sorted(ks):  # one session run per distinct k
            chosen = [index for index, item in enumerate(requests) if item.k == k]
            histories = [[str(item) for item in requests[index].history] for index in chosen]
            for index, result in zip(chosen, model.recommend(histories, k)):
                results[index] = {
                    "items": [{"item_id": item, "score": score} for item, score in zip(result.items, result.scores)],
                    "unknown_items": result.unknown_items,
                    "history_used": result.history_used,
                }
        return results

    @app.post("/recommend")
    def recommend(request: RecommendRequest) -> dict:
        model = slot.current
        checked([request])
        return {"model": model.name, "version": model.version, **answer(model, [request])[0]}

    @app.post("/recommend/batch")
    def recommend_batch(request: BatchRequest) -> dict:
        model = slot.current
        checked(request.requests)
        return {"model": model.name, "version": model.version, "results": answer(model, request.requests)}

    @app.get("/healthz")
    def healthz() -> dict:
        model = slot.current
        return {"status": "ok", "model": model.name, "version": model.version, "provider": model.provider}

    @app.get("/models")
    def models() -> dict:
        model = slot.current
        live = {key: value for key, value in model.manifest.items() if key != "item_ids"}
        available = sorted(
            str(path.parent.relative_to(settings.registry)) for path in settings.registry.glob("*/*/manifest.json")
        )
        return {"live": live, "provider": model.provider, "n_items": len(model.item_ids) - 1, "available": available}

    @app.post("/admin/reload")
    def reload(request: ReloadRequest) -> dict:
        try:
            folder = resolve(settings.registry, request.model, request.version)
        except FileNotFoundError as error:
            raise HTTPException(404, str(error)) from error
        fresh = slot.reload(folder, settings.prefer_gpu)
        return {"model": fresh.name, "version": fresh.version, "provider": fresh.provider}

    return app
