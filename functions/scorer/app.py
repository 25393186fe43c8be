"""The HTTP shell: parse a request into transactions, score them, write the reply. No scoring logic here.

``create_app`` is a Flask app factory. The scoring route itself, ``POST /``, is served by a lean WSGI handler in
front of Flask's dispatch (``app.wsgi_app``): on this 2-core machine Flask's request context, routing and
response objects were about a fifth of the scorer's per-event CPU, more than the GRU step. Every other route
(health, metrics, 404/405) is Flask's. Both paths answer errors through ``errors.error_reply``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

import orjson
from flask import Flask, Response, request
from prometheus_client import CONTENT_TYPE_LATEST

from functions.contract import (
    BATCH_CONTENT_TYPE,
    MAX_BODY_BYTES,
    LowerCaseHeaders,
    PayloadTooLarge,
    ScoreReplies,
    is_batch_request,
    parse_http_request,
)
from functions.scorer.errors import error_reply, json_error, register_error_handlers
from functions.scorer.metrics import exposition
from functions.scorer.service import ScorerService

StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]
_STATUS = {200: "200 OK", 400: "400 Bad Request", 404: "404 Not Found", 405: "405 Method Not Allowed",
           413: "413 Payload Too Large", 422: "422 Unprocessable Entity", 500: "500 Internal Server Error",
           503: "503 Service Unavailable"}


def create_app(service: ScorerService) -> Flask:
    app = Flask("functions.scorer")
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    requests_total = service.metrics.requests
    register_error_handlers(app, service.config.retry_after_s, lambda outcome: requests_total.labels(outcome).inc())
    route = ScoringRoute(service, app.wsgi_app)
    app.wsgi_app = route  # type: ignore[method-assign]

    @app.post("/")
    def score() -> Response:
        # Not reached through app.wsgi_app, which answers POST / itself; registered so that GET / is a 405, and
        # so that the same handler serves under Flask alone (errors then go through Flask's handler: same mapping).
        status, headers, body = route.score(request.environ)
        return Response(body, status, headers=headers)

    @app.get("/health/readiness")
    def readiness() -> Response:
        ok, detail = service.ready()
        if ok:
            return Response(orjson.dumps({"status": "ready"}), 200, mimetype="application/json")
        return json_error(503, "not_ready", detail)

    @app.get("/health/liveness")
    def liveness() -> Response:
        return Response(orjson.dumps({"status": "alive"}), 200, mimetype="application/json")

    @app.get("/metrics")
    def metrics() -> Response:
        return Response(exposition(service.metrics.registry), 200, mimetype=CONTENT_TYPE_LATEST)

    return app


class ScoringRoute:
    """``POST /`` as plain WSGI: body and headers from the environ, score, reply; everything else to ``fallback``."""

    def __init__(self, service: ScorerService, fallback: WSGIApp) -> None:
        self.service = service
        self.fallback = fallback
        self.replies = ScoreReplies(service.config.source)
        self.retry_after_s = service.config.retry_after_s
        self.outcomes = {name: service.metrics.requests.labels(name)
                         for name in ("scored", "invalid", "unavailable", "conflict", "error")}

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("PATH_INFO") != "/" or environ.get("REQUEST_METHOD") != "POST":
            return self.fallback(environ, start_response)
        try:
            status, headers, body = self.score(environ)
        except Exception as exc:  # noqa: BLE001 - mapped to a JSON answer; the unexpected ones are logged with an id
            reply = error_reply(exc, self.retry_after_s)
            self.outcomes[reply.outcome].inc()
            status, body = reply.status, reply.body
            headers = [("Content-Type", "application/json"), *reply.headers]
        headers.append(("Content-Length", str(len(body))))
        start_response(_STATUS.get(status, str(status)), headers)
        return [body]

    def score(self, environ: dict[str, Any]) -> tuple[int, list[tuple[str, str]], bytes]:
        headers = request_headers(environ)
        transactions = parse_http_request(headers, read_body(environ))
        service = self.service
        with service.metrics.in_flight.track_inprogress():
            scores = service.score(transactions)
        now = datetime.now(UTC)
        self.outcomes["scored"].inc()
        service.mark_reply()
        if is_batch_request(headers):
            return 200, [("Content-Type", BATCH_CONTENT_TYPE)], self.replies.batch(scores, now)
        reply_headers, body = self.replies.binary(scores[0], now)
        return 200, reply_headers, body


def request_headers(environ: dict[str, Any]) -> LowerCaseHeaders:
    """The headers the contract reads (ce-* and Content-Type), lower-cased and named as werkzeug names them
    (``HTTP_CE_ID`` is ``ce-id``)."""
    headers = LowerCaseHeaders(
        ("ce-" + key[8:].lower().replace("_", "-"), value) for key, value in environ.items() if key[:8] == "HTTP_CE_"
    )
    if environ.get("CONTENT_TYPE"):
        headers["content-type"] = environ["CONTENT_TYPE"]
    return headers


def read_body(environ: dict[str, Any]) -> bytes:
    """The body, refused past the 1 MiB limit before it is read (and, without a length, once it gets there)."""
    length = environ.get("CONTENT_LENGTH") or ""
    stream = environ["wsgi.input"]
    if length.isdigit():
        if int(length) > MAX_BODY_BYTES:
            raise PayloadTooLarge(f"request body of {length} bytes is over the {MAX_BODY_BYTES}-byte limit", "body")
        return stream.read(int(length))
    body = stream.read(MAX_BODY_BYTES + 1)
    if len(body) > MAX_BODY_BYTES:
        raise PayloadTooLarge(f"request body is over the {MAX_BODY_BYTES}-byte limit", "body")
    return body
