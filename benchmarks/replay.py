"""Week-by-week replay of MovieLens-100K through the live loop, driven by the real sensor code.

Per window: the file is dropped into the incoming folder, ``incoming_files_sensor`` lands it
and its ``ingest_window`` run materialises the window and its drift report, then
``drift_sensor`` decides whether to retrain, and a ``retrain`` run trains a challenger and
passes or fails the promotion gate. All in one Dagster instance, in a throwaway project root.

Two retraining policies, each replayed from scratch: ``drift`` (the drift sensor decides)
and ``schedule`` (the weekly schedule's request every window). Both bootstrap the first
champion through the drift sensor's rule. Figures per window: drift detected, retraining
triggered, promotion, and the serving champion's NDCG@10 / Recall@10 on that window
(histories = every earlier window). The same metric for the first champion kept forever
is the "without retraining" line of the plot.

``python benchmarks/replay.py [--policy drift schedule] [--model ease_model] [--window-days 7] [--quick] [--plot FILE]``
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from common import REPO_ROOT, default_data_dir, finish, peak_rss_mb, progress

DEFAULT_PLOT = REPO_ROOT / "benchmarks" / "results" / "replay_ml100k.png"


def configure(root: Path, data_dir: Path, dataset: str, window_days: int) -> None:
    """Point every resource at the throwaway project root before orchestration is imported."""
    os.environ.update(
        RECPIPE_ROOT=str(root),
        RECPIPE_DATA_DIR=str(data_dir),
        RECPIPE_DATASET=dataset,
        RECPIPE_INCOMING=str(root / "incoming"),
        RECPIPE_LANDING=str(root / "data" / "stream"),
        RECPIPE_WINDOW_DAYS=str(window_days),
        RECPIPE_DVC_REMOTE=str(root / "dvc-remote"),
    )


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(prog="benchmarks/replay.py", description=__doc__)
    parser.add_argument("--data-dir", type=Path, default=default_data_dir())
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--model", default="ease_model", help="model asset retrained on the stream")
    parser.add_argument("--window-days", type=int, default=7)
    parser.add_argument("--seed", type=int, default=0, help="unused: the loop's models are deterministic")
    parser.add_argument("--quick", action="store_true", help="the first 8 windows only")
    parser.add_argument("--policy", nargs="+", default=list(POLICIES), choices=POLICIES)
    parser.add_argument("--plot", type=Path, default=DEFAULT_PLOT)
    parser.add_argument("--keep", type=Path, default=None, help="keep the project root here instead of a temp dir")
    options = parser.parse_args()

    base = options.keep or Path(tempfile.mkdtemp(prefix="recpipe-replay-"))
    results, summaries = [], {}
    for policy in options.policy:
        root = base / policy
        if root.exists():
            shutil.rmtree(root)
        root.mkdir(parents=True)
        configure(root, options.data_dir, options.dataset, options.window_days)
        progress(f"policy {policy}: project root {root}")
        rows, summaries[policy] = replay(
            options.data_dir / options.dataset, options.model, options.window_days, options.quick, root, policy
        )
        results.extend(rows)
    plot(results, options.plot)
    finish("replay", results, summary=summaries, plot=str(options.plot), peak_rss_mb=round(peak_rss_mb(), 1))
    if options.keep is None:
        shutil.rmtree(base, ignore_errors=True)


def replay(source: Path, model: str, window_days: int, quick: bool, root: Path, policy: str) -> tuple[list[dict], dict]:
    import dagster as dg

    from orchestration import automation
    from orchestration.assets import live
    from orchestration.assets.live import CHAMPION, StreamResource, TrainedModel
    from orchestration.replay import drop, window_files
    from orchestration.resources import ArtifactStore, DatasetResource
    from recmodels.data.readers import load_dataset
    from recmodels.data.stream import landed_windows, read_windows

    # the jobs' assets, materialised with resources read from this policy's environment
    resources = {"stream": StreamResource(), "store": ArtifactStore(), "dataset": DatasetResource()}
    stream = resources["stream"]
    instance = dg.DagsterInstance.ephemeral()
    ingest = [live.interaction_window, live.drift_report]
    retrain = [live.challenger_model, live.challenger_beats_champion, live.live_champion]
    files = window_files(load_dataset(source).interactions, window_days)[: 8 if quick else None]
    model_config = {"ops": {"challenger_model": {"config": {"model": model}}}}

    cursors: dict[str, str | None] = {"incoming": None, "drift": None}
    first_champion = root / "first_champion"
    rows: list[dict] = []
    started = time.perf_counter()
    for name, batch in files:
        window = name.removeprefix("interactions-").removesuffix(".csv")
        drop(stream.incoming_path, name, batch)
        row = {"policy": policy, "window": window, "rows": len(batch), "drift": None, "trigger": None, "promoted": None}

        context = dg.build_sensor_context(instance=instance, cursor=cursors["incoming"], resources=resources)
        landed = automation.incoming_files_sensor(context)
        for request in landed.dynamic_partitions_requests:
            instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
        champion = (
            TrainedModel.load(root / "artifacts" / CHAMPION) if (root / "artifacts" / CHAMPION).exists() else None
        )
        for request in landed.run_requests:
            result = dg.materialize(
                ingest, instance=instance, resources=resources, partition_key=request.partition_key, tags=request.tags
            )
            for event in result.get_asset_materialization_events():
                materialization = event.event_specific_data.materialization
                if (
                    materialization.asset_key.to_user_string() == "drift_report"
                    and "data_drift" in materialization.metadata
                ):
                    metadata = materialization.metadata
                    row["drift"] = bool(metadata["drift_detected"].value)
                    row["data_drifted_share"] = metadata["data_drifted_share"].value
                    row["prediction_drifted_share"] = metadata["prediction_drifted_share"].value
                    row["champion"] = {
                        metric: metadata[f"champion_{metric}"].value for metric in ("ndcg@10", "recall@10")
                    }
        if champion is not None and first_champion.exists():
            history = read_windows(
                stream.landing_path, [key for key in landed_windows(stream.landing_path) if key < window]
            )
            current = read_windows(stream.landing_path, [window])
            frozen = TrainedModel.load(first_champion).evaluate_on(history, current, (10,)).metrics
            row["no_retraining"] = {metric: frozen[metric] for metric in ("ndcg@10", "recall@10")}

        context = dg.build_sensor_context(instance=instance, cursor=cursors["drift"], resources=resources)
        decision = automation.drift_sensor(context)
        cursors["drift"] = decision.cursor or cursors["drift"]
        requests = decision.run_requests
        if policy == "schedule" and champion is not None:
            scheduled = automation.weekly_retraining(dg.build_schedule_context(resources=resources))
            requests = [scheduled] if isinstance(scheduled, dg.RunRequest) else []
        for request in requests:
            row["trigger"] = request.tags.get("recpipe/trigger")
            run_config = _merge(model_config, request.run_config or {})
            result = dg.materialize(
                retrain, instance=instance, resources=resources, run_config=run_config, raise_on_error=False
            )
            gate = [
                evaluation
                for evaluation in result.get_asset_check_evaluations()
                if evaluation.check_name == "challenger_beats_champion"
            ][0]
            row["promoted"] = gate.passed
            row["gate"] = gate.description
            if gate.passed and not first_champion.exists():
                shutil.copytree(root / "artifacts" / CHAMPION, first_champion)
        if decision.skip_reason:
            row["drift_sensor"] = decision.skip_reason.skip_message
        progress(
            f"{window}: {row['rows']} rows, drift {row['drift']}, trigger {row['trigger']}, promoted {row['promoted']}, "
            f"champion {row.get('champion')}, without retraining {row.get('no_retraining')}"
        )
        rows.append(row)
    return rows, _summary(rows, time.perf_counter() - started)


POLICIES = ("drift", "schedule")


def _merge(base: dict, extra: dict) -> dict:
    merged = {"ops": {**base["ops"]}}
    for op, value in extra.get("ops", {}).items():
        merged["ops"][op] = {"config": {**merged["ops"].get(op, {}).get("config", {}), **value.get("config", {})}}
    return merged


def _summary(rows: list[dict], seconds: float) -> dict:
    compared = [row for row in rows if "champion" in row and "no_retraining" in row]

    def mean(values: list[float]) -> float | None:
        return sum(values) / len(values) if values else None

    return {
        "windows": len(rows),
        "drift_windows": sum(bool(row["drift"]) for row in rows),
        "retrains": sum(row["trigger"] is not None for row in rows),
        "promotions": sum(bool(row["promoted"]) for row in rows),
        "windows_compared": len(compared),
        "mean_ndcg@10_with_retraining": mean([row["champion"]["ndcg@10"] for row in compared]),
        "mean_ndcg@10_without_retraining": mean([row["no_retraining"]["ndcg@10"] for row in compared]),
        "mean_recall@10_with_retraining": mean([row["champion"]["recall@10"] for row in compared]),
        "mean_recall@10_without_retraining": mean([row["no_retraining"]["recall@10"] for row in compared]),
        "seconds": round(seconds, 1),
    }


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    compared = [row for row in rows if "champion" in row and "no_retraining" in row]
    if not compared:
        progress("nothing to plot: no window had both a champion and a frozen first champion")
        return
    windows = sorted({row["window"] for row in compared})
    position = {window: index for index, window in enumerate(windows)}
    figure, axis = plt.subplots(figsize=(11, 4.5))
    first_policy = compared[0]["policy"]
    baseline = [row for row in compared if row["policy"] == first_policy]
    axis.plot(
        [position[row["window"]] for row in baseline],
        [row["no_retraining"]["ndcg@10"] for row in baseline],
        marker="s",
        color="gray",
        label="first champion kept (no retraining)",
    )
    for policy, colour in (("drift", "tab:blue"), ("schedule", "tab:orange")):
        mine = [row for row in compared if row["policy"] == policy]
        if not mine:
            continue
        label = "drift-triggered retraining" if policy == "drift" else "scheduled retraining, every window"
        axis.plot(
            [position[row["window"]] for row in mine],
            [row["champion"]["ndcg@10"] for row in mine],
            marker="o",
            color=colour,
            label=label,
        )
        if policy == "drift":
            for row in mine:
                if row["drift"]:
                    axis.axvspan(
                        position[row["window"]] - 0.4, position[row["window"]] + 0.4, color="tab:red", alpha=0.1, lw=0
                    )
                if row["promoted"]:
                    axis.axvline(position[row["window"]] + 0.5, color="tab:green", ls="--", lw=1)
    axis.set_xticks(range(len(windows)), windows, rotation=60, ha="right", fontsize=7)
    axis.set_ylabel("NDCG@10 on the window")
    axis.set_title(
        "Champion NDCG@10 per window. Drift policy: red = drift detected, green = promotion (serves from the next window)",
        fontsize=9,
    )
    axis.legend()
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)


if __name__ == "__main__":
    sys.exit(main())
