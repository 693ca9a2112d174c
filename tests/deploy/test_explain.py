"""``POST /explain`` on a real small multi-modal model: the served contributions are the model's own, the
explanation graph is checked against its hash and contract, and what cannot be explained gets a clear 4xx."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import schemathesis
import torch
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from recserve.app import Settings, create_app
from recserve.model import LoadedModel
from recserve.registry import RegistryError
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

from recmodels.data.interactions import Interactions
from recmodels.data.splits import leave_one_out_split
from recmodels.features.modalities import ItemModalities
from recmodels.models.baselines import EASE
from recmodels.models.multimodal import MultiModal, fused
from recmodels.registry import MANIFEST_FILE, set_champion
from recmodels.train import TrainerConfig

K = 10


@pytest.fixture(scope="module")
def split(ml100k_small_raw):
    return leave_one_out_split(Interactions.from_frame(ml100k_small_raw))


@pytest.fixture(scope="module")
def model(split, ml100k_items, encoder) -> MultiModal:
    modalities = ItemModalities.from_items(ml100k_items, split.train.item_ids, encoder)
    config = dataclasses.replace(fused(dim=16, max_len=30), trainer=TrainerConfig(epochs=1))
    return MultiModal(config).fit(split, modalities=modalities)


@pytest.fixture(scope="module")
def registry(model, split, tmp_path_factory, register_fitted) -> Path:
    root = tmp_path_factory.mktemp("registry")
    entries = register_fitted(root, {"multimodal_model": model, "ease_model": EASE().fit(split)}, split.train, K)
    set_champion(root, "multimodal_model", entries["multimodal_model"].name, "test")
    return root


@pytest.fixture(scope="module")
def client(registry) -> TestClient:
    return TestClient(create_app(Settings(registry=registry)))


def _entry(registry: Path, name: str) -> Path:
    return next((registry / name).iterdir())


def test_explain_serves_the_models_own_contributions_for_its_recommendations(client, model, split):
    sequences = split.test.history.sequences()
    user = split.test.users[0]
    internal = sequences.items[sequences.indptr[user] : sequences.indptr[user + 1]]
    history = [str(split.train.item_ids[item]) for item in internal]
    recommended = [entry["item_id"] for entry in client.post("/recommend", json={"history": history}).json()["items"]]
    answer = client.post("/explain", json={"history": history + ["not-an-item"], "items": recommended}).json()
    assert answer["modalities"] == ["id", "text", "genres", "year"]
    assert answer["unknown_items"] == ["not-an-item"] and answer["history_used"] == 30
    index = {item: position for position, item in enumerate(split.train.item_ids)}
    with torch.inference_mode():
        expected = model.explainer()(
            torch.from_numpy(internal[None, :].astype(np.int64)), torch.tensor([[index[item] for item in recommended]])
        )[0]
    served = np.array([[row["contributions"][name] for name in answer["modalities"]] for row in answer["items"]])
    assert [row["item_id"] for row in answer["items"]] == recommended
    np.testing.assert_allclose(served, expected.numpy(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"history": ["1"], "items": ["no-such-item"]}, 422, "not in the catalogue"),
        ({"history": ["no-such-item"], "items": ["1"]}, 422, "no item of the catalogue"),
        ({"history": ["1"], "items": []}, 422, "explain 1 to 10 items"),
        ({"history": ["1"], "items": [str(i) for i in range(1, 12)]}, 422, "explain 1 to 10 items"),
        ({"history": "1", "items": ["1"]}, 422, "history"),
    ],
)
def test_what_cannot_be_explained_gets_a_clear_4xx(client, body, status, message):
    response = client.post("/explain", json=body)
    assert response.status_code == status and message in response.text


def test_a_model_without_an_explanation_graph_answers_409(registry):
    client = TestClient(create_app(Settings(registry=registry, model="ease_model")))
    response = client.post("/explain", json={"history": ["1"], "items": ["2"]})
    assert response.status_code == 409 and "no explanation graph" in response.text


def test_a_replaced_explanation_graph_is_refused(registry, tmp_path):
    copy = tmp_path / "registry"
    shutil.copytree(registry, copy)
    entry = _entry(copy, "multimodal_model")
    (entry / "explain.onnx").write_bytes((entry / "explain.onnx").read_bytes() + b"\0")
    with pytest.raises(RegistryError, match="explain.onnx has SHA-256 .* not the manifest's"):
        LoadedModel.load(entry, prefer_gpu=False)


def test_the_manifest_cannot_point_the_explanation_graph_elsewhere(registry, tmp_path):
    copy = tmp_path / "registry"
    shutil.copytree(registry, copy)
    entry = _entry(copy, "multimodal_model")
    manifest = json.loads((entry / MANIFEST_FILE).read_text())
    manifest["explain"]["file"] = "../../ease_model/model.onnx"
    (entry / MANIFEST_FILE).write_text(json.dumps(manifest))
    with pytest.raises(RegistryError, match="'explain' must name explain.onnx"):
        LoadedModel.load(entry, prefer_gpu=False)


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_generated_explain_requests_get_no_server_error(registry, mode):
    """Requests generated from the OpenAPI schema against a model that explains: never a 5xx."""
    operation = schemathesis.openapi.from_asgi("/openapi.json", create_app(Settings(registry=registry)))["/explain"][
        "POST"
    ]

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def no_server_error(case):
        case.call_and_validate(checks=[not_a_server_error])

    no_server_error()
