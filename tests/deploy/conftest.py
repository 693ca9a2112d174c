"""Fixtures of the service tests: registries written as the pipeline writes them (popularity list
included) and the service behind a real uvicorn server on loopback, with the limits it runs with."""

from __future__ import annotations

import contextlib
import socket
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
def served_registry(ml100k_small_raw, tmp_path_factory, register_fitted) -> Path:
    """EASE (the champion) and MostPopular on a slice of ML-100K, k = 20, registered as the pipeline
    registers them. Tests that change it work on a copy."""
    from recmodels.models.baselines import EASE, MostPopular

    split = leave_one_out_split(Interactions.from_frame(ml100k_small_raw))
    root = tmp_path_factory.mktemp("served") / "registry"
    models = {"ease_model": EASE().fit(split), "popular_model": MostPopular().fit(split)}
    entries = register_fitted(root, models, split.train, SERVED_K)
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
