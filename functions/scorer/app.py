"""The Flask shell: parse a request into transactions, score them, write the reply. No scoring logic here."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
from cloudevents.core.bindings import http as ce_http
from flask import Flask, Response, request
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from functions.contract import BATCH_CONTENT_TYPE, MAX_BODY_BYTES, parse_http_request, score_event, structured_json
from functions.scorer.errors import json_error, register_error_handlers
from functions.scorer.service import ScorerService


def create_app(service: ScorerService) -> Flask:
    app = Flask("functions.scorer")
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    source = service.config.source
    requests_total = service.metrics.requests
    register_error_handlers(app, service.config.retry_after_s, lambda outcome: requests_total.labels(outcome).inc())

    @app.post("/")
    def score() -> Response:
        body = request.get_data(cache=False)
        transactions = parse_http_request(request.headers.items(), body)
        with service.metrics.in_flight.track_inprogress():
            scores = service.score(transactions)
        now = datetime.now(UTC)
        events = [score_event(s, source=source, time=now) for s in scores]
        requests_total.labels("scored").inc()
        service.mark_reply()
        if request.mimetype == BATCH_CONTENT_TYPE:
            return Response(orjson.dumps([structured_json(e) for e in events]), 200, mimetype=BATCH_CONTENT_TYPE)
        message = ce_http.to_binary_event(events[0])
        return Response(message.body, 200, headers=message.headers)

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
        return Response(generate_latest(service.metrics.registry), 200, mimetype=CONTENT_TYPE_LATEST)

    return app
