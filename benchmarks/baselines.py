"""MostPopular, ItemKNN and EASE: full-ranking test metrics, fit time and peak memory.

Defaults: MovieLens-100K (temporal split, k-core 5) and ML-1M leave-one-out.
Run from the repository root: ``python benchmarks/baselines.py [--quick]``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from common import finish, parser, prepare, progress, run_isolated

MODELS = ["most_popular", "item_knn", "ease"]
DATASETS = ["ml-100k", "ml-1m-seq/ml-1m.txt"]
KS = (10, 20)


def run_one(data_dir: Path, dataset: str, family: str, seed: int, quick: bool) -> dict[str, Any]:
    from recmodels.evaluation import BeyondAccuracyInputs, evaluate
    from recmodels.models import model_family

    prepared = prepare(data_dir, dataset, quick)
    split = prepared.split
    cls = model_family(family)
    model = cls(cls.config_class(seed=seed))
    started = time.perf_counter()
    model.fit(split)
    train_seconds = time.perf_counter() - started
    beyond = BeyondAccuracyInputs(split.train.item_user_counts(), len(split.train.users_with_data()))
    result = evaluate(model, split.test, KS, beyond=beyond)
    wanted = [f"{m}@{k}" for k in KS for m in ("recall", "ndcg")] + ["coverage@10", "coverage@20"]
    return {
        "dataset": dataset,
        "split": prepared.protocol,
        "model": family,
        "metrics": {name: round(result.metrics[name], 5) for name in wanted},
        "users_evaluated": int(len(result.users)),
        "seconds_per_epoch": None,
        "epochs": None,
        "train_seconds": round(train_seconds, 3),
        "eval_seconds": round(result.seconds, 3),
    }


def main() -> None:
    args = parser("baselines", DATASETS, MODELS).parse_args()
    results = []
    for dataset in args.dataset:
        for family in args.model:
            progress(f"{dataset}: {family}")
            row = run_isolated(run_one, args.data_dir, dataset, family, args.seed, args.quick)
            progress(f"  {row['metrics']}  fit {row['train_seconds']} s  peak {row['peak_rss_mb']} MB")
            results.append(row)
    finish("baselines", results)


if __name__ == "__main__":
    main()
