"""The live loop under the real Dagster daemon while weeks arrive faster than a retrain finishes.

In a throwaway project root and DAGSTER_HOME (``orchestration/dagster.yaml`` copied there), this
starts ``dagster-daemon run -m orchestration.definitions`` (what ``make ui`` runs beside the
webserver: sensors, schedules, the run queue), drops ML-100K weeks into the incoming folder every
``--interval`` seconds with ``python -m orchestration.replay``, waits until the run queue has
drained (no unfinished run and no new run for ``--quiet`` seconds), stops the daemon and audits
the instance and the artifacts (``replay.audit``): retrain runs per run key (``bootstrap``,
``drift:<window>``, ``schedule:<date>``; must be 1 each), promotion-log entries per decision id
(must be 1), judged gates whose champion had trained on the evaluation window (must be 0),
overlapping retrains of one model (tag ``recpipe/model``; must be 0), and the run totals and wall
time.

``weekly_retraining`` is a wall-clock cron (Mondays 03:00), so it never ticks during a replay of
minutes. With ``--schedule-every S`` (seconds, 0 = off) this script stands in for its tick: every
S seconds once a champion exists (the first comes from the bootstrap, as in ``replay.py``), it evaluates the real schedule function on the live instance, at the Monday 03:00
after the latest landed window (data time, which is what the schedule's run key is named by),
and submits a run key it has not submitted before with ``dagster job launch``, so the run goes
through the daemon's run queue and its tag limits like a scheduled run. Those runs carry the
request's tags plus ``recpipe/run_key`` (not ``dagster/schedule_name``: no schedule launched them).

``--max-concurrent-runs N`` and ``--code-server-timeout S`` change only the copy in the throwaway
DAGSTER_HOME (recorded in the JSON as ``dagster_yaml``): with the file as it is, Dagster starts up to
10 runs at once, and on a loaded 2-core machine a code server the daemon restarts can then take
longer than Dagster's 180 s to load, which fails the runs being dequeued (docs/live-loop.md).

``python benchmarks/replay_live.py [--interval 3] [--limit N] [--schedule-every 60] [--max-concurrent-runs 2]
[--code-server-timeout 600] [--keep DIR]``
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path

import dagster as dg
from common import REPO_ROOT, default_data_dir, finish, progress
from replay import STAND_IN_RUN_KEY_TAG, audit, instance_home

BIN = Path(sys.executable).parent
LOCATION = ["-m", "orchestration.definitions"]
ANSI_COLOUR = re.compile(r"\x1b\[[0-9;]*m")


def dagster_home(root: Path, options: argparse.Namespace) -> Path:
    """``orchestration/dagster.yaml`` in a DAGSTER_HOME under ``root``, with this run's deviations (if any) added:
    a cap on runs at once and a longer code-server start-up allowance."""
    import yaml

    home = instance_home(root)
    settings = yaml.safe_load((home / "dagster.yaml").read_text())
    if options.max_concurrent_runs is not None:
        settings.setdefault("concurrency", {}).setdefault("runs", {})["max_concurrent_runs"] = (
            options.max_concurrent_runs
        )
    if options.code_server_timeout is not None:
        settings.setdefault("code_servers", {})["local_startup_timeout"] = options.code_server_timeout
    (home / "dagster.yaml").write_text(yaml.safe_dump(settings, sort_keys=False))
    return home


def environment(root: Path, options: argparse.Namespace) -> dict[str, str]:
    """Every setting the daemon, its runs and the replay read, pointed at the throwaway root."""
    return {
        "DAGSTER_HOME": str(dagster_home(root, options)),
        "RECPIPE_ROOT": str(root),
        "RECPIPE_INCOMING": str(root / "incoming"),
        "RECPIPE_DVC_REMOTE": str(root / "dvc-remote"),
        "RECPIPE_DATA_DIR": str(options.data_dir),
        "RECPIPE_DATASET": options.dataset,
        "RECPIPE_LIVE_MODEL": options.model,
        "RECPIPE_WINDOW_DAYS": str(options.window_days),
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="benchmarks/replay_live.py", description=__doc__)
    parser.add_argument("--data-dir", type=Path, default=default_data_dir())
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--model", default="ease_model", help="model asset the sensors retrain")
    parser.add_argument("--window-days", type=int, default=7)
    parser.add_argument("--interval", type=float, default=3.0, help="seconds between two dropped weeks")
    parser.add_argument("--limit", type=int, default=None, help="replay only the first N weeks")
    parser.add_argument("--schedule-every", type=float, default=0.0, help="seconds between schedule stand-in ticks")
    parser.add_argument("--quiet", type=float, default=90.0, help="seconds without unfinished or new runs = drained")
    parser.add_argument("--timeout", type=float, default=3 * 3600.0, help="give up waiting after this many seconds")
    parser.add_argument("--keep", type=Path, default=None, help="project root to keep instead of a temp dir")
    parser.add_argument(
        "--max-concurrent-runs",
        type=int,
        default=None,
        help="deviation from orchestration/dagster.yaml: runs the queue starts at once (Dagster's default is 10)",
    )
    parser.add_argument(
        "--code-server-timeout",
        type=int,
        default=None,
        help="deviation from orchestration/dagster.yaml: seconds a code server may take to start (Dagster: 180)",
    )
    options = parser.parse_args()

    root = options.keep or Path(tempfile.mkdtemp(prefix="recpipe-replay-live-"))
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    os.environ.update(environment(root, options))  # this process reads the same instance and resources
    progress(f"project root {root}, DAGSTER_HOME {os.environ['DAGSTER_HOME']}")
    # The storage is created here first: a daemon and its code server creating a fresh SQLite
    # instance at the same moment can both stamp its schema ("more than one head present").
    with dg.DagsterInstance.get() as instance:
        daemon_log = (root / "daemon.log").open("w")
        daemon = subprocess.Popen(
            [str(BIN / "dagster-daemon"), "run", *LOCATION],
            cwd=REPO_ROOT,
            stdout=daemon_log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stopped as one at the end
        )
        progress(f"dagster-daemon pid {daemon.pid} (log {root / 'daemon.log'})")
        try:
            ready = wait_for_first_tick(instance, daemon, "incoming_files_sensor", timeout=600)
            progress(f"daemon ready after {ready:.0f} s: incoming_files_sensor has ticked")
            figures = run_replay(instance, options, root)
        finally:
            stop(daemon)
            daemon_log.close()
        checked = audit(instance, root / "artifacts")
        ticks = sensor_ticks(instance)
    arrivals = figures.pop("drops")
    per_retrain = [
        {**run, "weeks_dropped_while_running": _dropped_during(run, arrivals)} for run in checked["retrain_runs"]
    ]
    durations = [run["seconds"] for run in per_retrain if run["seconds"] is not None]
    summary = {
        **checked["summary"],
        **figures,
        "interval_seconds": options.interval,
        "weeks_dropped": len(arrivals),
        "retrain_seconds_min": round(min(durations), 1) if durations else None,
        "retrain_seconds_max": round(max(durations), 1) if durations else None,
        "max_weeks_dropped_during_one_retrain": max(
            (run["weeks_dropped_while_running"] or 0 for run in per_retrain), default=0
        ),
        "sensor_ticks": {name: entry["by_status"] for name, entry in ticks.items()},
    }
    progress(json.dumps(summary, indent=1))
    daemon_output = ANSI_COLOUR.sub("", (root / "daemon.log").read_text(errors="replace"))
    print(f"---- dagster-daemon output ----\n{daemon_output}---- end of dagster-daemon output ----", file=sys.stderr)
    finish(
        "replay_live",
        per_retrain,
        summary=summary,
        promotions=checked["promotions"],
        overlaps=checked["overlaps"],
        leaked=checked["leaked"],
        sensor_skip_reasons={name: entry["skip_reasons"] for name, entry in ticks.items()},
        dagster_yaml=(Path(os.environ["DAGSTER_HOME"]) / "dagster.yaml").read_text(),
        settings={key: value for key, value in vars(options).items() if key != "keep"}
        | {"data_dir": str(options.data_dir)},
    )
    if options.keep is None:
        shutil.rmtree(root, ignore_errors=True)


def _dropped_during(run: dict, drops: list[float]) -> int | None:
    """Weeks dropped between the run's start and end; None for a run that never started."""
    if run["start"] is None:
        return None
    return sum(run["start"] <= drop < (run["end"] or float("inf")) for drop in drops)


def wait_for_first_tick(instance, daemon: subprocess.Popen, sensor: str, timeout: float) -> float:
    """Seconds until the daemon has evaluated ``sensor`` once (its code location loaded, its loop running)."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if daemon.poll() is not None:
            raise RuntimeError(f"dagster-daemon exited with {daemon.returncode} before {sensor} ticked")
        for state in instance.all_instigator_state():
            if state.instigator_name == sensor and instance.get_ticks(
                state.instigator_origin_id, state.selector_id, limit=1
            ):
                return time.monotonic() - started
        time.sleep(2)
    raise TimeoutError(f"{sensor} did not tick within {timeout:.0f} s of starting the daemon")


def run_replay(instance, options: argparse.Namespace, root: Path) -> dict:
    """Drop the weeks (a subprocess: ``orchestration.replay``), tick the schedule stand-in, wait for the queue."""
    command = [str(BIN / "python"), "-m", "orchestration.replay", "--interval", str(options.interval)]
    command += [] if options.limit is None else ["--limit", str(options.limit)]
    started = time.time()
    replay = subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True)
    drops: list[float] = []

    def follow() -> None:
        for line in replay.stdout:
            drops.append(time.time())
            progress(f"replay: {line.strip()}")

    follower = threading.Thread(target=follow, daemon=True)
    follower.start()
    submitted: list[str] = []
    launches: list[subprocess.Popen] = []
    last_tick = last_change = time.time()
    last_count = -1
    timed_out = False
    while True:
        time.sleep(5)
        if options.schedule_every and time.time() - last_tick >= options.schedule_every:
            last_tick = time.time()
            launch = schedule_stand_in(instance, submitted)
            if launch is not None:
                launches.append(launch)
        runs = instance.get_run_records(dg.RunsFilter())
        unfinished = [record for record in runs if record.dagster_run.status in UNFINISHED]
        if len(runs) != last_count or unfinished or any(launch.poll() is None for launch in launches):
            if len(runs) != last_count:
                progress(
                    f"{len(runs)} runs, {len(unfinished)} unfinished ({Counter(r.dagster_run.job_name for r in unfinished)})"
                )
            last_change, last_count = time.time(), len(runs)
        if replay.poll() is not None and time.time() - last_change >= options.quiet:
            break
        if time.time() - started > options.timeout:
            timed_out = True
            progress(f"timed out after {options.timeout:.0f} s with {len(unfinished)} unfinished runs")
            break
    follower.join(timeout=10)
    if replay.returncode not in (0, None):
        raise RuntimeError(f"orchestration.replay exited with {replay.returncode}")
    return {
        # from starting the replay to the last moment a run was unfinished (or started)
        "wall_seconds_until_drained": round(last_change - started, 1),
        "wall_seconds_replaying": round(drops[-1] - drops[0], 1) if drops else 0.0,
        "timed_out": timed_out,
        "schedule_stand_in_run_keys": submitted,
        "stand_in_launch_failures": sum(launch.returncode != 0 for launch in launches),
        "drops": drops,
    }


UNFINISHED = {
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
}


def schedule_stand_in(instance, submitted: list[str]) -> subprocess.Popen | None:
    """One tick of the real ``weekly_retraining`` at the Monday after the latest landed window; a new run key is
    submitted to the daemon's run queue with ``dagster job launch``."""
    from orchestration import automation
    from orchestration.assets import live

    if not automation.has_champion(instance):
        return None  # the first champion comes from the drift sensor's bootstrap, as in replay.py
    landed = live.landed_windows(instance)
    tick = datetime.fromisoformat(max(landed)).replace(tzinfo=timezone.utc) + timedelta(days=7, hours=3)
    with dg.build_schedule_context(
        instance=instance, resources={"stream": live.StreamResource()}, scheduled_execution_time=tick
    ) as context:
        request = automation.weekly_retraining(context)
    if not isinstance(request, dg.RunRequest):
        progress(f"schedule stand-in at {tick:%Y-%m-%d}: skipped: {request.skip_message}")
        return None
    if request.run_key in submitted:
        return None
    submitted.append(request.run_key)
    progress(f"schedule stand-in at {tick:%Y-%m-%d}: submitting {request.run_key} to the run queue")
    tags = {**request.tags, STAND_IN_RUN_KEY_TAG: request.run_key}
    command = [str(BIN / "dagster"), "job", "launch", *LOCATION, "-j", automation.retrain_job.name]
    command += ["--config-json", json.dumps(request.run_config), "--tags", json.dumps(tags)]
    return subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.DEVNULL)


def sensor_ticks(instance) -> dict[str, dict]:
    """Per sensor: ticks by status and the distinct skip reasons (with how often each was given)."""
    ticks = {}
    for state in instance.all_instigator_state():
        history = instance.get_ticks(state.instigator_origin_id, state.selector_id)
        reasons = Counter(tick.skip_reason for tick in history if tick.skip_reason)
        ticks[state.instigator_name] = {
            "by_status": dict(Counter(tick.status.value for tick in history)),
            "skip_reasons": [{"reason": reason, "ticks": count} for reason, count in reasons.most_common(40)],
        }
    return ticks


def stop(daemon: subprocess.Popen) -> None:
    """SIGTERM to the daemon's own process group (it and the code server it started), SIGKILL if it lingers."""
    if daemon.poll() is not None:
        return
    os.killpg(daemon.pid, signal.SIGTERM)
    try:
        daemon.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(daemon.pid, signal.SIGKILL)
        daemon.wait()
    progress(f"dagster-daemon stopped ({daemon.returncode})")


if __name__ == "__main__":
    sys.exit(main())
