"""Assets versioned to a real non-local DVC remote: an SSH remote (dvc-ssh) on a real OpenSSH server. The data
assets and a model push to it; a second checkout in another folder pulls a version by its md5 alone; a release
pushed there is fetched with ``dvc get`` by a consumer; a remote that cannot be reached, or that is read-only,
fails the asset naming the remote, and nothing is reported as versioned."""

from __future__ import annotations

import filecmp
import re
import shutil
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest
import yaml

from orchestration.release import release
from orchestration.resources import DatasetResource
from orchestration.versioning import RemoteError
from recmodels.data.interactions import Interactions
from recmodels.data.splits import leave_one_out_split
from recmodels.models.baselines import MostPopular
from recmodels.registry import MODEL_FILE, file_version

SELECTION = ["raw_interactions", "validated_interactions", "quarantined_rows", "interactions", "split"]
SELECTION += ["most_popular_model"]


@pytest.fixture
def ssh_home(ssh_server, monkeypatch):
    """The client side as a user has it: the key and the server's host key under ``~/.ssh``."""
    monkeypatch.setenv("HOME", str(ssh_server.home))
    return ssh_server


@pytest.fixture(scope="module")
def small_data(earliest_ml100k) -> DatasetResource:
    data = earliest_ml100k("ml-100k-ssh", 0.1)
    return DatasetResource(data_dir=str(data.parent), dataset=data.name)


def _materialisations(result) -> dict[str, dg.AssetMaterialization]:
    return {
        event.asset_key.to_user_string(): event.event_specific_data.materialization
        for event in result.get_asset_materialization_events()
    }


def _dvc(*argv: str, cwd: Path) -> None:
    finished = subprocess.run([sys.executable, "-m", "dvc", *argv], cwd=cwd, capture_output=True, text=True)
    assert finished.returncode == 0, f"dvc {argv}: {finished.stdout}{finished.stderr}"


def _git(*argv: str, cwd: Path) -> None:
    subprocess.run(["git", *argv], cwd=cwd, check=True, capture_output=True)


def test_assets_push_over_ssh_and_another_checkout_pulls_a_model_by_its_md5(
    ssh_home, small_data, materialise_batch, tmp_path
):
    remote = tmp_path / "remote-on-the-server"
    url = ssh_home.url(remote)
    root = tmp_path / "project"
    result = materialise_batch(root, small_data, dvc_remote=url, selection=SELECTION)
    materialised = _materialisations(result)
    assert set(materialised) == set(SELECTION)
    for name, materialisation in materialised.items():
        assert materialisation.metadata["dvc_pushed"].value is True, name
        assert materialisation.metadata["dvc_remote"].value == url
    model = materialised["most_popular_model"]
    md5 = model.metadata["dvc_md5"].value
    assert (remote / "files" / "md5" / md5[:2] / md5[2:]).is_file()  # the directory listing, on the server

    elsewhere = tmp_path / "second-checkout"
    elsewhere.mkdir()
    _dvc("init", "--no-scm", "-q", cwd=elsewhere)
    _dvc("remote", "add", "-d", "origin", url, cwd=elsewhere)
    (elsewhere / "model.dvc").write_text(yaml.safe_dump({"outs": [{"md5": md5, "path": "model", "hash": "md5"}]}))
    _dvc("pull", "model.dvc", cwd=elsewhere)
    original = root / model.metadata["path"].value
    comparison = filecmp.dircmp(original, elsewhere / "model")
    assert sorted(comparison.common_files) == sorted(path.name for path in original.iterdir() if path.is_file())
    assert not comparison.diff_files and not comparison.left_only


def test_an_unreachable_ssh_remote_fails_the_asset_naming_it_and_nothing_is_versioned(
    ssh_home, small_data, materialise_batch, tmp_path
):
    url = f"ssh://{ssh_home.user}@127.0.0.1:9{ssh_home.home}/nowhere"  # port 9: nothing listens
    instance = dg.DagsterInstance.ephemeral()
    with pytest.raises(RemoteError, match="DVC remote 'recpipe' at ssh://.*127.0.0.1:9.* failed"):
        materialise_batch(
            tmp_path / "project", small_data, dvc_remote=url, selection=["raw_interactions"], instance=instance
        )
    assert instance.get_latest_materialization_event(dg.AssetKey("raw_interactions")) is None


def test_an_ssh_remote_that_refuses_writes_fails_the_asset_naming_it_and_nothing_is_versioned(
    ssh_home, small_data, materialise_batch, tmp_path
):
    remote = tmp_path / "read-only-remote"
    remote.mkdir()
    url = ssh_home.url(remote, read_only=True)
    instance = dg.DagsterInstance.ephemeral()
    with pytest.raises(RemoteError, match=f"DVC remote 'recpipe' at {re.escape(url)} failed: .*Permission denied"):
        materialise_batch(
            tmp_path / "project", small_data, dvc_remote=url, selection=["raw_interactions"], instance=instance
        )
    assert instance.get_latest_materialization_event(dg.AssetKey("raw_interactions")) is None
    assert not any(remote.iterdir()), "the read-only remote was written"


def test_a_release_on_the_ssh_remote_is_fetched_with_dvc_get(
    ssh_home, ml100k_small_raw, register_fitted, tmp_path, monkeypatch
):
    for role in ("AUTHOR", "COMMITTER"):  # release commits; machines without a global git identity too
        monkeypatch.setenv(f"GIT_{role}_NAME", "recpipe tests")
        monkeypatch.setenv(f"GIT_{role}_EMAIL", "tests@recpipe.invalid")
    split = leave_one_out_split(Interactions.from_frame(ml100k_small_raw))
    entry = register_fitted(tmp_path / "registry", {"most_popular_model": MostPopular().fit(split)}, split.train, 10)
    project = tmp_path / "project"
    _git("-c", "init.defaultBranch=main", "init", "-q", str(project), cwd=tmp_path)
    _dvc("init", "-q", cwd=project)
    _git("add", ".dvc", ".dvcignore", cwd=project)
    _git("commit", "-q", "-m", "dvc init", cwd=project)
    champion = {"model": "most_popular_model", "version": entry["most_popular_model"].name, "reason": "only one"}
    url = ssh_home.url(tmp_path / "release-remote")
    released = release(project, [entry["most_popular_model"]], champion, None, url, None)
    assert released.committed and released.pushed_files > 0
    shutil.rmtree(project / ".dvc" / "cache")  # the consumer can only read the SSH remote

    consumer = tmp_path / "service"
    consumer.mkdir()
    _dvc(
        "get", f"file://{project}", "release/registry/most_popular_model", "--rev", "HEAD", "-o", "model", cwd=consumer
    )
    fetched = consumer / "model" / entry["most_popular_model"].name
    assert file_version(fetched / MODEL_FILE) == fetched.name
