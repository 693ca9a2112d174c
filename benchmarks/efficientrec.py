"""EfficientRec: exhaustive against cluster-restricted scoring, on one split, one trained model per seed.

Per seed: full-ranking test metrics of the exhaustive scorer, then of the cluster-restricted scorer at
each ``--clusters`` m with the default lists (the notebook's per-cluster shortlists, as long as keeps m
lists within ``--budget`` of the catalogue), each ``--threshold-clusters`` m with threshold lists and each
``--shortlist-clusters`` m with shortlists of a fixed ``--shortlist`` items, the same weights (``EfficientRec.with_scoring``), with the mean share of
the catalogue scored exactly per user and the batch-1 latency of each scorer in PyTorch and in ONNX
Runtime (median over ``--latency-users`` real test histories). Seen and unseen users are reported
apart under ``--protocol user_disjoint``.

``python benchmarks/efficientrec.py [--dataset ml-100k] [--protocol user_temporal] [--seeds 0 1 2]
[--clusters 1 2 3 5 10] [--budget 0.08] [--threshold-clusters 1 2 5 10] [--shortlist 100 --shortlist-clusters 3 4] [--set loss.temperature=0.05 ...]
[--save-dir DIR] [--quick]``; the dataset's settings in ``presets.py`` come first, ``--set`` after them.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from common import finish, parser, prepare, progress, run_isolated, with_overrides
from presets import EFFICIENTREC_OVERRIDES

KS = (10, 20)
WANTED = [f"{metric}@{k}" for k in KS for metric in ("recall", "ndcg")] + ["coverage@10"]


def _latency_ms(run, histories: list[np.ndarray]) -> float:
    """Median milliseconds of one batch-1 call over the given histories (after one warm-up call)."""
    run(histories[0])
    times = []
    for history in histories:
        started = time.perf_counter()
        run(history)
        times.append(time.perf_counter() - started)
    return round(1000 * float(np.median(times)), 3)


def _scored(model, split, groups: dict[str, np.ndarray], histories: list[np.ndarray]) -> dict[str, Any]:
    import onnxruntime as ort
    import torch

    from recmodels.evaluation import BeyondAccuracyInputs, evaluate
    from recmodels.export import export_onnx

    beyond = BeyondAccuracyInputs(split.train.item_user_counts(), len(split.train.users_with_data()))
    row: dict[str, Any] = {}
    for name, users in groups.items():
        stage = split.test if users is None else split.test.only(users)
        result = evaluate(model, stage, KS, beyond=beyond)
        row[name] = {metric: round(result.metrics[metric], 5) for metric in WANTED} | {"users": len(result.users)}
    batch = torch.from_numpy(np.stack([h for h in histories if len(h) == len(histories[0])][:256]))
    row["catalogue_share"] = round(model.catalogue_share(batch), 4)
    scorer = model.scorer()
    with torch.inference_mode():
        row["pytorch_batch1_ms"] = _latency_ms(lambda h: scorer(torch.from_numpy(h[None, :])), histories)
    with tempfile.TemporaryDirectory() as folder:
        export_onnx(model, Path(folder) / "model.onnx", k=10)
        session = ort.InferenceSession(str(Path(folder) / "model.onnx"), providers=["CPUExecutionProvider"])
        row["onnx_batch1_ms"] = _latency_ms(lambda h: session.run(None, {"history": h[None, :]}), histories)
    return row


def run_one(options: dict[str, Any], seed: int) -> dict[str, Any]:
    import torch

    from recmodels.models.efficientrec import (
        ClusterScoringConfig,
        EfficientRec,
        EfficientRecConfig,
        ShortlistsConfig,
        ThresholdListsConfig,
    )

    prepared = prepare(options["data_dir"], options["dataset"], options["quick"], protocol=options["protocol"])
    split = prepared.split
    overrides = EFFICIENTREC_OVERRIDES.get(options["dataset"], []) + options["overrides"]
    config = with_overrides(EfficientRecConfig(seed=seed), overrides)
    if options["epochs"] is not None:
        config = with_overrides(config, [f"trainer.epochs={options['epochs']}"])
    started = time.perf_counter()
    model = EfficientRec(config).fit(split)
    train_seconds = time.perf_counter() - started
    if options["save_dir"] is not None:
        folder = options["save_dir"] / f"{Path(options['dataset']).stem}-{prepared.protocol}-seed{seed}"
        model.save(folder)
        sequences = split.test.history.sequences()
        test_histories = torch.from_numpy(sequences.padded(split.test.users, config.max_len)[0])
        with torch.inference_mode():  # the test users' profiles, the queries of retrieval_scale.py's real mode
            np.save(folder / "test_profiles.npy", model.scorer().profiles(test_histories).numpy())
        np.save(folder / "item_vectors.npy", model.item_vectors)
        np.save(folder / "centroids.npy", model.state_dict()["centroids"].numpy())
    unseen = split.unseen_users
    groups: dict[str, np.ndarray | None] = {"all": None}
    if len(unseen):
        groups |= {"seen": np.setdiff1d(split.test.users, unseen), "unseen": unseen}
    sequences = split.test.history.sequences()
    users = split.test.users[: options["latency_users"]]
    histories = list(sequences.padded(users, config.max_len)[0])
    rows = {"exhaustive": _scored(model, split, groups, histories)}
    scorings = {
        f"clusters={m}": ClusterScoringConfig(m, ShortlistsConfig(catalogue_share=options["budget"]))
        for m in options["clusters"]
    }
    scorings |= {
        f"clusters={m},threshold={options['threshold']}": ClusterScoringConfig(
            m, ThresholdListsConfig(options["threshold"])
        )
        for m in options["threshold_clusters"]
    }
    scorings |= {
        f"clusters={m},shortlist={options['shortlist']}": ClusterScoringConfig(
            m, ShortlistsConfig(length=options["shortlist"])
        )
        for m in options["shortlist_clusters"]
    }
    for name, scoring in scorings.items():
        rows[name] = _scored(model.with_scoring(scoring), split, groups, histories)
    return {
        "dataset": options["dataset"],
        "split": prepared.protocol,
        "seed": seed,
        "overrides": overrides,
        "config": config.to_dict(),
        "parameters": int(sum(value.numel() for value in model.state_dict().values())),
        "epochs": len(model.history.loss),
        "best_epoch": model.history.best_epoch,
        "train_seconds": round(train_seconds, 1),
        "torch_threads": torch.get_num_threads(),
        "scoring": rows,
    }


def main() -> None:
    args = parser("efficientrec", ["ml-100k"], ["efficientrec"])
    args.add_argument("--protocol", default=None, help="split protocol (default: the dataset's, as benchmarks pick)")
    args.add_argument("--seeds", type=int, nargs="+", default=None, help="several seeds (overrides --seed)")
    args.add_argument(
        "--clusters", type=int, nargs="*", default=[1, 2, 3, 5, 10], help="top clusters m, the default shortlists"
    )
    args.add_argument(
        "--budget", type=float, default=0.08, help="catalogue share the default shortlists keep m lists in"
    )
    args.add_argument("--threshold-clusters", type=int, nargs="*", default=[1, 2, 5, 10], help="m, threshold lists")
    args.add_argument("--threshold", type=float, default=0.2, help="membership that lists an item in a cluster")
    args.add_argument("--shortlist", type=int, default=100, help="items per cluster of a fixed-length shortlist")
    args.add_argument("--shortlist-clusters", type=int, nargs="*", default=[], help="m, fixed-length shortlists")
    args.add_argument("--latency-users", type=int, default=200)
    args.add_argument("--set", action="append", default=[], dest="overrides", metavar="FIELD=JSON")
    args.add_argument("--save-dir", type=Path, default=None, help="save each trained model, its vectors and profiles")
    options = args.parse_args()
    results = []
    for dataset in options.dataset:
        for seed in options.seeds or [options.seed]:
            settings = vars(options) | {"dataset": dataset}
            presets = EFFICIENTREC_OVERRIDES.get(dataset, [])
            progress(f"{dataset} seed {seed}: {' '.join(presets + options.overrides) or 'defaults'}")
            row = run_isolated(run_one, settings, seed)
            for name, scored in row["scoring"].items():
                progress(
                    f"  {name}: {scored['all']} share {scored['catalogue_share']} "
                    f"torch {scored['pytorch_batch1_ms']} ms onnx {scored['onnx_batch1_ms']} ms"
                )
            results.append(row)
    finish("efficientrec", results)


if __name__ == "__main__":
    main()
