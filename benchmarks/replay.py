"""Week-by-week replay of MovieLens-100K through the live loop, driven by the real sensor code.

Per window: the file is dropped into the incoming folder, ``incoming_files_sensor`` asks for its
``ingest_window`` run (``interaction_window``, plus ``drift_report`` once a champion exists),
then ``drift_sensor`` (or, for the ``schedule`` policy once a champion exists, the
``weekly_retraining`` schedule, ticked on the Monday after the window) decides whether to
retrain, and a ``retrain`` run (``challenger_model`` -> ``live_champion``) trains a challenger
and decides once whether it replaces the champion. Every run goes through the real jobs, the IO
layer and DVC, in one SQLite Dagster instance (``orchestration/dagster.yaml``) and a throwaway
project root per policy. This script does the daemon's part synchronously: it adds the requested
partitions and executes each requested run once per run key, so here a retrain always finishes
before the next week arrives (``benchmarks/replay_live.py`` measures the loop under the real
daemon with weeks arriving faster).

Two retraining policies, each replayed from scratch: ``drift`` (the drift sensor decides) and
``schedule`` (the weekly schedule's request every window). Both bootstrap the first champion
through the drift sensor's rule. Figures per window: drift detected, retraining triggered,
promotion, and the serving champion's NDCG@10 / Recall@10 on that window (histories = every
earlier window). The same metric for the first champion kept forever is the "without
retraining" line. At the end of each policy the instance and the promotion log are audited
(``audit``): runs per run key, promotion-log entries per decision, gates judged on a window the
champion had trained on, overlapping retrains of one model.

``python benchmarks/replay.py [--policy drift schedule] [--model ease_model] [--window-days 7] [--quick] [--plot FILE]``
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path

from common import REPO_ROOT, default_data_dir, finish, peak_rss_mb, progress

DEFAULT_PLOT = REPO_ROOT / "benchmarks" / "results" / "replay_ml100k.png"
DAGSTER_YAML = REPO_ROOT / "orchestration" / "dagster.yaml"
POLICIES = ("drift", "schedule")
RUN_KEY_TAG = "dagster/run_key"  # what the daemon tags a sensor's or schedule's run with
STAND_IN_RUN_KEY_TAG = "recpipe/run_key"  # replay_live.py's stand-in for the schedule's tick
METRICS = ("ndcg@10", "recall@10")


def instance_home(root: Path) -> Path:
    """A DAGSTER_HOME under ``root`` holding the project's instance settings (SQLite storage, pools, run queue)."""
    home = root / "dagster_home"
    home.mkdir(parents=True, exist_ok=True)
    shutil.copy(DAGSTER_YAML, home / "dagster.yaml")
    return home


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(prog="benchmarks/replay.py", description=__doc__)
    parser.add_argument("--data-dir", type=Path, default=default_data_dir())
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--model", default="ease_model", help="model asset retrained on the stream")
    parser.add_argument("--window-days", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="the first 8 windows only")
    parser.add_argument("--policy", nargs="+", default=list(POLICIES), choices=POLICIES)
    parser.add_argument("--plot", type=Path, default=DEFAULT_PLOT)
    parser.add_argument("--keep", type=Path, default=None, help="keep the project roots here instead of a temp dir")
    options = parser.parse_args()

    base = options.keep or Path(tempfile.mkdtemp(prefix="recpipe-replay-"))
    results, summaries = [], {}
    for policy in options.policy:
        root = base / policy
        if root.exists():
            shutil.rmtree(root)
        root.mkdir(parents=True)
        progress(f"policy {policy}: project root {root}")
        rows, summaries[policy] = replay(options, root, policy)
        results.extend(rows)
    plot(results, options.plot)
    finish("replay", results, summary=summaries, plot=str(options.plot), peak_rss_mb=round(peak_rss_mb(), 1))
    if options.keep is None:
        shutil.rmtree(base, ignore_errors=True)


def replay(options, root: Path, policy: str) -> tuple[list[dict], dict]:
    os.environ["DAGSTER_HOME"] = str(instance_home(root))  # dagster.yaml names its storage by this variable
    import dagster as dg

    from orchestration import automation
    from orchestration.assets import live
    from orchestration.io import VersionedFolderIOManager
    from orchestration.replay import drop, window_files
    from orchestration.resources import ArtifactStore, DatasetResource
    from recmodels.data.readers import load_dataset

    store = ArtifactStore(project_root=str(root), dvc_remote=str(root / "dvc-remote"))
    stream = live.StreamResource(  # drop() publishes each week by renaming it into place: no settling tick
        incoming=str(root / "incoming"), window_days=options.window_days, model=options.model, wait_until_stable=False
    )
    dataset = DatasetResource(data_dir=str(options.data_dir), dataset=options.dataset)
    resources = {
        "stream": stream,
        "store": store,
        "dataset": dataset,
        "io_manager": VersionedFolderIOManager(store=store),
    }
    defs = dg.Definitions(assets=live.assets, asset_checks=live.checks, jobs=automation.jobs, resources=resources)
    files = window_files(load_dataset(dataset.source).interactions, options.window_days)[: 8 if options.quick else None]

    launched: set[str] = set()  # run keys launched: the daemon never launches one twice

    def launch(job: str, request: dg.RunRequest) -> dg.ExecuteInProcessResult | None:
        if request.run_key in launched:
            return None
        launched.add(request.run_key)
        return defs.resolve_job_def(job).execute_in_process(
            run_config=request.run_config,
            instance=instance,
            tags={**request.tags, RUN_KEY_TAG: request.run_key},
            partition_key=request.partition_key,
            asset_selection=request.asset_selection,
            raise_on_error=False,
        )

    cursors: dict[str, str | None] = {"incoming": None, "drift": None}
    first_champion = None  # the first promoted model, kept forever for the "without retraining" line
    rows: list[dict] = []
    started = time.perf_counter()
    with dg.DagsterInstance.get() as instance:
        for name, batch in files:
            window = name.removeprefix("interactions-").removesuffix(".csv")
            drop(stream.incoming_path, name, batch)
            row = {"policy": policy, "window": window, "rows": len(batch), "drift": None, "trigger": None}
            row["promoted"] = None

            with dg.build_sensor_context(instance=instance, cursor=cursors["incoming"], resources=resources) as context:
                landing = automation.incoming_files_sensor(context)
            cursors["incoming"] = landing.cursor or cursors["incoming"]
            for request in landing.dynamic_partitions_requests:
                instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
            had_champion = live.current_champion(instance, store) is not None
            for request in landing.run_requests:
                result = launch(automation.ingest_window_job.name, request)
                if result is None:
                    continue
                if not result.success:
                    row["ingest_failed"] = request.partition_key
                for event in result.get_asset_materialization_events():
                    materialization = event.event_specific_data.materialization
                    if materialization.asset_key != live.drift_report.key:
                        continue
                    metadata = {key: value.value for key, value in materialization.metadata.items()}
                    row["drift"] = bool(metadata["drift_detected"])
                    row["data_drifted_share"] = metadata["data_drifted_share"]
                    row["prediction_drifted_share"] = metadata["prediction_drifted_share"]
                    row["champion"] = {metric: metadata[f"champion_{metric}"] for metric in METRICS}
            if first_champion is not None and "champion" in row:
                windows = live.read_windows(store, live.landed_windows(instance))
                history = live.window_frame(windows, [key for key in sorted(windows) if key < window])
                current = live.window_frame(windows, [window])
                frozen = first_champion.evaluate_on(history, current, (10,)).metrics
                row["no_retraining"] = {metric: frozen[metric] for metric in METRICS}

            with dg.build_sensor_context(instance=instance, cursor=cursors["drift"], resources=resources) as context:
                decision = automation.drift_sensor(context)
            cursors["drift"] = decision.cursor or cursors["drift"]
            requests = list(decision.run_requests)
            if decision.skip_reason:
                row["drift_sensor"] = decision.skip_reason.skip_message
            if policy == "schedule" and had_champion:
                # the Monday 03:00 tick after this window ended
                tick = datetime.fromisoformat(window).replace(tzinfo=timezone.utc) + timedelta(days=7, hours=3)
                with dg.build_schedule_context(
                    instance=instance, resources=resources, scheduled_execution_time=tick
                ) as context:
                    scheduled = automation.weekly_retraining(context)
                requests = [scheduled] if isinstance(scheduled, dg.RunRequest) else []
                if not requests:
                    row["schedule"] = scheduled.skip_message
            for request in requests:
                if request.job_name == automation.report_drift_job.name:
                    launch(request.job_name, request)
                    continue
                row["trigger"] = request.tags.get(automation.TRIGGER_TAG)
                retrain_started = time.perf_counter()
                result = launch(automation.retrain_job.name, request)
                if result is None:
                    continue
                row["retrain_seconds"] = round(time.perf_counter() - retrain_started, 1)
                gates = [e for e in result.get_asset_check_evaluations() if e.check_name == live.BEATS_CHECK]
                if not result.success or not gates:
                    row["retrain_failed"] = result.run_id
                    continue
                row["promoted"] = gates[0].passed
                row["gate"] = gates[0].description
                if gates[0].passed and first_champion is None:
                    first_champion = live.current_champion(instance, store).model
            progress(
                f"{window}: {row['rows']} rows, drift {row['drift']}, trigger {row['trigger']}, "
                f"promoted {row['promoted']}, champion {row.get('champion')}, "
                f"without retraining {row.get('no_retraining')}"
            )
            rows.append(row)
        seconds = time.perf_counter() - started
        figures = audit(instance, store.artifacts_root)
    progress(f"policy {policy}: {json.dumps(figures['summary'])}")
    return rows, {**_summary(rows, seconds), "audit": figures}


def audit(instance, artifacts: Path) -> dict:
    """What the instance and the promotion log say about the loop's decisions.

    - runs per trigger: retrain runs grouped by run key (``bootstrap``, ``drift:<window>``,
      ``schedule:<date>``), each must be 1;
    - promotion-log entries per decision id, each must be 1;
    - judged gates whose champion had trained on the evaluation window or later (the champion's
      trained-through window taken from its own ``live_champion`` materialisation, not from the
      log entry), must be 0;
    - pairs of retrain runs of one model (tag ``recpipe/model``) whose run times overlap, must be 0;
    - retrain runs whose decision was already in the log (nothing re-judged), and runs with no decision.
    """
    import dagster as dg

    from orchestration import automation
    from orchestration.assets import live

    retrains = instance.get_run_records(dg.RunsFilter(job_name=automation.retrain_job.name), ascending=True)
    all_runs = instance.get_run_records(dg.RunsFilter())
    champions = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=live.live_champion.key), limit=10_000
    ).records
    outcome = {record.run_id: record.asset_materialization.metadata for record in champions}
    runs = []
    for record in retrains:
        run = record.dagster_run
        decided = outcome.get(run.run_id, {})
        runs.append(
            {
                "run_id": run.run_id,
                "run_key": run.tags.get(RUN_KEY_TAG) or run.tags.get(STAND_IN_RUN_KEY_TAG) or "(none)",
                "trigger": run.tags.get(automation.TRIGGER_TAG),
                "model": run.tags.get(automation.MODEL_TAG),
                "status": run.status.value,
                "start": record.start_time,
                "end": record.end_time,
                "seconds": None if not (record.start_time and record.end_time) else record.end_time - record.start_time,
                **{key: decided[key].value for key in ("decision", "promoted", "reason") if key in decided},
            }
        )
    per_key = Counter(run["run_key"] for run in runs)

    overlaps = []
    for model in sorted({run["model"] for run in runs}, key=str):
        mine = sorted((run for run in runs if run["model"] == model and run["start"]), key=lambda run: run["start"])
        for index, run in enumerate(mine):
            for later in mine[index + 1 :]:
                if run["end"] is None or later["start"] < run["end"]:
                    overlaps.append([model, run["run_key"], later["run_key"]])

    log = artifacts / live.PROMOTION_LOG
    entries = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    per_decision = Counter(entry["decision"] for entry in entries)
    promoted_per_window = Counter(entry["window"] for entry in entries if entry["promoted"])
    trained_through = {
        record.asset_materialization.tags["dagster/data_version"]: record.asset_materialization.metadata[
            live.TRAINED_THROUGH
        ].value
        for record in champions
    }
    judged = [entry for entry in entries if entry["champion_score"] is not None]
    leaked = [
        entry["decision"]
        for entry in judged
        if trained_through.get(entry["champion_version"], entry["champion_trained_through"]) >= entry["window"]
        or entry["challenger_trained_through"] >= entry["window"]
    ]
    refused_unjudged = [
        entry["decision"] for entry in entries if entry["champion"] is not None and entry["champion_score"] is None
    ]
    statuses = Counter(f"{record.dagster_run.job_name}:{record.dagster_run.status.value}" for record in all_runs)
    summary = {
        "runs": len(all_runs),
        "runs_by_job_and_status": dict(sorted(statuses.items())),
        "retrain_runs": len(runs),
        "retrain_runs_per_trigger": dict(Counter(run["trigger"] for run in runs)),
        "max_runs_per_run_key": max(per_key.values(), default=0),
        "run_keys_with_more_than_one_run": sorted(key for key, count in per_key.items() if count > 1),
        "promotion_log_entries": len(entries),
        "decisions": len(per_decision),
        "max_entries_per_decision": max(per_decision.values(), default=0),
        "max_promotions_per_window": max(promoted_per_window.values(), default=0),
        "gates_judged": len(judged),
        "gates_on_a_window_the_champion_trained_on": len(leaked),
        "refused_unjudged_champion_saw_the_window": len(refused_unjudged),
        "overlapping_retrains_of_one_model": len(overlaps),
        "retrain_runs_repeating_a_made_decision": sum("not made again" in run.get("reason", "") for run in runs),
        "retrain_runs_without_a_decision": sum("decision" not in run for run in runs),
    }
    return {"summary": summary, "retrain_runs": runs, "overlaps": overlaps, "leaked": leaked, "promotions": entries}


def _summary(rows: list[dict], seconds: float) -> dict:
    compared = [row for row in rows if "champion" in row and "no_retraining" in row]

    def mean(values: list[float]) -> float | None:
        return sum(values) / len(values) if values else None

    return {
        "windows": len(rows),
        "drift_windows": sum(bool(row["drift"]) for row in rows),
        "drift_reports": sum(row["drift"] is not None for row in rows),
        "retrains": sum("retrain_seconds" in row for row in rows),
        "promotions": sum(bool(row["promoted"]) for row in rows),
        "windows_compared": len(compared),
        "mean_ndcg@10_with_retraining": mean([row["champion"]["ndcg@10"] for row in compared]),
        "mean_ndcg@10_without_retraining": mean([row["no_retraining"]["ndcg@10"] for row in compared]),
        "mean_recall@10_with_retraining": mean([row["champion"]["recall@10"] for row in compared]),
        "mean_recall@10_without_retraining": mean([row["no_retraining"]["recall@10"] for row in compared]),
        "mean_retrain_seconds": mean([row["retrain_seconds"] for row in rows if "retrain_seconds" in row]),
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
