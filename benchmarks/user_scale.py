"""EfficientRec at 10%, 50% and 100% of a dataset's users: what grows with users and what does not.

Per share (a seeded sample of users, all their rows, the dataset's split): the parameter count of the
trained model's state, seconds per training epoch (the mean over ``--epochs`` epochs: training examples
are crops per user, so an epoch grows with users while the model does not), the process's peak
resident memory, and batch scoring throughput: ``--profiles`` histories drawn with replacement from the
test users' real histories (padded to ``max_len``), scored through the served path (``TopKHead``: mask
the history, top-k) in batches of ``--batch-size``, exhaustive and cluster-restricted.

``python benchmarks/user_scale.py [--dataset ml-1m-seq/ml-1m.txt] [--shares 0.1 0.5 1.0] [--epochs 2]``
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from common import finish, parser, prepare, progress, run_isolated, with_overrides


def _throughput(model, histories: np.ndarray, batch_size: int, k: int) -> float:
    """Profiles per second through mask + top-k, after one warm-up batch."""
    import torch

    from recmodels.export import TopKHead

    head = TopKHead(model.scorer(), k).eval()
    with torch.inference_mode():
        head(torch.from_numpy(histories[:batch_size]))
        started = time.perf_counter()
        for start in range(0, len(histories), batch_size):
            head(torch.from_numpy(histories[start : start + batch_size]))
        return len(histories) / (time.perf_counter() - started)


def run_one(options: dict[str, Any], share: float) -> dict[str, Any]:
    import torch

    from recmodels.models.efficientrec import (
        ClusterScoringConfig,
        EfficientRec,
        EfficientRecConfig,
        ThresholdListsConfig,
    )

    split = prepare(options["data_dir"], options["dataset"], False, user_share=share).split
    from presets import EFFICIENTREC_OVERRIDES

    overrides = EFFICIENTREC_OVERRIDES.get(options["dataset"], []) + options["overrides"]
    config = with_overrides(EfficientRecConfig(seed=options["seed"]), overrides)
    config = with_overrides(config, [f"trainer.epochs={options['epochs']}", f"trainer.patience={options['epochs']}"])
    model = EfficientRec(config).fit(split)
    sequences = split.test.history.sequences()
    drawn = np.random.default_rng(options["seed"]).choice(split.test.users, size=options["profiles"], replace=True)
    histories = sequences.padded(drawn, config.max_len)[0]
    restricted = model.with_scoring(ClusterScoringConfig(options["top_clusters"], ThresholdListsConfig()))
    return {
        "dataset": options["dataset"],
        "user_share": share,
        "users": int(split.train.n_users),
        "trained_users": int(len(np.unique(split.train.frame["user"]))),
        "train_rows": len(split.train),
        "items": split.n_items,
        "parameters": int(sum(value.numel() for value in model.state_dict().values())),
        "seconds_per_epoch": round(float(np.mean(model.history.seconds)), 1),
        "epochs": len(model.history.seconds),
        "profiles": options["profiles"],
        "batch_size": options["batch_size"],
        "exhaustive_users_per_s": round(_throughput(model, histories, options["batch_size"], 10)),
        f"restricted_m{options['top_clusters']}_users_per_s": round(
            _throughput(restricted, histories, options["batch_size"], 10)
        ),
        "torch_threads": torch.get_num_threads(),
        "config": config.to_dict(),
    }


def main() -> None:
    args = parser("user_scale", ["ml-1m-seq/ml-1m.txt"], ["efficientrec"])
    args.add_argument("--shares", type=float, nargs="+", default=[0.1, 0.5, 1.0])
    args.add_argument("--profiles", type=int, default=100_000)
    args.add_argument("--batch-size", type=int, default=1024)
    args.add_argument("--top-clusters", type=int, default=2)
    args.add_argument("--set", action="append", default=[], dest="overrides", metavar="FIELD=JSON")
    args.set_defaults(epochs=2)
    options = args.parse_args()
    results = []
    for dataset in options.dataset:
        for share in options.shares:
            row = run_isolated(run_one, vars(options) | {"dataset": dataset}, share)
            progress(
                f"{dataset} {share:.0%} of users: {row['parameters']:,} parameters, {row['seconds_per_epoch']} s/epoch, "
                f"peak {row['peak_rss_mb']} MB, {row['exhaustive_users_per_s']:,} users/s exhaustive"
            )
            results.append(row)
    finish("user_scale", results)


if __name__ == "__main__":
    main()
