"""The state service's admin HTTP API, a small Flask app.

Routes (all but /health/* need ``Authorization: Bearer $STATE_ADMIN_TOKEN``; without it the answer is 401):

- ``GET    /v1/entities/<namespace>/<card|merchant>/<id>``: the entity decoded (version, last seen, state norm)
- ``DELETE /v1/entities/<namespace>/<card|merchant>/<id>``: erase state and dedupe memory
- ``POST   /v1/snapshots`` with ``{"to": "s3://bucket/prefix", "namespace": null}``: take a snapshot (synchronous)
- ``GET    /metrics``: Prometheus
- ``GET    /health/readiness``, ``GET /health/liveness``: probes, open so that kubelet needs no secret

Run it with ``python -m state_service.admin`` (granian; ``STATE_ADMIN_HOST``, ``STATE_ADMIN_PORT``). It reaches
Valkey through ``VALKEY_URL``, which should log in as the ``admin`` ACL user (erasure needs DEL, snapshots SCAN).
"""

from __future__ import annotations

import hmac
import os
from datetime import UTC, datetime
from typing import Any

import numpy as np
from flask import Flask, Response, jsonify, request
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from werkzeug.exceptions import HTTPException

from state_service import metrics
from state_service.errors import (
    InvalidStateRequest,
    LibraryMissing,
    StateCorrupt,
    StateError,
    StateUnavailable,
)
from state_service.keys import EntityKey
from state_service.snapshot import snapshot
from state_service.store import StateStore

_OPEN_PATHS = ("/health/",)


def create_app(store: StateStore | None = None, *, token: str | None = None) -> Flask:
    """Build the admin app. ``token`` defaults to ``STATE_ADMIN_TOKEN``; the app refuses to exist without one."""
    token = token if token is not None else os.environ.get("STATE_ADMIN_TOKEN", "")
    if not token:
        raise InvalidStateRequest("STATE_ADMIN_TOKEN is not set: the admin API will not run without a token")
    if store is None:
        store = StateStore.from_env(hidden_size=int(os.environ.get("STATE_HIDDEN_SIZE", "64")))
    expected = f"Bearer {token}".encode()
    app = Flask(__name__)

    @app.before_request
    def require_token() -> Response | None:
        if request.path.startswith(_OPEN_PATHS):
            return None
        given = request.headers.get("Authorization", "").encode()
        if not hmac.compare_digest(given, expected):
            response = _error(401, "unauthorized", "missing or wrong bearer token")
            response.headers["WWW-Authenticate"] = 'Bearer realm="hiddenstate-state-admin"'
            return response
        return None

    @app.after_request
    def count(response: Response) -> Response:
        endpoint = request.url_rule.rule if request.url_rule else "unmatched"
        metrics.ADMIN_REQUESTS.labels(endpoint, str(response.status_code)).inc()
        return response

    @app.get("/v1/entities/<namespace>/<entity_type>/<path:entity_id>")
    def read_entity(namespace: str, entity_type: str, entity_id: str) -> Response:
        key = EntityKey(namespace, entity_type, entity_id)
        body: dict[str, Any] = {"key": key.state_key, "namespace": namespace, "entity_type": entity_type,
                                "entity_id": entity_id}
        try:
            [state] = store.read_many([key])
        except StateCorrupt as error:  # the operator's next step is usually DELETE, so say so instead of failing
            return jsonify(body | {"corrupt": True, "detail": str(error)})
        hidden = state.hidden.astype(np.float32)
        return jsonify(
            body
            | {
                "corrupt": False,
                "seen": state.version > 0,
                "version": state.version,
                "last_event_time": state.last_event_time,
                "last_seen": datetime.fromtimestamp(state.last_event_time, UTC).isoformat() if state.version else None,
                "state_norm": float(np.linalg.norm(hidden)),
                "state_max_abs": float(np.abs(hidden).max(initial=0.0)),
                "hidden_size": store.hidden_size,
                "context_hex": state.context.hex(),
            }
        )

    @app.delete("/v1/entities/<namespace>/<entity_type>/<path:entity_id>")
    def delete_entity(namespace: str, entity_type: str, entity_id: str) -> Response:
        key = EntityKey(namespace, entity_type, entity_id)
        return jsonify({"key": key.state_key, "deleted": store.delete(key)})

    @app.post("/v1/snapshots")
    def take_snapshot() -> tuple[Response, int]:
        body = request.get_json(silent=True)
        if not isinstance(body, dict) or not isinstance(body.get("to"), str):
            raise InvalidStateRequest('body must be JSON like {"to": "s3://bucket/prefix"}')
        namespace = body.get("namespace")
        if namespace is not None and not isinstance(namespace, str):
            raise InvalidStateRequest("namespace must be a string or null")
        manifest = snapshot(store, body["to"], namespace=namespace, progress=False)
        summary = {k: manifest[k] for k in ("entities", "namespace", "started_at", "finished_at")}
        return jsonify(summary | {"to": body["to"], "parts": len(manifest["parts"])}), 201

    @app.get("/metrics")
    def prometheus_metrics() -> Response:
        return Response(generate_latest(), mimetype=CONTENT_TYPE_LATEST)

    @app.get("/health/readiness")
    def readiness() -> Response:
        store.check_ready()
        return jsonify({"ready": True})

    @app.get("/health/liveness")
    def liveness() -> Response:
        return jsonify({"alive": True})

    @app.errorhandler(InvalidStateRequest)
    def invalid(error: InvalidStateRequest) -> Response:
        return _error(400, "invalid_request", str(error))

    @app.errorhandler(StateUnavailable)
    @app.errorhandler(LibraryMissing)
    def unavailable(error: StateError) -> Response:
        response = _error(503, "state_unavailable", str(error))
        response.headers["Retry-After"] = "1"
        return response

    @app.errorhandler(StateCorrupt)
    def corrupt(error: StateCorrupt) -> Response:
        return _error(500, "state_corrupt", str(error))

    @app.errorhandler(StateError)
    def state_error(error: StateError) -> Response:
        return _error(500, "state_error", str(error))

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException) -> Response:
        return _error(error.code or 500, error.name.lower().replace(" ", "_"), error.description or error.name)

    return app


def _error(status: int, error: str, detail: str) -> Response:
    response = jsonify({"error": error, "detail": detail})
    response.status_code = status
    return response


def main() -> None:
    """Serve the admin API with granian (the project's WSGI server)."""
    from granian import Granian
    from granian.constants import Interfaces

    from functions.logs import configure_logging

    configure_logging()
    if not os.environ.get("STATE_ADMIN_TOKEN"):
        raise SystemExit("STATE_ADMIN_TOKEN is not set: the admin API will not run without a token")
    raw_port = os.environ.get("STATE_ADMIN_PORT", "8091")
    if not raw_port.isdigit() or not 0 < int(raw_port) < 65536:
        raise SystemExit(f"STATE_ADMIN_PORT must be a TCP port, got {raw_port!r}")
    Granian(
        "state_service.admin:create_app",
        factory=True,
        interface=Interfaces.WSGI,
        address=os.environ.get("STATE_ADMIN_HOST", "127.0.0.1"),
        port=int(raw_port),
    ).serve()


if __name__ == "__main__":
    main()
