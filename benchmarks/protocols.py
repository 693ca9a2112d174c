"""Which split protocol gives a leaderboard that can be trusted: users evaluated, interval widths, tests.

For each protocol (global temporal, per-user temporal, leave-one-out) on the pipeline's
own data path (validate, k-core 5/5, split), MostPopular, ItemKNN and EASE are fitted
and ranked on the test stage. Reported per model: users evaluated, NDCG@10 and
Recall@10 with their 95% bootstrap intervals over users (1,000 resamples), and the
paired sign-flip p-value against the best model of that protocol.

Run from the repository root: ``python benchmarks/protocols.py [--quick]``.
"""

from __future__ import annotations

import time
from pathlib import Path

from common import finish, parser, progress, run_isolated

MODELS = ["most_popular", "item_knn", "ease"]
DATASETS = ["ml-100k"]
PROTOCOLS = ["temporal", "user_temporal", "leave_one_out"]
METRICS = ["ndcg@10", "recall@10"]


def run_protocol(data_dir: Path, dataset: str, protocol: str, families: list[str], seed: int, quick: bool) -> dict:
    from recmodels.data.interactions import Interactions, k_core
    from recmodels.data.readers import load_dataset
    from recmodels.data.schemas import validate_interactions
    from recmodels.data.splits import make_split
    from recmodels.evaluation import evaluate
    from recmodels.models import model_family
    from recmodels.significance import compare_with_best, confidence_intervals

    frame = load_dataset(data_dir / dataset).interactions
    if quick:
        frame = frame.loc[frame["user_id"].isin(sorted(frame["user_id"].unique())[:300])].reset_index(drop=True)
    rows, _ = k_core(validate_interactions(frame).valid, 5, 5)
    split = make_split(Interactions.from_frame(rows), protocol)
    per_user, rows_out = {}, []
    for family in families:
        cls = model_family(family)
        started = time.perf_counter()
        model = cls(cls.config_class(seed=seed)).fit(split)
        result = evaluate(model, split.test, (10,))
        intervals = confidence_intervals({name: result.per_user[name] for name in METRICS}, seed=seed)
        per_user[family] = result.per_user["ndcg@10"]
        rows_out.append(
            {
                "dataset": dataset,
                "split": protocol,
                "model": family,
                "users_evaluated": int(len(result.users)),
                "test_targets": int(split.test.targets.nnz),
                "metrics": {name: round(interval.value, 5) for name, interval in intervals.items()},
                "ci95": {
                    name: [round(interval.low, 5), round(interval.high, 5)] for name, interval in intervals.items()
                },
                "ci95_width": {name: round(interval.high - interval.low, 5) for name, interval in intervals.items()},
                "train_seconds": round(time.perf_counter() - started - result.seconds, 3),
                "seconds_per_epoch": None,
                "epochs": None,
            }
        )
    best, comparisons = compare_with_best(per_user, seed=seed)
    gaps = confidence_intervals({family: values - per_user[best] for family, values in per_user.items()}, seed=seed)
    for row in rows_out:
        comparison, gap = comparisons[row["model"]], gaps[row["model"]]
        row["ndcg@10_vs_best"] = {
            "best": best,
            "difference": round(gap.value, 5),
            "difference_ci95": [round(gap.low, 5), round(gap.high, 5)],
            "p_value": comparison.p_value,
            "p_value_holm": comparison.p_value_holm,
            "tied_with_best": comparison.tied_with_best,
        }
        row["ci95_relative_width"] = {
            name: round(width / row["metrics"][name], 3) for name, width in row["ci95_width"].items()
        }
    return {"rows": rows_out, "report": {key: int(value) for key, value in split.report.items()}}


def main() -> None:
    args = parser("protocols", DATASETS, MODELS).parse_args()
    results, reports = [], {}
    for dataset in args.dataset:
        for protocol in PROTOCOLS:
            progress(f"{dataset}: {protocol}")
            outcome = run_isolated(run_protocol, args.data_dir, dataset, protocol, args.model, args.seed, args.quick)
            for row in outcome["rows"]:
                row["peak_rss_mb"] = outcome["peak_rss_mb"]
                progress(
                    f"  {row['model']}: {row['users_evaluated']} users, ndcg@10 {row['metrics']['ndcg@10']:.4f} "
                    f"[{row['ci95']['ndcg@10'][0]:.4f}, {row['ci95']['ndcg@10'][1]:.4f}] "
                    f"width {row['ci95_width']['ndcg@10']:.4f} ({row['ci95_relative_width']['ndcg@10']:.0%} of the mean), "
                    f"vs best {row['ndcg@10_vs_best']['difference']:+.4f} {row['ndcg@10_vs_best']['difference_ci95']} "
                    f"p {row['ndcg@10_vs_best']['p_value']}"
                )
                results.append(row)
            reports[f"{dataset} {protocol}"] = outcome["report"]
    finish("protocols", results, split_reports=reports)


if __name__ == "__main__":
    main()
