"""``make release``: real registry entries pushed to a real (folder) DVC remote and committed, then pulled
by a second clone with its own remote and fetched with ``dvc get`` the way a downstream service does."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import dagster as dg
import numpy as np
import onnxruntime as ort
import pytest

from orchestration.release import ReleaseError, latest_release_inputs, release
from recmodels.data.interactions import Interactions
from recmodels.data.splits import leave_one_out_split
from recmodels.models.baselines import EASE, MostPopular
from recmodels.registry import MODEL_FILE, Manifest, file_version

K = 10
HISTORY_LENGTH = 50


@pytest.fixture(autouse=True)
def git_identity(monkeypatch):
    """Commits work on machines without a global git config; DVC stays offline."""
    for role in ("AUTHOR", "COMMITTER"):
        monkeypatch.setenv(f"GIT_{role}_NAME", "recpipe tests")
        monkeypatch.setenv(f"GIT_{role}_EMAIL", "tests@recpipe.invalid")
    monkeypatch.setenv("DVC_NO_ANALYTICS", "1")


@pytest.fixture(scope="module")
def split(ml100k_small_raw):
    return leave_one_out_split(Interactions.from_frame(ml100k_small_raw))


@pytest.fixture(scope="module")
def registry(split, tmp_path_factory, register_fitted) -> dict[str, Path]:
    """EASE and MostPopular fitted on 300 ML-100K users, exported and registered: model name -> entry folder."""
    models = {"ease_model": EASE().fit(split), "most_popular_model": MostPopular().fit(split)}
    return register_fitted(tmp_path_factory.mktemp("registry"), models, split.train, K)


@pytest.fixture(scope="module")
def history(split) -> np.ndarray:
    """One real held-out user's history, left-padded."""
    items, _ = split.test.history.sequences().padded(split.test.users[:1], HISTORY_LENGTH)
    return items


@pytest.fixture
def raw_snapshot(tmp_path, data_dir) -> Path:
    """What a run started from: a snapshot folder holding the ml-100k dataset folder."""
    snapshot = tmp_path / "snapshot"
    shutil.copytree(data_dir / "ml-100k", snapshot / "ml-100k")
    return snapshot


def _champion(entry: Path) -> dict[str, str]:
    return {"model": entry.parent.name, "version": entry.name, "reason": "first on the leaderboard"}


def _run(*command: str, cwd: Path | None = None, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    if check and result.returncode != 0:
        pytest.fail(f"{' '.join(command)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


def _dvc(*args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    return _run(sys.executable, "-m", "dvc", *args, cwd=cwd, check=check)


def _git(root: Path, *args: str) -> str:
    return _run("git", "-C", str(root), *args).stdout.strip()


def _project(folder: Path) -> Path:
    """A fresh git + DVC project with one commit, as a user's clone of recpipe is."""
    _run("git", "-c", "init.defaultBranch=main", "init", "-q", str(folder))
    _dvc("init", "-q", cwd=folder)
    _git(folder, "add", ".dvc", ".dvcignore")
    _git(folder, "commit", "-q", "-m", "dvc init")
    return folder


def _assert_serves(folder: Path, history: np.ndarray) -> None:
    """``folder`` is a registry entry whose bytes are its version and which answers the contract."""
    assert file_version(folder / MODEL_FILE) == folder.name
    manifest = Manifest.read(folder)
    assert manifest.version == folder.name and manifest.model == folder.parent.name
    session = ort.InferenceSession(str(folder / MODEL_FILE), providers=["CPUExecutionProvider"])
    items, scores = session.run(None, {"history": history})
    assert items.shape == (1, manifest.k) == scores.shape
    assert not set(items[0]) & set(history[0][history[0] > 0]), "a history item was recommended"
    assert 0 not in items[0]


def test_a_release_is_pulled_by_a_second_clone_with_its_own_remote_and_got_by_url(
    tmp_path, registry, history, raw_snapshot
):
    project = _project(tmp_path / "project")
    remote = tmp_path / "remote-a"
    ease = registry["ease_model"]
    done = release(project, list(registry.values()), _champion(ease), raw_snapshot, str(remote), None)

    assert done.committed and done.pushed_files > 0
    assert done.message.startswith(f"release: ease_model/{ease.name} champion")
    assert _git(project, "status", "--porcelain") == ""
    committed = set(_git(project, "show", "--name-only", "--format=", "HEAD").splitlines())
    assert committed == {"release/registry.dvc", "release/.gitignore", ".dvc/config", "data.dvc", ".gitignore"}
    assert f"url = {remote}" in (project / ".dvc" / "config").read_text()
    assert json.loads((project / "release/registry/champion.json").read_text()) == _champion(ease)
    # A consumer has git and the remote, not the releasing machine's cache.
    shutil.rmtree(project / ".dvc" / "cache")
    mirror = shutil.copytree(remote, tmp_path / "remote-b")

    consumer = tmp_path / "service"
    consumer.mkdir()
    url = f"file://{project}"  # cloned like any git URL: only the committed config and the remote are used
    _dvc(
        "get",
        url,
        "release/registry/ease_model",
        "--rev",
        "HEAD",
        "-o",
        "via-committed-remote/ease_model",
        cwd=consumer,
    )
    _assert_serves(consumer / "via-committed-remote" / "ease_model" / ease.name, history)

    remote.rename(tmp_path / "remote-a-gone")
    without = _dvc(
        "get", url, "release/registry/ease_model", "--rev", "HEAD", "-o", "nothing", cwd=consumer, check=False
    )
    assert without.returncode != 0, "dvc get succeeded without the remote: it did not read the remote"
    _dvc(
        "get",
        url,
        "release/registry/ease_model",
        "--rev",
        "HEAD",
        "-o",
        "via-mirror/ease_model",
        "--remote-config",
        f"url={mirror}",
        cwd=consumer,
    )
    _assert_serves(consumer / "via-mirror" / "ease_model" / ease.name, history)

    clone = tmp_path / "clone"
    _run("git", "clone", "-q", str(project), str(clone))
    _dvc("remote", "add", "--local", "--default", "mine", str(mirror), cwd=clone)
    _dvc("pull", "release/registry.dvc", "data.dvc", cwd=clone)
    for entry in registry.values():
        _assert_serves(clone / "release" / "registry" / entry.parent.name / entry.name, history)
    pulled_raw = clone / "data" / "raw" / "ml-100k"
    assert sorted(path.name for path in pulled_raw.iterdir()) == sorted(
        path.name for path in (raw_snapshot / "ml-100k").iterdir()
    )
    for path in (raw_snapshot / "ml-100k").iterdir():
        assert (pulled_raw / path.name).read_bytes() == path.read_bytes()
    assert _git(clone, "status", "--porcelain") == ""


def test_a_new_release_replaces_the_folder_and_the_old_one_stays_at_its_commit(tmp_path, registry, history):
    project = _project(tmp_path / "project")
    remote = tmp_path / "remote"
    ease, popular = registry["ease_model"], registry["most_popular_model"]
    first = release(project, [ease, popular], _champion(popular), None, str(remote), None)
    again = release(project, [ease, popular], _champion(popular), None, str(remote), None)
    assert not again.committed and again.commit == first.commit and again.pushed_files == 0

    second = release(project, [ease], _champion(ease), None, str(remote), "release: EASE alone")
    assert second.committed and second.commit != first.commit
    assert _git(project, "log", "-1", "--format=%s") == "release: EASE alone"
    assert sorted(path.name for path in (project / "release" / "registry").iterdir()) == ["champion.json", "ease_model"]
    assert not [path for path in (project / "release").iterdir() if path.name.startswith(".registry")]
    assert "data.dvc" not in _git(project, "show", "--name-only", "--format=", "HEAD").splitlines()

    _dvc(
        "get",
        f"file://{project}",
        "release/registry/most_popular_model",
        "--rev",
        first.commit,
        "-o",
        "old/most_popular_model",
        cwd=tmp_path,
    )
    _assert_serves(tmp_path / "old" / "most_popular_model" / popular.name, history)


def _unchanged(project: Path, head: str) -> None:
    assert _git(project, "rev-parse", "HEAD") == head
    assert not (project / "release").exists()


def test_refuses_an_empty_remote(tmp_path, registry):
    project = _project(tmp_path / "project")
    head = _git(project, "rev-parse", "HEAD")
    ease = registry["ease_model"]
    with pytest.raises(ReleaseError, match="no release remote"):
        release(project, [ease], _champion(ease), None, "  ", None)
    _unchanged(project, head)


def test_refuses_a_tampered_model_file_and_an_entry_without_manifest(tmp_path, registry):
    project = _project(tmp_path / "project")
    head = _git(project, "rev-parse", "HEAD")
    tampered = shutil.copytree(registry["ease_model"], tmp_path / "copy" / "ease_model" / registry["ease_model"].name)
    data = bytearray((tampered / MODEL_FILE).read_bytes())
    data[-1] ^= 1
    (tampered / MODEL_FILE).write_bytes(bytes(data))
    with pytest.raises(ReleaseError, match=f"not its folder name {tampered.name}"):
        release(project, [tampered], _champion(tampered), None, str(tmp_path / "remote"), None)
    (tampered / "manifest.json").unlink()
    with pytest.raises(ReleaseError, match="manifest.json is missing"):
        release(project, [tampered], _champion(tampered), None, str(tmp_path / "remote"), None)
    _unchanged(project, head)
    assert not (tmp_path / "remote").exists()


def test_refuses_unrelated_staged_changes_and_a_landing_zone_inside_data(tmp_path, registry, raw_snapshot):
    project = _project(tmp_path / "project")
    head = _git(project, "rev-parse", "HEAD")
    ease = registry["ease_model"]
    (project / "notes.md").write_text("half-written\n")
    _git(project, "add", "notes.md")
    with pytest.raises(ReleaseError, match=r"staged changes .*notes\.md"):
        release(project, [ease], _champion(ease), None, str(tmp_path / "remote"), None)
    _git(project, "rm", "-q", "--cached", "notes.md")

    (project / "data" / "stream").mkdir(parents=True)
    with pytest.raises(ReleaseError, match=r"holds \['stream'\] besides raw/"):
        release(project, [ease], _champion(ease), raw_snapshot, str(tmp_path / "remote"), None)
    _unchanged(project, head)


@dg.asset(key=["registry", "ease_model"])
def _ease_entry(context) -> dg.MaterializeResult:
    return dg.MaterializeResult(
        metadata={"path": context.run.tags["entry"], "dvc_md5": "d41d8cd98f00b204e9800998ecf8427e"}
    )


@dg.asset(key="registry_champion")
def _champion_pointer(context) -> dg.MaterializeResult:
    return dg.MaterializeResult(metadata={"path": context.run.tags["champion"], "dvc_md5": "0" * 32})


@dg.asset(key="raw_interactions")
def _raw_interactions(context) -> dg.MaterializeResult:
    return dg.MaterializeResult(metadata={"path": context.run.tags["raw"], "dvc_md5": "1" * 32})


def _pipeline_outputs(project: Path, registry: dict[str, Path], raw_snapshot: Path) -> dict[str, str]:
    """Entries, champion and raw snapshot where the pipeline keeps them: under the git-ignored artifacts/."""
    ease = registry["ease_model"]
    entry = shutil.copytree(ease, project / "artifacts" / "registry" / "ease_model" / ease.name)
    champion = project / "artifacts" / "registry_champion" / "run-2"
    champion.mkdir(parents=True)
    (champion / "champion.json").write_text(json.dumps(_champion(ease)))
    raw = shutil.copytree(raw_snapshot, project / "artifacts" / "raw_interactions" / "v1")
    return {
        name: str(path.relative_to(project))
        for name, path in {"entry": entry, "champion": champion, "raw": raw}.items()
    }


def test_latest_release_inputs_reads_the_latest_materialisation_of_each_asset(tmp_path, registry, raw_snapshot):
    project = tmp_path / "project"
    paths = _pipeline_outputs(project, registry, raw_snapshot)
    assets = [_ease_entry, _champion_pointer, _raw_interactions]
    with dg.DagsterInstance.ephemeral() as instance:
        dg.materialize(assets, instance=instance, tags={**paths, "entry": "artifacts/registry/ease_model/older"})
        latest = dg.materialize(assets, instance=instance, tags=paths)
        inputs = latest_release_inputs(instance, project)
    assert inputs.entries == [project / paths["entry"]]
    assert inputs.champion == _champion(registry["ease_model"])
    assert inputs.raw_snapshot == project / paths["raw"]
    assert inputs.runs == {
        key: latest.run_id for key in ("registry/ease_model", "registry_champion", "raw_interactions")
    }


def test_make_release_cli_releases_the_instance_and_prints_a_working_dvc_get(
    tmp_path, registry, raw_snapshot, history, monkeypatch
):
    project = _project(tmp_path / "project")
    (project / ".gitignore").write_text("/artifacts\n")
    _git(project, "add", ".gitignore")
    _git(project, "commit", "-q", "-m", "artifacts/ is ignored")
    paths = _pipeline_outputs(project, registry, raw_snapshot)
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    (tmp_path / "dagster_home").mkdir()
    with dg.DagsterInstance.get() as instance:
        dg.materialize([_ease_entry, _champion_pointer, _raw_interactions], instance=instance, tags=paths)

    env = {**os.environ, "RECPIPE_RELEASE_REMOTE": str(tmp_path / "remote")}
    command = [sys.executable, "-m", "orchestration.release", "--project-root", str(project)]
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    ease = registry["ease_model"]
    assert f"released ease_model/{ease.name}  champion: first on the leaderboard" in result.stdout
    assert _git(project, "status", "--porcelain") == ""
    get = next(line.strip() for line in result.stdout.splitlines() if line.strip().startswith("dvc get"))
    consumer = tmp_path / "service"
    consumer.mkdir()
    _run(sys.executable, "-m", *shlex.split(get), cwd=consumer)
    _assert_serves(consumer / "ease_model" / ease.name, history)

    refused = subprocess.run(command, capture_output=True, text=True, env={**env, "RECPIPE_RELEASE_REMOTE": ""})
    assert refused.returncode == 1 and "release refused: no release remote" in refused.stderr
