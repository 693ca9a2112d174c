"""DVC round trip in a throwaway repository: track, push, lose the files, pull them back; no remote
(an empty setting) keeps versions local; a remote that cannot be used names itself and the cause."""

import shutil
import socket
import subprocess
from pathlib import Path

import dagster as dg
import pytest
import yaml
from dvc.repo import Repo

from orchestration import versioning
from orchestration.io import VersionedFolderIOManager
from orchestration.resources import ArtifactStore


def _git_repo(root: Path) -> Path:
    root.mkdir()
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    return root


def test_track_push_and_pull_restore_identical_files(tmp_path):
    root = _git_repo(tmp_path / "project")
    remote = tmp_path / "remote"
    versioning.ensure_repo(root, str(remote))
    output = root / "artifacts" / "model"
    output.mkdir(parents=True)
    (output / "weights.bin").write_bytes(b"\x00\x01" * 1000)
    (output / "config.json").write_text('{"l2": 500}')

    tracked = versioning.track(root, output)

    assert tracked.pushed
    assert tracked.files == 2
    assert tracked.md5.endswith(".dir")
    assert yaml.safe_load(tracked.dvc_file.read_text())["outs"][0]["md5"] == tracked.md5
    assert any(remote.rglob("*")), "push left the remote empty"

    shutil.rmtree(output)
    shutil.rmtree(root / ".dvc" / "cache")
    with Repo(str(root)) as repo:
        repo.pull(targets=[str(tracked.dvc_file)])
    assert (output / "weights.bin").read_bytes() == b"\x00\x01" * 1000
    assert (output / "config.json").read_text() == '{"l2": 500}'


def test_changed_content_gets_a_new_version_and_same_content_the_same(tmp_path):
    root = _git_repo(tmp_path / "project")
    versioning.ensure_repo(root, None)
    output = root / "artifacts" / "table"
    output.mkdir(parents=True)
    (output / "rows.csv").write_text("a,b\n1,2\n")
    first = versioning.track(root, output, push=False)
    again = versioning.track(root, output, push=False)
    (output / "rows.csv").write_text("a,b\n1,3\n")
    changed = versioning.track(root, output, push=False)

    assert not first.pushed
    assert first.md5 == again.md5
    assert changed.md5 != first.md5


class Note:
    """The smallest value the IO layer stores: one text file."""

    def __init__(self, text: str):
        self.text = text

    def save(self, folder: Path) -> None:
        (folder / "note.txt").write_text(self.text)


@dg.asset
def note() -> Note:
    return Note("kept locally")


def _staged(artifacts: Path, text: str) -> Path:
    staged = artifacts / ".staging" / "run"
    staged.mkdir(parents=True)
    (staged / "note.txt").write_text(text)
    return staged


def test_an_empty_remote_setting_versions_locally_pushes_nothing_and_says_so(tmp_path, monkeypatch):
    monkeypatch.setenv("RECPIPE_DVC_REMOTE", "")
    working_directory = tmp_path / "cwd"  # DVC takes an empty URL for the directory it runs in
    working_directory.mkdir()
    monkeypatch.chdir(working_directory)
    store = ArtifactStore(project_root=str(tmp_path / "project"))
    assert store.dvc_remote is None

    with dg.instance_for_test() as instance:
        result = dg.materialize(
            [note], instance=instance, resources={"io_manager": VersionedFolderIOManager(store=store)}
        )
    (event,) = result.get_asset_materialization_events()
    metadata = event.event_specific_data.materialization.metadata

    assert metadata["dvc_pushed"].value is False
    assert metadata["dvc_remote"].value == "none (RECPIPE_DVC_REMOTE / store.dvc_remote is empty)"
    folder = store.root / metadata["path"].value
    assert (folder / "note.txt").read_text() == "kept locally"
    assert (
        yaml.safe_load((folder.parent / f"{folder.name}.dvc").read_text())["outs"][0]["md5"]
        == metadata["dvc_md5"].value
    )
    assert any(path.is_file() for path in (store.artifacts_root / ".dvc" / "cache").rglob("*"))  # dvc add ran
    assert not any(working_directory.iterdir()), "the working directory was used as the remote"
    with Repo(str(store.artifacts_root)) as repo:
        assert not repo.config["core"].get("remote") and not repo.config["remote"]


def test_no_remote_forgets_the_one_an_earlier_run_set_and_fetches_from_the_cache_only(tmp_path):
    artifacts, remote = tmp_path / "artifacts", tmp_path / "remote"
    versioning.ensure_repo(artifacts, str(remote), scm=False)
    versioning.ensure_repo(artifacts, None, scm=False)  # the next run has no remote
    tracked = versioning.publish(artifacts, _staged(artifacts, "local only"), artifacts / "note")
    assert not tracked.pushed and not any(remote.iterdir())

    shutil.rmtree(tracked.path)
    versioning.fetch(artifacts, tracked.path)  # the local cache still holds it
    assert (tracked.path / "note.txt").read_text() == "local only"

    shutil.rmtree(tracked.path)
    shutil.rmtree(artifacts / ".dvc" / "cache")
    with pytest.raises(FileNotFoundError, match=r"not in the local DVC cache .* no DVC remote is configured"):
        versioning.fetch(artifacts, tracked.path)


def test_a_remote_folder_that_cannot_be_created_names_the_remote_and_the_cause(tmp_path):
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the remote's parent folder should be")
    with pytest.raises(versioning.RemoteError, match=rf"remote 'recpipe' at {blocker}/remote .*NotADirectoryError"):
        versioning.ensure_repo(tmp_path / "artifacts", str(blocker / "remote"), scm=False)


def test_a_remote_that_cannot_be_written_names_the_remote_and_the_cause_not_a_file_count(tmp_path):
    artifacts, remote = tmp_path / "artifacts", tmp_path / "remote"
    versioning.ensure_repo(artifacts, str(remote), scm=False)
    (remote / "files").write_text("a file where DVC keeps its objects' folders")

    with pytest.raises(versioning.RemoteError) as failed:
        versioning.publish(artifacts, _staged(artifacts, "to push"), artifacts / "note")

    message = str(failed.value)
    assert f"DVC remote 'recpipe' at {remote} failed" in message
    assert "NotADirectoryError" in message or "FileExistsError" in message, message


def test_an_http_remote_that_does_not_answer_names_the_remote_and_the_cause_for_push_and_pull(tmp_path):
    with socket.socket() as probe:  # a loopback port nothing listens on once the probe closes
        probe.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{probe.getsockname()[1]}/remote"
    artifacts = tmp_path / "artifacts"
    versioning.ensure_repo(artifacts, url, scm=False)
    staged = _staged(artifacts, "to push")

    with pytest.raises(versioning.RemoteError) as push_failed:
        versioning.publish(artifacts, staged, artifacts / "note")
    assert f"to DVC remote 'recpipe' at {url} failed: " in str(push_failed.value)
    assert "ConnectionRefusedError: [Errno 111] Connect call failed" in str(push_failed.value)

    (pointer,) = (artifacts / "note").glob("*.dvc")  # the version is kept locally; only the push failed
    shutil.rmtree(pointer.with_suffix(""))
    shutil.rmtree(artifacts / ".dvc" / "cache")
    with pytest.raises(versioning.RemoteError) as pull_failed:
        versioning.fetch(artifacts, pointer.with_suffix(""))
    assert f"pulling {pointer.name} from DVC remote 'recpipe' at {url} failed: " in str(pull_failed.value)
    assert "ConnectionRefusedError: [Errno 111] Connect call failed" in str(pull_failed.value)
