"""The state service's admin HTTP API: token, decoded reads, erasure, snapshots, probes, metrics."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator

import numpy as np
import pytest
import requests
from flask.testing import FlaskClient

from state_service.admin import create_app
from state_service.errors import InvalidStateRequest
from state_service.server import ValkeyServer, free_port
from state_service.store import AppliedEvent, EntityKey, StateStore, StateUpdate

pytest_plugins = ["valkey_fixtures", "s3_fixtures"]

TOKEN = "test-admin-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def admin_store(valkey_server: ValkeyServer) -> Iterator[StateStore]:
    store = StateStore(valkey_server.admin_url)
    yield store
    store.close()


@pytest.fixture
def client(admin_store: StateStore) -> FlaskClient:
    return create_app(admin_store, token=TOKEN).test_client()


def seed(store: StateStore, key: EntityKey) -> None:
    hidden = np.full(64, 0.5, dtype=np.float16)
    update = StateUpdate(key, 0, (AppliedEvent("/src\x00e1", b""),), 1_767_225_600.0, hidden, b"\x02")
    store.compare_and_set_many([update])


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}])
def test_requests_without_the_bearer_token_are_refused_with_401(client: FlaskClient, headers: dict) -> None:
    for method, path in (("get", "/v1/entities/ns/card/c1"), ("delete", "/v1/entities/ns/card/c1"),
                         ("post", "/v1/snapshots"), ("get", "/metrics")):
        response = getattr(client, method)(path, headers=headers)
        assert response.status_code == 401, path
        assert response.get_json()["error"] == "unauthorized"
        assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_app_will_not_start_without_a_token(admin_store: StateStore, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STATE_ADMIN_TOKEN", raising=False)
    with pytest.raises(InvalidStateRequest, match="STATE_ADMIN_TOKEN"):
        create_app(admin_store)


def test_entity_is_read_decoded(client: FlaskClient, admin_store: StateStore, state_namespace: str) -> None:
    seed(admin_store, EntityKey(state_namespace, "card", "c/1"))
    body = client.get(f"/v1/entities/{state_namespace}/card/c/1", headers=AUTH).get_json()
    assert body["version"] == 1 and body["seen"] is True and body["corrupt"] is False
    assert body["last_seen"] == "2026-01-01T00:00:00+00:00"
    assert body["state_norm"] == pytest.approx(0.5 * 8)  # sqrt(64) * 0.5
    assert body["context_hex"] == "02"


def test_unseen_entity_reads_as_version_zero(client: FlaskClient, state_namespace: str) -> None:
    body = client.get(f"/v1/entities/{state_namespace}/merchant/nobody", headers=AUTH).get_json()
    assert (body["version"], body["seen"], body["last_seen"], body["state_norm"]) == (0, False, None, 0.0)


def test_corrupt_entity_is_reported_not_crashed_on(
    client: FlaskClient, valkey_server: ValkeyServer, state_namespace: str
) -> None:
    import valkey

    key = EntityKey(state_namespace, "card", "bad")
    valkey.Valkey.from_url(valkey_server.admin_url).set(key.state_key, b"junk")
    response = client.get(f"/v1/entities/{state_namespace}/card/bad", headers=AUTH)
    assert response.status_code == 200
    body = response.get_json()
    assert body["corrupt"] is True and "shorter than the 12-byte header" in body["detail"]
    assert client.delete(f"/v1/entities/{state_namespace}/card/bad", headers=AUTH).get_json()["deleted"] is True


def test_bad_entity_type_is_a_400_naming_the_problem(client: FlaskClient) -> None:
    response = client.get("/v1/entities/ns/terminal/t1", headers=AUTH)
    assert response.status_code == 400
    assert "entity_type" in response.get_json()["detail"]


def test_delete_erases_the_entity(client: FlaskClient, admin_store: StateStore, state_namespace: str) -> None:
    key = EntityKey(state_namespace, "card", "c1")
    seed(admin_store, key)
    assert client.delete(f"/v1/entities/{state_namespace}/card/c1", headers=AUTH).get_json()["deleted"] is True
    assert admin_store.read_many([key])[0].version == 0
    assert client.delete(f"/v1/entities/{state_namespace}/card/c1", headers=AUTH).get_json()["deleted"] is False


def test_snapshot_is_triggered_over_http(
    client: FlaskClient, admin_store: StateStore, state_namespace: str, s3_bucket: str
) -> None:
    seed(admin_store, EntityKey(state_namespace, "card", "c1"))
    response = client.post("/v1/snapshots", json={"to": f"s3://{s3_bucket}/admin", "namespace": state_namespace},
                           headers=AUTH)
    assert response.status_code == 201
    assert response.get_json()["entities"] == 1
    bad = client.post("/v1/snapshots", json={"to": "ftp://x"}, headers=AUTH)
    assert bad.status_code == 400 and "s3://" in bad.get_json()["detail"]
    assert client.post("/v1/snapshots", data="nope", headers=AUTH).status_code == 400


def test_metrics_and_readiness(client: FlaskClient) -> None:
    assert client.get("/health/readiness").get_json() == {"ready": True}
    metrics = client.get("/metrics", headers=AUTH)
    assert metrics.status_code == 200
    assert b"hiddenstate_state_admin_requests_total" in metrics.data


def test_readiness_is_503_when_valkey_is_down() -> None:
    store = StateStore(f"redis://127.0.0.1:{free_port()}/0", connect_timeout_s=0.2)
    response = create_app(store, token=TOKEN).test_client().get("/health/readiness")
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "1"
    assert response.get_json()["error"] == "state_unavailable"


def test_admin_server_runs_as_a_module_and_refuses_requests_without_token(valkey_server: ValkeyServer) -> None:
    port = free_port()
    env = os.environ | {"STATE_ADMIN_TOKEN": TOKEN, "STATE_ADMIN_PORT": str(port),
                        "VALKEY_URL": valkey_server.admin_url}
    process = subprocess.Popen([sys.executable, "-m", "state_service.admin"], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            assert process.poll() is None, "admin server exited"
            try:
                if requests.get(f"{base}/health/readiness", timeout=1).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            assert time.monotonic() < deadline, "admin server not ready in 20 s"
            time.sleep(0.05)
        assert requests.get(f"{base}/v1/entities/ns/card/c1", timeout=2).status_code == 401
        assert requests.get(f"{base}/v1/entities/ns/card/c1", headers=AUTH, timeout=2).json()["version"] == 0
    finally:
        process.terminate()
        process.wait(10)
