"""DVC versioning of asset outputs: ``dvc add``, push to the configured remote, md5 back.

The md5 DVC records for an output is that asset's Dagster data version, so any
result in the UI traces back to the exact files in the DVC cache and remote.
"""

from __future__ import annotations

import fcntl
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import yaml
from dvc.repo import Repo

REMOTE_NAME = "recpipe"


@dataclass(frozen=True)
class TrackedOutput:
    path: Path
    dvc_file: Path
    md5: str
    size: int
    files: int
    pushed: bool


@contextmanager
def _repo_lock(root: Path) -> Iterator[None]:
    """Serialise DVC calls from parallel Dagster steps (DVC's own lock fails fast)."""
    lock_path = root / ".dvc" / "tmp" / "recpipe.lock"
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_repo(root: Path, remote_url: str | None) -> None:
    """DVC repo at ``root`` (initialised if missing) with ``remote_url`` as default remote.

    The remote goes to ``.dvc/config.local``, so each machine keeps its own and git
    never sees it.
    """
    root = Path(root)
    if not (root / ".dvc").exists():
        Repo.init(str(root), no_scm=not (root / ".git").exists())
    if remote_url is None:
        return
    with _repo_lock(root):
        url = remote_url if "://" in remote_url else str(Path(remote_url).expanduser().resolve())
        if "://" not in url:
            Path(url).mkdir(parents=True, exist_ok=True)
        with Repo(str(root)) as repo:
            with repo.config.edit("local") as config:
                config["remote"][REMOTE_NAME] = {"url": url}
                config["core"]["remote"] = REMOTE_NAME


def track(root: Path, output: Path, push: bool = True) -> TrackedOutput:
    """``dvc add`` one output folder or file (and push it when a remote is set)."""
    root = Path(root).resolve()
    output = Path(output).resolve()
    if not output.is_relative_to(root):
        raise ValueError(f"{output} is outside the DVC repository {root}")
    dvc_file = output.with_name(output.name + ".dvc")
    with _repo_lock(root), Repo(str(root)) as repo:
        repo.add([str(output)])
        pushed = bool(push and repo.config["core"].get("remote"))
        if pushed:
            repo.push(targets=[str(dvc_file)])
    out = yaml.safe_load(dvc_file.read_text())["outs"][0]
    return TrackedOutput(
        path=output,
        dvc_file=dvc_file,
        md5=out["md5"],
        size=int(out.get("size", 0)),
        files=int(out.get("nfiles", 1)),
        pushed=pushed,
    )


def recorded_md5(output: Path) -> str:
    """The md5 DVC last recorded for ``output`` (its ``.dvc`` file), without running DVC."""
    dvc_file = Path(output).with_name(Path(output).name + ".dvc")
    if not dvc_file.exists():
        raise FileNotFoundError(f"{dvc_file} is missing: {output} was never versioned")
    return yaml.safe_load(dvc_file.read_text())["outs"][0]["md5"]
