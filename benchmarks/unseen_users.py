"""Seen against unseen users: each model trained once on the user-disjoint split, no retraining for anyone.

A seeded 20% of users never enters training (``recmodels.data.splits.user_disjoint_split``); every user's
last item is the target and the earlier items the history. Test metrics are reported for all users, the
seen and the unseen, from one evaluation (``EvalStage.only``). Every history-in model of the project
runs: the baselines, the SASRec family (the sequential benchmark's presets), the DiffRec family (the
diffusion benchmark's presets, DiffRec and T-DiffRec; the latent variants need item clusters) and
EfficientRec. ``--epochs`` caps the trained models' epochs (recorded per row).

``python benchmarks/unseen_users.py [--dataset ml-100k] [--model most_popular ease sasrec_ss ...] [--epochs N]``
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np
from common import finish, parser, prepare, progress, run_isolated, with_overrides

KS = (10, 20)


def _baseline(family: str) -> Callable[[int, int | None, str], Any]:
    def build(seed: int, epochs: int | None, dataset: str) -> Any:
        from recmodels.models import model_family

        cls = model_family(family)
        return cls(cls.config_class(seed=seed))

    return build


def _sequential(variant: str) -> Callable[[int, int | None, str], Any]:
    def build(seed: int, epochs: int | None, dataset: str) -> Any:
        from sequential import DROPOUT, MAX_LEN, SHORT_SEQUENCE_MAX_LEN, variant_config

        from recmodels.models.sasrec import SASRec

        max_len = MAX_LEN.get(dataset, SHORT_SEQUENCE_MAX_LEN)
        return SASRec(variant_config(variant, max_len, seed, epochs, dropout=DROPOUT.get(dataset, 0.2)))

    return build


def _diffusion(variant: str) -> Callable[[int, int | None, str], Any]:
    def build(seed: int, epochs: int | None, dataset: str) -> Any:
        from diffusion import variant_config

        from recmodels.models.diffrec import DiffRec

        return DiffRec(variant_config(variant, seed, epochs))

    return build


def _efficientrec(seed: int, epochs: int | None, dataset: str) -> Any:
    from presets import EFFICIENTREC_OVERRIDES

    from recmodels.models.efficientrec import EfficientRec, EfficientRecConfig

    overrides = EFFICIENTREC_OVERRIDES.get(dataset, []) + ([] if epochs is None else [f"trainer.epochs={epochs}"])
    return EfficientRec(with_overrides(EfficientRecConfig(seed=seed), overrides))


MODELS: dict[str, Callable[[int, int | None, str], Any]] = {
    "most_popular": _baseline("most_popular"),
    "item_knn": _baseline("item_knn"),
    "ease": _baseline("ease"),
    "sasrec_ss": _sequential("sasrec_ss"),
    "esasrec": _sequential("esasrec"),
    "diffrec": _diffusion("diffrec"),
    "t_diffrec": _diffusion("t_diffrec"),
    "efficientrec": _efficientrec,
}


def run_one(data_dir: Path, dataset: str, name: str, seed: int, epochs: int | None, quick: bool) -> dict[str, Any]:
    import time

    from recmodels.evaluation import evaluate

    split = prepare(data_dir, dataset, quick, protocol="user_disjoint").split
    model = MODELS[name](seed, epochs, dataset)
    started = time.perf_counter()
    model.fit(split)
    train_seconds = time.perf_counter() - started
    unseen = split.unseen_users
    groups = {"all": split.test.users, "seen": np.setdiff1d(split.test.users, unseen), "unseen": unseen}
    history = getattr(model, "history", None)
    row: dict[str, Any] = {
        "dataset": dataset,
        "model": name,
        "seed": seed,
        "epochs": None if history is None else len(history.seconds),
        "epoch_cap": None if history is None else epochs,
        "train_seconds": round(train_seconds, 1),
    }
    for group, users in groups.items():
        result = evaluate(model, split.test.only(users), KS)
        row[group] = {
            metric: round(value, 5) for metric, value in result.metrics.items() if metric[:4] in ("ndcg", "reca")
        }
        row[group]["users"] = len(result.users)
    return row


def main() -> None:
    args = parser("unseen_users", ["ml-100k"], list(MODELS))
    args.set_defaults(model=["most_popular", "item_knn", "ease", "efficientrec"])
    options = args.parse_args()
    results = []
    for dataset in options.dataset:
        for name in options.model:
            row = run_isolated(run_one, options.data_dir, dataset, name, options.seed, options.epochs, options.quick)
            progress(f"{dataset} {name}: seen {row['seen']} unseen {row['unseen']} ({row['epochs']} epochs)")
            results.append(row)
    finish("unseen_users", results)


if __name__ == "__main__":
    main()
