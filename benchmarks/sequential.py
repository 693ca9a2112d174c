"""SASRec, SASRec+SS, eSASRec, with and without GNNO hard negatives: leave-one-out, full ranking.

Defaults: ML-1M with the eSASRec paper's config (d=64, 2 blocks, 1 head, max length
200, ff_mult 4, dropout 0.1, 256 negatives, Adam lr 1e-3, batch 128) and Amazon Beauty
(max length 50, dropout 0.2) with and without GNNO negatives. Early stopping on validation NDCG@10
(``--patience``, default 10); test metrics at the best validation epoch.

``python benchmarks/sequential.py [--dataset ...] [--model ...] [--seeds 0 1 2] [--epochs N] [--patience P] [--set FIELD=JSON ...] [--checkpoint-dir D] [--quick]``
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

from common import finish, parser, prepare, progress, run_isolated, with_overrides

VARIANTS = ["sasrec", "sasrec_ss", "esasrec", "sasrec_gnno", "sasrec_ss_gnno", "esasrec_gnno"]
DEFAULT_MODELS = {
    "ml-1m-seq/ml-1m.txt": ["sasrec_ss", "esasrec"],
    "amazon-yelp-seq/Beauty.txt": ["sasrec_ss", "sasrec_ss_gnno", "esasrec", "esasrec_gnno"],
}
MAX_LEN = {"ml-1m-seq/ml-1m.txt": 200}
SHORT_SEQUENCE_MAX_LEN = 50
# The eSASRec authors' selected dropout (transformer_benchmark README): 0.1 on ML-1M, 0.2 on the
# Amazon sets; the presets' 0.2 elsewhere.
DROPOUT = {"ml-1m-seq/ml-1m.txt": 0.1}


def variant_config(variant: str, max_len: int, seed: int, epochs: int | None, patience: int = 10, dropout: float = 0.2):
    from recmodels.models.sasrec import esasrec, sasrec, sasrec_ss, with_gnno

    base = variant.removesuffix("_gnno")
    presets = {"sasrec": sasrec, "sasrec_ss": sasrec_ss, "esasrec": esasrec}
    preset = presets[base](max_len=max_len, dropout=dropout)
    trainer = dataclasses.replace(preset.trainer, epochs=epochs or 200, patience=patience, lr=1e-3, batch_size=128)
    config = dataclasses.replace(preset, seed=seed, trainer=trainer)
    return with_gnno(config) if variant.endswith("_gnno") else config


def run_one(
    data_dir: Path,
    dataset: str,
    variant: str,
    seed: int,
    epochs: int | None,
    quick: bool,
    checkpoints: Path | None,
    patience: int,
    overrides: list[str],
) -> dict[str, Any]:
    from recmodels.evaluation import BeyondAccuracyInputs, evaluate
    from recmodels.models.sasrec import SASRec

    prepared = prepare(data_dir, dataset, quick)
    split = prepared.split
    max_len = MAX_LEN.get(dataset, SHORT_SEQUENCE_MAX_LEN)
    dropout = DROPOUT.get(dataset, 0.2)
    config = with_overrides(
        variant_config(variant, max_len, seed, 3 if quick else epochs, patience, dropout), overrides
    )
    model = SASRec(config)
    started = time.perf_counter()
    run_name = "-".join([variant, *overrides, f"seed{seed}"]).replace("/", "_")
    checkpoint_dir = None if checkpoints is None else checkpoints / Path(dataset).stem / run_name
    model.fit(split, checkpoint_dir=checkpoint_dir)
    train_seconds = time.perf_counter() - started
    beyond = BeyondAccuracyInputs(split.train.item_user_counts(), len(split.train.users_with_data()))
    result = evaluate(model, split.test, (10, 20), beyond=beyond)
    history = model.history
    return {
        "dataset": dataset,
        "split": prepared.protocol,
        "model": variant,
        "seed": seed,
        "metrics": {
            name: round(result.metrics[name], 5)
            for name in ("recall@10", "ndcg@10", "recall@20", "ndcg@20", "coverage@10")
        },
        "valid_ndcg@10": round(history.best_score, 5),
        "seconds_per_epoch": round(sum(history.seconds) / len(history.seconds), 2),
        "epochs": len(history.seconds),
        "best_epoch": history.best_epoch,
        "train_seconds": round(train_seconds, 1),
        "overrides": overrides,
        "config": config.to_dict(),
        "upstream": model.upstream,
    }


def main() -> None:
    args = parser("sequential", list(DEFAULT_MODELS), VARIANTS)
    args.set_defaults(model=None)
    args.add_argument("--seeds", type=int, nargs="+", default=None, help="several seeds (overrides --seed)")
    args.add_argument(
        "--checkpoint-dir",
        type=Path,
        default=None,
        help="checkpoint every epoch here; a rerun resumes where it stopped",
    )
    args.add_argument(
        "--patience", type=int, default=10, help="epochs without a better validation score before stopping"
    )
    args.add_argument(
        "--set",
        nargs="+",
        default=[],
        metavar="FIELD=JSON",
        dest="overrides",
        help='config overrides, e.g. loss={"kind":"full_softmax"} backbone.dropout=0.3',
    )
    options = args.parse_args()
    results = []
    for dataset in options.dataset:
        for variant in options.model or DEFAULT_MODELS.get(dataset, ["sasrec_ss", "esasrec"]):
            for seed in options.seeds or [options.seed]:
                progress(f"{dataset}: {variant} seed {seed}")
                row = run_isolated(
                    run_one,
                    options.data_dir,
                    dataset,
                    variant,
                    seed,
                    options.epochs,
                    options.quick,
                    options.checkpoint_dir,
                    options.patience,
                    options.overrides,
                )
                progress(
                    f"  test {row['metrics']}  {row['epochs']} epochs (best {row['best_epoch']}), "
                    f"{row['seconds_per_epoch']} s/epoch, peak {row['peak_rss_mb']} MB"
                )
                results.append(row)
    finish("sequential", results)


if __name__ == "__main__":
    main()
