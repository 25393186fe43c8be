"""The HTTP floor reference server (perf/baselines/http_floor.py): granian, no work, the real reply's shape."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import orjson
import pytest
import requests
from cloudevents.core.bindings import http as ce_http

from functions.contract import SCORE_TYPE, transaction_event, validate_score_data
from perf.scorer_bench import ServerProcess, wait_ready


@pytest.fixture(scope="module")
def floor_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server = ServerProcess("http_floor", "perf.baselines.http_floor", {"SCORER_HTTP_THREADS": "4"},
                           tmp_path_factory.mktemp("floor"))
    try:
        wait_ready(server.url, server.process, timeout_s=60)
        yield server.url
    finally:
        server.stop()


def test_http_floor_answers_every_post_with_a_valid_score_cloudevent(floor_url: str) -> None:
    data = {"card_id": "card-1", "merchant_id": "m-1", "amount": 12.5, "channel": "online", "country": "FR",
            "mcc": 5411}
    message = ce_http.to_binary_event(transaction_event(uuid.uuid4().hex, data, time="2026-03-01T12:00:00Z"))

    response = requests.post(floor_url, headers=message.headers, data=message.body, timeout=10)

    assert response.status_code == 200, response.text
    reply = ce_http.from_binary_event(ce_http.HTTPMessage(dict(response.headers), response.content))
    assert reply.get_type() == SCORE_TYPE
    payload = reply.get_data()
    score = validate_score_data(orjson.loads(payload) if isinstance(payload, bytes | str) else payload)
    assert 0.0 <= score.score <= 1.0


def test_http_floor_readiness_answers_200(floor_url: str) -> None:
    response = requests.get(f"{floor_url}/health/readiness", timeout=10)

    assert response.status_code == 200
    assert response.json() == {"status": "ready"}
