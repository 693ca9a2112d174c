"""DVC versioning of asset outputs: ``dvc add``, push to the configured remote, md5 back.

Run outputs live in ``artifacts/``, its own DVC repository without git (``dvc init --no-scm``):
the project's git ignores the whole folder, so a run never changes a tracked file, while
every output is still in the DVC cache and pushed to the remote under its md5. What goes
into git is a deliberate release (``orchestration/release.py``).

Without a remote (``remote_url=None``) every version is still ``dvc add``-ed into the local
cache and nothing is pushed; a remote that cannot be created, reached or written fails with
``RemoteError`` naming the remote, its URL and the root cause (DVC itself says only how many files failed).
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import re
import shutil
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import yaml
from dvc.exceptions import CheckoutError
from dvc.repo import Repo

REMOTE_NAME = "recpipe"


class RemoteError(RuntimeError):
    """The DVC remote cannot be created, reached or written."""


@dataclass(frozen=True)
class TrackedOutput:
    path: Path
    dvc_file: Path
    md5: str
    size: int
    files: int
    pushed: bool


@contextmanager
def file_lock(lock_path: Path) -> Iterator[None]:
    """An exclusive lock on ``lock_path`` across threads and processes (released when the block ends)."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _repo_lock(root: Path):
    """Serialise DVC calls from parallel Dagster steps and runs (DVC's own lock fails fast)."""
    return file_lock(root / ".dvc" / "tmp" / "recpipe.lock")


def remote_location(remote_url: str) -> str:
    """A URL as given; a local folder as an absolute path (DVC resolves relative ones against .dvc/)."""
    return remote_url if "://" in remote_url else str(Path(remote_url).expanduser().resolve())


def ensure_repo(root: Path, remote_url: str | None, *, scm: bool = True) -> None:
    """DVC repo at ``root`` (initialised if missing) with ``remote_url`` as default remote.

    ``scm=False`` makes a repository without git (the run outputs' ``artifacts/``). The remote
    goes to ``.dvc/config.local``, so each machine keeps its own and git never sees it; None
    removes the one an earlier run set there, so nothing is pushed to or pulled from it.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    with file_lock(root / ".recpipe-init.lock"):  # two runs starting at once on a fresh project
        if not (root / ".dvc").exists():
            Repo.init(str(root), no_scm=not (scm and (root / ".git").exists()))
            if not scm:  # immutable version folders: link them to the cache instead of holding two copies
                with Repo(str(root)) as repo, repo.config.edit("repo") as config:
                    config["cache"]["type"] = "reflink,hardlink,copy"
    with _repo_lock(root), Repo(str(root)) as repo:
        if remote_url is None:  # no remote: one an earlier run configured here must not be pulled from either
            if REMOTE_NAME in repo.config["remote"] or repo.config["core"].get("remote") == REMOTE_NAME:
                with repo.config.edit("local") as config:
                    config["remote"].pop(REMOTE_NAME, None)
                    if config["core"].get("remote") == REMOTE_NAME:
                        del config["core"]["remote"]
            return
        url = remote_location(remote_url)
        if "://" not in url:
            try:
                Path(url).mkdir(parents=True, exist_ok=True)
            except OSError as error:
                raise RemoteError(
                    f"DVC remote {REMOTE_NAME!r} at {url} cannot be used: its folder cannot be created "
                    f"({type(error).__name__}: {error})"
                ) from error
        with repo.config.edit("local") as config:
            config["remote"][REMOTE_NAME] = {"url": url}
            config["core"]["remote"] = REMOTE_NAME


class _TransferFailures(logging.Handler):
    """DVC logs why each file failed to transfer and raises only "N files failed to upload": keep the why."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.causes: list[BaseException] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info and record.exc_info[1] is not None:
            self.causes.append(record.exc_info[1])


def _root_cause(error: BaseException) -> BaseException:
    """The innermost exception a chain of ``raise ... from`` and ``except`` wrappers started from."""
    seen = {id(error)}
    while (inner := error.__cause__ or error.__context__) is not None and id(inner) not in seen:
        seen.add(id(inner))
        error = inner
    return error


def _probe_failure(repo: Repo, name: str) -> BaseException | None:
    """Why the remote's root cannot be read (None if it can): DVC reports an unreachable remote's
    files as merely missing."""
    try:
        remote = repo.cloud.get_remote(name)
        remote.fs.info(remote.path)
    except Exception as error:  # the probe's failure is the report: it goes into the RemoteError
        return _root_cause(error)
    return None


def _described(error: BaseException) -> str:
    return f"{type(error).__name__}: " + re.sub(r"\x1b\[[0-9;]*m", "", str(error)).strip()


def _with_remote(repo: Repo, action: str, transfer: Callable[[], object]) -> None:
    """Run a push or pull; a failure names the remote, its URL and the first cause DVC met."""
    name = repo.config["core"]["remote"]
    url = repo.config["remote"][name]["url"]
    failures = _TransferFailures()
    loggers = [logging.getLogger(package) for package in ("dvc", "dvc_data", "dvc_objects")]
    for logger in loggers:
        logger.addHandler(failures)
    try:
        transfer()
    except Exception as error:
        cause = _root_cause(failures.causes[0]) if failures.causes else _probe_failure(repo, name)
        reason = _described(error) if cause is None else f"{_described(cause)} ({_described(error)})"
        raise RemoteError(f"{action} DVC remote {name!r} at {url} failed: {reason}") from error
    finally:
        for logger in loggers:
            logger.removeHandler(failures)


def _read_pointer(dvc_file: Path) -> dict:
    return yaml.safe_load(dvc_file.read_text())["outs"][0]


def _tracked(folder: Path, dvc_file: Path, pushed: bool) -> TrackedOutput:
    out = _read_pointer(dvc_file)
    return TrackedOutput(
        path=folder,
        dvc_file=dvc_file,
        md5=out["md5"],
        size=int(out.get("size", 0)),
        files=int(out.get("nfiles", 1)),
        pushed=pushed,
    )


def publish(root: Path, staged: Path, parent: Path, *, name: str | None = None, push: bool = True) -> TrackedOutput:
    """``dvc add`` a staged folder and move it to ``parent/<name or md5>`` with its pointer, atomically.

    A version folder that already exists holds the same content (it is named by it), so the staged
    copy is dropped and the existing one is reported: a version folder is never rewritten.
    """
    root, staged, parent = Path(root).resolve(), Path(staged).resolve(), Path(parent).resolve()
    staged_pointer = staged.with_name(staged.name + ".dvc")
    with _repo_lock(root), Repo(str(root)) as repo:
        repo.add([str(staged)])
        md5 = _read_pointer(staged_pointer)["md5"]
        folder = parent / (name or md5.removesuffix(".dir"))
        pointer = folder.with_name(folder.name + ".dvc")
        parent.mkdir(parents=True, exist_ok=True)
        try:
            os.rename(staged, folder)
        except OSError as error:
            if error.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                raise
            shutil.rmtree(staged)
            staged_pointer.unlink()
        else:
            document = yaml.safe_load(staged_pointer.read_text())
            document["outs"][0]["path"] = folder.name
            partial = pointer.with_name(f".{pointer.name}.partial")
            partial.write_text(yaml.safe_dump(document, sort_keys=False))
            partial.replace(pointer)
            staged_pointer.unlink()
        pushed = bool(push and repo.config["core"].get("remote"))
        if pushed:
            _with_remote(repo, f"pushing {pointer.name} to", lambda: repo.push(targets=[str(pointer)]))
    return _tracked(folder, pointer, pushed)


def fetch(root: Path, folder: Path) -> None:
    """Bring a version folder back from the DVC cache or remote (a checkout that lacks it)."""
    pointer = Path(folder).with_name(Path(folder).name + ".dvc")
    if not pointer.exists():
        raise FileNotFoundError(f"{folder} is missing and no DVC pointer {pointer} names it")
    with _repo_lock(Path(root)), Repo(str(root)) as repo:
        if repo.config["core"].get("remote"):
            _with_remote(repo, f"pulling {pointer.name} from", lambda: repo.pull(targets=[str(pointer)]))
            return
        try:
            repo.checkout(targets=[str(pointer)])
        except CheckoutError as error:
            raise FileNotFoundError(
                f"{folder} is missing, is not in the local DVC cache {Path(root) / '.dvc' / 'cache'}, and no DVC "
                "remote is configured (RECPIPE_DVC_REMOTE / store.dvc_remote is empty) to pull it from: set the remote it was pushed "
                "to, or materialise it again"
            ) from error


def track(root: Path, output: Path, push: bool = True) -> TrackedOutput:
    """``dvc add`` one output folder or file in place (and push it when a remote is set)."""
    root = Path(root).resolve()
    output = Path(output).resolve()
    if not output.is_relative_to(root):
        raise ValueError(f"{output} is outside the DVC repository {root}")
    dvc_file = output.with_name(output.name + ".dvc")
    with _repo_lock(root), Repo(str(root)) as repo:
        repo.add([str(output)])
        pushed = bool(push and repo.config["core"].get("remote"))
        if pushed:
            _with_remote(repo, f"pushing {dvc_file.name} to", lambda: repo.push(targets=[str(dvc_file)]))
    return _tracked(output, dvc_file, pushed)
