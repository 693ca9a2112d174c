"""What is evaluated is what is served: offline top-k lists against the running service's.

For each model (default eSASRec, EASE, ItemKNN on ML-1M leave-one-out): fit
(``--epochs`` caps the neural ones; list equality does not depend on how well a
model is trained), rank every test user offline with ``recmodels.evaluation``
(the leaderboard's path), export to ONNX and register it, start the HTTP service
(uvicorn, loopback) on that registry, and send every test user's whole history
(external ids, oldest first; many are longer than eSASRec's 200 items) to
``/recommend/batch``. Reported: the share of served lists identical to the
offline lists (must be 1.0) and the number of served items that were already in
the user's history (must be 0).

``python benchmarks/served_vs_offline.py [--dataset ml-1m-seq/ml-1m.txt] [--model esasrec ease item_knn] [--epochs 3]``
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from pathlib import Path
from typing import Any

from common import finish, parser, peak_rss_mb, prepare, progress, recserve

MODELS = ["esasrec", "ease", "item_knn"]
K = 10
EXPORT_K = 100
REQUESTS_PER_CALL = 64


def build_model(name: str, epochs: int | None, seed: int):
    from recmodels.models.baselines import EASE, EASEConfig, ItemKNN, ItemKNNConfig
    from recmodels.models.sasrec import SASRec, esasrec

    if name == "esasrec":
        preset = esasrec()
        trainer = preset.trainer if epochs is None else dataclasses.replace(preset.trainer, epochs=epochs)
        return SASRec(dataclasses.replace(preset, trainer=trainer, seed=seed))
    family, config = {"ease": (EASE, EASEConfig), "item_knn": (ItemKNN, ItemKNNConfig)}[name]
    return family(config(seed=seed))


def compare(name: str, split, dataset: str, epochs: int | None, seed: int, registry: Path) -> dict[str, Any]:
    import httpx

    from recmodels.evaluation import evaluate
    from recmodels.export import export_onnx, register_model

    model = build_model(name, epochs, seed)
    started = time.perf_counter()
    model.fit(split)
    train_seconds = time.perf_counter() - started
    offline = evaluate(model, split.test, (K,))
    work = Path(tempfile.mkdtemp())
    spec = export_onnx(model, work / "model.onnx", k=EXPORT_K)
    register_model(
        registry,
        work / "model.onnx",
        spec,
        model,
        name=f"{name}_model",
        item_ids=split.train.item_ids,
        training_data_version=dataset,
        metrics=offline.metrics,
        parity={},
    )
    sequences = split.test.history.sequences()
    item_ids = split.train.item_ids
    histories = [
        [str(item_ids[item]) for item in sequences.items[sequences.indptr[user] : sequences.indptr[user + 1]]]
        for user in offline.users
    ]
    expected = [[str(item_ids[item]) for item in row if item] for row in offline.top_items]
    served: list[list[str]] = []
    with recserve(registry, model=f"{name}_model", max_body_bytes=str(64 << 20)) as service:
        started = time.perf_counter()
        with httpx.Client(base_url=service.base, timeout=120) as http:
            for start in range(0, len(histories), REQUESTS_PER_CALL):
                chunk = [{"history": history, "k": K} for history in histories[start : start + REQUESTS_PER_CALL]]
                response = http.post("/recommend/batch", json={"requests": chunk})
                response.raise_for_status()
                served += [[entry["item_id"] for entry in result["items"]] for result in response.json()["results"]]
        serve_seconds = time.perf_counter() - started
    identical = sum(got == want for got, want in zip(served, expected))
    seen_served = sum(len(set(got) & set(history)) for got, history in zip(served, histories))
    lengths = [len(history) for history in histories]
    limit = model.max_history_length
    result = {
        "dataset": dataset,
        "split": split.protocol,
        "model": name,
        "metrics": {key: round(value, 4) for key, value in offline.metrics.items() if key.endswith(f"@{K}")},
        "epochs": len(model.history.loss) if hasattr(model, "history") else None,
        "train_seconds": round(train_seconds, 1),
        "users": len(histories),
        "users_with_history_beyond_model_length": None if limit is None else sum(n > limit for n in lengths),
        "longest_history": max(lengths),
        "identical_list_share": identical / len(histories),
        "lists_differing": len(histories) - identical,
        "seen_items_served": seen_served,
        "serve_seconds": round(serve_seconds, 1),
        "peak_rss_mb": round(peak_rss_mb(), 1),
    }
    progress(f"  {name}: {result}")
    return result


def main() -> None:
    args = parser("served_vs_offline", ["ml-1m-seq/ml-1m.txt"], MODELS)
    args.set_defaults(epochs=3)
    options = args.parse_args()
    results = []
    for dataset in options.dataset:
        progress(f"{dataset}: preparing the split")
        split = prepare(options.data_dir, dataset, options.quick).split
        registry = Path(tempfile.mkdtemp()) / "registry"
        for name in options.model:
            progress(f"{dataset}: {name}")
            results.append(compare(name, split, dataset, options.epochs, options.seed, registry))
    finish("served_vs_offline", results)


if __name__ == "__main__":
    main()
