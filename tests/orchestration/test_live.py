"""The live loop on the first weeks of MovieLens-100K, through the real sensors, jobs, IO layer and DVC.

One project root and one SQLite Dagster instance for the module. Weeks are dropped into the
incoming folder one by one; ``_tick`` does what the daemon does with the incoming-file sensor
(add partitions, launch each requested run of the real ``ingest_window`` job); retrain requests
are launched the same way through the real ``retrain`` job. Quick models keep it fast: ItemKNN
is the first champion, MostPopular beats it, ItemKNN then loses to MostPopular.
"""

import dataclasses
import json
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
from dagster._core.definitions.data_version import DATA_VERSION_TAG
from dagster._core.test_utils import create_run_for_test

from orchestration import automation
from orchestration.assets import live
from orchestration.io import VersionedFolderIOManager
from orchestration.replay import drop, window_files
from orchestration.resources import ArtifactStore, DatasetResource
from recmodels.data.stream import WindowRows

WEEKS = 9
MODEL = "item_knn_model"


@pytest.fixture(scope="module")
def weeks(ml100k_raw) -> list[tuple[str, str, pd.DataFrame]]:
    """(window, file name, rows) of the first weeks of ML-100K (1997-09-15 is its first, partial week)."""
    return [
        (name.removeprefix("interactions-").removesuffix(".csv"), name, rows)
        for name, rows in window_files(ml100k_raw, 7)[:WEEKS]
    ]


class Project:
    """A throwaway project root, its resources and instance, and the daemon's part, done by hand."""

    def __init__(self, root: Path, data_dir: Path, instance: dg.DagsterInstance):
        store = ArtifactStore(project_root=str(root), dvc_remote=str(root / "remote"))
        self.root, self.instance, self.store = root, instance, store
        self.stream = live.StreamResource(
            incoming=str(root / "incoming"),
            window_days=7,
            model=MODEL,
            bootstrap_windows=4,
            cooldown_windows=2,
            wait_until_stable=False,  # drop() publishes each file by renaming it into place
        )
        resources = {
            "stream": self.stream,
            "store": store,
            "dataset": DatasetResource(data_dir=str(data_dir), dataset="ml-100k", rating_min=1, rating_max=5),
            "io_manager": VersionedFolderIOManager(store=store),
        }
        self.resources = resources
        self.defs = dg.Definitions(
            assets=live.assets, asset_checks=live.checks, jobs=automation.jobs, resources=resources
        )
        self.cursors: dict[str, str | None] = {"incoming": None, "drift": None}
        self.launched: set[str] = set()  # run keys the daemon launched: it never launches one twice

    def sense(self) -> tuple[dg.SensorResult, list[dg.ExecuteInProcessResult]]:
        """One incoming-file sensor tick, its partitions added and its runs executed."""
        with dg.build_sensor_context(
            instance=self.instance, cursor=self.cursors["incoming"], resources=self.resources
        ) as context:
            result = automation.incoming_files_sensor(context)
        self.cursors["incoming"] = result.cursor or self.cursors["incoming"]
        for request in result.dynamic_partitions_requests:
            self.instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
        runs = [self.launch("ingest_window", request) for request in result.run_requests]
        return result, [run for run in runs if run is not None]

    def drift_tick(self) -> dg.SensorResult:
        with dg.build_sensor_context(
            instance=self.instance, cursor=self.cursors["drift"], resources=self.resources
        ) as context:
            result = automation.drift_sensor(context)
        self.cursors["drift"] = result.cursor or self.cursors["drift"]
        return result

    def launch(self, job: str, request: dg.RunRequest, **options) -> dg.ExecuteInProcessResult | None:
        if request.run_key in self.launched:
            return None
        self.launched.add(request.run_key)
        return self.run(
            job,
            request.run_config,
            tags=request.tags,
            partition_key=request.partition_key,
            asset_selection=request.asset_selection,
            **options,
        )

    def run(self, job: str, run_config=None, **options) -> dg.ExecuteInProcessResult:
        options.setdefault("raise_on_error", False)
        return self.defs.resolve_job_def(job).execute_in_process(
            run_config=run_config, instance=self.instance, **options
        )

    def retrain(self, model: str, window: str = "", **options) -> dg.ExecuteInProcessResult:
        config = {"model": model, **({"window": window} if window else {})}
        return self.run(
            "retrain", {"ops": {"challenger_model": {"config": config}}}, tags={automation.MODEL_TAG: model}, **options
        )

    def latest(self, asset: str, partition: str | None = None) -> dg.AssetMaterialization:
        records = self.instance.fetch_materializations(
            dg.AssetRecordsFilter(
                asset_key=dg.AssetKey(asset), asset_partitions=None if partition is None else [partition]
            ),
            limit=1,
        ).records
        return records[0].asset_materialization

    def materialisations(self, asset: str) -> list[dg.AssetMaterialization]:
        records = self.instance.fetch_materializations(dg.AssetKey(asset), limit=1000).records
        return [record.asset_materialization for record in records]

    def window(self, partition: str) -> WindowRows:
        return WindowRows.load(self.root / self.latest(live.WINDOW, partition).metadata["path"].value)

    def promotion_log(self) -> list[dict]:
        log = self.store.artifacts_root / live.PROMOTION_LOG
        return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def _gate(result: dg.ExecuteInProcessResult, name: str = live.BEATS_CHECK):
    (evaluation,) = [e for e in result.get_asset_check_evaluations() if e.check_name == name]
    return evaluation


def _materialised(result: dg.ExecuteInProcessResult) -> set[str]:
    return {event.asset_key.to_user_string() for event in result.get_asset_materialization_events()}


def _data_version(materialization: dg.AssetMaterialization) -> str:
    return materialization.tags["dagster/data_version"]


BROKEN_FILE = "interactions-broken.csv"


@pytest.fixture(scope="module")
def project(tmp_path_factory, data_dir):
    with dg.instance_for_test() as instance:
        yield Project(tmp_path_factory.mktemp("live"), data_dir, instance)


@pytest.fixture(scope="module")
def landed(project, weeks):
    """Weeks 1-4 with bad rows in them, a malformed file, the bootstrap request; weeks 5-6 land while it waits.

    Week 1's file also holds week 2's first five rows and a row whose timestamp does not parse;
    week 2's own file repeats those five rows (duplicates across files).
    """
    incoming = project.stream.incoming_path
    (_, name1, rows1), (_, name2, rows2) = weeks[0], weeks[1]
    first = pd.concat([rows1, rows2.iloc[:5]], ignore_index=True).assign(
        timestamp=lambda frame: frame["timestamp"].astype(str)
    )
    bad = pd.DataFrame(
        {
            "user_id": ["", "7", "8"],
            "item_id": ["50", "50", "51"],
            "rating": [4.0, 9.0, 3.0],
            "timestamp": [str(rows1["timestamp"].iloc[0]), str(rows1["timestamp"].iloc[1]), "soon"],
        }
    )
    drop(incoming, name1, pd.concat([first, bad], ignore_index=True))
    drop(incoming, name2, rows2)
    (incoming / BROKEN_FILE).write_text("user_id,rating,timestamp\n1,5,881250949\n")  # no item_id column
    ticks = {"first": project.sense()}
    ticks["again"] = project.sense()
    drift = {"3 landed": None}
    for _, name, rows in weeks[2:3]:
        drop(incoming, name, rows)
        project.sense()
    drift["3 landed"] = project.drift_tick()
    drop(incoming, weeks[3][1], weeks[3][2])
    project.sense()
    drift["4 landed"] = project.drift_tick()
    (bootstrap,) = drift["4 landed"].run_requests
    # the daemon creates the run (not started yet); weeks keep arriving faster than it starts and finishes
    queued = create_run_for_test(
        project.instance, job_name="retrain", status=dg.DagsterRunStatus.NOT_STARTED, tags=bootstrap.tags
    )
    waiting = []
    for _, name, rows in weeks[4:6]:
        drop(incoming, name, rows)
        project.sense()
        waiting.append(project.drift_tick())
        waiting.append(project.drift_tick())
    project.instance.delete_run(queued.run_id)
    outcome = project.launch("retrain", bootstrap)
    return {"ticks": ticks, "drift": drift, "bootstrap": bootstrap, "waiting": waiting, "outcome": outcome}


def test_landing_keeps_valid_rows_and_quarantines_bad_ones_with_reasons(project, landed, weeks):
    (w1, name1, rows1), (w2, name2, rows2) = weeks[0], weeks[1]
    first = project.window(w1)
    assert list(first.summary["files"]) == [name1]
    entry = first.summary["files"][name1]
    assert (entry["rows_in"], entry["rows_kept"], entry["rows_quarantined"]) == (len(rows1) + 3, len(rows1), 3)
    reasons = first.quarantined.assign(user_id=lambda frame: frame["user_id"].fillna("")).set_index("user_id")[
        "reasons"
    ]
    assert "user_id" in reasons[""] and "rating" in reasons["7"] and "timestamp" in reasons["8"]
    # the row without a usable timestamp belongs to no week: reported once, in its file's earliest week
    second = project.window(w2)
    assert "8" not in set(second.quarantined["user_id"])
    # week 2 is landed from both files; its five rows in week 1's file win, week 2's own copies are duplicates
    assert sorted(second.summary["files"]) == sorted([name1, name2])
    assert second.summary["files"][name1] | {"sha256": None, "bytes": None, "windows": None} == {
        "sha256": None,
        "bytes": None,
        "windows": None,
        "rows_in": 5,
        "rows_kept": 5,
        "rows_quarantined": 0,
    }
    assert second.summary["files"][name2]["rows_quarantined"] == 5
    assert second.quarantined["reasons"].str.contains("duplicate").all()
    assert len(second.rows) == len(rows2)
    for window in (first, second):
        assert window.reconciles
        for name, counts in window.reconciliation().items():
            assert counts["rows_in"] == counts["kept_on_disk"] + counts["quarantined_on_disk"], name
    assert first.summary["files"][name1]["sha256"] == second.summary["files"][name1]["sha256"]
    assert first.summary["files"][name1]["windows"] == [w1, w2]
    checks = [e for run in landed["ticks"]["first"][1] for e in run.get_asset_check_evaluations()]
    assert len(checks) == 2 and all(e.passed for e in checks)


def test_a_malformed_incoming_file_is_reported_and_left_in_place(project, landed):
    result, runs = landed["ticks"]["first"]
    assert {request.partition_key for request in result.run_requests} == {"1997-09-15", "1997-09-22"}
    assert all(BROKEN_FILE not in json.dumps(request.run_config) for request in result.run_requests)
    broken = project.stream.incoming_path / BROKEN_FILE
    assert broken.read_text() == "user_id,rating,timestamp\n1,5,881250949\n", "never moved nor changed"
    again, _ = landed["ticks"]["again"]
    assert not again.run_requests
    assert f"{BROKEN_FILE}: " in str(again.skip_reason) and "item_id" in str(again.skip_reason)
    assert "rejected (left in place)" in str(again.skip_reason)
    assert json.loads(again.cursor)[BROKEN_FILE]["rejected"]
    assert all(run.success for run in runs)


def test_bootstrap_is_requested_once_while_weeks_keep_arriving(project, landed):
    drift = landed["drift"]
    assert not drift["3 landed"].run_requests and "3 of 4 windows landed" in str(drift["3 landed"].skip_reason)
    bootstrap = landed["bootstrap"]
    assert bootstrap.run_key == "bootstrap"
    assert bootstrap.tags == {automation.MODEL_TAG: MODEL, automation.TRIGGER_TAG: "bootstrap"}
    for tick in landed["waiting"]:
        assert not tick.run_requests
        assert "no champion yet; retrain run" in str(tick.skip_reason) and "waiting for it" in str(tick.skip_reason)
    outcome = landed["outcome"]
    assert outcome.success and _gate(outcome).passed and _gate(outcome).description == "no champion yet"
    champion = project.latest(live.CHAMPION).metadata
    assert champion["model"].value == MODEL
    # six weeks had landed when it ran: trained on 1-5, validated on 6
    assert champion[live.TRAINED_THROUGH].value == "1997-10-13"
    assert champion["validation_window"].value == "1997-10-20"
    # the next ticks see the champion: no bootstrap ever again
    after = project.drift_tick()
    assert not after.run_requests and after.skip_reason == dg.SkipReason("no new drift report")


@pytest.fixture(scope="module")
def judged(project, landed, weeks):
    """Week 7 lands with its drift report, week 8 (5% bad ratings) is stopped by its check; then MostPopular is
    promoted, ItemKNN refused, that decision run again, and EASE refused unjudged on a window the champion saw."""
    incoming = project.stream.incoming_path
    drop(incoming, weeks[6][1], weeks[6][2])
    week7 = project.sense()
    eighth = weeks[7][2].copy()
    eighth.loc[eighth.index[::20], "rating"] = 9.0
    drop(incoming, weeks[7][1], eighth)
    week8 = project.sense()
    drift = [project.drift_tick(), project.drift_tick()]
    champion_before = project.latest(live.CHAMPION)
    promoted = project.retrain("most_popular_model")
    after_promotion = project.latest(live.CHAMPION)
    log_after_promotion = project.promotion_log()
    refused = project.retrain("item_knn_model")
    after_refusal = project.latest(live.CHAMPION)
    log_after_refusal = project.promotion_log()
    again = project.retrain("item_knn_model", asset_selection=[live.live_champion.key])
    after_again = project.latest(live.CHAMPION)
    seen = project.retrain("ease_model", window="1997-10-20")
    return {
        "week7": week7,
        "week8": week8,
        "drift": drift,
        "champion_before": champion_before,
        "promoted": promoted,
        "after_promotion": after_promotion,
        "log_after_promotion": log_after_promotion,
        "refused": refused,
        "after_refusal": after_refusal,
        "log_after_refusal": log_after_refusal,
        "again": again,
        "after_again": after_again,
        "seen": seen,
        "log": project.promotion_log(),
    }


def test_a_window_over_the_quarantine_limit_gets_no_drift_report(project, judged, weeks):
    week7, week8 = weeks[6][0], weeks[7][0]
    (request,), (run,) = judged["week8"][0].run_requests, judged["week8"][1]
    assert set(request.asset_selection) == {live.interaction_window.key, live.drift_report.key}
    check = _gate(run, live.QUARANTINE_CHECK)
    assert not check.passed and check.metadata["quarantined_share"].value > 0.04
    assert check.metadata["rows_reconcile"].value is True
    assert _materialised(run) == {"interaction_window"}, "the blocking check stops the drift report"
    assert not run.success
    assert project.window(week8).quarantined["reasons"].str.startswith("rating").all()
    (ok_run,) = judged["week7"][1]
    assert ok_run.success and _materialised(ok_run) == {"interaction_window", "drift_report"}
    assert {m.partition for m in project.materialisations("drift_report")} == {week7}
    # a stopped window is not landed: nothing trains or is judged on it
    assert week8 not in live.landed_windows(project.instance)
    challenger = project.latest(live.CHALLENGER)
    assert week8 not in challenger.metadata["windows_read"].value


def test_drift_report_compares_the_window_with_the_champions_data(project, judged, weeks):
    week7 = weeks[6][0]
    report = project.latest("drift_report", week7)
    values = {key: value.value for key, value in report.metadata.items()}
    assert values["drift_detected"] == (values["data_drift"] or values["prediction_drift"])
    assert 0 <= values["data_drifted_share"] <= 1 and 0 < values["coverage@10_current"] <= 1
    assert values["champion"] == MODEL and values["champion_ndcg@10"] > 0
    assert values["champion_version"] == _data_version(judged["champion_before"])
    folder = project.root / values["path"]
    assert (folder / "data_drift.html").stat().st_size > 10_000
    assert (folder / "prediction_drift.html").stat().st_size > 10_000
    assert (
        values["data_drift_report"]
        == f"http://127.0.0.1:3001/{folder.relative_to(project.store.artifacts_root)}/data_drift.html"
    )
    summary = json.loads((folder / "summary.json").read_text())
    assert set(summary["data"]["columns"]) == {
        "rating",
        "item_popularity",
        "user_activity",
        "item_genre",
        "hour",
        "weekday",
    }
    # one request per drifted window, keyed by it; a second tick asks for nothing more
    first, second = judged["drift"]
    if values["drift_detected"]:
        assert [r.run_key for r in first.run_requests] == [f"drift:{week7}"]
        assert first.run_requests[0].tags == {
            automation.MODEL_TAG: MODEL,
            automation.TRIGGER_TAG: "drift",
            automation.WINDOW_TAG: week7,
        }
    else:
        assert not first.run_requests and f"{week7}: no drift" in str(first.skip_reason)
    assert not second.run_requests


def test_a_better_challenger_is_promoted_exported_and_registered(project, judged):
    result = judged["promoted"]
    assert result.success
    gate = _gate(result)
    assert gate.passed, gate.description
    assert gate.metadata["challenger_score"].value >= gate.metadata["champion_score"].value * 1.01
    assert _gate(result, live.PARITY_CHECK).passed
    champion = judged["after_promotion"]
    assert champion.metadata["model"].value == "most_popular_model" and champion.metadata["promoted"].value
    registry = project.store.artifacts_root / live.LIVE_REGISTRY
    pointer = json.loads((registry / "champion.json").read_text())
    version = champion.metadata["registry_version"].value
    assert pointer == {"model": "most_popular_model", "version": version, "reason": "promoted on window 1997-10-27"}
    entry = registry / "most_popular_model" / version
    assert (entry / "model.onnx").read_bytes() == (
        project.root / champion.metadata["path"].value / "model.onnx"
    ).read_bytes()
    manifest = json.loads((entry / "manifest.json").read_text())
    assert manifest["model"] == "most_popular_model" and manifest["version"] == version
    assert "1997-10-20:" in manifest["training_data_version"]
    (line,) = judged["log_after_promotion"][1:]
    assert line["promoted"] and line["window"] == "1997-10-27" and line["champion_trained_through"] == "1997-10-13"


def test_a_fair_refusal_is_a_clean_run_that_keeps_the_champion(project, judged):
    result = judged["refused"]
    assert result.success, "a refused promotion is not a failure"
    gate = _gate(result)
    assert not gate.passed and gate.severity == dg.AssetCheckSeverity.WARN
    assert "<" in gate.description and "champion" in gate.description
    parity = _gate(result, live.PARITY_CHECK)
    assert parity.passed and parity.description.startswith("the champion stays")
    before, after = judged["after_promotion"], judged["after_refusal"]
    assert _data_version(after) == _data_version(before) and after.metadata["path"] == before.metadata["path"]
    assert after.metadata["model"].value == "most_popular_model" and not after.metadata["promoted"].value
    (line,) = judged["log_after_refusal"][len(judged["log_after_promotion"]) :]
    assert not line["promoted"] and line["reason"] == gate.description
    messages = [entry.user_message for entry in project.instance.all_logs(result.run_id)]
    assert [message for message in messages if message.startswith("decision ")] == [
        f"decision {line['decision']}: the champion stays: {gate.description}"
    ]


def test_the_same_decision_again_changes_nothing(project, judged):
    result = judged["again"]
    assert result.success and _materialised(result) == {"live_champion"}
    assert judged["log"][: len(judged["log_after_refusal"])] == judged["log_after_refusal"]
    decisions = [line["decision"] for line in judged["log"]]
    assert len(decisions) == len(set(decisions)), "one line per decision"
    gate = _gate(result)
    assert not gate.passed and "(refused: challenger ndcg@10" in gate.description
    assert gate.description.endswith("not made again, the champion stays")
    assert _data_version(judged["after_again"]) == _data_version(judged["after_refusal"])


def test_a_champion_that_saw_the_evaluation_window_is_not_judged_against(project, judged):
    result = judged["seen"]
    assert result.success
    gate = _gate(result)
    assert not gate.passed
    assert gate.description.startswith("champion trained through 1997-10-20, on or after evaluation window 1997-10-20")
    assert "challenger_score" not in gate.metadata
    assert judged["log"][-1]["reason"] == gate.description and judged["log"][-1]["challenger_score"] is None


def test_the_gate_refuses_a_leaked_comparison(project, judged):
    champion = live.TrainedModel.load(project.root / judged["after_refusal"].metadata["path"].value)
    challenger = live.TrainedModel.load(project.root / project.latest(live.CHALLENGER).metadata["path"].value)
    window = challenger.validation_window

    def trained_also_on(model: live.TrainedModel, extra: str) -> live.TrainedModel:
        trained = {**model.record["trained_windows"], extra: model.record["validation_version"]}
        return dataclasses.replace(model, record={**model.record, "trained_windows": trained})

    leaked_champion = trained_also_on(champion, window)
    leaked_challenger = trained_also_on(challenger, window)
    empty = pd.DataFrame(columns=["user_id", "item_id", "timestamp"])
    with pytest.raises(live.LeakedComparisonError, match=f"champion trained through {window}, on or after it"):
        live.judge(challenger, leaked_champion, empty, empty, "ndcg@10", 0.01)
    with pytest.raises(live.LeakedComparisonError, match=f"challenger trained through {window}"):
        live.judge(leaked_challenger, champion, empty, empty, "ndcg@10", 0.01)
    with pytest.raises(live.LeakedComparisonError):
        live.decide(leaked_challenger, None, empty, empty, "ndcg@10", 0.01)
    verdict = live.decide(challenger, leaked_champion, empty, empty, "ndcg@10", 0.01)
    assert not verdict.promoted and verdict.champion_score is None and "no fair comparison" in verdict.reason


def test_promotion_log_appends_each_decision_once(tmp_path):
    log = tmp_path / "promotions.jsonl"
    entry = {"decision": "abc.dir@1997-10-27", "promoted": True}
    assert live.record_decision(log, entry) is True
    assert live.record_decision(log, {**entry, "promoted": False}) is False
    assert live.record_decision(log, {**entry, "decision": "def.dir@1997-10-27"}) is True
    assert [json.loads(line)["decision"] for line in log.read_text().splitlines()] == [
        "abc.dir@1997-10-27",
        "def.dir@1997-10-27",
    ]
    assert live.logged_decision(log, "abc.dir@1997-10-27")["promoted"] is True


@pytest.fixture(scope="module")
def relanded(project, judged, weeks):
    """Week 3's file gains a row (a new version of that window); a challenger retrains; week 9 lands."""
    incoming = project.stream.incoming_path
    week3, name3, rows3 = weeks[2]
    before = {"version": _data_version(project.latest(live.WINDOW, week3)), "launched": set(project.launched)}
    schedule_before = _schedule(project, "2026-01-05")
    extra = pd.DataFrame(
        {"user_id": ["9999"], "item_id": ["1"], "rating": [3.0], "timestamp": [rows3["timestamp"].max()]}
    )
    drop(incoming, name3, pd.concat([rows3, extra], ignore_index=True))
    changed = project.sense()
    drift = project.drift_tick()
    retrained = project.retrain("item_knn_model")
    drop(incoming, weeks[8][1], weeks[8][2])
    ninth = project.sense()
    schedule_after = _schedule(project, "2026-01-12")
    return {
        "before": before,
        "changed": changed,
        "drift": drift,
        "retrained": retrained,
        "ninth": ninth,
        "schedule": (schedule_before, schedule_after),
    }


def _schedule(project: Project, date: str):
    moment = pd.Timestamp(f"{date} 03:00", tz="UTC").to_pydatetime()
    context = dg.build_schedule_context(
        instance=project.instance, resources={"stream": project.stream}, scheduled_execution_time=moment
    )
    return automation.weekly_retraining(context)


def test_a_changed_file_lands_its_window_again_as_a_new_version(project, relanded, weeks):
    week3, name3, rows3 = weeks[2]
    result, (run,) = relanded["changed"]
    (request,) = result.run_requests
    assert request.partition_key == week3 and request.run_key not in relanded["before"]["launched"]
    assert request.run_config["ops"]["interaction_window"]["config"]["files"] == [name3]
    assert run.success
    assert _data_version(project.latest(live.WINDOW, week3)) != relanded["before"]["version"]
    assert len(project.window(week3).rows) == len(rows3) + 1
    # its drift report is no retrain trigger: the champion already trained on that week
    assert not relanded["drift"].run_requests
    assert f"{week3}: " in str(relanded["drift"].skip_reason)


def test_consumers_read_exactly_the_landed_window_versions(project, relanded, weeks):
    week3 = weeks[2][0]
    landed = {key: version.data_version for key, version in live.landed_windows(project.instance).items()}
    challenger = project.latest(live.CHALLENGER)
    read = challenger.metadata["windows_read"].value
    assert read == {key: version for key, version in landed.items() if key in read}
    assert read[week3] != relanded["before"]["version"], "the new version of week 3, not the one on disk first"
    model = live.TrainedModel.load(project.root / challenger.metadata["path"].value)
    assert {key: value["data_version"] for key, value in model.record["trained_windows"].items()} == {
        key: version for key, version in read.items() if key != model.validation_window
    }
    # the week-9 drift report: current data at the latest versions, reference exactly the champion's training data
    (_, (run,)) = relanded["ninth"]
    assert run.success
    report = project.latest("drift_report", weeks[8][0]).metadata
    champion_record = project.latest(live.CHAMPION)
    champion = live.TrainedModel.load(project.root / champion_record.metadata["path"].value)
    assert report["champion_version"].value == _data_version(champion_record)
    assert report["reference_windows"].value == {
        key: value["data_version"] for key, value in champion.record["trained_windows"].items()
    }
    assert report["windows_read"].value == landed


def test_weekly_schedule_keys_its_runs_by_date_and_waits_for_a_new_window(project, relanded):
    before, after = relanded["schedule"]
    assert isinstance(before, dg.SkipReason) and "no window landed since the champion's validation window" in str(
        before
    )
    assert after.run_key == "schedule:2026-01-12"
    assert after.tags == {automation.MODEL_TAG: MODEL, automation.TRIGGER_TAG: "schedule"}


def _report_drift(instance, window: str, drifted: bool, champion: str = "c1", window_version: str = "") -> None:
    metadata = {
        "drift_detected": drifted,
        live.CHAMPION_VERSION: champion,
        live.WINDOW_VERSION: window_version or f"v-{window}",
    }
    instance.report_runless_asset_event(
        dg.AssetMaterialization(asset_key="drift_report", partition=window, metadata=metadata)
    )


def _crown(instance, version: str, trained_through: str, validation_window: str) -> None:
    """A live_champion materialisation as the IO layer records it: its data version and its windows."""
    instance.report_runless_asset_event(
        dg.AssetMaterialization(
            asset_key=live.CHAMPION,
            metadata={live.TRAINED_THROUGH: trained_through, live.VALIDATION_WINDOW: validation_window},
            tags={DATA_VERSION_TAG: version},
        )
    )


def _land(instance, window: str, version: str = "") -> None:
    """A landed window as ``landed_windows`` sees it: materialised, and its quarantine check passed (runless
    events share one run id, so the first check evaluation stands for a window landed again)."""
    landed_before = instance.has_dynamic_partition(live.WINDOWS.name, window)
    instance.add_dynamic_partitions(live.WINDOWS.name, [window])
    instance.report_runless_asset_event(
        dg.AssetMaterialization(
            asset_key=live.WINDOW,
            partition=window,
            metadata={"path": f"artifacts/interaction_window/{window}/x"},
            tags={DATA_VERSION_TAG: version or f"v-{window}"},
        )
    )
    if not landed_before:
        instance.report_runless_asset_event(
            dg.AssetCheckEvaluation(
                asset_key=dg.AssetKey(live.WINDOW), check_name=live.QUARANTINE_CHECK, passed=True, partition=window
            )
        )


class DriftTicks:
    """Ticks of the real drift sensor on an instance, its cursor carried from tick to tick as the daemon does."""

    def __init__(self, instance: dg.DagsterInstance, stream: live.StreamResource) -> None:
        self.instance, self.stream, self.cursor = instance, stream, None

    def __call__(self) -> dg.SensorResult:
        resources = {"stream": self.stream}
        with dg.build_sensor_context(instance=self.instance, cursor=self.cursor, resources=resources) as context:
            result = automation.drift_sensor(context)
        self.cursor = result.cursor or self.cursor
        return result


def test_drift_sensor_asks_once_per_drifted_window_after_the_champions_data(tmp_path, project_instance):
    """Drift reports straight into a fresh instance: the sensor reads only their metadata and the champion's."""
    stream = live.StreamResource(incoming=str(tmp_path), window_days=7, model="ease_model", cooldown_windows=2)
    instance = project_instance
    _crown(instance, "c1", trained_through="1997-10-06", validation_window="1997-10-13")
    tick = DriftTicks(instance, stream)

    _report_drift(instance, "1997-10-06", True)
    _report_drift(instance, "1997-10-13", False)
    quiet = tick()
    assert not quiet.run_requests
    assert "1997-10-06: drift, but the champion already trained through 1997-10-06" in str(quiet.skip_reason)
    assert "1997-10-13: no drift" in str(quiet.skip_reason)
    _report_drift(instance, "1997-10-20", True)
    (request,) = tick().run_requests
    assert request.run_key == "drift:1997-10-20"
    assert request.run_config["ops"]["challenger_model"]["config"] == {
        "model": "ease_model",
        "window": "1997-10-20",
    }
    assert request.tags == {
        automation.MODEL_TAG: "ease_model",
        automation.TRIGGER_TAG: "drift",
        automation.WINDOW_TAG: "1997-10-20",
    }
    _report_drift(instance, "1997-10-20", True)  # the same window again (landed again)
    _report_drift(instance, "1997-10-27", True)  # one window later
    cooled = tick()
    assert not cooled.run_requests and str(cooled.skip_reason).count("in cooldown") == 2
    _report_drift(instance, "1997-11-03", True)
    assert [request.run_key for request in tick().run_requests] == ["drift:1997-11-03"]
    assert tick().skip_reason == dg.SkipReason("no new drift report")


def test_windows_landed_before_the_champion_get_one_report_against_it(tmp_path, project_instance):
    """Weeks that landed while the champion was trained were never reported against it: the sensor asks for one
    report per such window (not while a window is being landed or a retrain is on its way), and a report made
    against an earlier champion triggers nothing."""
    stream = live.StreamResource(incoming=str(tmp_path), window_days=7, model="ease_model", cooldown_windows=1)
    instance = project_instance
    windows = ["1997-10-06", "1997-10-13", "1997-10-20", "1997-10-27", "1997-11-03"]
    for window in windows:
        _land(instance, window)
    _crown(instance, "c1", trained_through="1997-10-06", validation_window="1997-10-13")
    _report_drift(instance, "1997-10-20", False, champion="c1")  # already reported against c1
    _report_drift(instance, "1997-10-27", True, champion="c0")  # against an earlier champion
    landing = create_run_for_test(
        instance,
        job_name="ingest_window",
        status=dg.DagsterRunStatus.STARTED,
        tags={automation.WINDOW_TAG: windows[4]},
    )
    tick = DriftTicks(instance, stream)

    first = tick()
    (request,) = first.run_requests  # no retrain: week 4's drift was measured against c0
    assert request.job_name == automation.report_drift_job.name
    assert request.partition_key == "1997-10-27"
    assert request.run_key == "report:1997-10-27:v-1997-10-27:c1"
    instance.delete_run(landing.run_id)  # week 5 has landed: now it is due too
    assert [r.partition_key for r in tick().run_requests] == ["1997-10-27", "1997-11-03"]

    _report_drift(instance, "1997-10-27", True, champion="c1")
    _report_drift(instance, "1997-11-03", False, champion="c1")
    (retrain,) = tick().run_requests
    assert retrain.run_key == "drift:1997-10-27" and retrain.job_name == automation.retrain_job.name
    queued = create_run_for_test(instance, job_name="retrain", status=dg.DagsterRunStatus.NOT_STARTED)
    waiting = tick()
    assert not waiting.run_requests  # nothing is reported against a champion about to be replaced

    instance.delete_run(queued.run_id)
    _crown(instance, "c2", trained_through="1997-10-20", validation_window="1997-10-27")
    _report_drift(instance, "1997-11-03", True, champion="c1")  # a late report against c1
    after = tick()  # no retrain for week 5's drift against c1
    assert [(r.job_name, r.partition_key) for r in after.run_requests] == [("report_drift", "1997-11-03")]
    _land(instance, "1997-11-03", version="v2")  # landed again, from a changed file
    _report_drift(instance, "1997-11-03", False, champion="c2")  # of its first version
    (again,) = tick().run_requests
    assert again.run_key == "report:1997-11-03:v2:c2"
