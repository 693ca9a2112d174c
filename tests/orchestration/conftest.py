"""What the in-process pipeline tests share: the batch graph materialised in a throwaway repository."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Callable

import dagster as dg
import pytest

from orchestration import definitions
from orchestration.io import VersionedFolderIOManager
from orchestration.resources import (
    PROJECT_ROOT,
    ArtifactStore,
    ComputeResource,
    DatasetResource,
    TextEncoderResource,
)


@pytest.fixture(scope="session")
def earliest_ml100k(tmp_path_factory, data_dir: Path) -> Callable[..., Path]:
    """``earliest_ml100k(name, share, extra_rows=())``: the earliest ``share`` of ml-100k by time as a
    RecBole folder ``name`` (with its item file), ``extra_rows`` appended as they are."""

    def write(name: str, share: float, extra_rows: tuple[str, ...] = ()) -> Path:
        folder = tmp_path_factory.mktemp("data") / name
        folder.mkdir()
        header, *lines = (data_dir / "ml-100k" / "ml-100k.inter").read_text().splitlines()
        rows = sorted(lines, key=lambda line: int(float(line.split("\t")[3])))[: int(len(lines) * share)]
        (folder / f"{name}.inter").write_text("\n".join([header, *rows, *extra_rows]) + "\n")
        (folder / f"{name}.item").write_text((data_dir / "ml-100k" / "ml-100k.item").read_text())
        return folder

    return write


def _project_repository(root: Path) -> Path:
    """``root`` made a git repository holding the project's .gitignore, as a clone is (unless it is one)."""
    if not (root / ".git").exists():
        subprocess.run(["git", "init", "-q", str(root)], check=True)
        (root / ".gitignore").write_text((PROJECT_ROOT / ".gitignore").read_text())
        git = ["git", "-C", str(root), "-c", "user.name=recpipe tests", "-c", "user.email=tests@recpipe.invalid"]
        subprocess.run([*git, "add", ".gitignore"], check=True)
        subprocess.run([*git, "commit", "-q", "-m", "project skeleton"], check=True)
    return root


@pytest.fixture(scope="session")
def project_repository() -> Callable[[Path], Path]:
    """``project_repository(root)``: ``root`` made a git repository as a clone of the project is."""
    return _project_repository


@pytest.fixture(scope="session")
def materialise_batch() -> Callable[..., dg.ExecuteInProcessResult]:
    """``materialise_batch(root, dataset, dvc_remote=None, **options)``: the batch assets and checks in
    process, ``root`` made a git repository (the project's .gitignore committed) if it is not one, holding the
    artifacts; ``options`` go to ``dg.materialize`` (selection, run_config, instance)."""

    def run(root: Path, dataset: DatasetResource, dvc_remote: str | None = None, **options):
        _project_repository(root)
        store = ArtifactStore(project_root=str(root), dvc_remote=dvc_remote)
        resources = {
            "dataset": dataset,
            "store": store,
            "compute": ComputeResource(),
            "text_encoder": TextEncoderResource(cache_dir=str(root.parent / "title-embeddings")),
            "io_manager": VersionedFolderIOManager(store=store),
        }
        options.setdefault("raise_on_error", True)
        return dg.materialize([*definitions.batch_assets, *definitions.batch_checks], resources=resources, **options)

    return run


@pytest.fixture(params=["sqlite", "postgres"])
def project_instance(request, tmp_path, monkeypatch) -> dg.DagsterInstance:
    """A Dagster instance as ``make run`` builds it (``orchestration.instance`` writes ``$DAGSTER_HOME/
    dagster.yaml``), once per storage profile: SQLite in a throwaway home, and PostgreSQL on a real server
    (``postgres_server``), a fresh database, reached through the ``DAGSTER_PG_*`` variables the file names."""
    from orchestration.instance import write_instance

    home = tmp_path / "dagster_home"
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    if request.param == "postgres":
        server = request.getfixturevalue("postgres_server")
        for name, value in {
            "DAGSTER_PG_HOST": server.host,
            "DAGSTER_PG_PORT": str(server.port),
            "DAGSTER_PG_USERNAME": server.user,
            "DAGSTER_PG_PASSWORD": server.password,
            "DAGSTER_PG_DB": server.create_database(),
        }.items():
            monkeypatch.setenv(name, value)
    write_instance(home, request.param)
    with dg.DagsterInstance.from_config(str(home)) as instance:
        yield instance
