"""The service under hostile and careless input (issue 18, serving): admin authentication, names that try
to leave the registry, files that are not what their version says, bodies and clients that never end,
numbers JSON cannot carry, registry problems at start-up, and histories the model knows nothing of."""

from __future__ import annotations

import hashlib
import http.client
import json
import logging
import os
import re
import select
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import recserve
from fastapi.testclient import TestClient
from recserve.app import Settings, create_app
from recserve.model import LoadedModel
from recserve.registry import RegistryError

from recmodels.registry import set_champion

TOKEN = "hostile-suite-admin-token"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}
DEPLOY = Path(recserve.__file__).resolve().parents[1]  # the folder holding the package under test


@pytest.fixture
def registry(served_registry, tmp_path) -> Path:
    """A copy of the registry each test may break as it likes."""
    return Path(shutil.copytree(served_registry, tmp_path / "registry", symlinks=True))


def entry(registry: Path, model: str) -> Path:
    (folder,) = (registry / model).iterdir()
    return folder


def app_on(registry: Path, **settings):
    return create_app(Settings(registry=registry, **settings))


def rewrite_manifest(folder: Path, **changes) -> None:
    manifest = json.loads((folder / "manifest.json").read_text())
    (folder / "manifest.json").write_text(json.dumps({**manifest, **changes}))


def health(client) -> tuple[str, str]:
    body = client.get("/healthz").json()
    return body["model"], body["version"]


# 1. Authentication of POST /admin/reload, and every replica following champion.json


def test_reload_is_disabled_without_a_configured_token(registry):
    client = TestClient(app_on(registry))
    response = client.post("/admin/reload", json={"model": "popular_model"}, headers=ADMIN)
    assert response.status_code == 403 and "disabled" in response.json()["detail"]
    assert health(client)[0] == "ease_model"


@pytest.mark.parametrize(
    "authorization, status",
    [(None, 401), ("Basic dXNlcjpwYXNz", 401), ("Bearer", 401), ("Bearer  ", 401), ("Bearer wrong-token", 403)],
)
def test_reload_needs_the_bearer_token_and_refusals_are_logged(registry, authorization, status, caplog):
    client = TestClient(app_on(registry, admin_token=TOKEN))
    headers = {} if authorization is None else {"Authorization": authorization}
    with caplog.at_level(logging.WARNING, logger="recserve"):
        response = client.post("/admin/reload", json={"model": "popular_model"}, headers=headers)
    assert response.status_code == status, response.text
    assert status != 401 or response.headers["www-authenticate"] == "Bearer"
    assert any("refused POST /admin/reload" in record.getMessage() for record in caplog.records)
    assert TOKEN not in caplog.text and "wrong-token" not in caplog.text
    assert health(client)[0] == "ease_model"
    assert client.post("/admin/reload", json={"model": "popular_model"}, headers=ADMIN).status_code == 200
    assert health(client)[0] == "popular_model"


def test_authorisation_comes_before_the_body_is_read(registry):
    client = TestClient(app_on(registry, admin_token=TOKEN))
    response = client.post("/admin/reload", content=b"{not json", headers={"content-type": "application/json"})
    assert response.status_code == 401


def wait_until(condition, seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


def test_every_replica_follows_a_new_champion_and_refuses_a_broken_one(registry, caplog):
    """Two replicas on one registry poll champion.json; each swaps to a new champion on its own, and
    a champion that fails its checks is logged and leaves each serving what it served."""
    replicas = [TestClient(app_on(registry, watch_seconds=0.05)) for _ in range(2)]
    with replicas[0], replicas[1], caplog.at_level(logging.ERROR, logger="recserve"):
        assert [health(replica)[0] for replica in replicas] == ["ease_model"] * 2
        popular = entry(registry, "popular_model")
        set_champion(registry, "popular_model", popular.name, "a new champion")
        assert wait_until(lambda: [health(replica) for replica in replicas] == [("popular_model", popular.name)] * 2)
        ease = entry(registry, "ease_model")
        (ease / "model.onnx").write_bytes((popular / "model.onnx").read_bytes())  # replaced bytes
        set_champion(registry, "ease_model", ease.name, "a broken champion")
        assert wait_until(
            lambda: sum("champion.json changed but is refused" in r.getMessage() for r in caplog.records) == 2
        )
        assert [health(replica)[0] for replica in replicas] == ["popular_model"] * 2


# 2. Names that leave the registry


@pytest.fixture
def outside_entry(registry) -> Path:
    """A complete, valid entry in a folder beside (outside) the registry."""
    folder = registry.parent / "evil" / entry(registry, "popular_model").name
    shutil.copytree(entry(registry, "popular_model"), folder)
    return folder


@pytest.mark.parametrize(
    "body",
    [
        {"model": "../evil"},
        {"model": "..", "version": "evil"},
        {"model": "/etc"},
        {"model": "popular_model/../../evil"},
        {"model": "popular_model", "version": "../../evil/x"},
        {"model": "ease_model\\..\\..\\evil"},
    ],
)
def test_reload_refuses_names_that_are_not_plain(registry, outside_entry, body):
    client = TestClient(app_on(registry, admin_token=TOKEN))
    if body.get("model") == "../evil":
        body = {**body, "version": outside_entry.name}
    response = client.post("/admin/reload", json=body, headers=ADMIN)
    assert response.status_code == 422, response.text
    assert "not a plain registry name" in response.text
    assert health(client)[0] == "ease_model"


def test_a_symlink_out_of_the_registry_is_refused(registry, outside_entry):
    (registry / "linked_model").symlink_to(outside_entry.parent, target_is_directory=True)
    client = TestClient(app_on(registry, admin_token=TOKEN))
    response = client.post("/admin/reload", json={"model": "linked_model"}, headers=ADMIN)
    assert response.status_code == 409 and "resolves outside the registry" in response.json()["detail"]
    assert health(client)[0] == "ease_model"


def test_a_champion_pointing_outside_the_registry_stops_start_up(registry, outside_entry):
    pointer = {"model": "../evil", "version": outside_entry.name, "reason": "hostile"}
    (registry / "champion.json").write_text(json.dumps(pointer))
    with pytest.raises(RegistryError, match=r"champion.json: model '../evil' is not a plain registry name"):
        app_on(registry)


# 3. Integrity: the file is its version, the manifest is its graph


def test_a_replaced_model_file_is_refused_at_start_up(registry):
    ease, popular = entry(registry, "ease_model"), entry(registry, "popular_model")
    (ease / "model.onnx").write_bytes((popular / "model.onnx").read_bytes())
    with pytest.raises(RegistryError, match=rf"ease_model/{ease.name}/model.onnx has SHA-256 .* not its version"):
        app_on(registry)


def test_a_replaced_model_file_is_refused_at_reload_and_the_old_model_keeps_serving(registry):
    client = TestClient(app_on(registry, admin_token=TOKEN))
    before = health(client)
    ease, popular = entry(registry, "ease_model"), entry(registry, "popular_model")
    (popular / "model.onnx").write_bytes((ease / "model.onnx").read_bytes())
    response = client.post("/admin/reload", json={"model": "popular_model"}, headers=ADMIN)
    assert response.status_code == 409
    detail = response.json()["detail"]
    assert f"popular_model/{popular.name}/model.onnx has SHA-256" in detail and "still serving ease_model" in detail
    assert health(client) == before
    assert client.post("/recommend", json={"history": ["50"], "k": 3}).status_code == 200


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda manifest: {"k": manifest["k"] + 1}, "returns k = 20 items but its manifest says k = 21"),
        (lambda manifest: {"item_ids": manifest["item_ids"][:-1]}, "scores more items than the manifest's"),
        (lambda manifest: {"item_ids": [*manifest["item_ids"], "extra"]}, "cannot score the manifest's"),
        (lambda manifest: {"version": "0123456789ab"}, "names 'ease_model'/'0123456789ab' but lies in"),
        (lambda manifest: {"model": "popular_model"}, "names 'popular_model'"),
        (lambda manifest: {"popularity": [{"item_id": "no-such-item", "users": 3}]}, "popularity entry"),
    ],
)
def test_a_manifest_that_disagrees_with_its_graph_is_refused(registry, change, message):
    folder = entry(registry, "ease_model")
    rewrite_manifest(folder, **change(json.loads((folder / "manifest.json").read_text())))
    with pytest.raises(RegistryError, match=message):
        LoadedModel.load(folder, prefer_gpu=False)


# 4. Bodies and clients that never end


def raw_request(method: str, path: str, headers: dict[str, str]) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", *(f"{name}: {value}" for name, value in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def read_response(sock: socket.socket, seconds: float = 5.0) -> bytes:
    """What the server sends until it closes the connection (or ``seconds`` pass)."""
    sock.settimeout(seconds)
    received = b""
    try:
        while chunk := sock.recv(65536):
            received += chunk
    except (TimeoutError, ConnectionResetError):
        pass
    return received


def test_a_chunked_body_over_the_limit_gets_413_and_the_rest_is_never_read(registry, serve):
    """No Content-Length to check: the limit holds on the bytes as they arrive. A client sending 100 MB
    gets its 413 and a closed connection long before it is done sending."""
    settings = Settings(registry=registry, max_body_bytes=20_000)
    headers = {"Content-Type": "application/json", "Transfer-Encoding": "chunked"}
    with serve(create_app(settings), settings) as address, socket.create_connection(address) as sock:
        sock.sendall(raw_request("POST", "/recommend", headers))
        chunk = b'{"history": ["50"], "k": 5, "padding": "' + b"x" * (1 << 16)
        sent = 0
        while sent < 100 << 20:
            try:
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += len(chunk)
            chunk = b"x" * (1 << 16)
        response = read_response(sock)
    assert response.startswith(b"HTTP/1.1 413"), response[:200]
    assert b"connection: close" in response.lower() and b"body exceeds 20000 bytes" in response
    stopped_at = int(re.search(rb"stopped reading at (\d+)", response)[1])
    assert stopped_at < 200_000 and sent < 100 << 20


def test_slow_clients_are_disconnected_and_others_are_served_meanwhile(registry, serve):
    """A bounded slow-client test on loopback: 10 sockets that send nothing, 10 that send their headers
    one byte at a time, 10 that send headers then dribble their body; the server closes all 30 within
    its deadlines (1 s each here) while ordinary requests keep getting answers."""
    settings = Settings(registry=registry, header_timeout_seconds=1, body_timeout_seconds=1, keep_alive_seconds=1)
    header = raw_request("POST", "/recommend", {"Content-Type": "application/json", "Content-Length": "1000"})
    with serve(create_app(settings), settings) as address:
        silent = [socket.create_connection(address) for _ in range(10)]
        trickling_headers = [socket.create_connection(address) for _ in range(10)]
        trickling_bodies = [socket.create_connection(address) for _ in range(10)]
        for sock in trickling_bodies:
            sock.sendall(header)
        sockets = silent + trickling_headers + trickling_bodies
        closed_after: dict[int, float] = {}
        started = time.monotonic()
        served = 0
        while len(closed_after) < len(sockets) and time.monotonic() - started < 6:
            for index, sock in enumerate(sockets):
                if index in closed_after:
                    continue
                try:
                    if sock in trickling_headers:
                        sock.send(header[:1])
                    elif sock in trickling_bodies:
                        sock.send(b" ")
                    if select.select([sock], [], [], 0)[0] and not sock.recv(65536, socket.MSG_PEEK):
                        closed_after[index] = time.monotonic() - started
                    elif select.select([sock], [], [], 0)[0]:
                        sock.recv(65536)  # a 408 before the close
                except (BrokenPipeError, ConnectionResetError):
                    closed_after[index] = time.monotonic() - started
            connection = http.client.HTTPConnection(*address, timeout=5)
            connection.request("GET", "/healthz")
            served += connection.getresponse().status == 200
            connection.close()
            time.sleep(0.1)
        for sock in sockets:
            sock.close()
    assert len(closed_after) == len(sockets), f"{len(sockets) - len(closed_after)} slow sockets still open after 6 s"
    assert max(closed_after.values()) < 4
    assert served >= 10


def test_requests_beyond_the_concurrency_limit_get_503(registry, serve):
    settings = Settings(registry=registry, limit_concurrency=4, header_timeout_seconds=30)
    with serve(create_app(settings), settings) as address:
        held = [socket.create_connection(address) for _ in range(4)]
        time.sleep(0.2)
        connection = http.client.HTTPConnection(*address, timeout=5)
        connection.request("GET", "/healthz")
        assert connection.getresponse().status == 503
        for sock in held:
            sock.close()
        assert wait_until(lambda: _status(address, "/healthz") == 200)


def _status(address, path: str) -> int:
    connection = http.client.HTTPConnection(*address, timeout=5)
    connection.request("GET", path)
    status = connection.getresponse().status
    connection.close()
    return status


def test_request_headers_growing_past_the_limit_get_400(registry, serve):
    """Headers are buffered until complete; past ``max_header_bytes`` the buffer is refused, not grown."""
    settings = Settings(registry=registry, max_header_bytes=8 * 1024)
    with serve(create_app(settings), settings) as address, socket.create_connection(address) as sock:
        sock.sendall(raw_request("GET", "/healthz", {"X-Padding": "x" * 32 * 1024})[:-2])  # no end of headers
        assert read_response(sock).startswith(b"HTTP/1.1 400")


# 5. Errors: numbers JSON cannot carry, failed reloads, start-up problems, paths in error bodies


@pytest.fixture(scope="module")
def live(served_registry, serve):
    """One running service for the keep-alive tests (they do not change the registry)."""
    settings = Settings(registry=served_registry, admin_token=TOKEN)
    with serve(create_app(settings), settings) as address:
        yield address


@pytest.mark.parametrize(
    "body",
    [
        b'{"history": [NaN], "k": 5}',
        b'{"history": ["50", Infinity], "k": 5}',
        b'{"history": ["50"], "k": -Infinity}',
        b'{"history": ["50"], "k": 1e400}',
        b"NaN",
    ],
)
def test_non_finite_numbers_get_an_encodable_422_and_the_connection_stays_usable(live, body):
    connection = http.client.HTTPConnection(*live, timeout=10)
    connection.request("POST", "/recommend", body=body, headers={"Content-Type": "application/json"})
    response = connection.getresponse()
    detail = json.loads(response.read())["detail"]
    assert response.status == 422, detail
    assert any("NaN and Infinity are not JSON numbers" in error["msg"] for error in detail)
    first_socket = connection.sock
    connection.request(
        "POST", "/recommend", body=b'{"history": ["50"], "k": 3}', headers={"Content-Type": "application/json"}
    )
    assert connection.getresponse().status == 200
    assert connection.sock is first_socket  # the same keep-alive connection
    connection.close()


def test_not_found_bodies_name_no_server_path(registry):
    client = TestClient(app_on(registry, admin_token=TOKEN))
    for body in ({"model": "no_such_model"}, {"model": "popular_model", "version": "0123456789ab"}):
        response = client.post("/admin/reload", json=body, headers=ADMIN)
        assert response.status_code == 404
        assert str(registry) not in response.text and str(registry.parent) not in response.text
    assert "not registered" in response.json()["detail"]


def corrupt_model_file(folder: Path) -> Path:
    """Garbage bytes in model.onnx, the folder renamed to their hash: a consistent entry ONNX Runtime cannot load."""
    garbage = b"not an onnx graph"
    (folder / "model.onnx").write_bytes(garbage)
    version = hashlib.sha256(garbage).hexdigest()[:12]
    rewrite_manifest(folder, version=version)
    return folder.rename(folder.with_name(version))


@pytest.mark.parametrize("breakage", ["unloadable onnx", "manifest not json", "manifest without item_ids"])
def test_a_failed_reload_is_a_clear_409_and_the_old_model_keeps_serving(registry, breakage):
    client = TestClient(app_on(registry, admin_token=TOKEN))
    before = health(client)
    folder = entry(registry, "popular_model")
    if breakage == "unloadable onnx":
        folder, expected = corrupt_model_file(folder), "model.onnx cannot be loaded by ONNX Runtime"
    elif breakage == "manifest not json":
        (folder / "manifest.json").write_text('{"model": "popular_model",')
        expected = "manifest.json is not valid JSON"
    else:
        manifest = json.loads((folder / "manifest.json").read_text())
        (folder / "manifest.json").write_text(json.dumps({k: v for k, v in manifest.items() if k != "item_ids"}))
        expected = "manifest.json has no 'item_ids'"
    response = client.post("/admin/reload", json={"model": "popular_model", "version": folder.name}, headers=ADMIN)
    assert response.status_code == 409, response.text
    detail = response.json()["detail"]
    assert f"popular_model/{folder.name}/" in detail and expected in detail and "still serving ease_model" in detail
    assert health(client) == before


@pytest.mark.parametrize(
    "breakage, message",
    [
        ("champion not json", r"champion.json is not valid JSON: .* \(line 1, column"),
        ("champion without version", r"champion.json has no 'version'"),
        ("champion a list", r"champion.json must hold a JSON object"),
        ("manifest not json", r"ease_model/\w{12}/manifest.json is not valid JSON"),
        ("manifest without version", r"ease_model/\w{12}/manifest.json has no 'version'"),
        ("model file missing", r"ease_model/\w{12}/model.onnx is missing"),
        ("champion names no entry", r"ease_model/0123456789ab is not registered"),
    ],
)
def test_registry_problems_at_start_up_name_the_file(registry, breakage, message):
    champion, folder = registry / "champion.json", entry(registry, "ease_model")
    manifest = json.loads((folder / "manifest.json").read_text())
    if breakage == "champion not json":
        champion.write_text('{"model": "ease_model", "version": ')
    elif breakage == "champion without version":
        champion.write_text(json.dumps({"model": "ease_model"}))
    elif breakage == "champion a list":
        champion.write_text(json.dumps(["ease_model", folder.name]))
    elif breakage == "manifest not json":
        (folder / "manifest.json").write_text("{")
    elif breakage == "manifest without version":
        (folder / "manifest.json").write_text(json.dumps({k: v for k, v in manifest.items() if k != "version"}))
    elif breakage == "model file missing":
        (folder / "model.onnx").unlink()
    else:
        champion.write_text(json.dumps({"model": "ease_model", "version": "0123456789ab"}))
    with pytest.raises(RegistryError, match=message):
        app_on(registry)


def test_start_up_failure_is_one_line_naming_the_file_without_a_traceback(registry):
    (registry / "champion.json").write_text("{")
    environment = {**os.environ, "RECSERVE_REGISTRY": str(registry), "PYTHONPATH": str(DEPLOY)}
    done = subprocess.run(
        [sys.executable, "-m", "recserve", "--port", "0"], env=environment, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert (
        done.stderr.strip()
        .splitlines()[-1]
        .startswith(f"recserve: cannot start from registry {registry}: champion.json is not valid JSON")
    )


# 6. Histories the model knows nothing of


@pytest.mark.parametrize("history", [[], ["no-such-item", "99999999"]])
def test_an_empty_or_all_unknown_history_gets_the_popularity_answer(registry, history):
    client = TestClient(app_on(registry))
    popularity = json.loads((entry(registry, "ease_model") / "manifest.json").read_text())["popularity"]
    known = popularity[0]["item_id"]
    body = client.post("/recommend", json={"history": history, "k": 5}).json()
    assert body["fallback"] == "popularity" and body["history_used"] == 0
    assert body["items"] == [{"item_id": item["item_id"], "score": float(item["users"])} for item in popularity[:5]]
    assert body["unknown_items"] == [str(item) for item in history]
    batch = client.post(
        "/recommend/batch", json={"requests": [{"history": history, "k": 5}, {"history": [known], "k": 5}]}
    )
    cold, ranked = batch.json()["results"]
    assert cold["fallback"] == "popularity" and cold["items"] == body["items"]
    assert ranked["fallback"] is None and known not in [item["item_id"] for item in ranked["items"]]


def test_a_manifest_without_popularity_says_it_has_no_cold_start_answer(registry, caplog):
    rewrite_manifest(entry(registry, "ease_model"), popularity=[])
    with caplog.at_level(logging.WARNING, logger="recserve"):
        client = TestClient(app_on(registry))
    assert "has no popularity list" in caplog.text
    body = client.post("/recommend", json={"history": [], "k": 5}).json()
    assert body["items"] == [] and body["fallback"] == "unavailable"
