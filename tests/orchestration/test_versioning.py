"""DVC round trip in a throwaway repository: track, push, lose the files, pull them back."""

import shutil
import subprocess
from pathlib import Path

import yaml
from dvc.repo import Repo

from orchestration import versioning


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
