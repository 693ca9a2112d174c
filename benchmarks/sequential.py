"""SASRec, SASRec+SS, eSASRec, with and without GNNO hard negatives: leave-one-out, full ranking.

Settings: by default the eSASRec paper's for the dataset, from the typed table
``recmodels/models/paper_settings.toml`` (``--paper-setting auto``, the first row naming the dataset file;
a name such as ``beauty`` picks another row): sizes, 256 negatives, Adam lr 1e-3, batch 128, the epoch cap,
RecTools' training, and the authors' stopping rule (best validation Recall@10, patience 50, best weights
restored), on their leave-one-out
split (a test target the user has already seen is not evaluated). ``--paper-setting none`` trains the
presets as the README's earlier figures did (ML-1M: d=64, 2 blocks, max length 200, dropout 0.1; elsewhere
max length 50, dropout 0.2), stopping on validation NDCG@10 (``--patience``, default 10). Test metrics at
the selected epoch; every result records the table row it trained with.

``python benchmarks/sequential.py [--dataset ...] [--model ...] [--seeds 0 1 2] [--paper-setting auto|none|NAME] [--epochs N] [--patience P] [--set FIELD=JSON ...] [--checkpoint-dir D] [--quick]``
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from pathlib import Path
from typing import Any

from common import finish, parser, prepare, progress, run_isolated, with_overrides

from recmodels.models.paper_settings import PaperSetting, paper_settings

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


def variant_config(
    variant: str,
    max_len: int,
    seed: int,
    epochs: int | None,
    patience: int | None = None,
    dropout: float = 0.2,
    paper: PaperSetting | None = None,
):
    """The variant's preset with the paper's row applied (``paper``), or sized by ``max_len`` and ``dropout``;
    ``epochs`` and ``patience``, when given, override either."""
    from recmodels.models.sasrec import esasrec, sasrec, sasrec_ss, with_gnno

    base = variant.removesuffix("_gnno")
    presets = {"sasrec": sasrec, "sasrec_ss": sasrec_ss, "esasrec": esasrec}
    if paper is not None:
        preset = paper.apply(presets[base]())
    else:
        preset = presets[base](max_len=max_len, dropout=dropout)
        preset = dataclasses.replace(
            preset, trainer=dataclasses.replace(preset.trainer, epochs=200, patience=10, lr=1e-3, batch_size=128)
        )
    trainer = dataclasses.replace(
        preset.trainer,
        epochs=epochs or preset.trainer.epochs,
        patience=preset.trainer.patience if patience is None else patience,
    )
    config = dataclasses.replace(preset, seed=seed, trainer=trainer)
    return with_gnno(config) if variant.endswith("_gnno") else config


def paper_setting_for(dataset: str, variant: str, choice: str) -> PaperSetting | None:
    """``auto``: the table's row for the dataset file (None if it has none); ``none``: None; else that row."""
    if choice == "none" or variant.removesuffix("_gnno") == "sasrec":
        return None
    table = paper_settings()
    name = table.dataset_of(dataset) if choice == "auto" else choice
    return None if name is None else table.row(name, variant)


def run_one(
    data_dir: Path,
    dataset: str,
    variant: str,
    seed: int,
    epochs: int | None,
    quick: bool,
    checkpoints: Path | None,
    patience: int | None,
    overrides: list[str],
    paper_choice: str = "auto",
) -> dict[str, Any]:
    from recmodels.evaluation import BeyondAccuracyInputs, evaluate
    from recmodels.models.sasrec import SASRec

    paper = paper_setting_for(dataset, variant, paper_choice)
    prepared = prepare(data_dir, dataset, quick, split_options={"drop_seen_targets": paper is not None})
    split = prepared.split
    max_len = MAX_LEN.get(dataset, SHORT_SEQUENCE_MAX_LEN)
    dropout = DROPOUT.get(dataset, 0.2)
    config = with_overrides(
        variant_config(variant, max_len, seed, epochs or (3 if quick else None), patience, dropout, paper), overrides
    )
    model = SASRec(config)
    started = time.perf_counter()
    checkpoint_dir = (
        None if checkpoints is None else checkpoints / Path(dataset).stem / run_name(variant, overrides, seed)
    )
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
        "valid_metric": config.valid_metric,
        "valid_score": round(history.best_score, 5),
        "seconds_per_epoch": round(sum(history.seconds) / len(history.seconds), 2),
        "epochs": len(history.seconds),
        "best_epoch": history.best_epoch,
        "train_seconds": round(train_seconds, 1),
        "overrides": overrides,
        "paper_setting": None if paper is None else paper.to_dict(),
        "split_report": prepared.split.report,
        "config": config.to_dict(),
        "upstream": model.upstream,
    }


def run_name(variant: str, overrides: list[str], seed: int) -> str:
    """The checkpoint folder of one run: readable, one per variant, override list and seed, and a valid file name
    however many overrides there are (the overrides enter as a digest, which a file name's 255 bytes always hold)."""
    if not overrides:
        return f"{variant}-seed{seed}"
    digest = hashlib.sha256("\0".join(overrides).encode()).hexdigest()[:12]
    return f"{variant}-set{digest}-seed{seed}"


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
        "--patience",
        type=int,
        default=None,
        help="epochs without a better validation score before stopping (default: the paper's, or 10)",
    )
    args.add_argument(
        "--paper-setting",
        default="auto",
        help="a dataset row of recmodels/models/paper_settings.toml, auto (the dataset file's) or none (presets)",
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
                    options.paper_setting,
                )
                progress(
                    f"  test {row['metrics']}  {row['epochs']} epochs (best {row['best_epoch']}), "
                    f"{row['seconds_per_epoch']} s/epoch, peak {row['peak_rss_mb']} MB"
                )
                results.append(row)
    finish("sequential", results)


if __name__ == "__main__":
    main()
