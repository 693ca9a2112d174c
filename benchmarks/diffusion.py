"""DiffRec, L-DiffRec, T-DiffRec, LT-DiffRec on the DiffRec paper's ML-1M files.

Protocol (the paper's): train on train, select the epoch on validation Recall@20
(evaluated every 5 epochs, stop after 3 evaluations without improvement), report
test at that epoch; validation masks train items, test masks train and
validation items; full ranking. L-DiffRec clusters the dataset's own
``item_emb.npy`` (the authors' LightGCN embeddings) when the folder has one, else
SVD embeddings of the training matrix. Each (model, seed) runs in its own process.

``python benchmarks/diffusion.py [--dataset ...] [--model ...] [--seeds 0 1 2] [--epochs N] [--set FIELD=JSON ...] [--quick]``
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from pathlib import Path
from typing import Any

from common import finish, parser, prepare, progress, run_isolated, with_overrides

VARIANTS = ["diffrec", "l_diffrec", "t_diffrec", "lt_diffrec"]
REPORTED = ("recall@10", "recall@20", "ndcg@10", "ndcg@20")


def variant_config(variant: str, seed: int, epochs: int | None):
    from recmodels.models.diffrec import diffrec, l_diffrec, t_diffrec

    presets = {
        "diffrec": diffrec,
        "l_diffrec": l_diffrec,
        "t_diffrec": lambda: t_diffrec(diffrec()),
        "lt_diffrec": lambda: t_diffrec(l_diffrec()),
    }
    config = presets[variant]()
    trainer = config.trainer if epochs is None else dataclasses.replace(config.trainer, epochs=epochs)
    return dataclasses.replace(config, seed=seed, trainer=trainer)


def clusters_for(folder: Path, split, config):
    """The authors' item embeddings when the dataset ships them, clustered with ``ClusteringConfig``'s
    defaults seeded by the model's seed; else none (the model falls back to the same config over SVD)."""
    import numpy as np

    from recmodels.cluster import ClusteringConfig, aligned_item_embeddings, kmeans_item_clusters

    provided = folder / "item_emb.npy"
    if not provided.exists():
        return None
    embeddings = aligned_item_embeddings(split.train.item_ids, np.load(provided))
    settings = ClusteringConfig(dim=embeddings.shape[1], seed=config.seed)
    return kmeans_item_clusters(embeddings, settings, provided.name)


def run_one(
    data_dir: Path, dataset: str, variant: str, seed: int, epochs: int | None, quick: bool, overrides: list[str]
) -> dict[str, Any]:
    from recmodels.evaluation import BeyondAccuracyInputs, evaluate
    from recmodels.models.diffrec import ClusteredLatentConfig, DiffRec

    prepared = prepare(data_dir, dataset, quick)
    split = prepared.split
    config = with_overrides(variant_config(variant, seed, 10 if quick else epochs), overrides)
    clusters = (
        clusters_for(data_dir / dataset, split, config) if isinstance(config.space, ClusteredLatentConfig) else None
    )
    model = DiffRec(config)
    started = time.perf_counter()
    model.fit(split, clusters=clusters)
    train_seconds = time.perf_counter() - started
    beyond = BeyondAccuracyInputs(split.train.item_user_counts(), len(split.train.users_with_data()))
    result = evaluate(model, split.test, (10, 20), beyond=beyond)
    history = model.history
    return {
        "dataset": dataset,
        "split": prepared.protocol,
        "model": variant,
        "seed": seed,
        "metrics": {name: round(result.metrics[name], 5) for name in (*REPORTED, "coverage@10")},
        "valid_recall@20": round(history.best_score, 5),
        "seconds_per_epoch": round(statistics.median(history.seconds), 3),
        "epochs": len(history.seconds),
        "best_epoch": history.best_epoch + 1,
        "train_seconds": round(train_seconds, 1),
        "inference_seconds_all_test_users": round(result.seconds, 2),
        "test_users": len(result.users),
        "overrides": overrides,
        "config": config.to_dict(),
        "upstream": model.upstream,
    }


def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean and sample standard deviation over seeds, per dataset and model."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["dataset"], row["model"]), []).append(row)
    summary = []
    for (dataset, model), group in groups.items():

        def spread(values: list[float]) -> float:
            return round(statistics.stdev(values), 5) if len(values) > 1 else 0.0

        metrics = {name: [row["metrics"][name] for row in group] for name in REPORTED}
        summary.append(
            {
                "dataset": dataset,
                "model": model,
                "seeds": [row["seed"] for row in group],
                "metrics_mean": {name: round(statistics.mean(values), 5) for name, values in metrics.items()},
                "metrics_std": {name: spread(values) for name, values in metrics.items()},
                "seconds_per_epoch_median": round(statistics.median(row["seconds_per_epoch"] for row in group), 3),
                "best_epoch_mean": round(statistics.mean(row["best_epoch"] for row in group), 1),
                "peak_rss_mb_max": max(row["peak_rss_mb"] for row in group),
            }
        )
    return summary


def main() -> None:
    args = parser("diffusion", ["ml-1m-diffrec/clean"], VARIANTS)
    args.add_argument("--seeds", type=int, nargs="+", default=None, help="several seeds (overrides --seed)")
    args.add_argument(
        "--set",
        nargs="+",
        default=[],
        metavar="FIELD=JSON",
        dest="overrides",
        help="config overrides for a sweep, e.g. denoiser.hidden=[1000] trainer.lr=5e-4",
    )
    options = args.parse_args()
    results = []
    for dataset in options.dataset:
        for variant in options.model:
            for seed in options.seeds or [options.seed]:
                progress(f"{dataset}: {variant} seed {seed}")
                row = run_isolated(
                    run_one, options.data_dir, dataset, variant, seed, options.epochs, options.quick, options.overrides
                )
                progress(
                    f"  test {row['metrics']}  best epoch {row['best_epoch']} of {row['epochs']}, "
                    f"{row['seconds_per_epoch']} s/epoch, inference {row['inference_seconds_all_test_users']} s, "
                    f"peak {row['peak_rss_mb']} MB"
                )
                results.append(row)
    for line in summarise(results):
        progress(
            f"{line['dataset']} {line['model']} over seeds {line['seeds']}: {line['metrics_mean']} ± {line['metrics_std']}"
        )
    finish("diffusion", results, summary=summarise(results))


if __name__ == "__main__":
    main()
