"""The live loop on the first weeks of MovieLens-100K: sensors, drift reports, the promotion gate.

One throwaway project root per module: five real weeks are dropped into the incoming
folder and go through the incoming-file sensor, the window and drift-report assets, and
three retraining runs that exercise the gate both ways.
"""

import json
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from orchestration import automation
from orchestration.assets import live
from orchestration.replay import drop, window_files
from orchestration.resources import ArtifactStore, DatasetResource
from recmodels.data.stream import landed_windows

WEEKS = 5


@pytest.fixture(scope="module")
def weeks(ml100k_raw) -> list[tuple[str, pd.DataFrame]]:
    return window_files(ml100k_raw, 7)[:WEEKS]


def _resources(root: Path, data_dir: Path) -> dict:
    return {
        "stream": live.StreamResource(
            incoming=str(root / "incoming"),
            landing=str(root / "data" / "stream"),
            window_days=7,
            bootstrap_windows=4,
            cooldown_windows=2,
        ),
        "store": ArtifactStore(project_root=str(root), dvc_remote=None),
        "dataset": DatasetResource(data_dir=str(data_dir), dataset="ml-100k", rating_min=1, rating_max=5),
    }


def _sense_and_ingest(instance, resources) -> dg.SensorResult:
    """What the daemon does with the incoming-file sensor: add partitions, launch the runs."""
    result = automation.incoming_files_sensor(dg.build_sensor_context(instance=instance, resources=resources))
    for request in result.dynamic_partitions_requests:
        instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
    for request in result.run_requests:
        outcome = dg.materialize(
            [live.interaction_window, live.drift_report],
            partition_key=request.partition_key,
            resources=resources,
            instance=instance,
        )
        assert outcome.success
    return result


def _retrain(instance, resources, model: str) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [live.challenger_model, live.challenger_beats_champion, live.live_champion],
        resources=resources,
        instance=instance,
        run_config={"ops": {"challenger_model": {"config": {"model": model}}}},
        raise_on_error=False,
    )


def _gate(result: dg.ExecuteInProcessResult):
    (evaluation,) = [e for e in result.get_asset_check_evaluations() if e.check_name == "challenger_beats_champion"]
    return evaluation


def _materialised(result) -> set[str]:
    return {event.asset_key.to_user_string() for event in result.get_asset_materialization_events()}


@pytest.fixture(scope="module")
def loop(tmp_path_factory, data_dir, weeks):
    """Four weeks, a first champion (ItemKNN), a fifth week, MostPopular promoted, ItemKNN refused.

    On week five (1997-10-13) models trained on weeks 1-4 score NDCG@10 0.085 (MostPopular),
    0.076 (EASE), 0.065 (ItemKNN): this early, popularity is the strongest signal.
    """
    root = tmp_path_factory.mktemp("live")
    resources = _resources(root, data_dir)
    instance = dg.DagsterInstance.ephemeral()
    incoming = resources["stream"].incoming_path
    for name, rows in weeks[:4]:
        drop(incoming, name, rows)
    bad = incoming / "interactions-broken.csv"
    bad.write_text("user_id,rating,timestamp\n1,5,881250949\n")  # no item_id column
    first = _sense_and_ingest(instance, resources)
    bootstrap = _retrain(instance, resources, "item_knn_model")
    drop(incoming, *weeks[4])
    fifth = _sense_and_ingest(instance, resources)
    promoted = _retrain(instance, resources, "most_popular_model")
    refused = _retrain(instance, resources, "item_knn_model")
    return {
        "root": root,
        "resources": resources,
        "instance": instance,
        "first": first,
        "fifth": fifth,
        "bootstrap": bootstrap,
        "promoted": promoted,
        "refused": refused,
    }


def test_incoming_sensor_lands_good_files_and_sets_a_malformed_one_aside(loop, weeks):
    landing = loop["resources"]["stream"].landing_path
    keys = [name.removeprefix("interactions-").removesuffix(".csv") for name, _ in weeks]
    assert landed_windows(landing) == keys
    assert sorted(request.partition_key for request in loop["first"].run_requests) == keys[:4]
    assert loop["instance"].get_dynamic_partitions(live.WINDOWS.name) == keys
    reason = (landing / "rejected" / "interactions-broken.csv.reason.txt").read_text()
    assert "item_id" in reason
    incoming = loop["resources"]["stream"].incoming_path
    assert not list(incoming.glob("*.csv")), "every file leaves the incoming folder once handled"
    assert (incoming / automation.DONE_FOLDER / "interactions-broken.csv").exists()
    again = automation.incoming_files_sensor(
        dg.build_sensor_context(instance=loop["instance"], resources=loop["resources"])
    )
    assert not again.run_requests and "no new files" in str(again.skip_reason)


def test_incoming_sensor_quarantines_bad_rows_and_keeps_the_rest(tmp_path, data_dir, weeks):
    resources = _resources(tmp_path, data_dir)
    name, rows = weeks[0]
    broken = pd.DataFrame(
        {"user_id": ["", "7"], "item_id": ["50", "50"], "rating": [4.0, 9.0], "timestamp": rows["timestamp"].iloc[:2]}
    )
    drop(resources["stream"].incoming_path, name, pd.concat([rows, broken], ignore_index=True))
    result = automation.incoming_files_sensor(
        dg.build_sensor_context(instance=dg.DagsterInstance.ephemeral(), resources=resources)
    )
    assert [request.partition_key for request in result.run_requests] == [name.removeprefix("interactions-")[:-4]]
    landing = resources["stream"].landing_path
    quarantined = pd.read_parquet(landing / "quarantine" / f"{Path(name).stem}.parquet")
    kept = sum(len(pd.read_parquet(path)) for path in (landing / "windows").rglob("*.parquet"))
    assert len(quarantined) == 2 and kept == len(rows)
    assert "user_id" in quarantined["reasons"].iloc[0] and "rating" in quarantined["reasons"].iloc[1]


def test_drift_report_compares_the_window_with_the_champions_data(loop, weeks):
    (event,) = loop["fifth"].run_requests
    latest = loop["instance"].fetch_materializations(live.drift_report.key, limit=1).records[0]
    materialization = latest.asset_materialization
    assert materialization.partition == event.partition_key
    values = {key: value.value for key, value in materialization.metadata.items()}
    assert isinstance(values["drift_detected"], bool)
    assert values["drift_detected"] == (values["data_drift"] or values["prediction_drift"])
    assert 0 <= values["data_drifted_share"] <= 1 and 0 < values["coverage@10_current"] <= 1
    assert 0 <= values["new_user_share"] <= 1 and values["champion"] == "item_knn_model"
    assert values["champion_ndcg@10"] > 0
    folder = loop["root"] / "artifacts" / "drift_report" / event.partition_key
    assert (folder / "data_drift.html").stat().st_size > 10_000
    assert (folder / "prediction_drift.html").stat().st_size > 10_000
    summary = json.loads((folder / "summary.json").read_text())
    assert set(summary["data"]["columns"]) == {
        "rating",
        "item_popularity",
        "user_activity",
        "item_genre",
        "hour",
        "weekday",
    }
    assert values["data_drift_report"] == f"http://127.0.0.1:3001/drift_report/{event.partition_key}/data_drift.html"


def test_first_challenger_is_promoted_without_a_champion(loop):
    result = loop["bootstrap"]
    assert result.success
    assert _gate(result).passed and _gate(result).description == "no champion yet"
    assert "live_champion" in _materialised(result)


def test_gate_promotes_a_better_challenger_and_registers_it(loop):
    result = loop["promoted"]
    gate = _gate(result)
    assert gate.passed, gate.description
    assert gate.metadata["challenger_score"].value >= gate.metadata["champion_score"].value * 1.01
    assert "live_champion" in _materialised(result)
    root = loop["root"]
    record = json.loads((root / "artifacts" / live.CHAMPION / live.RECORD_FILE).read_text())
    assert record["model"] == "most_popular_model"
    pointer = json.loads((root / "artifacts" / "live_registry" / "champion.json").read_text())
    assert pointer["model"] == "most_popular_model"
    assert (root / "artifacts" / "live_registry" / "most_popular_model" / pointer["version"] / "model.onnx").exists()
    assert (root / "artifacts" / "live_registry.dvc").exists(), "the registry is versioned like every asset output"


def test_gate_keeps_the_champion_when_the_challenger_is_worse(loop):
    result = loop["refused"]
    gate = _gate(result)
    assert not gate.passed
    assert "<" in gate.description and "champion" in gate.description
    assert "live_champion" not in _materialised(result), "a blocked gate stops promotion"
    record = json.loads((loop["root"] / "artifacts" / live.CHAMPION / live.RECORD_FILE).read_text())
    assert record["model"] == "most_popular_model"
    log = [json.loads(line) for line in (loop["root"] / "artifacts" / live.PROMOTION_LOG).read_text().splitlines()]
    assert [entry["promoted"] for entry in log] == [True, True, False]
    assert log[-1]["reason"] == gate.description


def _report_drift(instance, window: str, drifted: bool) -> None:
    instance.report_runless_asset_event(
        dg.AssetMaterialization(asset_key="drift_report", partition=window, metadata={"drift_detected": drifted})
    )


@pytest.fixture
def sensor_setup(tmp_path, data_dir):
    """A champion on disk and four landed windows; drift reports are reported directly to the instance."""
    resources = _resources(tmp_path, data_dir)
    (tmp_path / "artifacts" / live.CHAMPION).mkdir(parents=True)
    (tmp_path / "artifacts" / live.CHAMPION / live.RECORD_FILE).write_text("{}")
    instance = dg.DagsterInstance.ephemeral()
    windows = ["1997-10-06", "1997-10-13", "1997-10-20", "1997-10-27"]
    instance.add_dynamic_partitions(live.WINDOWS.name, windows)
    return instance, resources, windows


def _drift_tick(instance, resources, cursor):
    return automation.drift_sensor(dg.build_sensor_context(instance=instance, resources=resources, cursor=cursor))


def test_drift_sensor_fires_once_per_drift_event(sensor_setup):
    instance, resources, windows = sensor_setup
    _report_drift(instance, windows[0], drifted=True)
    result = _drift_tick(instance, resources, None)
    (request,) = result.run_requests
    assert request.run_config["ops"]["challenger_model"]["config"]["window"] == windows[0]
    assert request.tags["recpipe/trigger"] == "drift"
    again = _drift_tick(instance, resources, result.cursor)
    assert not again.run_requests and again.skip_reason == dg.SkipReason("no new drift report")


def test_drift_sensor_stays_quiet_without_drift(sensor_setup):
    instance, resources, windows = sensor_setup
    _report_drift(instance, windows[0], drifted=False)
    result = _drift_tick(instance, resources, None)
    assert not result.run_requests and f"{windows[0]}: no drift" in str(result.skip_reason)


def test_drift_sensor_honours_the_cooldown(sensor_setup):
    instance, resources, windows = sensor_setup
    _report_drift(instance, windows[0], drifted=True)
    cursor = _drift_tick(instance, resources, None).cursor
    _report_drift(instance, windows[1], drifted=True)  # one window later: inside the 2-window cooldown
    cooled = _drift_tick(instance, resources, cursor)
    assert not cooled.run_requests and "cooldown" in str(cooled.skip_reason)
    _report_drift(instance, windows[2], drifted=True)  # two windows after the last retrain
    fired = _drift_tick(instance, resources, cooled.cursor)
    assert [request.tags["recpipe/window"] for request in fired.run_requests] == [windows[2]]


def test_drift_sensor_bootstraps_the_first_champion(tmp_path, data_dir, weeks):
    resources = _resources(tmp_path, data_dir)
    instance = dg.DagsterInstance.ephemeral()
    for name, rows in weeks[:3]:
        drop(resources["stream"].incoming_path, name, rows)
    automation.incoming_files_sensor(dg.build_sensor_context(instance=instance, resources=resources))
    waiting = _drift_tick(instance, resources, None)
    assert not waiting.run_requests and "3 of 4 windows" in str(waiting.skip_reason)
    drop(resources["stream"].incoming_path, *weeks[3])
    automation.incoming_files_sensor(dg.build_sensor_context(instance=instance, resources=resources))
    (request,) = _drift_tick(instance, resources, None).run_requests
    assert request.tags["recpipe/trigger"] == "bootstrap"


def test_schedule_skips_until_two_windows_landed(tmp_path, data_dir, weeks):
    resources = _resources(tmp_path, data_dir)
    context = dg.build_schedule_context(resources=resources)
    assert isinstance(automation.weekly_retraining(context), dg.SkipReason)
    for name, rows in weeks[:2]:
        drop(resources["stream"].incoming_path, name, rows)
    automation.incoming_files_sensor(
        dg.build_sensor_context(instance=dg.DagsterInstance.ephemeral(), resources=resources)
    )
    request = automation.weekly_retraining(dg.build_schedule_context(resources=resources))
    assert request.tags["recpipe/trigger"] == "schedule"
