"""The serving service on a real registry: endpoints, bad input, hot reload under load, providers."""

import dataclasses
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import onnxruntime as ort
import pytest
from fastapi.testclient import TestClient
from recserve.app import Settings, create_app
from recserve.model import CPU_PROVIDER, LoadedModel, open_session
from recserve.registry import NotRegistered, resolve

from recmodels.data.interactions import Interactions
from recmodels.data.splits import leave_one_out_split
from recmodels.evaluation import evaluate
from recmodels.models.baselines import EASE
from recmodels.models.efficientrec import (
    ClusterHeadConfig,
    ClusterScoringConfig,
    EfficientRec,
    EfficientRecConfig,
    ItemEncoderConfig,
)
from recmodels.models.sasrec import SASRec, esasrec
from recmodels.registry import set_champion
from recmodels.train import TrainerConfig

K = 20
SASREC_MAX_LEN = 30
TOKEN = "test-admin-token-0123456789"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def split(ml100k_small_raw):
    return leave_one_out_split(Interactions.from_frame(ml100k_small_raw))


@pytest.fixture(scope="module")
def models(split) -> dict:
    return {
        "ease_model": EASE().fit(split),
        "esasrec_model": SASRec(
            dataclasses.replace(esasrec(dim=16, max_len=SASREC_MAX_LEN), trainer=TrainerConfig(epochs=1))
        ).fit(split),
        # EfficientRec scoring only the items listed under each profile's 2 strongest of 8 clusters
        "efficientrec_model": EfficientRec(
            EfficientRecConfig(
                items=ItemEncoderConfig(dim=16, hidden=32),
                clusters=ClusterHeadConfig(clusters=8),
                scoring=ClusterScoringConfig(top_clusters=2),
                max_len=SASREC_MAX_LEN,
                crops_per_user=2,
                trainer=TrainerConfig(epochs=1),
            )
        ).fit(split),
    }


@pytest.fixture(scope="module")
def registry(models, split, tmp_path_factory, register_fitted) -> Path:
    """EASE (the champion), a small eSASRec and a cluster-restricted EfficientRec, exported and registered like the
    pipeline does."""
    root = tmp_path_factory.mktemp("registry")
    entries = register_fitted(root, models, split.train, K)
    set_champion(root, "ease_model", entries["ease_model"].name, "test")
    return root


@pytest.fixture(scope="module")
def client(registry):
    return TestClient(create_app(Settings(registry=registry, max_body_bytes=20_000, max_batch=8, admin_token=TOKEN)))


@pytest.fixture(scope="module")
def known_history(split) -> list[str]:
    sequences = split.train.sequences()
    items = sequences.items[sequences.indptr[0] : sequences.indptr[1]]
    return [str(split.train.item_ids[item]) for item in items[:15]]


def test_health_and_models_name_the_live_champion_and_its_provider(client):
    health = client.get("/healthz").json()
    assert health["status"] == "ok" and health["model"] == "ease_model"
    assert health["provider"] == CPU_PROVIDER or health["provider"] in ort.get_available_providers()
    models = client.get("/models").json()
    assert models["live"]["model"] == "ease_model" and models["live"]["version"] == health["version"]
    assert "item_ids" not in models["live"] and models["n_items"] > 0
    assert len(models["available"]) == 3


def test_recommend_returns_k_unseen_items_in_score_order(client, known_history):
    body = client.post("/recommend", json={"history": known_history, "k": 10}).json()
    items = [entry["item_id"] for entry in body["items"]]
    scores = [entry["score"] for entry in body["items"]]
    assert len(items) == 10 and len(set(items)) == 10
    assert not set(items) & set(known_history)
    assert scores == sorted(scores, reverse=True)
    assert body["unknown_items"] == [] and body["history_used"] == len(known_history)


def test_unknown_items_are_ignored_and_reported(client, known_history):
    plain = client.post("/recommend", json={"history": known_history, "k": 5}).json()
    noisy = client.post("/recommend", json={"history": ["no-such-item", *known_history, 99999999], "k": 5}).json()
    assert noisy["unknown_items"] == ["no-such-item", "99999999"]
    assert noisy["items"] == plain["items"]
    empty = client.post("/recommend", json={"history": ["nothing-known"], "k": 3}).json()
    assert len(empty["items"]) == 3 and empty["history_used"] == 0


def test_long_histories_are_read_recent_first_and_masked_whole(client, split):
    """The model reads the most recent ``max_len`` items; every item sent is masked, older ones too."""
    client.post("/admin/reload", json={"model": "esasrec_model"}, headers=ADMIN)
    try:
        catalogue = [str(item) for item in split.train.item_ids[1:]]
        long = catalogue[: SASREC_MAX_LEN + 25]
        body = client.post("/recommend", json={"history": long, "k": 5}).json()
        assert body["history_used"] == SASREC_MAX_LEN
        served = [entry["item_id"] for entry in body["items"]]
        assert not set(served) & set(long)
        recent = client.post("/recommend", json={"history": long[-SASREC_MAX_LEN:], "k": K}).json()
        same_scores_older_items_masked = [e["item_id"] for e in recent["items"] if e["item_id"] not in long]
        assert served == same_scores_older_items_masked[:5]
    finally:
        client.post("/admin/reload", json={}, headers=ADMIN)


def test_batch_equals_single_requests(client, known_history):
    requests = [{"history": known_history, "k": 4}, {"history": known_history[:3], "k": 7}, {"history": [], "k": 2}]
    batch = client.post("/recommend/batch", json={"requests": requests}).json()["results"]
    for request, result in zip(requests, batch):
        single = client.post("/recommend", json=request).json()
        assert result["items"] == single["items"]


@pytest.mark.parametrize(
    "body, status, message",
    [
        ({"history": ["1"], "k": 0}, 422, "k must be in"),
        ({"history": ["1"], "k": K + 1}, 422, "k must be in"),
        ({"history": "1 2 3", "k": 5}, 422, "list"),
        ({"history": ["1"], "k": "5"}, 422, "integer"),
        ({"history": [1.5], "k": 5}, 422, "history"),
        ({"k": 5}, 422, "history"),
    ],
)
def test_bad_input_gets_a_clear_4xx(client, body, status, message):
    response = client.post("/recommend", json=body)
    assert response.status_code == status
    assert message in response.text


def test_oversize_bodies_and_batches_are_refused(client):
    huge = client.post("/recommend", json={"history": ["1"] * 10_000, "k": 5})
    assert huge.status_code == 413 and "exceeds" in huge.text
    many = client.post("/recommend/batch", json={"requests": [{"history": ["1"], "k": 1}] * 9})
    assert many.status_code == 413 and "at most 8" in many.text


def test_reload_of_an_unknown_model_is_a_404_and_keeps_serving(client):
    before = client.get("/healthz").json()
    response = client.post("/admin/reload", json={"model": "no_such_model"}, headers=ADMIN)
    assert response.status_code == 404 and "no registered version" in response.text
    assert client.get("/healthz").json() == before


@pytest.fixture
def live_server(registry, serve):
    """The app behind a real uvicorn server on a free loopback port; yields its base URL."""
    settings = Settings(registry=registry, admin_token=TOKEN)
    with serve(create_app(settings), settings) as (host, port):
        yield f"http://{host}:{port}"


@pytest.mark.parametrize("name", ["esasrec_model", "ease_model", "efficientrec_model"])
def test_served_lists_are_the_evaluated_lists_on_whole_real_histories(name, models, split, live_server):
    """End to end: every test user's whole history (many longer than the model reads) sent to the
    running service comes back as exactly the list offline evaluation ranked, with no seen item."""
    model = models[name]
    offline = evaluate(model, split.test, (K,))
    sequences = split.test.history.sequences()
    item_ids = split.train.item_ids
    histories = [
        [str(item_ids[item]) for item in sequences.items[sequences.indptr[user] : sequences.indptr[user + 1]]]
        for user in offline.users
    ]
    assert sum(len(history) > SASREC_MAX_LEN for history in histories) > 100
    served = []
    with httpx.Client(base_url=live_server, timeout=60) as http:
        assert http.post("/admin/reload", json={"model": name}, headers=ADMIN).json()["model"] == name
        for start in range(0, len(histories), 256):
            chunk = [{"history": history, "k": K} for history in histories[start : start + 256]]
            response = http.post("/recommend/batch", json={"requests": chunk})
            assert response.status_code == 200, response.text
            served += [[entry["item_id"] for entry in result["items"]] for result in response.json()["results"]]
    expected = [[str(item_ids[item]) for item in row] for row in offline.top_items]
    assert [not set(items) & set(history) for items, history in zip(served, histories)] == [True] * len(histories)
    identical = sum(got == want for got, want in zip(served, expected))
    assert identical == len(histories), f"{len(histories) - identical} of {len(histories)} served lists differ"


def test_hot_reload_under_concurrent_requests_fails_none(live_server, known_history):
    base = live_server
    failures, served_by, stop = [], set(), threading.Event()

    def hammer():
        with httpx.Client(base_url=base, timeout=10) as http:
            for _ in range(400):  # bounded
                if stop.is_set():
                    break
                response = http.post("/recommend", json={"history": known_history, "k": 5})
                if response.status_code != 200:
                    failures.append(response.status_code)
                else:
                    served_by.add(response.json()["model"])

    workers = [threading.Thread(target=hammer) for _ in range(4)]
    for worker in workers:
        worker.start()
    try:
        with httpx.Client(base_url=base, timeout=30) as admin:
            for target in ["esasrec_model", "ease_model", "esasrec_model", "ease_model"]:
                time.sleep(0.1)
                assert admin.post("/admin/reload", json={"model": target}, headers=ADMIN).json()["model"] == target
    finally:
        stop.set()
        for worker in workers:
            worker.join(timeout=60)
    assert failures == []
    assert served_by == {"ease_model", "esasrec_model"}


def test_provider_is_what_the_session_really_runs_on(registry):
    folder = resolve(registry, "ease_model", None)
    assert open_session(folder / "model.onnx", prefer_gpu=False).get_providers() == [CPU_PROVIDER]
    model = LoadedModel.load(folder, prefer_gpu=True)
    assert model.provider == model.session.get_providers()[0]
    if model.provider != CPU_PROVIDER:
        assert model.provider == "CUDAExecutionProvider"


def test_start_up_says_which_provider_really_runs(registry, caplog):
    with caplog.at_level("INFO", logger="recserve"):
        app = create_app(Settings(registry=registry))
    provider = app.state.slot.current.provider
    lines = [record.getMessage() for record in caplog.records if record.name == "recserve"]
    assert any(f"running on {provider}" in line for line in lines), lines
    if provider == CPU_PROVIDER and "CUDAExecutionProvider" in ort.get_available_providers():
        assert any("no usable CUDA" in line for line in lines), lines


def test_resolve_fails_clearly_without_a_champion(tmp_path):
    with pytest.raises(NotRegistered, match="champion.json is missing"):
        resolve(tmp_path, None, None)


def test_the_service_never_imports_torch_or_dagster():
    code = "import sys; import recserve.app; print(sorted(m for m in ('torch', 'dagster') if m in sys.modules))"
    deploy = Path(__file__).resolve().parents[2] / "deploy"
    output = subprocess.run([sys.executable, "-c", code], cwd=deploy, capture_output=True, text=True, check=True)
    assert output.stdout.strip() == "[]"
