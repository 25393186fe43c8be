"""The naive baseline scorer (perf/baselines/naive_scorer.py) end to end: gunicorn, a real valkey-server, the model."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import orjson
import pytest
import requests
import torch
import valkey
from cloudevents.core.bindings import http as ce_http

from functions.contract import SCORE_TYPE, parse_http_request, transaction_event, validate_score_data
from functions.model import EntityContext, encode_features, events_from_transactions
from functions.model.package import load_predictor
from perf.baselines.naive_step import NaiveState, state_key
from perf.scorer_bench import ROOT, wait_ready
from state_service.server import ValkeyServer, free_port

pytest_plugins = ["valkey_fixtures", "scorer_fixtures"]


@pytest.fixture(scope="module")
def naive_url(tmp_path_factory: pytest.TempPathFactory, valkey_server: ValkeyServer, model_uri: str) -> Iterator[str]:
    port = free_port()
    env = {**os.environ, "PORT": str(port), "VALKEY_URL": valkey_server.url, "MODEL_URI": model_uri,
           "NAIVE_WORKERS": "1"}
    log_path = tmp_path_factory.mktemp("naive") / "naive.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "perf.baselines.naive_scorer"], env=env, cwd=ROOT,
                                   stdout=log, stderr=subprocess.STDOUT)
        try:
            url = f"http://127.0.0.1:{port}"
            wait_ready(url, process)
            yield url
        finally:
            process.terminate()
            process.wait(20)


@pytest.fixture
def post_binary(naive_url: str) -> Callable[..., requests.Response]:
    def post(event) -> requests.Response:
        message = ce_http.to_binary_event(event)
        return requests.post(naive_url, headers=message.headers, data=message.body, timeout=30)

    return post


def _transaction(card: str, merchant: str, time: str, amount: float = 42.5):
    data = {"card_id": card, "merchant_id": merchant, "amount": amount, "channel": "online", "country": "FR",
            "mcc": 5411}
    return transaction_event(uuid.uuid4().hex, data, time=time)


def _score_data(response: requests.Response) -> dict:
    assert response.status_code == 200, response.text
    event = ce_http.from_binary_event(ce_http.HTTPMessage(dict(response.headers), response.content))
    assert event.get_type() == SCORE_TYPE
    data = event.get_data()
    return validate_score_data(orjson.loads(data) if isinstance(data, bytes | str) else data).data()


def test_naive_scorer_scores_a_binary_cloudevent_and_stores_both_states(post_binary, valkey_server, model_uri):
    card, merchant = f"card-{uuid.uuid4().hex[:8]}", f"m-{uuid.uuid4().hex[:8]}"
    first = _transaction(card, merchant, "2026-03-01T12:00:00Z")
    second = _transaction(card, merchant, "2026-03-01T12:05:00Z", amount=900.0)

    one, two = _score_data(post_binary(first)), _score_data(post_binary(second))

    assert one["transaction_id"] == first.get_id()
    assert (one["card_seq"], one["merchant_seq"], two["card_seq"], two["merchant_seq"]) == (1, 1, 2, 2)
    predictor = load_predictor(model_uri)
    with valkey.Valkey.from_url(valkey_server.admin_url) as client:
        stored = NaiveState.decode(client.get(state_key(predictor.namespace, "card", card)), 64)
    assert stored.seq == 2
    assert stored.last_time_s == parse_http_request(*_wire(second))[0].event_time_s


def test_naive_scorer_gives_the_pure_steps_score_for_a_sequence(post_binary, model_uri):
    """The baseline runs the same model through the same step: its scores match an offline fold at float16 state."""
    card, merchant = f"card-{uuid.uuid4().hex[:8]}", f"m-{uuid.uuid4().hex[:8]}"
    events = [_transaction(card, merchant, f"2026-03-01T12:0{i}:00Z", amount=10.0 + 50 * i) for i in range(3)]
    served = [_score_data(post_binary(e))["score"] for e in events]

    predictor = load_predictor(model_uri)
    hidden = torch.zeros(1, 64)
    merchant_hidden = torch.zeros(1, 64)
    context = EntityContext.unseen(1)
    offline = []
    for event in events:
        t = parse_http_request(*_wire(event))[0]
        columns = events_from_transactions([t])
        features = encode_features(columns, context, context, predictor.spec)
        with torch.inference_mode():
            step = predictor.model.step(hidden, merchant_hidden, features)
        offline.append(float(step.scores[0]))
        hidden = step.card_states.to(torch.float16).to(torch.float32)
        merchant_hidden = step.merchant_states.to(torch.float16).to(torch.float32)
        # Card and merchant saw the same events, so one context serves both.
        context = EntityContext(np.array([True]), columns.time_s.copy(), columns.channel.copy(),
                                columns.country.copy())
    assert np.allclose(served, offline, atol=1e-6)


def test_naive_scorer_rejects_an_invalid_event_with_a_named_field(naive_url):
    message = ce_http.to_binary_event(_transaction("c", "m", "2026-03-01T12:00:00Z"))
    headers = {k: v for k, v in message.headers.items() if k.lower() != "ce-id"}
    response = requests.post(naive_url, headers=headers, data=message.body, timeout=30)
    assert response.status_code == 400
    assert response.json()["field"] == "id"


def _wire(event) -> tuple[dict[str, str], bytes]:
    message = ce_http.to_binary_event(event)
    return dict(message.headers), message.body


def test_module_refuses_to_start_without_model_uri(tmp_path: Path):
    env = {k: v for k, v in os.environ.items() if k != "MODEL_URI"}
    result = subprocess.run([sys.executable, "-m", "perf.baselines.naive_scorer"], env=env, cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "MODEL_URI" in result.stderr
