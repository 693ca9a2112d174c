"""What the in-process pipeline tests share: the batch graph materialised in a throwaway repository."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Callable

import dagster as dg
import pytest

from orchestration import definitions
from orchestration.resources import ArtifactStore, ComputeResource, DatasetResource


@pytest.fixture(scope="session")
def materialise_batch() -> Callable[..., dg.ExecuteInProcessResult]:
    """``materialise_batch(root, dataset, dvc_remote=None, **options)``: the batch assets and checks in
    process, ``root`` made a fresh git repository holding the artifacts; ``options`` go to
    ``dg.materialize`` (selection, run_config)."""

    def run(root: Path, dataset: DatasetResource, dvc_remote: str | None = None, **options):
        subprocess.run(["git", "init", "-q", str(root)], check=True)
        resources = {
            "dataset": dataset,
            "store": ArtifactStore(project_root=str(root), dvc_remote=dvc_remote),
            "compute": ComputeResource(),
        }
        options.setdefault("raise_on_error", True)
        return dg.materialize([*definitions.batch_assets, *definitions.batch_checks], resources=resources, **options)

    return run
