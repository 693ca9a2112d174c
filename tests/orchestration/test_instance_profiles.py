"""The instance profiles of ``orchestration.instance`` (RECPIPE_INSTANCE): the file it writes, and the project's
data assets materialised by the ``dagster`` CLI in one process and read back, events and checks included, from
another, on SQLite and on a real PostgreSQL server (the ``project_instance`` fixture)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest
import yaml

from orchestration.instance import instance_config, profiles, write_instance
from orchestration.resources import PROJECT_ROOT

DATA_ASSETS = ["raw_interactions", "validated_interactions", "quarantined_rows", "interactions"]


def test_every_profile_keeps_the_concurrency_settings_and_postgres_names_its_variables_only():
    base = instance_config("sqlite")
    assert set(profiles()) == {"sqlite", "postgres"}
    postgres = instance_config("postgres")
    assert {key: value for key, value in postgres.items() if key != "storage"} == {
        key: value for key, value in base.items() if key != "storage"
    }
    database = postgres["storage"]["postgres"]["postgres_db"]
    assert {field: value["env"] for field, value in database.items() if isinstance(value, dict)} == {
        "hostname": "DAGSTER_PG_HOST",
        "port": "DAGSTER_PG_PORT",
        "username": "DAGSTER_PG_USERNAME",
        "password": "DAGSTER_PG_PASSWORD",
        "db_name": "DAGSTER_PG_DB",
    }


def test_an_unknown_profile_fails_naming_the_known_ones(tmp_path):
    with pytest.raises(ValueError, match="RECPIPE_INSTANCE='mysql'.*sqlite, postgres"):
        write_instance(tmp_path, "mysql")
    assert not (tmp_path / "dagster.yaml").exists()


def test_the_instance_file_is_rewritten_only_when_the_profile_changes_it(tmp_path):
    assert write_instance(tmp_path, "postgres")
    written = (tmp_path / "dagster.yaml").stat().st_mtime_ns
    assert not write_instance(tmp_path, "postgres")
    assert (tmp_path / "dagster.yaml").stat().st_mtime_ns == written
    assert write_instance(tmp_path, "sqlite")
    assert yaml.safe_load((tmp_path / "dagster.yaml").read_text()) == instance_config("sqlite")
    assert list(tmp_path.iterdir()) == [tmp_path / "dagster.yaml"]  # no scratch file left behind


def test_a_cli_run_in_one_process_is_visible_with_its_events_and_checks_from_another(
    tmp_path, project_instance, earliest_ml100k, project_repository
):
    """What a team does with a shared instance: one member (or the daemon) runs, everyone else sees it."""
    data = earliest_ml100k("ml100k-early", 0.1)
    root = project_repository(tmp_path / "project")
    environment = os.environ | {  # DAGSTER_HOME and DAGSTER_PG_* come from project_instance
        "RECPIPE_ROOT": str(root),
        "RECPIPE_DATA_DIR": str(data.parent),
        "RECPIPE_DATASET": data.name,
        "RECPIPE_DVC_REMOTE": str(tmp_path / "remote"),
    }
    subprocess.run(
        [str(Path(sys.executable).with_name("dagster")), "asset", "materialize", "-m", "orchestration.definitions"]
        + ["--select", ",".join(DATA_ASSETS)],
        cwd=PROJECT_ROOT,
        env=environment,
        check=True,
        capture_output=True,
        timeout=600,
    )
    [record] = project_instance.get_run_records()
    assert record.dagster_run.status == dg.DagsterRunStatus.SUCCESS
    run_id = record.dagster_run.run_id
    materialised = {
        entry.asset_key.to_user_string(): entry.asset_materialization
        for entry in project_instance.get_records_for_run(
            run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION
        ).records
    }
    assert set(materialised) == set(DATA_ASSETS)
    for name, materialisation in materialised.items():
        assert (root / materialisation.metadata["path"].value).is_dir(), name
    latest = project_instance.get_latest_materialization_event(dg.AssetKey("interactions"))
    assert latest.run_id == run_id
    assert latest.asset_materialization.metadata["dvc_md5"] == materialised["interactions"].metadata["dvc_md5"]
    checks = [
        entry.event_log_entry.dagster_event.event_specific_data
        for entry in project_instance.get_records_for_run(
            run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION
        ).records
    ]
    assert {(check.check_name, check.passed) for check in checks} >= {("quarantine_share_within_limit", True)}
    steps = project_instance.all_logs(run_id, of_type=dg.DagsterEventType.STEP_SUCCESS)
    assert len(steps) >= len(DATA_ASSETS) - 1  # validated_interactions and quarantined_rows share one step
