"""Schedules and sensors: new files become windows, drift becomes a retraining run, weekly retraining.

- ``incoming_files_sensor``: lands each new file (validation + quarantine), adds its windows as
  partitions and asks for their ``ingest_window`` runs. A malformed file is set aside with its
  reason; the sensor keeps going.
- ``drift_sensor``: reads new ``drift_report`` materialisations after its cursor and asks for one
  ``retrain`` run per drift event, at most one per ``cooldown_windows`` windows of data time;
  trains the first champion once ``bootstrap_windows`` windows have landed.
- ``weekly_retraining``: the same ``retrain`` job on a calendar, whatever the drift says.
"""

import json
import shutil
from dataclasses import asdict, dataclass

import dagster as dg
import numpy as np

from orchestration.assets.live import (
    CHAMPION,
    RECORD_FILE,
    WINDOWS,
    StreamResource,
    challenger_model,
    drift_report,
    interaction_window,
    live_champion,
)
from orchestration.resources import ArtifactStore, DatasetResource
from recmodels.data.schemas import ValidationRules
from recmodels.data.stream import incoming_files, land_file, landed_windows

DONE_FOLDER = "done"

ingest_window_job = dg.define_asset_job(
    "ingest_window",
    selection=dg.AssetSelection.assets(interaction_window, drift_report),
    description="One time window: its rows, then its drift report against the champion's data.",
)
retrain_job = dg.define_asset_job(
    "retrain",
    selection=dg.AssetSelection.assets(challenger_model, live_champion),
    description="Train a challenger, gate it against the champion, promote, export and register it if better.",
)


@dg.sensor(job=ingest_window_job, minimum_interval_seconds=15, default_status=dg.DefaultSensorStatus.RUNNING)
def incoming_files_sensor(
    context: dg.SensorEvaluationContext, stream: StreamResource, dataset: DatasetResource
) -> dg.SensorResult:
    """Each new file in the incoming folder: validate, land by window, add partitions, run them."""
    files = incoming_files(stream.incoming_path)
    if not files:
        return dg.SensorResult(skip_reason=f"no new files in {stream.incoming_path}")
    rules = ValidationRules(rating_min=dataset.rating_min, rating_max=dataset.rating_max)
    known = set(context.instance.get_dynamic_partitions(WINDOWS.name))
    new_windows: list[str] = []
    run_requests = []
    done = stream.incoming_path / DONE_FOLDER
    done.mkdir(parents=True, exist_ok=True)
    for path in files:
        stamp = path.stat().st_mtime_ns
        report = land_file(path, stream.landing_path, stream.window_days, rules)
        shutil.move(path, done / path.name)  # moved only once landed: a crash re-lands, never loses
        if report.rejected:
            context.log.warning(
                f"{path.name} rejected, set aside in {stream.landing_path / 'rejected'}: {report.rejected}"
            )
            continue
        context.log.info(
            f"{path.name}: {report.rows_in} rows in, {report.rows_kept} kept, {report.rows_quarantined} quarantined "
            f"{report.by_reason or ''} -> windows {sorted(report.windows)}"
        )
        for window in sorted(report.windows):
            if window not in known and window not in new_windows:
                new_windows.append(window)
            run_requests.append(
                dg.RunRequest(
                    run_key=f"{path.name}:{stamp}:{window}",
                    partition_key=window,
                    tags={"recpipe/source_file": path.name},
                )
            )
    return dg.SensorResult(
        run_requests=run_requests,
        dynamic_partitions_requests=[WINDOWS.build_add_request(new_windows)] if new_windows else [],
        skip_reason=None
        if run_requests
        else "every new file was rejected (see the sensor log and the rejected folder)",
    )


@dataclass
class DriftCursor:
    """Last drift report read, and the window of the last drift-triggered retrain."""

    after_storage_id: int | None = None
    last_trigger_window: str | None = None

    @classmethod
    def parse(cls, cursor: str | None) -> "DriftCursor":
        return cls(**json.loads(cursor)) if cursor else cls()

    def dump(self) -> str:
        return json.dumps(asdict(self))


def windows_apart(earlier: str, later: str, window_days: int) -> int:
    return int((np.datetime64(later, "D") - np.datetime64(earlier, "D")).astype(int) // window_days)


@dg.sensor(job=retrain_job, minimum_interval_seconds=30, default_status=dg.DefaultSensorStatus.RUNNING)
def drift_sensor(context: dg.SensorEvaluationContext, stream: StreamResource, store: ArtifactStore) -> dg.SensorResult:
    """One retraining run per drift event (or the first champion), honouring the cooldown."""
    cursor = DriftCursor.parse(context.cursor)
    has_champion = (store.root / "artifacts" / CHAMPION / RECORD_FILE).exists()
    if not has_champion:
        windows = landed_windows(stream.landing_path)
        if len(windows) < stream.bootstrap_windows:
            return dg.SensorResult(
                skip_reason=f"no champion yet; {len(windows)} of {stream.bootstrap_windows} windows landed"
            )
        return dg.SensorResult(
            run_requests=[dg.RunRequest(run_key=f"bootstrap:{windows[-1]}", tags={"recpipe/trigger": "bootstrap"})],
            cursor=cursor.dump(),
        )
    records = context.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=drift_report.key, after_storage_id=cursor.after_storage_id),
        limit=100,
        ascending=True,
    ).records
    if not records:
        return dg.SensorResult(skip_reason="no new drift report")
    run_requests, reasons = [], []
    for record in records:
        materialization = record.asset_materialization
        window = materialization.partition
        cursor.after_storage_id = record.storage_id
        if not materialization.metadata["drift_detected"].value:
            status = materialization.metadata.get("status")
            reasons.append(f"{window}: {status.value if status else 'no drift'}")
            continue
        if cursor.last_trigger_window is not None:
            apart = windows_apart(cursor.last_trigger_window, window, stream.window_days)
            if apart < stream.cooldown_windows:
                reasons.append(
                    f"{window}: drift, but in cooldown ({apart} of {stream.cooldown_windows} windows "
                    f"since the retrain on {cursor.last_trigger_window})"
                )
                continue
        cursor.last_trigger_window = window
        run_requests.append(
            dg.RunRequest(
                run_key=f"drift:{window}:{record.storage_id}",
                run_config={"ops": {challenger_model.key.to_python_identifier(): {"config": {"window": window}}}},
                tags={"recpipe/trigger": "drift", "recpipe/window": window},
            )
        )
    for reason in reasons:
        context.log.info(reason)
    return dg.SensorResult(
        run_requests=run_requests,
        cursor=cursor.dump(),
        skip_reason=None if run_requests else "; ".join(reasons),
    )


@dg.schedule(job=retrain_job, cron_schedule="0 3 * * 1", default_status=dg.DefaultScheduleStatus.RUNNING)
def weekly_retraining(context: dg.ScheduleEvaluationContext, stream: StreamResource):
    """Every Monday 03:00: retrain on the latest window, so a slow drift under the threshold is still followed."""
    windows = landed_windows(stream.landing_path)
    if len(windows) < 2:
        return dg.SkipReason(f"{len(windows)} windows landed: need one to train on and one to validate")
    return dg.RunRequest(run_key=None, tags={"recpipe/trigger": "schedule", "recpipe/window": windows[-1]})


sensors = [incoming_files_sensor, drift_sensor]
schedules = [weekly_retraining]
jobs = [ingest_window_job, retrain_job]
