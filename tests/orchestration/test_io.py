"""The IO layer with real DVC and real Dagster instances (SQLite and PostgreSQL storage, the
``project_instance`` fixture): versions, lineage, concurrent runs in separate processes."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from orchestration.io import VersionedFolderIOManager, safe_component
from orchestration.resources import PROJECT_ROOT, ArtifactStore


class Text:
    """A value that says what it holds, so a reader can prove which version it got."""

    def __init__(self, text: str):
        self.text = text

    def save(self, folder: Path) -> None:
        (folder / "text.txt").write_text(self.text)

    @classmethod
    def load(cls, folder: Path) -> "Text":
        return cls((folder / "text.txt").read_text())


class UpstreamConfig(dg.Config):
    text: str


@dg.asset
def upstream(config: UpstreamConfig) -> Text:
    return Text(config.text)


@dg.asset
def downstream(upstream: Text) -> Text:
    return Text(f"read {upstream.text}")


WINDOWS = dg.DynamicPartitionsDefinition(name="io_test_windows")


@dg.asset(partitions_def=WINDOWS)
def per_window(context: dg.AssetExecutionContext) -> Text:
    return Text(context.partition_key)


@pytest.fixture
def project(tmp_path, project_instance):
    store = ArtifactStore(project_root=str(tmp_path / "project"), dvc_remote=str(tmp_path / "remote"))
    return store, project_instance


def _run(store: ArtifactStore, instance, assets, text: str | None = None, **options) -> dg.ExecuteInProcessResult:
    run_config = {"ops": {"upstream": {"config": {"text": text}}}} if text is not None else None
    return dg.materialize(
        assets,
        instance=instance,
        resources={"store": store, "io_manager": VersionedFolderIOManager(store=store)},
        run_config=run_config,
        **options,
    )


def _materialisation(result: dg.ExecuteInProcessResult, asset: str) -> dg.AssetMaterialization:
    (event,) = [e for e in result.get_asset_materialization_events() if e.asset_key.to_user_string() == asset]
    return event.event_specific_data.materialization


def _text_of_version(store: ArtifactStore, asset: str, md5: str) -> str:
    return (store.artifacts_root / asset / md5.removesuffix(".dir") / "text.txt").read_text()


def test_the_data_version_is_the_dvc_md5_of_the_folder_written(project):
    store, instance = project
    materialisation = _materialisation(_run(store, instance, [upstream], "first"), "upstream")
    md5 = materialisation.metadata["dvc_md5"].value
    folder = store.root / materialisation.metadata["path"].value
    assert materialisation.tags["dagster/data_version"] == md5
    assert folder == store.artifacts_root / "upstream" / md5.removesuffix(".dir")
    assert (folder / "text.txt").read_text() == "first"
    assert (folder.parent / f"{folder.name}.dvc").read_text().count(md5) == 1
    assert materialisation.metadata["dvc_pushed"].value is True
    assert not any((store.artifacts_root / ".staging").iterdir())  # staging emptied: moved, not copied


def test_a_reader_gets_the_version_its_lineage_shows_after_a_newer_one_is_written(project):
    store, instance = project
    first = _materialisation(_run(store, instance, [upstream], "v1"), "upstream").metadata["dvc_md5"].value
    read_v1 = _materialisation(_run(store, instance, [upstream, downstream], selection=[downstream]), "downstream")
    second = _materialisation(_run(store, instance, [upstream], "v2"), "upstream").metadata["dvc_md5"].value
    read_v2 = _materialisation(_run(store, instance, [upstream, downstream], selection=[downstream]), "downstream")

    assert first != second
    assert read_v1.tags["dagster/input_data_version/upstream"] == first
    assert read_v2.tags["dagster/input_data_version/upstream"] == second
    assert _text_of_version(store, "downstream", read_v1.metadata["dvc_md5"].value) == "read v1"
    assert _text_of_version(store, "downstream", read_v2.metadata["dvc_md5"].value) == "read v2"
    assert _text_of_version(store, "upstream", first) == "v1"  # the newer version never rewrote the older


def materialise_once(home: str, project_root: str, remote: str, text: str) -> None:
    """One run of upstream -> downstream in its own process (what two users starting runs do)."""
    store = ArtifactStore(project_root=project_root, dvc_remote=remote)
    with dg.DagsterInstance.from_config(home) as instance:
        assert _run(store, instance, [upstream, downstream], text).success


def test_two_runs_at_once_each_record_the_versions_they_read_and_wrote(tmp_path, project_instance):
    """Each run starts in its own process; this one sees their runs, events and lineage in the shared storage."""
    home = os.environ["DAGSTER_HOME"]  # the instance file project_instance wrote; its tables exist already
    root, remote = tmp_path / "project", tmp_path / "remote"
    texts = [f"run-{letter}-{round_}" for round_ in range(2) for letter in "ab"]
    for pair in (texts[0:2], texts[2:4]):  # two processes started together, twice
        processes = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import test_io; "
                    f"test_io.materialise_once({str(home)!r}, {str(root)!r}, {str(remote)!r}, {text!r})",
                ],
                cwd=PROJECT_ROOT,
            )
            for text in pair
        ]
        assert [process.wait(timeout=300) for process in processes] == [0, 0]
    store = ArtifactStore(project_root=str(root), dvc_remote=str(remote))
    runs = project_instance.get_runs()
    assert len(runs) == len(texts)
    for run in runs:
        events = {
            record.asset_key.to_user_string(): record.asset_materialization
            for record in project_instance.get_records_for_run(
                run.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION
            ).records
            if record.asset_materialization is not None
        }
        text = run.run_config["ops"]["upstream"]["config"]["text"]
        assert _text_of_version(store, "upstream", events["upstream"].metadata["dvc_md5"].value) == text
        lineage = events["downstream"].tags["dagster/input_data_version/upstream"]
        # whatever the other run did meanwhile, what this run read is the version its lineage names
        read = _text_of_version(store, "downstream", events["downstream"].metadata["dvc_md5"].value)
        assert read == f"read {_text_of_version(store, 'upstream', lineage)}"


def test_identical_content_reuses_its_version_folder(project):
    store, instance = project
    first = _materialisation(_run(store, instance, [upstream], "same"), "upstream")
    again = _materialisation(_run(store, instance, [upstream], "same"), "upstream")
    assert first.metadata["path"].value == again.metadata["path"].value
    assert len([child for child in (store.artifacts_root / "upstream").iterdir() if child.is_dir()]) == 1


def test_a_missing_version_folder_is_pulled_back_from_the_remote(project):
    store, instance = project
    written = _materialisation(_run(store, instance, [upstream], "kept remotely"), "upstream")
    folder = store.root / written.metadata["path"].value
    shutil.rmtree(folder)
    shutil.rmtree(store.artifacts_root / ".dvc" / "cache")  # only the remote has it now
    read = _materialisation(_run(store, instance, [upstream, downstream], selection=[downstream]), "downstream")
    assert _text_of_version(store, "downstream", read.metadata["dvc_md5"].value) == "read kept remotely"


def test_partitions_are_stored_per_partition_and_cannot_leave_their_folder(project):
    store, instance = project
    instance.add_dynamic_partitions(WINDOWS.name, ["2024-01-01", ".."])
    stored = _materialisation(_run(store, instance, [per_window], partition_key="2024-01-01"), "per_window")
    assert Path(stored.metadata["path"].value).parent == Path("artifacts/per_window/2024-01-01")
    escaping = _run(store, instance, [per_window], partition_key="..", raise_on_error=False)
    assert not escaping.success
    assert "cannot name a folder" in str(escaping.get_step_failure_events()[0].event_specific_data.error)
    assert not (store.artifacts_root / "text.txt").exists()


@pytest.mark.parametrize("text", ["../up", "a/b", "", ".", "..", "/abs"])
def test_safe_component_refuses_what_could_leave_a_folder(text):
    with pytest.raises(ValueError, match="cannot name a folder"):
        safe_component(text, "partition key")
