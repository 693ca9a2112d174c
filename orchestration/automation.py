"""Sensors and the schedule of the live loop. They only detect and request runs; the work is in assets.

- ``incoming_files_sensor``: new or changed files in the incoming folder -> (once their size and
  mtime held still for a tick) the windows they hold (it reads them, writes nothing, moves
  nothing) -> new partitions and one ``ingest_window`` run per affected window, naming every file
  that holds rows of it. Each file is handled on its own: one that cannot be read is remembered
  as rejected with its reason, shown in the skip reason, and left where it is, and the tick goes on.
- ``drift_sensor``: the first champion once (run key ``bootstrap``), then one ``retrain`` run per
  drifted window (run key ``drift:<window>``), at most one per ``cooldown_windows`` windows of
  data time, and never for a window the champion has already trained on. Drift is judged against
  the champion that serves: a report made against an earlier champion is not evidence, and a
  landed window after the champion's validation window without a report against it (weeks that
  landed while the first champion, or its successor, was being trained) gets one ``report_drift``
  run (run key ``report:<window>:<window version>:<champion version>``).
- ``weekly_retraining``: the same ``retrain`` job every Monday (run key per scheduled date).

Every retrain request is tagged ``recpipe/model`` (``orchestration/dagster.yaml`` runs one per
model at a time) and ``recpipe/trigger``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field

import dagster as dg
import numpy as np
from dagster._core.definitions.data_version import DATA_VERSION_TAG

from orchestration.assets.live import (
    CHAMPION_VERSION,
    TRAINED_THROUGH,
    VALIDATION_WINDOW,
    WINDOW_VERSION,
    WINDOWS,
    StreamResource,
    WindowVersion,
    challenger_model,
    drift_report,
    interaction_window,
    landed_windows,
    live_champion,
)
from orchestration.resources import DatasetResource
from recmodels.data.readers import DataFormatError
from recmodels.data.stream import file_windows, incoming_listing

MODEL_TAG = "recpipe/model"
TRIGGER_TAG = "recpipe/trigger"
WINDOW_TAG = "recpipe/window"
BOOTSTRAP_RUN_KEY = "bootstrap"
UNFINISHED = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]

ingest_window_job = dg.define_asset_job(
    "ingest_window",
    selection=dg.AssetSelection.assets(interaction_window, drift_report),
    description="One time window: land its rows from the incoming files, then its drift report against the champion.",
)
report_drift_job = dg.define_asset_job(
    "report_drift",
    selection=dg.AssetSelection.assets(drift_report),
    description="A landed window's drift report against the current champion (for windows that landed before it).",
)
retrain_job = dg.define_asset_job(
    "retrain",
    selection=dg.AssetSelection.assets(challenger_model, live_champion),
    description="Train a challenger on the landed windows; promote it (export, register) only if it beats the champion.",
    # one decision at a time (orchestration/dagster.yaml limits the tag): two retrains of different models
    # would otherwise both judge against the same champion and race to replace it
    tags={"recpipe/decides": "live_champion"},
)


# ---------------------------------------------------------------- incoming files


@dataclass
class SeenFile:
    """What the sensor learnt from one incoming file at one (mtime, size).

    ``settling``: first seen at this (mtime, size) by the last tick; the file is taken (read) by the
    next tick that finds it unchanged, so a file still being copied in is never read. ``windows``
    are those of the content last taken (kept while a changed file settles).
    """

    mtime_ns: int
    size: int
    windows: list[str] = field(default_factory=list)
    rejected: str | None = None
    settling: bool = False


def _seen(cursor: str | None) -> dict[str, SeenFile]:
    return {name: SeenFile(**entry) for name, entry in json.loads(cursor or "{}").items()}


def _dump(seen: dict[str, SeenFile]) -> str:
    return json.dumps({name: asdict(entry) for name, entry in sorted(seen.items())}, sort_keys=True)


def run_key(window: str, files: list[str], seen: dict[str, SeenFile]) -> str:
    """The window and a digest of its files' names, mtimes and sizes: one run per distinct set of files."""
    state = [[name, seen[name].mtime_ns, seen[name].size] for name in files]
    return f"{window}:{hashlib.sha256(json.dumps(state).encode()).hexdigest()[:16]}"


def has_champion(instance: dg.DagsterInstance) -> bool:
    return bool(instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=live_champion.key), limit=1).records)


@dg.sensor(job=ingest_window_job, minimum_interval_seconds=15, default_status=dg.DefaultSensorStatus.RUNNING)
def incoming_files_sensor(
    context: dg.SensorEvaluationContext, stream: StreamResource, dataset: DatasetResource
) -> dg.SensorResult:
    """New or changed incoming files: once settled, learn their windows, add new windows as partitions, and request
    one landing run per affected window (with its drift report once a champion exists).

    A file is taken when its size and mtime are the same at two consecutive ticks (15 s apart in the
    daemon; ``stream.wait_until_stable``); a window holding a file that is still settling waits for it.
    Each file is read on its
    own: one that cannot be read (not UTF-8, a corrupt Parquet file, no usable timestamp...) is
    rejected with its reason and left in place, and the tick goes on with the others.
    """
    seen = _seen(context.cursor)
    present, skipped = incoming_listing(stream.incoming_path)
    affected: set[str] = set()
    rules = dataset.validation_rules
    current = {}
    for path in present:
        try:
            status = path.stat()
        except FileNotFoundError:  # removed since the listing: gone, as below
            continue
        current[path.name] = (path, status.st_mtime_ns, status.st_size)
    for name in sorted(set(seen) - set(current)):  # gone (the loop never removes files; a person may)
        affected.update(seen.pop(name).windows)
    for name, (path, mtime_ns, size) in current.items():
        before = seen.get(name)
        unchanged = before is not None and (before.mtime_ns, before.size) == (mtime_ns, size)
        if unchanged and not before.settling:
            continue
        if not unchanged and stream.wait_until_stable:
            seen[name] = SeenFile(mtime_ns, size, windows=before.windows if before else [], settling=True)
            context.log.info(f"{name}: new or changed; taken at the next tick if its size and mtime hold still")
            continue
        affected.update(before.windows if before else [])
        try:
            windows = list(file_windows(path, stream.window_days, rules))
        except (DataFormatError, OSError) as error:
            seen[name] = SeenFile(mtime_ns, size, rejected=str(error))
            context.log.warning(f"{name} rejected (left in place): {error}")
            continue
        seen[name] = SeenFile(mtime_ns, size, windows)
        context.log.info(f"{name}: rows in windows {', '.join(windows)}")
        affected.update(windows)
    settling = sorted(name for name, entry in seen.items() if entry.settling)
    waiting = {window for name in settling for window in seen[name].windows}
    selection = [interaction_window.key, *([drift_report.key] if has_champion(context.instance) else [])]
    run_requests = []
    for window in sorted(affected):
        if window in waiting:  # requested once the settling file is taken (or gone)
            context.log.info(f"window {window}: waiting for a file of it to settle")
            continue
        files = sorted(name for name, entry in seen.items() if window in entry.windows)
        if not files:
            context.log.warning(f"window {window}: no incoming file holds its rows any more; its last landing stays")
            continue
        run_requests.append(
            dg.RunRequest(
                run_key=run_key(window, files, seen),
                partition_key=window,
                asset_selection=selection,
                run_config={"ops": {interaction_window.key.to_python_identifier(): {"config": {"files": files}}}},
                tags={WINDOW_TAG: window},
            )
        )
    known = set(context.instance.get_dynamic_partitions(WINDOWS.name))
    new_windows = sorted({request.partition_key for request in run_requests} - known)
    rejected = [f"{name}: {entry.rejected}" for name, entry in sorted(seen.items()) if entry.rejected]
    if settling:
        reasons = [f"waiting for {', '.join(settling)} to settle (taken at the next tick if size and mtime hold)"]
    else:
        reasons = [f"no new or changed files in {stream.incoming_path}"]
    if rejected:
        reasons.append(f"rejected (left in place): {'; '.join(rejected)}")
    if skipped:
        reasons.append(f"skipped: {'; '.join(f'{name}: {why}' for name, why in skipped.items())}")
    return dg.SensorResult(
        run_requests=run_requests,
        dynamic_partitions_requests=[WINDOWS.build_add_request(new_windows)] if new_windows else [],
        cursor=_dump(seen),
        skip_reason=None if run_requests else "; ".join(reasons),
    )


# ---------------------------------------------------------------- retraining


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


def retrain_request(stream: StreamResource, run_key: str, trigger: str, window: str = "") -> dg.RunRequest:
    """A ``retrain`` run of the loop's model, validated on ``window`` (empty: the latest landed)."""
    config = {"model": stream.model, **({"window": window} if window else {})}
    tags = {MODEL_TAG: stream.model, TRIGGER_TAG: trigger, **({WINDOW_TAG: window} if window else {})}
    return dg.RunRequest(
        run_key=run_key,
        job_name=retrain_job.name,
        run_config={"ops": {challenger_model.key.to_python_identifier(): {"config": config}}},
        tags=tags,
    )


@dataclass(frozen=True)
class ChampionState:
    """What the sensors and the schedule need of the latest ``live_champion`` materialisation."""

    version: str | None  # its data version: drift reports name the champion they compared against by it
    trained_through: str
    validation_window: str


def champion_state(instance: dg.DagsterInstance) -> ChampionState | None:
    """The current champion, None before the first one."""
    records = instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=live_champion.key), limit=1).records
    if not records:
        return None
    materialization = records[0].asset_materialization
    return ChampionState(
        materialization.tags.get(DATA_VERSION_TAG),
        materialization.metadata[TRAINED_THROUGH].value,
        materialization.metadata[VALIDATION_WINDOW].value,
    )


def unreported_windows(instance: dg.DagsterInstance, champion: ChampionState) -> dict[str, WindowVersion]:
    """Landed windows after the champion's validation window whose latest drift report is not of their landed
    version against this champion, leaving out windows a run is already working on."""
    busy = {
        run.tags[WINDOW_TAG]
        for run in instance.get_runs(dg.RunsFilter(statuses=UNFINISHED))
        if WINDOW_TAG in run.tags and run.job_name != retrain_job.name
    }
    missing = {}
    for window, version in landed_windows(instance).items():
        if window <= champion.validation_window or window in busy:
            continue
        records = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=drift_report.key, asset_partitions=[window]), limit=1
        ).records
        metadata = records[0].asset_materialization.metadata if records else {}
        made_against = (
            metadata.get(CHAMPION_VERSION) and metadata[CHAMPION_VERSION].value,
            metadata.get(WINDOW_VERSION) and metadata[WINDOW_VERSION].value,
        )
        if made_against != (champion.version, version.data_version):
            missing[window] = version
    return missing


def report_requests(instance: dg.DagsterInstance, champion: ChampionState) -> list[dg.RunRequest]:
    return [
        dg.RunRequest(
            run_key=f"report:{window}:{version.data_version[:12]}:{(champion.version or 'none')[:12]}",
            job_name=report_drift_job.name,
            partition_key=window,
            tags={WINDOW_TAG: window},
        )
        for window, version in unreported_windows(instance, champion).items()
    ]


def _bootstrap(context: dg.SensorEvaluationContext, stream: StreamResource, cursor: DriftCursor) -> dg.SensorResult:
    """No champion yet: ask for the first one exactly once, when enough windows have landed."""
    unfinished = context.instance.get_runs(dg.RunsFilter(job_name=retrain_job.name, statuses=UNFINISHED), limit=1)
    if unfinished:
        run = unfinished[0]
        return dg.SensorResult(
            skip_reason=f"no champion yet; retrain run {run.run_id[:8]} is {run.status.value.lower()}: waiting for it"
        )
    earlier = context.instance.get_runs(dg.RunsFilter(tags={TRIGGER_TAG: BOOTSTRAP_RUN_KEY}), limit=1)
    if earlier:
        run = earlier[0]
        return dg.SensorResult(
            skip_reason=f"no champion: the bootstrap run {run.run_id[:8]} ended {run.status.value} without one; "
            "launch the retrain job from the launchpad once the cause is fixed"
        )
    landed = len(landed_windows(context.instance))
    if landed < stream.bootstrap_windows:
        return dg.SensorResult(skip_reason=f"no champion yet; {landed} of {stream.bootstrap_windows} windows landed")
    return dg.SensorResult(
        run_requests=[retrain_request(stream, BOOTSTRAP_RUN_KEY, trigger=BOOTSTRAP_RUN_KEY)], cursor=cursor.dump()
    )


@dg.sensor(
    jobs=[retrain_job, report_drift_job], minimum_interval_seconds=30, default_status=dg.DefaultSensorStatus.RUNNING
)
def drift_sensor(context: dg.SensorEvaluationContext, stream: StreamResource) -> dg.SensorResult:
    """The first champion once; then one retrain per drifted window after the champion's data, honouring the
    cooldown; and a drift report for each landed window the current champion has no report on."""
    cursor = DriftCursor.parse(context.cursor)
    champion = champion_state(context.instance)
    if champion is None:
        return _bootstrap(context, stream, cursor)
    records = context.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=drift_report.key, after_storage_id=cursor.after_storage_id),
        limit=100,
        ascending=True,
    ).records
    run_requests, reasons = [], []
    for record in records:
        materialization = record.asset_materialization
        window = materialization.partition
        cursor.after_storage_id = record.storage_id
        against = materialization.metadata.get(CHAMPION_VERSION)
        if (against and against.value) != champion.version:
            reasons.append(f"{window}: report against an earlier champion")
            continue
        if not materialization.metadata["drift_detected"].value:
            reasons.append(f"{window}: no drift")
            continue
        if window <= champion.trained_through:
            reasons.append(f"{window}: drift, but the champion already trained through {champion.trained_through}")
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
        run_requests.append(retrain_request(stream, f"drift:{window}", trigger="drift", window=window))
    retraining = run_requests or context.instance.get_runs(
        dg.RunsFilter(job_name=retrain_job.name, statuses=UNFINISHED), limit=1
    )
    if retraining:
        reasons.append("a retrain is requested or running: windows are reported against the champion it leaves")
    else:
        reports = report_requests(context.instance, champion)
        run_requests += reports
        reasons += [f"{request.partition_key}: no report against the current champion" for request in reports]
    for reason in reasons:
        context.log.info(reason)
    skip = "; ".join(reasons) if records else "no new drift report"
    return dg.SensorResult(run_requests=run_requests, cursor=cursor.dump(), skip_reason=None if run_requests else skip)


@dg.schedule(job=retrain_job, cron_schedule="0 3 * * 1", default_status=dg.DefaultScheduleStatus.RUNNING)
def weekly_retraining(context: dg.ScheduleEvaluationContext, stream: StreamResource):
    """Every Monday 03:00: retrain on the latest window, so a slow drift under the threshold is still followed."""
    landed = landed_windows(context.instance)
    if len(landed) < 2:
        return dg.SkipReason(f"{len(landed)} windows landed: need one to train on and one to validate")
    champion = champion_state(context.instance)
    if champion is not None and champion.validation_window >= max(landed):
        return dg.SkipReason(f"no window landed since the champion's validation window {champion.validation_window}")
    date = context.scheduled_execution_time.date().isoformat()
    return retrain_request(stream, f"schedule:{date}", trigger="schedule")


sensors = [incoming_files_sensor, drift_sensor]
schedules = [weekly_retraining]
jobs = [ingest_window_job, report_drift_job, retrain_job]
