"""Cluster-restricted scoring swept over saved EfficientRec models: more m, thresholds and the notebook's shortlists.

Loads models saved by ``benchmarks/efficientrec.py --save-dir DIR`` (no retraining) and scores each with
``ClusterScoringConfig`` at every ``--clusters`` m and ``--thresholds`` value, and with per-cluster
``--shortlists`` of fixed lengths or ``--budgets`` (shortlists as long as keep m lists within that share of
the catalogue), on the split they were trained on: full-ranking test metrics, NDCG@10 kept against
the same model's exhaustive NDCG@10, share of the catalogue scored, batch-1 latency (PyTorch and ONNX
Runtime; the rows of ``benchmarks/efficientrec.py``).

``python benchmarks/efficientrec_restricted.py --dataset ml-1m-seq/ml-1m.txt --models DIR/ml-1m-leave_one_out-seed0 ...
[--clusters 3 4] [--thresholds 0.1 0.2 0.3] [--shortlists 100 200] [--budgets 0.08]``
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from common import finish, parser, prepare, progress, run_isolated


def run_one(options: dict[str, Any], folder: Path) -> dict[str, Any]:
    from efficientrec import _scored

    from recmodels.models.base import Recommender
    from recmodels.models.efficientrec import (
        ClusterScoringConfig,
        ExhaustiveScoringConfig,
        ShortlistsConfig,
        ThresholdListsConfig,
    )

    prepared = prepare(options["data_dir"], options["dataset"], False, protocol=options["protocol"])
    split = prepared.split
    model = Recommender.load(folder)
    sequences = split.test.history.sequences()
    histories = list(sequences.padded(split.test.users[: options["latency_users"]], model.max_history_length)[0])
    groups = {"all": None}
    exhaustive = _scored(model.with_scoring(ExhaustiveScoringConfig()), split, groups, histories)
    rows = {"exhaustive": exhaustive}
    scorings = (
        {
            f"m={m} threshold={threshold}": ClusterScoringConfig(m, ThresholdListsConfig(threshold))
            for m in options["clusters"]
            for threshold in options["thresholds"]
        }
        | {
            f"m={m} shortlist={length}": ClusterScoringConfig(m, ShortlistsConfig(length=length))
            for m in options["clusters"]
            for length in options["shortlists"]
        }
        | {
            f"m={m} budget={budget}": ClusterScoringConfig(m, ShortlistsConfig(catalogue_share=budget))
            for m in options["clusters"]
            for budget in options["budgets"]
        }
    )
    for name, scoring in scorings.items():
        row = _scored(model.with_scoring(scoring), split, groups, histories)
        row["ndcg@10_kept"] = round(row["all"]["ndcg@10"] / exhaustive["all"]["ndcg@10"], 4)
        rows[name] = row
        progress(
            f"  {folder.name} {name}: ndcg@10 {row['all']['ndcg@10']} kept {row['ndcg@10_kept']} share {row['catalogue_share']}"
        )
    return {"dataset": options["dataset"], "split": prepared.protocol, "model": str(folder), "scoring": rows}


def main() -> None:
    args = parser("efficientrec_restricted", ["ml-1m-seq/ml-1m.txt"], ["efficientrec"])
    args.add_argument("--models", type=Path, nargs="+", required=True, help="folders saved by efficientrec.py")
    args.add_argument("--protocol", default=None)
    args.add_argument("--clusters", type=int, nargs="+", default=[3, 4])
    args.add_argument("--thresholds", type=float, nargs="*", default=[0.2])
    args.add_argument("--shortlists", type=int, nargs="*", default=[], help="fixed shortlist lengths")
    args.add_argument("--budgets", type=float, nargs="*", default=[], help="catalogue shares of budget shortlists")
    args.add_argument("--latency-users", type=int, default=200)
    options = args.parse_args()
    results = [
        run_isolated(run_one, vars(options) | {"dataset": options.dataset[0]}, folder) for folder in options.models
    ]
    finish("efficientrec_restricted", results)


if __name__ == "__main__":
    main()
