"""Fixtures of the service tests: registries written as the pipeline writes them (popularity list
included) and the service behind a real uvicorn server on loopback, with the limits it runs with."""

from __future__ import annotations

import contextlib
import socket
import tempfile
import threading
import time
from pathlib import Path

import pytest
import uvicorn
from recserve.app import Settings
from recserve.server import server_config

from recmodels.data.interactions import Interactions
from recmodels.data.splits import leave_one_out_split
from recmodels.registry import set_champion

SERVED_K = 20


@pytest.fixture(scope="session")
def register_served():
    """``register_served(root, {name: model}, train, k) -> {name: entry folder}``: each fitted model exported
    to ONNX and registered as ``registry/<model>`` does, with ``train``'s item popularity."""
    from recmodels.export import export_onnx, register_model  # torch: only once a test asks for it

    def register(root: Path, models: dict, train: Interactions, k: int) -> dict[str, Path]:
        entries = {}
        with tempfile.TemporaryDirectory() as exports:
            for name, model in models.items():
                onnx_file = Path(exports) / name / "model.onnx"
                entries[name] = register_model(
                    root,
                    onnx_file,
                    export_onnx(model, onnx_file, k=k),
                    model,
                    name=name,
                    item_ids=train.item_ids,
                    training_data_version="test",
                    metrics={},
                    parity={"passed": True},
                    item_popularity=train.item_user_counts(),
                )
        return entries

    return register


@pytest.fixture(scope="session")
def served_registry(ml100k_small_raw, tmp_path_factory, register_served) -> Path:
    """EASE (the champion) and MostPopular on a slice of ML-100K, k = 20, registered as the pipeline
    registers them. Tests that change it work on a copy."""
    from recmodels.models.baselines import EASE, MostPopular

    split = leave_one_out_split(Interactions.from_frame(ml100k_small_raw))
    root = tmp_path_factory.mktemp("served") / "registry"
    models = {"ease_model": EASE().fit(split), "popular_model": MostPopular().fit(split)}
    entries = register_served(root, models, split.train, SERVED_K)
    set_champion(root, "ease_model", entries["ease_model"].name, "test")
    return root


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def running(app, settings: Settings):
    """``app`` behind uvicorn as ``python -m recserve`` runs it (``recserve.server.server_config``) on a
    free loopback port; yields ``(host, port)``."""
    port = free_port()
    server = uvicorn.Server(server_config(app, settings, "127.0.0.1", port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started
    try:
        yield "127.0.0.1", port
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture(scope="session")
def serve():
    """``with serve(app, settings) as (host, port): ...``"""
    return running
