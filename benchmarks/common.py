"""What every benchmark shares: the DESIGN option set, data preparation, isolated runs.

Each (dataset, model) run happens in a fresh spawned process so its peak memory
is its own, and the benchmark ends with exactly one JSON line.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import multiprocessing
import os
import platform
import resource
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from recmodels.data.interactions import Interactions, k_core  # noqa: E402
from recmodels.data.readers import RawDataset, load_dataset  # noqa: E402
from recmodels.data.schemas import validate_interactions, validate_items  # noqa: E402
from recmodels.data.splits import SplitData, make_split  # noqa: E402


def default_data_dir() -> Path:
    shared = REPO_ROOT.parent / "shared" / "data"
    return Path(os.environ.get("RECPIPE_DATA_DIR", shared if shared.exists() else REPO_ROOT / "data" / "raw"))


def parser(name: str, datasets: list[str], models: list[str]) -> argparse.ArgumentParser:
    args = argparse.ArgumentParser(prog=f"benchmarks/{name}.py", description=__doc__)
    args.add_argument("--data-dir", type=Path, default=default_data_dir())
    args.add_argument("--dataset", nargs="+", default=datasets, help="paths relative to --data-dir")
    args.add_argument("--model", nargs="+", default=models, choices=models)
    args.add_argument("--epochs", type=int, default=None, help="cap on training epochs")
    args.add_argument("--seed", type=int, default=0)
    args.add_argument("--quick", action="store_true", help="a small slice, for smoke tests")
    return args


def with_overrides(config: Any, overrides: list[str]) -> Any:
    """``config`` with ``section.field=JSON`` assignments applied (a sweep's knobs); unknown fields fail."""
    values = config.to_dict()
    for item in overrides:
        path, sep, raw = item.partition("=")
        if not sep:
            raise ValueError(f"override {item!r} must look like section.field=JSON")
        *parents, leaf = path.split(".")
        target = values
        for key in parents:
            target = target[key]
        if leaf not in target:
            raise KeyError(f"override {item!r}: no field {leaf!r} in {sorted(target)}")
        target[leaf] = json.loads(raw)
    return type(config).from_dict(values)


def protocol_for(raw: RawDataset) -> str:
    """Predefined files keep their split; real time gets a temporal split; order only gets leave-one-out."""
    if "split" in raw.interactions.columns:
        return "predefined"
    return "temporal" if raw.has_timestamps else "leave_one_out"


@dataclass(frozen=True)
class Prepared:
    split: SplitData
    protocol: str
    rows_in: int
    rows_quarantined: int


def prepare(
    data_dir: Path,
    dataset: str,
    quick: bool,
    min_core: int = 5,
    protocol: str | None = None,
    user_share: float = 1.0,
    split_options: dict[str, Any] | None = None,
) -> Prepared:
    """The pipeline's own path: read, validate, k-core (timestamped data only), split (by default the protocol
    ``protocol_for`` picks, with ``split_options``). ``user_share`` < 1 keeps a seeded sample of the users (all
    their rows)."""
    raw = load_dataset(data_dir / dataset)
    frame = raw.interactions
    if quick:
        users = sorted(frame["user_id"].unique())[:1000]
        frame = frame.loc[frame["user_id"].isin(users)].reset_index(drop=True)
    if user_share < 1.0:
        users = np.sort(frame["user_id"].unique())
        kept = np.random.default_rng(0).choice(users, size=max(1, round(user_share * len(users))), replace=False)
        frame = frame.loc[frame["user_id"].isin(kept)].reset_index(drop=True)
    validated = validate_interactions(frame)
    rows = validated.valid
    if raw.has_timestamps and "split" not in raw.interactions.columns:
        rows, _ = k_core(rows, min_core, min_core)
    protocol = protocol or protocol_for(raw)
    items = None if raw.items is None else validate_items(raw.items).valid
    split = make_split(Interactions.from_frame(rows), protocol, **(split_options or {})).with_item_features(items)
    return Prepared(split, protocol, len(frame), len(validated.quarantined))


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_isolated(function: Callable[..., dict[str, Any]], *args: Any) -> dict[str, Any]:
    """Run ``function(*args)`` in a fresh process; its result dict gains ``peak_rss_mb``."""
    context = multiprocessing.get_context("spawn")
    with context.Pool(1) as pool:
        return pool.apply(_measured, (function, *args))


def _measured(function: Callable[..., dict[str, Any]], *args: Any) -> dict[str, Any]:
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s] %(message)s", datefmt="%H:%M:%S", stream=sys.stderr)
    for chatty in ("onnxscript", "onnx_ir", "httpx"):  # a line per graph node and pass, per request at INFO
        logging.getLogger(chatty).setLevel(logging.WARNING)
    result = function(*args)
    result["peak_rss_mb"] = round(peak_rss_mb(), 1)
    return result


def progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Service:
    """A running ``python -m recserve``: its base URL, its first ``/healthz`` answer and its log file."""

    base: str
    port: int
    health: dict[str, Any]
    log: Path


@contextlib.contextmanager
def recserve(registry: Path, token: str | None = None, **settings: str) -> Iterator[Service]:
    """The service as users run it, on a free loopback port, serving ``registry``'s champion (admin actions
    with ``token``); ``settings`` are extra ``RECSERVE_*`` variables. Stopped on exit; its log stays."""
    import httpx

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    environment = {
        **os.environ,
        "PYTHONPATH": str(REPO_ROOT / "deploy"),
        "RECSERVE_REGISTRY": str(registry),
        **({"RECSERVE_ADMIN_TOKEN": token} if token else {}),
        **{f"RECSERVE_{name.upper()}": value for name, value in settings.items()},
    }
    command = [sys.executable, "-m", "recserve", "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
    descriptor, name = tempfile.mkstemp(prefix="recserve-", suffix=".log")
    log = Path(name)
    with os.fdopen(descriptor, "w") as output:
        server = subprocess.Popen(command, env=environment, stdout=output, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                health = httpx.get(f"{base}/healthz", timeout=2).json()
                break
            except httpx.HTTPError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the service did not start (log: {log})") from None
                time.sleep(0.5)
        progress(f"  service up: {health}")
        yield Service(base, port, health, log)
    finally:
        server.terminate()
        server.wait(timeout=30)


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def finish(name: str, results: list[dict[str, Any]], **extra: Any) -> None:
    """The one JSON line every benchmark ends with; ``extra`` adds keys such as a per-model summary. The CPU is
    recorded because torch's CPU kernels differ by processor, and so can the last digits of a trained model."""
    print(json.dumps({"benchmark": name, "results": results, "cpu": cpu_model(), **extra}))


def cpu_model() -> str:
    """The processor's name as Linux reports it (``platform.processor()`` elsewhere)."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"
