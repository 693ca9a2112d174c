"""raw_interactions on a machine without the dataset: obtained, recorded, versioned like the shared copy."""

import subprocess
from pathlib import Path

import dagster as dg
import pytest

from orchestration.assets.data import raw_interactions
from orchestration.resources import ArtifactStore, DatasetResource
from recmodels.data.bootstrap import MOVIELENS_100K


def _materialise(root: Path, data_dir: Path, dataset: str = "ml-100k", **options) -> dg.ExecuteInProcessResult:
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    return dg.materialize(
        [raw_interactions],
        resources={
            "dataset": DatasetResource(data_dir=str(data_dir), dataset=dataset),
            "store": ArtifactStore(project_root=str(root), dvc_remote=None),
        },
        **options,
    )


@pytest.mark.needs_registry
def test_a_fresh_clone_obtains_ml100k_into_its_snapshot_and_versions_it_like_the_shared_copy(
    tmp_path, monkeypatch, registry_wheel, data_dir
):
    # pip runs for real, offline: the session's one registry download is its only index.
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(registry_wheel.parent))
    fresh = tmp_path / "fresh"
    instance = dg.DagsterInstance.ephemeral()
    # the Makefile's default without ../shared: RECPIPE_DATA_DIR=<repo>/data/raw, the snapshot folder itself
    result = _materialise(fresh, fresh / "data" / "raw", instance=instance)
    [materialisation] = [event.materialization for event in result.get_asset_materialization_events()]
    metadata = materialisation.metadata
    obtained = metadata["obtained_from"].value
    assert obtained["wheel"] == MOVIELENS_100K.wheel and obtained["requirement"] == "recbole==1.2.1"
    assert obtained["origin"] == "the package registry, by pip download"
    assert obtained["files_sha256"] == MOVIELENS_100K.sha256
    assert metadata["source"].value == str(fresh / "data" / "raw" / "ml-100k")
    assert metadata["snapshot"].value == "data/raw/ml-100k"
    assert metadata["rows"].value == 100_000 and metadata["files"].value == 3
    assert sorted(path.name for path in (fresh / "data" / "raw").iterdir()) == ["ml-100k"]
    messages = [entry.user_message for entry in instance.all_logs(result.run_id)]
    assert any(message.startswith("ml-100k: obtained from recbole-1.2.1-py3-none-any.whl") for message in messages)

    # a machine with the dataset beside it records the same DVC version, so data.dvc stays as committed
    beside = _materialise(tmp_path / "beside", data_dir)
    [shared] = [event.materialization for event in beside.get_asset_materialization_events()]
    assert "obtained_from" not in shared.metadata
    assert shared.metadata["dvc_md5"].value == metadata["dvc_md5"].value


def test_a_missing_dataset_the_bootstrap_does_not_know_names_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError) as raised:
        _materialise(tmp_path / "project", tmp_path / "nowhere", dataset="shop/orders.csv")
    message = str(raised.value)
    assert f"dataset {tmp_path / 'nowhere' / 'shop' / 'orders.csv'} not found" in message
    assert "Set RECPIPE_DATA_DIR to the folder holding it and RECPIPE_DATASET to its path" in message
    assert "obtained automatically when missing: ['ml-100k']" in message
    assert not (tmp_path / "nowhere").exists()
