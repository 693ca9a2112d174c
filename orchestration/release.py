"""A deliberate release: chosen registry entries and their raw data, pushed to a DVC remote and committed.

Runs never touch git: every run output lives in the git-ignored ``artifacts/`` DVC repo. A release
copies the registry entries a run produced (and the raw snapshot it started from) into the project's
git-tracked DVC repo, ``release/registry/`` and ``data/``, pushes them to the ``release`` remote named
in the committed ``.dvc/config`` and commits exactly their pointers, so anyone with a clone can
``dvc pull`` them and anyone with the git URL can ``dvc get`` them.

``python -m orchestration.release [--remote URL] [--message M]`` releases what the Dagster instance
(``DAGSTER_HOME``) last materialised.
"""

from __future__ import annotations

import argparse
import filecmp
import json
import os
import shutil
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import yaml
from dvc.repo import Repo

from orchestration.versioning import file_lock
from recmodels.registry import CHAMPION_FILE, MANIFEST_FILE, MODEL_FILE, Manifest, file_version

PROJECT_ROOT = Path(__file__).resolve().parent.parent
REMOTE_NAME = "release"
REGISTRY = Path("release") / "registry"
DATA = Path("data")
RAW = DATA / "raw"
CHAMPION_KEY = dg.AssetKey("registry_champion")
REGISTRY_PREFIX = "registry"
RAW_KEY = dg.AssetKey("raw_interactions")


class ReleaseError(RuntimeError):
    """A release that would publish something wrong or leave git in a state nobody asked for."""


@dataclass(frozen=True)
class Release:
    commit: str
    committed: bool  # False when this exact release was already committed
    entries: list[tuple[str, str]]  # (model, version)
    champion: dict[str, str]
    registry_md5: str
    raw_md5: str | None
    remote_url: str
    pushed_files: int
    message: str


@dataclass(frozen=True)
class ReleaseInputs:
    """What a Dagster instance last materialised: the release's arguments, and the run each came from."""

    entries: list[Path]
    champion: dict[str, str]
    raw_snapshot: Path | None
    runs: dict[str, str]  # asset key (user string) -> run id


def release(
    project_root: Path,
    registry_entries: list[Path],
    champion: dict,
    raw_snapshot: Path | None,
    remote_url: str,
    message: str | None = None,
) -> Release:
    """Publish ``registry_entries`` (``<model>/<version>/`` folders) as ``release/registry/`` with
    ``champion`` and, when given, ``raw_snapshot``'s contents as ``data/raw/``; push and commit the pointers.

    Everything is checked before anything is written, so a refused release changes nothing.
    """
    root = Path(project_root).resolve()
    if not remote_url or not remote_url.strip():
        raise ReleaseError(
            "no release remote: pass remote_url (CLI --remote, env RECPIPE_RELEASE_REMOTE), any DVC remote URL "
            "that the consumers can read (s3://..., ssh://..., or a shared folder)"
        )
    url = _remote_url(remote_url.strip())
    _check_repositories(root)
    entries = [_checked_entry(Path(entry)) for entry in registry_entries]
    if not entries:
        raise ReleaseError("nothing to release: no registry entries given")
    names = [f"{model}/{version}" for model, version, _ in entries]
    if len(set(names)) != len(names):
        raise ReleaseError(f"an entry is given twice: {names}")
    pointer = _checked_champion(champion, {(model, version) for model, version, _ in entries})
    raw_items = _checked_raw_snapshot(root, Path(raw_snapshot)) if raw_snapshot is not None else None
    _check_nothing_unrelated_staged(root)

    message = message or _default_message(pointer, entries, raw_items)
    with _release_lock(root):
        if "://" not in url:
            Path(url).mkdir(parents=True, exist_ok=True)
        _replace_registry(root, entries, pointer)
        if raw_items is not None:
            for item in raw_items:
                _place_raw(item, root / RAW / item.name)
        gitignores_before = {path: _read(root / path) for path in (Path(".gitignore"), REGISTRY.parent / ".gitignore")}
        with Repo(str(root)) as repo:
            with repo.config.edit("repo") as config:
                config["remote"][REMOTE_NAME] = {"url": url}
                config["core"]["remote"] = REMOTE_NAME
        with Repo(str(root)) as repo:
            outputs = [root / REGISTRY] + ([root / DATA] if raw_items is not None else [])
            repo.scm_context.quiet = True  # the release stages and commits the pointers itself
            repo.add([str(output) for output in outputs])
            pointers = [output.with_name(output.name + ".dvc") for output in outputs]
            pushed = repo.push(targets=[str(path) for path in pointers], remote=REMOTE_NAME)
        changed_gitignores = [path for path, text in gitignores_before.items() if _read(root / path) != text]
        paths = [path.relative_to(root) for path in pointers] + [Path(".dvc") / "config"] + changed_gitignores
        committed = _commit(root, paths, message)
    return Release(
        commit=_git(root, "rev-parse", "HEAD"),
        committed=committed,
        entries=[(model, version) for model, version, _ in entries],
        champion=pointer,
        registry_md5=_recorded_md5(root / f"{REGISTRY}.dvc"),
        raw_md5=_recorded_md5(root / "data.dvc") if raw_items is not None else None,
        remote_url=url,
        pushed_files=pushed,
        message=message,
    )


def latest_release_inputs(instance: dg.DagsterInstance, project_root: Path) -> ReleaseInputs:
    """The latest ``registry_champion``, every ``registry/<model>`` entry and ``raw_interactions`` in ``instance``.

    Each materialisation names its output by the metadata ``path`` (relative to the project root).
    """
    root = Path(project_root).resolve()
    champion_path, champion_run = _latest_path(instance, CHAMPION_KEY, root)
    if champion_path is None:
        raise ReleaseError(
            f"the Dagster instance at {instance.root_directory} holds no materialisation of "
            f"{CHAMPION_KEY.to_user_string()}: materialise the registry first (make run)"
        )
    champion = json.loads((champion_path / CHAMPION_FILE).read_text())
    runs = {CHAMPION_KEY.to_user_string(): champion_run}
    entries = []
    for key in instance.get_asset_keys(prefix=[REGISTRY_PREFIX]):
        if len(key.path) != 2:
            continue
        path, run_id = _latest_path(instance, key, root)
        if path is not None:
            entries.append(path)
            runs[key.to_user_string()] = run_id
    raw_snapshot, raw_run = _latest_path(instance, RAW_KEY, root)
    if raw_snapshot is not None:
        runs[RAW_KEY.to_user_string()] = raw_run
    return ReleaseInputs(entries=sorted(entries), champion=champion, raw_snapshot=raw_snapshot, runs=runs)


def _latest_path(instance: dg.DagsterInstance, key: dg.AssetKey, root: Path) -> tuple[Path | None, str | None]:
    event = instance.get_latest_materialization_event(key)
    if event is None:
        return None, None
    metadata = event.asset_materialization.metadata
    if "path" not in metadata:
        raise ReleaseError(f"{key.to_user_string()} (run {event.run_id}) has no 'path' in its metadata")
    return root / str(metadata["path"].value), event.run_id


def _remote_url(remote_url: str) -> str:
    """A URL as DVC takes it; a local folder made absolute, so the committed config names it wherever DVC runs."""
    return remote_url if "://" in remote_url else str(Path(remote_url).expanduser().resolve())


def _check_repositories(root: Path) -> None:
    if not (root / ".dvc").is_dir():
        raise ReleaseError(f"{root} is not a DVC repository (no .dvc/): run `dvc init` there")
    toplevel = subprocess.run(["git", "-C", str(root), "rev-parse", "--show-toplevel"], capture_output=True, text=True)
    if toplevel.returncode != 0 or Path(toplevel.stdout.strip()).resolve() != root:
        raise ReleaseError(f"{root} is not the top of a git work tree: the release pointers must be committed there")


def _checked_entry(entry: Path) -> tuple[str, str, Path]:
    """(model, version, folder) of a registry entry whose file really is that version."""
    for name in (MODEL_FILE, MANIFEST_FILE):
        if not (entry / name).is_file():
            raise ReleaseError(f"{entry} is not a registry entry: {name} is missing")
    model, version = entry.parent.name, entry.name
    actual = file_version(entry / MODEL_FILE)
    if actual != version:
        raise ReleaseError(
            f"{entry / MODEL_FILE} has SHA-256 prefix {actual}, not its folder name {version}: "
            "the file was changed after it was registered"
        )
    manifest = Manifest.read(entry)
    if (manifest.model, manifest.version) != (model, version):
        raise ReleaseError(f"{entry / MANIFEST_FILE} names {manifest.model}/{manifest.version}, not {model}/{version}")
    return model, version, entry.resolve()


def _checked_champion(champion: dict, released: set[tuple[str, str]]) -> dict[str, str]:
    missing = {"model", "version", "reason"} - set(champion)
    if missing:
        raise ReleaseError(f"champion {champion} lacks {sorted(missing)}")
    if (champion["model"], champion["version"]) not in released:
        raise ReleaseError(f"champion {champion['model']}/{champion['version']} is not among the released entries")
    return {"model": champion["model"], "version": champion["version"], "reason": champion["reason"]}


def _checked_raw_snapshot(root: Path, snapshot: Path) -> list[Path]:
    """The datasets in ``snapshot``; ``data/`` must hold nothing but ``raw/``, or ``data.dvc`` would version it too."""
    if not snapshot.is_dir():
        raise ReleaseError(f"raw snapshot {snapshot} is not a folder")
    items = sorted(item for item in snapshot.iterdir() if not item.name.startswith("."))
    if not items:
        raise ReleaseError(f"raw snapshot {snapshot} is empty")
    data = root / DATA
    others = sorted(item.name for item in data.iterdir() if item.name != RAW.name) if data.is_dir() else []
    if others:
        raise ReleaseError(
            f"{data} holds {others} besides raw/: data.dvc versions all of data/, so the release would publish "
            "them as raw data; move them out of data/ first"
        )
    return items


def _check_nothing_unrelated_staged(root: Path) -> None:
    staged = _git(root, "diff", "--cached", "--name-only").splitlines()
    pointers = {f"{REGISTRY}.dvc", str(REGISTRY.parent / ".gitignore"), f"{DATA}.dvc", ".dvc/config"}
    unrelated = sorted(path for path in staged if path not in pointers)
    if unrelated:
        raise ReleaseError(f"git has staged changes the release would commit with it: {unrelated}; commit or unstage")


def _default_message(champion: dict[str, str], entries: list[tuple[str, str, Path]], raw: list[Path] | None) -> str:
    models = ", ".join(f"{model}/{version}" for model, version, _ in entries)
    data = f"; raw data {', '.join(item.name for item in raw)}" if raw is not None else ""
    return (
        f"release: {champion['model']}/{champion['version']} champion ({champion['reason']}); registry {models}{data}"
    )


def _release_lock(root: Path):
    """One release at a time per project: the folder swap and the DVC calls must not interleave."""
    return file_lock(root / ".dvc" / "tmp" / "release.lock")


def _replace_registry(root: Path, entries: list[tuple[str, str, Path]], champion: dict[str, str]) -> None:
    """Build the new ``release/registry`` beside the old one, then swap the two folders."""
    target = root / REGISTRY
    target.parent.mkdir(parents=True, exist_ok=True)
    building = target.with_name(f".registry-next-{uuid.uuid4().hex}")
    try:
        for model, version, source in entries:
            copy = building / model / version
            shutil.copytree(source, copy)
            if file_version(copy / MODEL_FILE) != version:
                raise ReleaseError(f"{source / MODEL_FILE} changed while it was copied into the release")
        temporary = building / f".{CHAMPION_FILE}.tmp"
        temporary.write_text(json.dumps(champion, indent=2))
        os.replace(temporary, building / CHAMPION_FILE)
        _swap_in(building, target)
    finally:
        if building.exists():
            shutil.rmtree(building)


def _place_raw(source: Path, target: Path) -> None:
    """``source`` at ``target`` unless it is already there byte for byte (copied beside it, then swapped)."""
    if _same_content(source, target):
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    building = target.with_name(f".{target.name}-next-{uuid.uuid4().hex}")
    try:
        if source.is_dir():
            shutil.copytree(source, building)
        else:
            shutil.copyfile(source, building)
        _swap_in(building, target)
    finally:
        if building.is_dir():
            shutil.rmtree(building)
        elif building.exists():
            building.unlink()


def _swap_in(new: Path, target: Path) -> None:
    """Move ``new`` to ``target``; an old ``target`` is first renamed aside, then deleted."""
    if not target.exists():
        os.rename(new, target)
        return
    old = target.with_name(f".{target.name}-old-{uuid.uuid4().hex}")
    os.rename(target, old)
    os.rename(new, target)
    if old.is_dir():
        shutil.rmtree(old)
    else:
        old.unlink()


def _same_content(source: Path, target: Path) -> bool:
    if source.is_file() or target.is_file():
        return source.is_file() and target.is_file() and filecmp.cmp(source, target, shallow=False)
    if not target.is_dir():
        return False
    source_files = sorted(path.relative_to(source) for path in source.rglob("*") if path.is_file())
    target_files = sorted(path.relative_to(target) for path in target.rglob("*") if path.is_file())
    return source_files == target_files and all(
        filecmp.cmp(source / path, target / path, shallow=False) for path in source_files
    )


def _commit(root: Path, paths: list[Path], message: str) -> bool:
    """Commit exactly ``paths``; False when they already match HEAD (the same release again)."""
    names = [str(path) for path in paths]
    _git(root, "add", "--", *names)
    if subprocess.run(["git", "-C", str(root), "diff", "--cached", "--quiet", "--", *names]).returncode == 0:
        return False
    _git(root, "commit", "-q", "-m", message, "--", *names)
    return True


def _git(root: Path, *args: str) -> str:
    result = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True)
    if result.returncode != 0:
        raise ReleaseError(f"git {' '.join(args)} failed in {root}: {result.stderr.strip()}")
    return result.stdout.strip()


def _read(path: Path) -> str | None:
    return path.read_text() if path.exists() else None


def _recorded_md5(dvc_file: Path) -> str:
    return yaml.safe_load(dvc_file.read_text())["outs"][0]["md5"]


def consumer_commands(project_root: Path, done: Release) -> list[str]:
    """The commands a downstream service runs to fetch this release (the git URL of ``origin`` when set)."""
    root = Path(project_root).resolve()
    origin = subprocess.run(["git", "-C", str(root), "remote", "get-url", "origin"], capture_output=True, text=True)
    repo_url = origin.stdout.strip() if origin.returncode == 0 else str(root)
    model = done.champion["model"]
    return [
        f"dvc get {repo_url} {REGISTRY}/{model} --rev {done.commit} -o {model}",
        f"dvc get {repo_url} {REGISTRY} --rev {done.commit} -o registry",
        f"git clone {repo_url} recpipe && cd recpipe && git checkout {done.commit} && dvc pull {REGISTRY}.dvc",
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--remote",
        default=os.environ.get("RECPIPE_RELEASE_REMOTE", ""),
        help="DVC remote URL the release is pushed to (env RECPIPE_RELEASE_REMOTE)",
    )
    parser.add_argument("--message", default=None, help="commit message (default: names the champion and entries)")
    parser.add_argument(
        "--project-root", type=Path, default=PROJECT_ROOT, help="the git + DVC repository to release in"
    )
    args = parser.parse_args(argv)
    try:
        with dg.DagsterInstance.get() as instance:
            inputs = latest_release_inputs(instance, args.project_root)
        done = release(
            args.project_root, inputs.entries, inputs.champion, inputs.raw_snapshot, args.remote, args.message
        )
    except ReleaseError as error:
        print(f"release refused: {error}", file=sys.stderr)
        return 1
    for model, version in done.entries:
        role = (
            f"  champion: {done.champion['reason']}"
            if (model, version) == (done.champion["model"], done.champion["version"])
            else ""
        )
        print(f"released {model}/{version}{role}")
    for key, run_id in sorted(inputs.runs.items()):
        print(f"  {key}: run {run_id}")
    print(f"release/registry md5 {done.registry_md5}")
    print(
        f"data md5 {done.raw_md5}" if done.raw_md5 else "raw data: not released (no raw_interactions materialisation)"
    )
    print(f"pushed {done.pushed_files} files to DVC remote '{REMOTE_NAME}' = {done.remote_url}")
    state = "committed" if done.committed else "already committed (nothing changed)"
    print(f"{state} {done.commit[:12]}: {done.message}")
    print("Consumers (after `git push`; tag the commit for a stable name):")
    for command in consumer_commands(args.project_root, done):
        print(f"  {command}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
