"""The file-system registry: content-addressed versions, manifests, the champion pointer."""

import json

import pytest

from recmodels.registry import (
    CHAMPION_FILE,
    Manifest,
    file_version,
    popularity_ranking,
    register,
    set_champion,
    versions,
)

FIELDS = dict(
    family="ease",
    config={"l2": 500.0},
    training_data_version="abc.dir",
    metrics={"ndcg@10": 0.2},
    item_ids=["", "10", "20"],
    max_history_length=None,
    opset=18,
    k=2,
    inputs={"history": {"dtype": "int64"}},
    outputs={},
    parity={"passed": True},
)


def test_the_same_bytes_get_the_same_version_and_keep_their_first_manifest(tmp_path):
    onnx = tmp_path / "a.onnx"
    onnx.write_bytes(b"model bytes")
    first = register(tmp_path / "registry", onnx, model="ease_model", **FIELDS)
    again = register(tmp_path / "registry", onnx, model="ease_model", **{**FIELDS, "metrics": {"ndcg@10": 0.9}})
    assert first == again and first.name == file_version(onnx) and len(first.name) == 12
    assert Manifest.read(first).metrics == {"ndcg@10": 0.2}
    assert (first / "model.onnx").read_bytes() == b"model bytes"


def test_manifest_round_trips_and_versions_list_oldest_first(tmp_path):
    root = tmp_path / "registry"
    for content in (b"one", b"two"):
        path = tmp_path / "m.onnx"
        path.write_bytes(content)
        register(root, path, model="m", **FIELDS)
    found = versions(root, "m")
    assert len(found) == 2 and found[0].created_at <= found[1].created_at
    assert Manifest.read(root / "m" / found[0].version) == found[0]
    assert versions(root, "missing") == []


def test_unknown_manifest_fields_and_unregistered_champions_fail(tmp_path):
    onnx = tmp_path / "a.onnx"
    onnx.write_bytes(b"x")
    folder = register(tmp_path / "registry", onnx, model="m", **FIELDS)
    set_champion(tmp_path / "registry", "m", folder.name, "best")
    assert json.loads((tmp_path / "registry" / CHAMPION_FILE).read_text())["version"] == folder.name
    with pytest.raises(FileNotFoundError, match="not registered"):
        set_champion(tmp_path / "registry", "m", "000000000000", "best")
    manifest = json.loads((folder / "manifest.json").read_text())
    (folder / "manifest.json").write_text(json.dumps({**manifest, "surprise": 1}))
    with pytest.raises(ValueError, match="unknown fields"):
        Manifest.read(folder)


def test_popularity_ranks_the_most_used_items_first_ties_to_the_lower_id():
    item_ids = ["", "10", "20", "30", "40"]
    ranking = popularity_ranking(item_ids, [0, 3, 7, 3, 1], k=3)
    assert ranking == [{"item_id": "20", "users": 7}, {"item_id": "10", "users": 3}, {"item_id": "30", "users": 3}]
    with pytest.raises(ValueError, match="4 popularity counts for 5 item ids"):
        popularity_ranking(item_ids, [0, 1, 2, 3], k=2)


def test_the_manifest_carries_the_popularity_list_and_old_manifests_read_without_it(tmp_path):
    onnx = tmp_path / "a.onnx"
    onnx.write_bytes(b"x")
    popular = [{"item_id": "20", "users": 7}]
    folder = register(tmp_path / "registry", onnx, model="m", **FIELDS, popularity=popular)
    assert Manifest.read(folder).popularity == popular
    manifest = json.loads((folder / "manifest.json").read_text())
    del manifest["popularity"]
    (folder / "manifest.json").write_text(json.dumps(manifest))
    assert Manifest.read(folder).popularity == []
