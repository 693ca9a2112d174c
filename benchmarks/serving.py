"""Serving speed: ONNX Runtime vs PyTorch scoring, and the HTTP service under a bounded loopback load.

For each model (default SASRec+SS, eSASRec, DiffRec on ML-1M): fit (``--epochs``,
default 1: speed does not depend on how well a model is trained), export to ONNX
(k = 100), then time the same top-k head in PyTorch and ONNX Runtime on real
histories (last 200 items): latency at batch 1 (median and p99 over
``--requests`` calls) and throughput at batch 256. Then the HTTP service
(``python -m recserve``: uvicorn, one worker, loopback only) serves the eSASRec
export: ``--requests`` requests at concurrency 1 and 16 (p50/p99 latency,
requests per second, errors), the same at concurrency 16 while the live model
is hot-swapped every half second, and ``--hostile-requests`` (2,000) at
concurrency 16 while 8 authorised reloads happen, while 100 slow clients hold
sockets (reconnecting whenever the server cuts them), and with both at once.
Errors count every answer to these well-formed requests that is not a 200.

``python benchmarks/serving.py [--dataset ml-1m-seq/ml-1m.txt] [--model ...] [--epochs 1] [--requests 500]
[--hostile-requests 2000] [--quick]``
"""

from __future__ import annotations

import dataclasses
import select
import socket
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from common import finish, parser, percentile, prepare, progress, recserve, run_isolated

VARIANTS = ["sasrec_ss", "esasrec", "diffrec"]
HISTORY_LENGTH = 200
K = 100


def build_model(variant: str, split, epochs: int):
    from recmodels.models.diffrec import DiffRec, diffrec
    from recmodels.models.sasrec import SASRec, esasrec, sasrec_ss

    if variant == "diffrec":
        config = diffrec()
        return DiffRec(
            dataclasses.replace(
                config, trainer=dataclasses.replace(config.trainer, epochs=epochs, validate_every=epochs)
            )
        )
    preset = {"sasrec_ss": sasrec_ss, "esasrec": esasrec}[variant](max_len=HISTORY_LENGTH)
    return SASRec(dataclasses.replace(preset, trainer=dataclasses.replace(preset.trainer, epochs=epochs)))


def scoring_speed(
    data_dir: Path, dataset: str, variant: str, epochs: int, requests: int, quick: bool, registry: str
) -> dict[str, Any]:
    """Fit, export, register; time PyTorch and ONNX Runtime on the same inputs."""
    import numpy as np
    import onnxruntime as ort
    import torch

    from recmodels.export import TopKHead, export_onnx, register_model
    from recmodels.registry import set_champion

    split = prepare(data_dir, dataset, quick).split
    model = build_model(variant, split, epochs).fit(split)
    work = Path(tempfile.mkdtemp())
    spec = export_onnx(model, work / "model.onnx", k=K)
    folder = register_model(
        Path(registry),
        work / "model.onnx",
        spec,
        model,
        name=f"{variant}_model",
        item_ids=split.train.item_ids,
        training_data_version=dataset,
        metrics={},
        parity={},
        item_popularity=split.train.item_user_counts(),
    )
    if variant == "esasrec":
        set_champion(Path(registry), f"{variant}_model", folder.name, "serving benchmark")
    histories, _ = split.test.history.sequences().padded(split.test.users[:256], HISTORY_LENGTH)
    head = TopKHead(model.scorer(), K).eval()
    session = ort.InferenceSession(str(work / "model.onnx"), providers=["CPUExecutionProvider"])

    def torch_run(batch: np.ndarray) -> None:
        with torch.inference_mode():
            head(torch.from_numpy(batch))

    def onnx_run(batch: np.ndarray) -> None:
        session.run(None, {"history": batch})

    result: dict[str, Any] = {"dataset": dataset, "model": variant, "threads": torch.get_num_threads()}
    for runtime, run in (("pytorch", torch_run), ("onnxruntime", onnx_run)):
        single = [histories[i % len(histories)][None, :] for i in range(requests)]
        run(single[0])
        latencies = []
        for row in single:
            started = time.perf_counter()
            run(row)
            latencies.append((time.perf_counter() - started) * 1000)
        run(histories)
        rounds = 5
        started = time.perf_counter()
        for _ in range(rounds):
            run(histories)
        seconds = (time.perf_counter() - started) / rounds
        result[runtime] = {
            "batch1_p50_ms": round(statistics.median(latencies), 3),
            "batch1_p99_ms": round(percentile(latencies, 0.99), 3),
            f"batch{len(histories)}_ms": round(seconds * 1000, 2),
            "users_per_second": round(len(histories) / seconds, 1),
        }
    progress(f"  {variant}: pytorch {result['pytorch']}  onnxruntime {result['onnxruntime']}")
    return result


class Reloads:
    """Hot swaps between ``models`` every ``spacing`` seconds, ``count`` of them (None: until stopped)."""

    def __init__(self, base: str, token: str, models: list[str], spacing: float, count: int | None = None) -> None:
        self.base, self.token, self.models, self.spacing, self.count = base, token, models, spacing, count
        self.done, self.failed, self.seconds, self.finished_at = 0, [], [], []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        import httpx

        headers = {"Authorization": f"Bearer {self.token}"}
        with httpx.Client(base_url=self.base, timeout=60, headers=headers) as http:
            while self._another():
                started = time.perf_counter()
                response = http.post("/admin/reload", json={"model": self.models[self.done % len(self.models)]})
                self.seconds.append(time.perf_counter() - started)
                self.finished_at.append(time.monotonic())
                if response.status_code != 200:
                    self.failed.append(response.status_code)
                self.done += 1

    def _another(self) -> bool:
        """After ``spacing`` seconds: a bounded series runs to its end (``stop`` waits for it), an open one
        until ``stop``."""
        if self.count is None:
            return not self._stop.wait(self.spacing)
        if self.done >= self.count:
            return False
        time.sleep(self.spacing)
        return True

    def start(self) -> None:
        self._thread.start()

    def stop(self, load_ended: float) -> dict[str, Any]:
        self._stop.set()
        self._thread.join()
        return {
            "reloads": self.done,
            "reloads_during_load": sum(finished <= load_ended for finished in self.finished_at),
            "failed_reloads": len(self.failed),
            "reload_seconds_mean": round(statistics.fmean(self.seconds), 3) if self.seconds else None,
            "reload_seconds_max": round(max(self.seconds, default=0.0), 3),
        }


class SlowClients:
    """``count`` sockets that never complete a request, held all along: half send their request headers
    one byte every ``interval`` seconds, half send headers announcing a 1,000-byte body and then one body
    byte every ``interval``. When the server closes one (its header or body deadline), it reconnects."""

    HEADERS = (
        b"POST /recommend HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
    )

    def __init__(self, address: tuple[str, int], count: int, interval: float = 0.5) -> None:
        self.address, self.count, self.interval = address, count, interval
        self.opened, self.held = 0, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run)
        self._sockets: dict[socket.socket, tuple[str, float, int]] = {}  # kind, opened at, bytes sent

    def _open(self, kind: str) -> None:
        sock = socket.create_connection(self.address)
        if kind == "body":
            sock.sendall(self.HEADERS)
        self._sockets[sock] = (kind, time.monotonic(), 0)
        self.opened += 1

    def _closed(self, sock: socket.socket) -> None:
        kind, opened, _ = self._sockets.pop(sock)
        self.held.append(time.monotonic() - opened)
        sock.close()
        self._open(kind)

    def _run(self) -> None:
        for index in range(self.count):
            self._open("headers" if index % 2 == 0 else "body")
        while not self._stop.wait(self.interval):
            for sock in list(self._sockets):
                kind, opened, sent = self._sockets[sock]
                try:
                    if select.select([sock], [], [], 0)[0] and not sock.recv(65536):
                        self._closed(sock)
                        continue
                    sock.send(self.HEADERS[sent : sent + 1] if kind == "headers" else b" ")
                    self._sockets[sock] = (kind, opened, sent + 1)
                except OSError:  # reset by the server
                    self._closed(sock)

    def start(self) -> None:
        self._thread.start()
        time.sleep(self.interval)  # all sockets open before the load starts

    def stop(self, load_ended: float) -> dict[str, Any]:
        self._stop.set()
        self._thread.join()
        still_open = len(self._sockets)
        for sock in self._sockets:
            sock.close()
        return {
            "slow_sockets_held": self.count,
            "slow_connections_opened": self.opened,
            "slow_connections_closed_by_server": len(self.held),
            "slow_hold_seconds_p50": round(statistics.median(self.held), 2) if self.held else None,
            "slow_hold_seconds_max": round(max(self.held), 2) if self.held else None,
            "slow_sockets_open_at_end": still_open,
        }


def load_test(base: str, histories: list[list[str]], requests: int, concurrency: int, during=()) -> dict[str, Any]:
    """``requests`` POST /recommend spread over ``concurrency`` threads (bounded), while the ``during``
    activities (hot reloads, slow clients) run; every non-200 answer to these well-formed requests is an error."""
    import httpx

    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    per_worker = max(1, requests // concurrency)

    def worker(offset: int) -> None:
        with httpx.Client(base_url=base, timeout=30) as http:
            for index in range(per_worker):
                body = {"history": histories[(offset * per_worker + index) % len(histories)], "k": 10}
                started = time.perf_counter()
                try:
                    response = http.post("/recommend", json=body)
                    failed = None if response.status_code == 200 else f"HTTP {response.status_code}"
                except httpx.HTTPError as error:
                    failed = type(error).__name__
                elapsed = (time.perf_counter() - started) * 1000
                with lock:
                    latencies.append(elapsed)
                    if failed:
                        errors.append(failed)

    threads = [threading.Thread(target=worker, args=(offset,)) for offset in range(concurrency)]
    for activity in during:
        activity.start()
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - started
    load_ended = time.monotonic()
    row = {
        "concurrency": concurrency,
        "requests": len(latencies),
        "errors": len(errors),
        "error_kinds": sorted(set(errors)),
        "p50_ms": round(statistics.median(latencies), 2),
        "p99_ms": round(percentile(latencies, 0.99), 2),
        "requests_per_second": round(len(latencies) / seconds, 1),
        "seconds": round(seconds, 2),
    }
    for activity in during:
        row |= activity.stop(load_ended)
    return row


def http_benchmark(
    registry: Path, data_dir: Path, dataset: str, requests: int, hostile_requests: int, quick: bool
) -> list[dict[str, Any]]:
    """The service as it runs (``python -m recserve``), with 2 s header and body deadlines so that slow
    clients are cut several times within one measurement (the default is 10 s)."""
    import secrets

    split = prepare(data_dir, dataset, quick).split
    items, _ = split.test.history.sequences().padded(split.test.users[:512], HISTORY_LENGTH)
    histories = [[str(split.train.item_ids[item]) for item in row if item] for row in items]
    token = secrets.token_hex(16)
    deadlines = {"header_timeout_seconds": "2", "body_timeout_seconds": "2"}
    models = ["sasrec_ss_model", "esasrec_model"]
    with recserve(registry, token, **deadlines) as service:
        base, health, port = service.base, service.health, service.port
        load_test(base, histories, 50, 4)  # warm-up
        scenarios = [
            ("idle", requests, 1, lambda: []),
            ("idle", requests, 16, lambda: []),
            ("hot swaps every 0.5 s", requests, 16, lambda: [Reloads(base, token, models, 0.5)]),
        ]
        rows = []
        for name, count, concurrency, during in scenarios:
            rows.append(_measured_row(base, histories, count, concurrency, during(), name, dataset, health))
        # 8 reloads spread over the bounded run: its length estimated from the row with hot swaps
        swapping = rows[2]  # a short run (--quick) can end before its first swap: no reload time to subtract
        reload_seconds = swapping["reload_seconds_mean"] or 0.0
        spacing = max(0.05, hostile_requests / swapping["requests_per_second"] / 10 - reload_seconds)
        hostile = [
            ("8 reloads", lambda: [Reloads(base, token, models, spacing, count=8)]),
            ("100 slow clients", lambda: [SlowClients(("127.0.0.1", port), 100)]),
            (
                "8 reloads and 100 slow clients",
                lambda: [Reloads(base, token, models, spacing, count=8), SlowClients(("127.0.0.1", port), 100)],
            ),
        ]
        for name, during in hostile:
            rows.append(_measured_row(base, histories, hostile_requests, 16, during(), name, dataset, health))
    closed = sum("no complete request headers" in line for line in service.log.read_text().splitlines())
    progress(f"  server log {service.log}: {closed} connections closed at the header deadline")
    return rows


def _measured_row(base, histories, requests, concurrency, during, name, dataset, health) -> dict[str, Any]:
    row = {"scenario": name} | load_test(base, histories, requests, concurrency, during)
    row |= {"dataset": dataset, "model": "esasrec", "provider": health["provider"]}
    progress(f"  HTTP {row}")
    return row


def main() -> None:
    args = parser("serving", ["ml-1m-seq/ml-1m.txt"], VARIANTS)
    args.set_defaults(epochs=1)
    args.add_argument("--requests", type=int, default=500, help="requests per measurement (bounded)")
    args.add_argument(
        "--hostile-requests", type=int, default=2000, help="requests per measurement with reloads / slow clients"
    )
    options = args.parse_args()
    if "esasrec" not in options.model or "sasrec_ss" not in options.model:
        raise SystemExit("the HTTP part swaps between sasrec_ss and esasrec: keep both in --model")
    registry = Path(tempfile.mkdtemp()) / "registry"
    dataset = options.dataset[0]
    results = []
    for variant in options.model:
        progress(f"{dataset}: {variant}")
        results.append(
            run_isolated(
                scoring_speed,
                options.data_dir,
                dataset,
                variant,
                options.epochs,
                options.requests,
                options.quick,
                str(registry),
            )
        )
    progress("HTTP service on loopback")
    results.extend(
        http_benchmark(registry, options.data_dir, dataset, options.requests, options.hostile_requests, options.quick)
    )
    finish("serving", results)


if __name__ == "__main__":
    main()
