"""The naive baseline scorer: a straightforward Flask function, as people write and deploy it.

Per event: one GET per entity (card, merchant), one GRU step at batch 1 through the same pure step as the real
scorer, one SET per entity. No compare-and-set, no dedupe, no micro-batching: two concurrent events for one card can
lose an update, and a redelivery is applied twice. That is the point: it is what the real scorer is measured
against. It is served the standard way, gunicorn sync workers, one per core.

States use an encoding of its own under its own prefix, not the state service's protocol:
``hs:naive:<namespace>:<card|merchant>:<id>`` holds ``<dIBH`` (last event time, seq, last channel, last country)
followed by the float16 hidden state. The ``hs:`` prefix keeps it inside what the least-privileged Valkey user may
touch, so it runs with the same ``VALKEY_URL`` as the real scorer.

Run: ``python -m perf.baselines.naive_scorer`` with ``PORT`` (default 8080), ``VALKEY_URL``, ``MODEL_URI``,
``NAIVE_WORKERS`` (default: one per core).
"""

from __future__ import annotations

import os
import struct
import sys
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
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
from functions.model import EntityContext, events_from_transactions
from functions.model.features import encode_features
from functions.model.package import Predictor, load_predictor
from state_service.settings import DEFAULT_URL

KEY_PREFIX = "hs:naive:"
_HEADER = struct.Struct("<dIBH")  # last event time (Unix s), seq, last channel code, last country code
_STATUS = {InvalidData: 422, PayloadTooLarge: 413}


@dataclass
class NaiveState:
    """One entity as the baseline stores it."""

    hidden: np.ndarray  # float16 [H]
    last_time_s: float = 0.0
    seq: int = 0
    channel: int = 0
    country: int = 0

    def encode(self) -> bytes:
        return _HEADER.pack(self.last_time_s, self.seq, self.channel, self.country) + self.hidden.tobytes()

    @classmethod
    def decode(cls, blob: bytes | None, hidden_size: int) -> NaiveState:
        if not blob:
            return cls(np.zeros(hidden_size, np.float16))
        last_time_s, seq, channel, country = _HEADER.unpack_from(blob)
        return cls(np.frombuffer(blob, np.float16, hidden_size, _HEADER.size).copy(), last_time_s, seq, channel,
                   country)


def state_key(namespace: str, entity_type: str, entity_id: str) -> str:
    return f"{KEY_PREFIX}{namespace}:{entity_type}:{entity_id}"


def _context(state: NaiveState) -> EntityContext:
    return EntityContext(np.array([state.seq > 0]), np.array([state.last_time_s]), np.array([state.channel]),
                         np.array([state.country]))


def score_one(predictor: Predictor, client: valkey.Valkey, t: Transaction) -> Score:
    """GET both states, one step at batch 1, SET both. Read-modify-write without any guard, as naive code does."""
    namespace, hidden_size = predictor.namespace, predictor.spec.hidden_size
    card_key = state_key(namespace, "card", t.card_id)
    merchant_key = state_key(namespace, "merchant", t.merchant_id)
    card = NaiveState.decode(client.get(card_key), hidden_size)
    merchant = NaiveState.decode(client.get(merchant_key), hidden_size)
    events = events_from_transactions([t])
    features = encode_features(events, _context(card), _context(merchant), predictor.spec)
    with torch.inference_mode():
        step = predictor.model.step(
            torch.from_numpy(card.hidden.astype(np.float32)).unsqueeze(0),
            torch.from_numpy(merchant.hidden.astype(np.float32)).unsqueeze(0),
            features,
        )
    channel, country = int(events.channel[0]), int(events.country[0])
    for key, state, new_hidden in ((card_key, card, step.card_states), (merchant_key, merchant, step.merchant_states)):
        state.hidden = new_hidden[0].to(torch.float16).numpy()
        state.last_time_s = max(state.last_time_s, t.event_time_s)
        state.seq += 1
        state.channel, state.country = channel, country
        client.set(key, state.encode())
    return Score(t.id, t.card_id, t.merchant_id, min(max(float(step.scores[0]), 0.0), 1.0), namespace,
                 card.seq, merchant.seq, False)


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
