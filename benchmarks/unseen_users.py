"""Seen against unseen users: each model trained once on the user-disjoint split, no retraining for anyone.

A seeded 20% of users never enters training (``recmodels.data.splits.user_disjoint_split``); every user's
last item is the target and the earlier items the history. Test metrics are reported for all users, the
seen and the unseen, from one evaluation (``EvalStage.only``).

``python benchmarks/unseen_users.py [--dataset ml-100k] [--model most_popular item_knn ease]``
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from common import finish, parser, prepare, progress, run_isolated

MODELS = ["most_popular", "item_knn", "ease"]
KS = (10, 20)


def run_one(data_dir: Path, dataset: str, family: str, seed: int, quick: bool) -> dict[str, Any]:
    from recmodels.evaluation import evaluate
    from recmodels.models import model_family

    split = prepare(data_dir, dataset, quick, protocol="user_disjoint").split
    cls = model_family(family)
    model = cls(cls.config_class(seed=seed)).fit(split)
    unseen = split.unseen_users
    groups = {"all": split.test.users, "seen": np.setdiff1d(split.test.users, unseen), "unseen": unseen}
    row: dict[str, Any] = {"dataset": dataset, "model": family, "seed": seed}
    for name, users in groups.items():
        result = evaluate(model, split.test.only(users), KS)
        row[name] = {
            metric: round(value, 5) for metric, value in result.metrics.items() if metric[:4] in ("ndcg", "reca")
        }
        row[name]["users"] = len(result.users)
    return row


def main() -> None:
    args = parser("unseen_users", ["ml-100k"], MODELS).parse_args()
    results = []
    for dataset in args.dataset:
        for family in args.model:
            row = run_isolated(run_one, args.data_dir, dataset, family, args.seed, args.quick)
            progress(f"{dataset} {family}: seen {row['seen']} unseen {row['unseen']}")
            results.append(row)
    finish("unseen_users", results)


if __name__ == "__main__":
    main()
