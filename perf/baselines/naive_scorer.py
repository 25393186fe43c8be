"""The naive baseline scorer: a straightforward Flask function, as people write and deploy it.

Per event: one GET per entity (card, merchant), one GRU step at batch 1 through the same pure step as the real
scorer, one SET per entity. No compare-and-set, no dedupe, no micro-batching: two concurrent events for one card can
lose an update, and a redelivery is applied twice. That is the point: it is what the real scorer is measured
against. It is served the standard way, gunicorn sync workers, one per core.

The work per event lives in ``perf.baselines.naive_step`` (with the state encoding), shared with the KServe
reference predictor; this module is its Flask shell.

Run: ``python -m perf.baselines.naive_scorer`` with ``PORT`` (default 8080), ``VALKEY_URL``, ``MODEL_URI``,
``NAIVE_WORKERS`` (default: one per core).
"""

from __future__ import annotations

import os
import sys
from datetime import UTC, datetime

import orjson
import torch
import valkey
from cloudevents.core.bindings import http as ce_http
from flask import Flask, Response, request

from functions.contract import (
    BATCH_CONTENT_TYPE,
    ContractError,
    InvalidData,
    PayloadTooLarge,
    Score,
    Transaction,
    parse_http_request,
    score_event,
    structured_json,
)
from functions.logs import configure_logging
from functions.model.package import Predictor, load_predictor
from perf.baselines import naive_step
from state_service.settings import DEFAULT_URL

_STATUS = {InvalidData: 422, PayloadTooLarge: 413}


def score_one(predictor: Predictor, client: valkey.Valkey, t: Transaction) -> Score:
    """The baseline's work for one event (``naive_step``) as the contract's score."""
    result = naive_step.score_one(predictor, client, t)
    return Score(t.id, t.card_id, t.merchant_id, result.score, predictor.namespace, result.card_seq,
                 result.merchant_seq, False)


def _error(status: int, error: str, detail: str, **extra: object) -> Response:
    return Response(orjson.dumps({"error": error, "detail": detail, **extra}), status, mimetype="application/json")


def create_app() -> Flask:
    """The app factory gunicorn calls in each worker: each worker loads the model and opens its own client."""
    configure_logging()
    torch.set_num_threads(1)  # one sync worker per core: more intra-op threads would only fight each other
    predictor = load_predictor(os.environ["MODEL_URI"])
    client = valkey.Valkey.from_url(os.environ.get("VALKEY_URL") or DEFAULT_URL, socket_timeout=0.5)
    source = f"/knative/{os.environ.get('K_SERVICE', 'naive-scorer')}/{os.environ.get('K_REVISION', 'local')}"
    app = Flask("perf.baselines.naive_scorer")

    @app.post("/")
    def score() -> Response:
        transactions = parse_http_request(request.headers.items(), request.get_data())
        now = datetime.now(UTC)
        events = [score_event(score_one(predictor, client, t), source=source, time=now) for t in transactions]
        if request.mimetype == BATCH_CONTENT_TYPE:
            return Response(orjson.dumps([structured_json(e) for e in events]), 200, mimetype=BATCH_CONTENT_TYPE)
        message = ce_http.to_binary_event(events[0])
        return Response(message.body, 200, headers=message.headers)

    @app.get("/health/readiness")
    def readiness() -> Response:
        client.ping()
        return Response(b'{"status":"ready"}', 200, mimetype="application/json")

    @app.get("/health/liveness")
    def liveness() -> Response:
        return Response(b'{"status":"alive"}', 200, mimetype="application/json")

    @app.errorhandler(ContractError)
    def contract_error(exc: ContractError) -> Response:
        return Response(orjson.dumps(exc.to_dict()), _STATUS.get(type(exc), 400), mimetype="application/json")

    @app.errorhandler(valkey.exceptions.ValkeyError)
    def valkey_error(exc: valkey.exceptions.ValkeyError) -> Response:
        response = _error(503, "state_unavailable", str(exc))
        response.headers["Retry-After"] = "1"
        return response

    return app


def main() -> None:
    """Exec gunicorn with the app factory: sync workers, one per core, as the standard Flask deployment goes."""
    if not os.environ.get("MODEL_URI"):
        sys.exit("error: MODEL_URI is not set (a model URI as printed by the trainer, file:// or s3://)")
    workers = os.environ.get("NAIVE_WORKERS") or str(os.cpu_count() or 1)
    bind = f"0.0.0.0:{os.environ.get('PORT', '8080')}"
    os.execvp(sys.executable, [sys.executable, "-m", "gunicorn", "--workers", workers, "--worker-class", "sync",
                               "--bind", bind, "--backlog", "2048", "--graceful-timeout", "10",
                               "perf.baselines.naive_scorer:create_app()"])


if __name__ == "__main__":
    main()
