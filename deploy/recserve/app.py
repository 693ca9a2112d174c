"""The HTTP service: recommendations from the live registry model, hot-swappable without failed requests.

Settings come from the environment (``Settings.from_env``):

- ``RECSERVE_REGISTRY``: the registry folder (default ``artifacts/registry``, what ``make run`` writes);
  with ``RECSERVE_DVC_REPO`` (and ``RECSERVE_DVC_REV``) it is first fetched with ``dvc get`` from that
  repository (default ``release/registry``, what ``make release`` publishes);
- ``RECSERVE_MODEL`` / ``RECSERVE_VERSION``: what to serve (default: the registry's
  ``champion.json``; a model without a version serves its newest version);
- ``RECSERVE_ADMIN_TOKEN``: the bearer token ``POST /admin/reload`` needs (unset: reload is disabled);
- ``RECSERVE_WATCH_SECONDS``: poll ``champion.json`` this often and swap to what it names (0, the
  default: no polling; ignored when ``RECSERVE_MODEL`` pins a model);
- ``RECSERVE_PREFER_GPU`` (default 1: CUDA where a CUDA device is present), ``RECSERVE_MAX_BODY_BYTES``,
  ``RECSERVE_MAX_BATCH``, ``RECSERVE_BODY_TIMEOUT_SECONDS``;
- ``RECSERVE_PROVIDERS``: ONNX Runtime providers to ask for, comma-separated in order (overrides
  ``RECSERVE_PREFER_GPU``), e.g. ``CUDAExecutionProvider,CPUExecutionProvider``;
- for the server (``python -m recserve``, ``recserve.server``): ``RECSERVE_HEADER_TIMEOUT_SECONDS``,
  ``RECSERVE_KEEP_ALIVE_SECONDS``, ``RECSERVE_LIMIT_CONCURRENCY``, ``RECSERVE_MAX_HEADER_BYTES``.
"""

from __future__ import annotations

import contextlib
import hmac
import logging
import math
import os
import shutil
import subprocess
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

import anyio
from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, StrictInt, StrictStr, ValidationError, field_validator
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from recserve.model import LoadedModel
from recserve.registry import (
    CHAMPION_FILE,
    PLAIN_NAME_RULE,
    NotRegistered,
    RegistryError,
    is_plain_name,
    resolve,
)

log = logging.getLogger("recserve")
LOCAL_REGISTRY = "artifacts/registry"
RELEASED_REGISTRY = "release/registry"
RELOAD_PATH = "/admin/reload"


class ConfigurationError(ValueError):
    """A setting from the environment that cannot be used; the message names the variable."""


def _env_number(name: str, default: float, kind: type = int) -> float:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        number = kind(value)
    except ValueError:
        raise ConfigurationError(f"{name} must be a {kind.__name__}, got {value!r}") from None
    if number < 0:
        raise ConfigurationError(f"{name} must not be negative, got {value!r}")
    return number


@dataclass(frozen=True)
class Settings:
    registry: Path
    model: str | None = None
    version: str | None = None
    prefer_gpu: bool = True
    max_body_bytes: int = 1 << 20
    max_batch: int = 1024
    max_history_items: int = 10_000
    admin_token: str | None = None
    watch_seconds: float = 0.0
    body_timeout_seconds: float = 10.0
    # read by recserve.server, which runs the app behind uvicorn
    header_timeout_seconds: float = 10.0
    keep_alive_seconds: int = 5
    limit_concurrency: int = 256
    max_header_bytes: int = 16 * 1024

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
            max_body_bytes=_env_number("RECSERVE_MAX_BODY_BYTES", cls.max_body_bytes),
            max_batch=_env_number("RECSERVE_MAX_BATCH", cls.max_batch),
            admin_token=os.environ.get("RECSERVE_ADMIN_TOKEN") or None,
            watch_seconds=_env_number("RECSERVE_WATCH_SECONDS", cls.watch_seconds, float),
            body_timeout_seconds=_env_number("RECSERVE_BODY_TIMEOUT_SECONDS", cls.body_timeout_seconds, float),
            header_timeout_seconds=_env_number("RECSERVE_HEADER_TIMEOUT_SECONDS", cls.header_timeout_seconds, float),
            keep_alive_seconds=_env_number("RECSERVE_KEEP_ALIVE_SECONDS", cls.keep_alive_seconds),
            limit_concurrency=_env_number("RECSERVE_LIMIT_CONCURRENCY", cls.limit_concurrency),
            max_header_bytes=_env_number("RECSERVE_MAX_HEADER_BYTES", cls.max_header_bytes),
        )


def fetch_registry(repo: str, rev: str | None, path_in_repo: str) -> Path:
    """``dvc get`` the registry folder of a recpipe repository at ``rev`` into a temporary folder."""
    if shutil.which("dvc") is None:
        raise ConfigurationError("RECSERVE_DVC_REPO is set but the dvc command is not installed")
    target = Path(tempfile.mkdtemp(prefix="recserve-")) / "registry"
    command = ["dvc", "get", repo, path_in_repo, "-o", str(target)] + (["--rev", rev] if rev else [])
    done = subprocess.run(command)
    if done.returncode != 0:
        raise ConfigurationError(f"`{' '.join(command)}` failed with exit code {done.returncode} (its error is above)")
    return target


class ModelSlot:
    """The live model. Readers take one reference per request; a reload builds (and checks) the new
    model first and swaps the reference under a lock, so in-flight requests finish on the old one and
    a refused entry leaves the old one serving."""

    def __init__(self, model: LoadedModel) -> None:
        self.current = model
        self._reload_lock = threading.Lock()

    def reload(self, folder: Path, prefer_gpu: bool) -> LoadedModel:
        with self._reload_lock:
            fresh = LoadedModel.load(folder, prefer_gpu)
            previous, self.current = self.current, fresh
        log.info("swapped %s/%s for %s/%s", previous.name, previous.version, fresh.name, fresh.version)
        return fresh


class ChampionWatcher:
    """Polls ``champion.json`` every ``interval`` seconds and swaps to what it names when its content
    changes: how every replica follows a new champion. A pointer or entry that fails its checks is
    logged once (until the file changes again) and the live model keeps serving."""

    def __init__(self, registry: Path, slot: ModelSlot, prefer_gpu: bool, interval: float) -> None:
        self.registry, self.slot, self.prefer_gpu, self.interval = registry, slot, prefer_gpu, interval
        self._seen = self._content()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="champion-watcher", daemon=True)

    def _content(self) -> bytes | None:
        try:
            return (self.registry / CHAMPION_FILE).read_bytes()
        except FileNotFoundError:
            return None

    def start(self) -> None:
        log.info("watching %s every %s s", CHAMPION_FILE, self.interval)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def check(self) -> None:
        content = self._content()
        if content is None or content == self._seen:
            return
        self._seen = content
        live = self.slot.current
        try:
            folder = resolve(self.registry, None, None, CHAMPION_FILE)
            if (folder.parent.name, folder.name) != (live.name, live.version):
                self.slot.reload(folder, self.prefer_gpu)
        except RegistryError as error:
            log.error(
                "%s changed but is refused: %s; still serving %s/%s", CHAMPION_FILE, error, live.name, live.version
            )

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.check()


class RecommendRequest(BaseModel):
    history: list[StrictStr | StrictInt] = Field(description="External item ids, oldest first.")
    k: StrictInt = Field(default=10, description="How many items to return.")


class ExplainRequest(BaseModel):
    history: list[StrictStr | StrictInt] = Field(description="External item ids, oldest first.")
    items: list[StrictStr | StrictInt] = Field(description="The items to explain (e.g. a /recommend answer).")


class BatchRequest(BaseModel):
    requests: list[RecommendRequest]


class ReloadRequest(BaseModel):
    model: str | None = Field(default=None, description="A registered model (default: the champion's).")
    version: str | None = Field(default=None, description="One of its versions (default: its newest).")

    @field_validator("model", "version")
    @classmethod
    def plain(cls, value: str | None) -> str | None:
        if value is not None and not is_plain_name(value):
            raise ValueError(f"{value!r} is not a plain registry name ({PLAIN_NAME_RULE})")
        return value


class RequestGuard:
    """Reads each request's whole body before the app sees it, counting bytes as they arrive whatever
    the transfer encoding (chunked too): 413 once the body passes ``max_bytes``, 408 when it has not
    arrived within ``timeout`` seconds. Both answers close the connection, so the rest of a body is
    never read and a slow client cannot hold the request open."""

    def __init__(self, app: ASGIApp, max_bytes: int, timeout: float) -> None:
        self.app, self.max_bytes, self.timeout = app, max_bytes, timeout

    @staticmethod
    async def refuse(scope: Scope, receive: Receive, send: Send, status: int, detail: str) -> None:
        log.warning("refused %s %s from %s: %s", scope["method"], scope["path"], _client(scope), detail)
        await JSONResponse({"detail": detail}, status_code=status, headers={"connection": "close"})(
            scope, receive, send
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and not declared.isdigit():
            return await self.refuse(scope, receive, send, 400, "Content-Length must be a number of bytes")
        if declared is not None and int(declared) > self.max_bytes:
            detail = f"body of {int(declared)} bytes exceeds {self.max_bytes}"
            return await self.refuse(scope, receive, send, 413, detail)
        chunks, size, more = [], 0, True
        try:
            with anyio.fail_after(self.timeout):
                while more:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        return None
                    chunks.append(message.get("body", b""))
                    size += len(chunks[-1])
                    if size > self.max_bytes:
                        detail = f"body exceeds {self.max_bytes} bytes (stopped reading at {size})"
                        return await self.refuse(scope, receive, send, 413, detail)
                    more = message.get("more_body", False)
        except TimeoutError:
            detail = f"the body did not arrive within {self.timeout:g} s ({size} bytes came)"
            return await self.refuse(scope, receive, send, 408, detail)
        body, replayed = b"".join(chunks), False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


def _client(scope: Scope) -> str:
    client = scope.get("client")
    return f"{client[0]}:{client[1]}" if client else "an unknown client"


def _readable(error: dict) -> dict:
    """A validation error the response can encode: location, message and type, never the input (which
    may be NaN or Infinity, which JSON cannot carry, or a large part of the body)."""
    message = error["msg"]
    if isinstance(error.get("input"), float) and not math.isfinite(error["input"]):
        message += " (NaN and Infinity are not JSON numbers; a number like 1e400 overflows to Infinity)"
    return {"loc": list(error["loc"]), "msg": message, "type": error["type"]}


def _announce_to_console() -> None:
    """uvicorn configures only its own loggers; the provider line must reach the console too."""
    if not log.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s:     recserve: %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)


def create_app(settings: Settings | None = None) -> FastAPI:
    """The service on ``settings`` (default: the environment). A registry the service cannot serve from
    raises ``RegistryError`` naming the file; ``python -m recserve`` prints it as one line."""
    _announce_to_console()
    settings = settings or Settings.from_env()
    source = "RECSERVE_MODEL/RECSERVE_VERSION" if settings.model or settings.version else CHAMPION_FILE
    slot = ModelSlot(
        LoadedModel.load(resolve(settings.registry, settings.model, settings.version, source), settings.prefer_gpu)
    )
    watcher = None
    if settings.watch_seconds > 0 and settings.model is not None:
        log.warning("RECSERVE_WATCH_SECONDS is ignored: RECSERVE_MODEL pins %s", settings.model)
    elif settings.watch_seconds > 0:
        watcher = ChampionWatcher(settings.registry, slot, settings.prefer_gpu, settings.watch_seconds)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        if watcher:
            watcher.start()
        try:
            yield
        finally:
            if watcher:
                watcher.stop()

    app = FastAPI(
        title="recserve", description="History in, top-k out, from recpipe's ONNX registry.", lifespan=lifespan
    )
    app.state.slot, app.state.watcher = slot, watcher
    app.add_middleware(RequestGuard, max_bytes=settings.max_body_bytes, timeout=settings.body_timeout_seconds)
    log.info("serving %s/%s on %s", slot.current.name, slot.current.version, slot.current.provider)
    if settings.admin_token is None:
        log.info("POST %s is disabled: no RECSERVE_ADMIN_TOKEN", RELOAD_PATH)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, error: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": [_readable(item) for item in error.errors()]}, status_code=422)

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
                    "fallback": result.fallback,
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

    @app.post("/explain")
    def explain(request: ExplainRequest) -> dict:
        """Per recommended item, how much each modality of the history adds to its score (occlusion)."""
        model = slot.current
        if len(request.history) > settings.max_history_items:
            raise HTTPException(413, f"history of {len(request.history)} items; at most {settings.max_history_items}")
        if not 1 <= len(request.items) <= model.max_k:
            raise HTTPException(422, f"explain 1 to {model.max_k} items, got {len(request.items)}")
        if model.explainer is None:
            raise HTTPException(409, f"{model.name}/{model.version} has no explanation graph")
        try:
            rows, unknown, read = model.explain(
                [str(item) for item in request.history], [str(i) for i in request.items]
            )
        except ValueError as error:
            raise HTTPException(422, str(error)) from error
        return {
            "model": model.name,
            "version": model.version,
            "modalities": model.modalities,
            "items": [{"item_id": str(item), "contributions": row} for item, row in zip(request.items, rows)],
            "unknown_items": unknown,
            "history_used": read,
        }

    @app.get("/healthz")
    def healthz() -> dict:
        model = slot.current
        return {"status": "ok", "model": model.name, "version": model.version, "provider": model.provider}

    @app.get("/models")
    def models() -> dict:
        model = slot.current
        live = {key: value for key, value in model.manifest.items() if key not in ("item_ids", "popularity")}
        available = sorted(
            str(path.parent.relative_to(settings.registry)) for path in settings.registry.glob("*/*/manifest.json")
        )
        return {"live": live, "provider": model.provider, "n_items": len(model.item_ids) - 1, "available": available}

    def authorise(request: Request) -> None:
        """Bearer token against RECSERVE_ADMIN_TOKEN, compared in constant time; every refusal is logged."""
        client = _client(request.scope)
        if settings.admin_token is None:
            log.warning("refused POST %s from %s: reload is disabled", RELOAD_PATH, client)
            raise HTTPException(403, "reload is disabled on this server: it was started without RECSERVE_ADMIN_TOKEN")
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            log.warning("refused POST %s from %s: no bearer token", RELOAD_PATH, client)
            raise HTTPException(
                401, "POST /admin/reload needs 'Authorization: Bearer <token>'", headers={"WWW-Authenticate": "Bearer"}
            )
        if not hmac.compare_digest(token.strip().encode(), settings.admin_token.encode()):
            log.warning("refused POST %s from %s: wrong token", RELOAD_PATH, client)
            raise HTTPException(403, "wrong admin token")

    reload_body = {"content": {"application/json": {"schema": ReloadRequest.model_json_schema()}}, "required": False}

    @app.post(RELOAD_PATH, openapi_extra={"requestBody": reload_body})
    async def reload(request: Request) -> dict:
        """Swap the live model (``{}``: the champion again). Authorised first, then the body is read, so an
        unauthorised caller learns nothing about the registry."""
        authorise(request)
        try:
            wanted = ReloadRequest.model_validate_json(await request.body() or b"{}")
        except ValidationError as error:
            raise RequestValidationError(
                [{**item, "loc": ("body", *item["loc"])} for item in error.errors()]
            ) from error
        live = slot.current
        try:
            folder = resolve(settings.registry, wanted.model, wanted.version)
            fresh = await anyio.to_thread.run_sync(slot.reload, folder, settings.prefer_gpu)
        except NotRegistered as error:
            raise HTTPException(404, str(error)) from error
        except RegistryError as error:
            log.error("reload refused: %s; still serving %s/%s", error, live.name, live.version)
            raise HTTPException(409, f"refused: {error}; still serving {live.name}/{live.version}") from error
        return {"model": fresh.name, "version": fresh.version, "provider": fresh.provider}

    return app
