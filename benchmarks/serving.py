"""Serving speed: ONNX Runtime vs PyTorch scoring, and the HTTP service under a bounded loopback load.

For each model (default SASRec+SS, eSASRec, DiffRec on ML-1M): fit (``--epochs``,
default 1: speed does not depend on how well a model is trained), export to ONNX
(k = 100), then time the same top-k head in PyTorch and ONNX Runtime on real
histories (last 200 items): latency at batch 1 (median and p99 over
``--requests`` calls) and throughput at batch 256. Then the HTTP service
(uvicorn, one worker, loopback only) serves the eSASRec export: ``--requests``
requests at concurrency 1 and 16 (p50/p99 latency, requests per second,
errors), and the same at concurrency 16 while the live model is hot-swapped
every half second.

``python benchmarks/serving.py [--dataset ml-1m-seq/ml-1m.txt] [--model ...] [--epochs 1] [--requests 500] [--quick]``
"""

from __future__ import annotations

import dataclasses
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from common import REPO_ROOT, finish, parser, prepare, progress, run_isolated

VARIANTS = ["sasrec_ss", "esasrec", "diffrec"]
HISTORY_LENGTH = 200
K = 100


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


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
            "batch1_p99_ms": round(_percentile(latencies, 0.99), 3),
            f"batch{len(histories)}_ms": round(seconds * 1000, 2),
            "users_per_second": round(len(histories) / seconds, 1),
        }
    progress(f"  {variant}: pytorch {result['pytorch']}  onnxruntime {result['onnxruntime']}")
    return result


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def load_test(
    base: str, histories: list[list[str]], requests: int, concurrency: int, reload_models: list[str] | None
) -> dict[str, Any]:
    """``requests`` POST /recommend spread over ``concurrency`` threads (bounded), optionally with hot swaps."""
    import httpx

    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    per_worker = max(1, requests // concurrency)
    done = threading.Event()

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

    swaps = 0

    def swapper() -> None:
        nonlocal swaps
        with httpx.Client(base_url=base, timeout=60) as http:
            while not done.is_set():
                http.post("/admin/reload", json={"model": reload_models[swaps % len(reload_models)]}).raise_for_status()
                swaps += 1
                done.wait(0.5)

    threads = [threading.Thread(target=worker, args=(offset,)) for offset in range(concurrency)]
    reloader = threading.Thread(target=swapper) if reload_models else None
    started = time.perf_counter()
    if reloader:
        reloader.start()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - started
    done.set()
    if reloader:
        reloader.join()
    return {
        "concurrency": concurrency,
        "requests": len(latencies),
        "errors": len(errors),
        "error_kinds": sorted(set(errors)),
        "p50_ms": round(statistics.median(latencies), 2),
        "p99_ms": round(_percentile(latencies, 0.99), 2),
        "requests_per_second": round(len(latencies) / seconds, 1),
        "hot_swaps": swaps,
    }


def http_benchmark(registry: Path, data_dir: Path, dataset: str, requests: int, quick: bool) -> list[dict[str, Any]]:
    import httpx

    split = prepare(data_dir, dataset, quick).split
    items, _ = split.test.history.sequences().padded(split.test.users[:512], HISTORY_LENGTH)
    histories = [[str(split.train.item_ids[item]) for item in row if item] for row in items]
    port = _free_port()
    environment = {**os.environ, "PYTHONPATH": str(REPO_ROOT / "deploy"), "RECSERVE_REGISTRY": str(registry)}
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "--factory",
            "recserve.app:create_app",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        env=environment,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                health = httpx.get(f"{base}/healthz", timeout=2).json()
                break
            except httpx.HTTPError:
                time.sleep(0.5)
        else:
            raise RuntimeError("the service did not start within 120 s")
        progress(f"  service up: {health}")
        load_test(base, histories, 50, 4, None)  # warm-up
        rows = []
        for concurrency, swaps in ((1, None), (16, None), (16, ["sasrec_ss_model", "esasrec_model"])):
            row = load_test(base, histories, requests, concurrency, swaps)
            row |= {
                "dataset": dataset,
                "model": "esasrec",
                "provider": health["provider"],
                "during_hot_reload": bool(swaps),
            }
            progress(f"  HTTP {row}")
            rows.append(row)
        return rows
    finally:
        server.terminate()
        server.wait(timeout=30)


def main() -> None:
    args = parser("serving", ["ml-1m-seq/ml-1m.txt"], VARIANTS)
    args.set_defaults(epochs=1)
    args.add_argument("--requests", type=int, default=500, help="requests per measurement (bounded)")
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
    results.extend(http_benchmark(registry, options.data_dir, dataset, options.requests, options.quick))
    finish("serving", results)


if __name__ == "__main__":
    main()
