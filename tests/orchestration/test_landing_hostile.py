"""The incoming-file sensor and the landing asset under hostile and careless input (issue 18, items 7-10, 12).

One project root and Dagster instance for the module; each test drops its own files for its own
weeks of ML-100K into the one incoming folder, ticks the real sensor (``Landing.tick`` adds the
partitions and runs each requested ``ingest_window`` run, as the daemon does) and reads what the
IO layer stored. The reader and schema cases behind these are in tests/data/test_hostile_input.py.
"""

from __future__ import annotations

import gzip
import json
import os
import re
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from orchestration import automation
from orchestration.assets import live
from orchestration.io import VersionedFolderIOManager
from orchestration.replay import drop, window_files
from orchestration.resources import ArtifactStore, DatasetResource
from recmodels.data.stream import WindowRows

ROWS = 60  # rows per dropped week: enough for a window, small enough to land in a second


class Landing:
    """A throwaway project: the live assets, the incoming-file sensor and the daemon's part of it, by hand."""

    def __init__(self, root: Path, data_dir: Path, instance: dg.DagsterInstance):
        store = ArtifactStore(project_root=str(root), dvc_remote=str(root / "remote"))
        self.root, self.instance, self.store = root, instance, store
        self.stream = live.StreamResource(incoming=str(root / "incoming"), window_days=7, model="ease_model")
        self.incoming = self.stream.incoming_path
        self.incoming.mkdir(parents=True)
        self.resources = {
            "stream": self.stream,
            "store": store,
            "dataset": DatasetResource(data_dir=str(data_dir), dataset="ml-100k", rating_min=1, rating_max=5),
            "io_manager": VersionedFolderIOManager(store=store),
        }
        self.defs = dg.Definitions(
            assets=live.assets, asset_checks=live.checks, jobs=automation.jobs, resources=self.resources
        )
        self.cursor: str | None = None
        self.launched: set[str] = set()

    def tick(self, wait_until_stable: bool = True) -> tuple[dg.SensorResult, list[dg.ExecuteInProcessResult]]:
        stream = live.StreamResource(
            incoming=self.stream.incoming, window_days=7, model="ease_model", wait_until_stable=wait_until_stable
        )
        resources = self.resources | {"stream": stream}
        with dg.build_sensor_context(instance=self.instance, cursor=self.cursor, resources=resources) as context:
            result = automation.incoming_files_sensor(context)
        self.cursor = result.cursor or self.cursor
        for request in result.dynamic_partitions_requests:
            self.instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
        runs = []
        for request in result.run_requests:
            if request.run_key not in self.launched:
                self.launched.add(request.run_key)
                runs.append(self.land(request.partition_key, request.run_config))
        return result, runs

    def land(self, window: str, run_config: dict) -> dg.ExecuteInProcessResult:
        return self.defs.resolve_job_def("ingest_window").execute_in_process(
            run_config=run_config,
            instance=self.instance,
            partition_key=window,
            asset_selection=[live.interaction_window.key],
            raise_on_error=False,
        )

    def settled(self) -> tuple[dg.SensorResult, list[dg.ExecuteInProcessResult]]:
        """Two ticks: the first sees new files, the second takes them once their size and mtime held still."""
        first, runs = self.tick()
        assert not first.run_requests or not self.stream.wait_until_stable
        second, more = self.tick()
        return second, runs + more

    def cursor_entry(self, name: str) -> dict:
        return json.loads(self.cursor)[name]

    def materialisations(self, window: str) -> list[dg.AssetMaterialization]:
        records = self.instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=live.interaction_window.key, asset_partitions=[window]), limit=100
        ).records
        return [record.asset_materialization for record in reversed(records)]  # oldest first

    def landed(self, materialization: dg.AssetMaterialization) -> WindowRows:
        return WindowRows.load(self.root / materialization.metadata["path"].value)

    def versions(self, window: str) -> list[Path]:
        return sorted(
            path for path in (self.store.artifacts_root / "interaction_window" / window).iterdir() if path.is_dir()
        )


@pytest.fixture(scope="module")
def weeks(ml100k_raw) -> list[tuple[str, pd.DataFrame]]:
    """(window, its first ROWS rows) of every ML-100K week."""
    return [
        (name.removeprefix("interactions-").removesuffix(".csv"), rows.head(ROWS).reset_index(drop=True))
        for name, rows in window_files(ml100k_raw, 7)
    ]


@pytest.fixture(scope="module")
def landing(tmp_path_factory, data_dir):
    with dg.instance_for_test() as instance:
        yield Landing(tmp_path_factory.mktemp("landing"), data_dir, instance)


def _files_of(request: dg.RunRequest) -> list[str]:
    return request.run_config["ops"]["interaction_window"]["config"]["files"]


def _failure(result: dg.ExecuteInProcessResult) -> str:
    (event,) = result.get_step_failure_events()
    error = event.step_failure_data.error
    return error.message + "".join(cause.message for cause in [error.cause] if cause is not None)


# ---------------------------------------------------------------- 7: one unreadable file stops nothing


def test_item7_unreadable_files_are_rejected_one_by_one_and_the_rest_of_the_tick_lands(landing, weeks):
    (first, rows1), (second, rows2) = weeks[1], weeks[2]
    drop(landing.incoming, "item7-a.csv", rows1)
    latin1 = rows2.assign(item_id=rows2["item_id"].where(rows2.index != 3, "caf\u00e9"))
    (landing.incoming / "item7-b-latin1.csv").write_bytes(latin1.to_csv(index=False).encode("latin-1"))
    rows2.to_parquet(landing.incoming / "item7-c.parquet")
    whole = (landing.incoming / "item7-c.parquet").read_bytes()
    (landing.incoming / "item7-c.parquet").write_bytes(whole[: len(whole) // 2])  # half copied, and left so
    (landing.incoming / "item7-d-garbage.parquet").write_bytes(b"PAR1 not really")
    drop(landing.incoming, "item7-e.csv", rows2)
    before = {path.name: path.read_bytes() for path in landing.incoming.iterdir()}

    result, runs = landing.settled()

    assert {request.partition_key: _files_of(request) for request in result.run_requests} == {
        first: ["item7-a.csv"],
        second: ["item7-e.csv"],
    }
    assert all(run.success for run in runs) and len(runs) == 2
    reasons = {name: landing.cursor_entry(name)["rejected"] for name in before if name.startswith("item7-")}
    assert reasons["item7-a.csv"] is None and reasons["item7-e.csv"] is None
    assert "line 5: not utf-8 text" in reasons["item7-b-latin1.csv"] and "byte offset" in reasons["item7-b-latin1.csv"]
    assert "not a readable Parquet file" in reasons["item7-c.parquet"]
    assert "not a readable Parquet file" in reasons["item7-d-garbage.parquet"]
    again, _ = landing.tick()
    assert not again.run_requests
    for name in ("item7-b-latin1.csv", "item7-c.parquet", "item7-d-garbage.parquet"):
        assert f"{name}: " in str(again.skip_reason)
    assert {path.name: path.read_bytes() for path in landing.incoming.iterdir()} == before, "nothing moved or changed"


def test_item7_a_file_unreadable_at_landing_fails_the_run_naming_file_and_line(landing, weeks):
    window, rows = weeks[3]
    path = landing.incoming / "item7-late.csv"
    path.write_bytes(rows.to_csv(index=False).encode() + "9,caf\u00e9,4,881250949\n".encode("latin-1"))
    landing.instance.add_dynamic_partitions(live.WINDOWS.name, [window])
    result = landing.land(window, {"ops": {"interaction_window": {"config": {"files": [path.name]}}}})
    assert not result.success and not result.get_asset_materialization_events()
    message = _failure(result)
    assert "DataFormatError" in message or "not utf-8" in message
    assert f"item7-late.csv, line {len(rows) + 2}: not utf-8 text" in message
    path.unlink()


# ---------------------------------------------------------------- 8: nothing landed is overwritten


def test_item8_a_second_file_of_the_same_name_never_overwrites_the_first_landing(landing, weeks):
    window, rows = weeks[4]
    bad = rows.assign(rating=rows["rating"].where(rows.index % 10 != 0, 9.0))  # 6 bad rows: quarantined
    drop(landing.incoming, "export.csv", bad)
    _, (first,) = landing.settled()
    drop(landing.incoming, "export.csv", rows.head(3))  # a second export of that week, under the same name
    _, (second,) = landing.settled()
    first_landing, second_landing = (landing.landed(m) for m in landing.materialisations(window))
    assert first.get_asset_materialization_events() and second.get_asset_materialization_events()
    assert (len(first_landing.rows), len(first_landing.quarantined)) == (ROWS - 6, 6)
    assert first_landing.quarantined["reasons"].str.startswith("rating").all()
    assert (len(second_landing.rows), len(second_landing.quarantined)) == (3, 0)
    assert len(landing.versions(window)) == 2, "each landing has its own version folder"
    first_sha, second_sha = (w.summary["files"]["export.csv"]["sha256"] for w in (first_landing, second_landing))
    assert first_sha != second_sha
    metadata = landing.materialisations(window)[-1].metadata
    assert re.search(r"\| export\.csv +\| changed +\|", metadata["file_changes"].value)
    assert metadata["previous_version"].value == landing.materialisations(window)[0].metadata["path"].value


def test_item8_same_stem_csv_and_parquet_both_land(landing, weeks):
    window, rows = weeks[5]
    drop(landing.incoming, "w.csv", rows.iloc[:30])
    rows.iloc[30:].to_parquet(landing.incoming / "w.parquet")
    result, (run,) = landing.settled()
    (request,) = result.run_requests
    assert _files_of(request) == ["w.csv", "w.parquet"] and run.success
    landed = landing.landed(landing.materialisations(window)[-1])
    assert {name: entry["rows_kept"] for name, entry in landed.summary["files"].items()} == {
        "w.csv": 30,
        "w.parquet": ROWS - 30,
    }
    assert len(landed.rows) == ROWS and landed.reconciles


def test_item8_a_redrop_lands_the_same_version_and_a_fixed_drop_keeps_the_first_quarantine(landing, weeks):
    window, rows = weeks[6]
    path = drop(landing.incoming, "redrop.csv", rows.assign(user_id=rows["user_id"].where(rows.index != 0, "")))
    _, (first,) = landing.settled()
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))  # the same bytes dropped again
    _, (again,) = landing.settled()
    assert again.success is first.success
    assert len(landing.versions(window)) == 1, "the same content is the same version folder, not rewritten"
    drop(landing.incoming, "redrop.csv", rows)  # fixed
    _, (fixed,) = landing.settled()
    assert fixed.success
    materialisations = landing.materialisations(window)
    assert [m.metadata["path"].value for m in materialisations][:2] == [materialisations[0].metadata["path"].value] * 2
    first_landing, *_, last_landing = (landing.landed(m) for m in materialisations)
    assert first_landing.quarantined["reasons"].tolist() == ["user_id: not_nullable (value=nan)"]
    assert last_landing.quarantined.empty and len(last_landing.rows) == ROWS
    assert len(landing.versions(window)) == 2


# ---------------------------------------------------------------- 9: only complete files are read


def test_item9_a_file_still_being_copied_is_taken_only_once_it_holds_still(landing, weeks):
    window, rows = weeks[7]
    text = rows.to_csv(index=False)
    cut = text.index("\n", len(text) // 2) + 4  # in the middle of a line
    path = landing.incoming / "copying.csv"
    path.write_text(text[:cut])
    seen, runs = landing.tick()
    assert not runs and not seen.run_requests and "waiting for copying.csv to settle" in str(seen.skip_reason)
    with path.open("a") as handle:
        handle.write(text[cut:])
    still, runs = landing.tick()
    assert not runs and "waiting for copying.csv to settle" in str(still.skip_reason), "it grew: wait again"
    taken, (run,) = landing.tick()
    assert run.success and [request.partition_key for request in taken.run_requests] == [window]
    landed = landing.landed(landing.materialisations(window)[-1])
    assert len(landed.rows) == ROWS and landed.quarantined.empty


def test_item9_a_window_waits_for_its_settling_file(landing, weeks):
    window, rows = weeks[8]
    drop(landing.incoming, "item9-a.csv", rows.iloc[:30])
    landing.settled()
    drop(landing.incoming, "item9-a.csv", rows.iloc[:20])  # changed: its window waits
    drop(landing.incoming, "item9-b.csv", rows.iloc[30:])  # new, same window
    first, runs = landing.tick()
    assert not runs
    second, (run,) = landing.tick()
    (request,) = second.run_requests
    assert _files_of(request) == ["item9-a.csv", "item9-b.csv"] and run.success


def test_item9_atomic_publishers_can_skip_the_wait(landing, weeks):
    window, rows = weeks[9]
    drop(landing.incoming, "renamed.csv", rows)  # written beside and renamed into place
    result, (run,) = landing.tick(wait_until_stable=False)
    assert [request.partition_key for request in result.run_requests] == [window] and run.success


# ---------------------------------------------------------------- 10: names


def test_item10_upper_case_and_gzip_files_land_and_every_skipped_file_is_named(landing, weeks):
    (first, rows1), (second, rows2) = weeks[10], weeks[11]
    rows1.to_csv(landing.incoming / "Week1.CSV", index=False)
    (landing.incoming / "week2.csv.gz").write_bytes(gzip.compress(rows2.to_csv(index=False).encode()))
    (landing.incoming / "notes.txt").write_text("not interactions")
    (landing.incoming / ".week3.csv.partial").write_text("being written")
    result, runs = landing.settled()
    assert {request.partition_key: _files_of(request) for request in result.run_requests} == {
        first: ["Week1.CSV"],
        second: ["week2.csv.gz"],
    }
    assert all(run.success for run in runs)
    idle, _ = landing.tick()
    reason = str(idle.skip_reason)
    assert "notes.txt: not one of .csv, .csv.gz, .parquet (any letter case)" in reason
    assert ".week3.csv.partial: hidden: a write in progress" in reason


# ---------------------------------------------------------------- 12: id normalisation is reported


def test_item12_a_window_reports_how_many_ids_it_normalised(landing, weeks):
    window, rows = weeks[12]
    padded = rows.assign(user_id=rows["user_id"].where(rows.index >= 4, " " + rows["user_id"] + "\u00a0"))
    drop(landing.incoming, "padded.csv", padded)
    _, (run,) = landing.settled()
    materialization = landing.materialisations(window)[-1]
    assert materialization.metadata["ids_normalised"].value == {"user_id": 4, "item_id": 0}
    landed = landing.landed(materialization)
    assert set(landed.rows["user_id"]) == set(rows["user_id"]) and run.success
