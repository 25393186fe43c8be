"""The scoring function over HTTP: round trips in every mode, every error class, exact state under concurrency."""

from __future__ import annotations

import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

import orjson
import pytest
import requests
from cloudevents.core.bindings import http as ce_http

from functions.contract import (
    BATCH_CONTENT_TYPE,
    SCORE_TYPE,
    STRUCTURED_CONTENT_TYPE,
    structured_json,
    transaction_event,
    validate_score_data,
)

pytest_plugins = ["valkey_fixtures", "scorer_fixtures"]

TIME = "2026-03-01T12:00:00Z"


def _event(card: str | None = None, merchant: str | None = None, event_id: str | None = None, **data):
    body = {"card_id": card or f"card-{uuid.uuid4().hex[:10]}", "merchant_id": merchant or f"m-{uuid.uuid4().hex[:8]}",
            "amount": 42.5, "channel": "online", "country": "FR", "mcc": 5411, "currency": "EUR", **data}
    return transaction_event(event_id or uuid.uuid4().hex, body, time=TIME)


def _post_binary(url: str, event) -> requests.Response:
    message = ce_http.to_binary_event(event)
    return requests.post(url, headers=message.headers, data=message.body, timeout=30)


def _score_of(response: requests.Response) -> dict:
    assert response.status_code == 200, response.text
    event = ce_http.from_http_event(ce_http.HTTPMessage(dict(response.headers), response.content))
    assert event.get_type() == SCORE_TYPE
    data = event.get_data()
    if isinstance(data, bytes | str):
        data = orjson.loads(data)
    validate_score_data(data)
    return data


def test_binary_round_trip_replies_a_binary_score_event_from_this_revision(scorer_url):
    event = _event()
    response = _post_binary(scorer_url, event)
    score = _score_of(response)
    assert response.headers["ce-source"] == "/knative/scorer/scorer-00001"
    assert response.headers["content-type"].startswith("application/json")
    assert score["transaction_id"] == event.get_id()
    assert (score["card_seq"], score["merchant_seq"], score["duplicate"]) == (1, 1, False)
    assert 0.0 <= score["score"] <= 1.0


def test_structured_round_trip(scorer_url):
    event = _event()
    message = ce_http.to_structured_event(event)
    response = requests.post(scorer_url, headers=message.headers, data=message.body, timeout=30)
    assert message.headers["content-type"].startswith(STRUCTURED_CONTENT_TYPE)
    assert _score_of(response)["transaction_id"] == event.get_id()


def test_batch_round_trip_answers_in_order_and_folds_one_card_in_sequence(scorer_url):
    card = f"card-{uuid.uuid4().hex}"
    events = [_event(card=card) for _ in range(20)]
    response = requests.post(scorer_url, data=orjson.dumps([structured_json(e) for e in events]),
                             headers={"content-type": BATCH_CONTENT_TYPE}, timeout=30)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith(BATCH_CONTENT_TYPE)
    replies = response.json()
    assert [r["data"]["transaction_id"] for r in replies] == [e.get_id() for e in events]
    assert [r["data"]["card_seq"] for r in replies] == list(range(1, 21))
    assert all(r["type"] == SCORE_TYPE for r in replies)


def test_redelivered_event_is_not_applied_twice(scorer_url):
    card = f"card-{uuid.uuid4().hex}"
    event = _event(card=card)
    first = _score_of(_post_binary(scorer_url, event))
    again = _score_of(_post_binary(scorer_url, event))
    assert again["duplicate"] is True
    assert (again["card_seq"], again["score"]) == (first["card_seq"], first["score"])
    following = _score_of(_post_binary(scorer_url, _event(card=card)))
    assert following["card_seq"] == 2


def test_sixteen_threads_on_one_card_lose_no_update(scorer_url):
    card = f"card-{uuid.uuid4().hex}"
    per_thread = 15

    def send(_: int) -> list[int]:
        with requests.Session() as session:
            seqs = []
            for _ in range(per_thread):
                message = ce_http.to_binary_event(_event(card=card))
                response = session.post(scorer_url, headers=message.headers, data=message.body, timeout=30)
                seqs.append(_score_of(response)["card_seq"])
            return seqs

    with ThreadPoolExecutor(16) as pool:
        seqs = [s for chunk in pool.map(send, range(16)) for s in chunk]
    assert sorted(seqs) == list(range(1, 16 * per_thread + 1))


def _headers_without(message, name: str) -> dict[str, str]:
    return {k: v for k, v in message.headers.items() if k != name}


def _binary(**data):
    return ce_http.to_binary_event(_event(**data))


@pytest.mark.parametrize(
    ("mutate", "status", "error", "field"),
    [
        (lambda m: (_headers_without(m, "ce-id"), m.body), 400, "invalid_cloudevent", "id"),
        (lambda m: ({**m.headers, "ce-source": ""}, m.body), 400, "invalid_cloudevent", "source"),
        (lambda m: ({**m.headers, "ce-specversion": "0.3"}, m.body), 400, "invalid_cloudevent", "specversion"),
        (lambda m: ({**m.headers, "ce-time": "2026-04-05T18:31Z"}, m.body), 400, "invalid_cloudevent", "time"),
        (lambda m: (_headers_without(m, "ce-time"), m.body), 400, "invalid_cloudevent", "time"),
        (lambda m: (m.headers, b"{not json"), 400, "invalid_cloudevent", "body"),
        (lambda m: ({**m.headers, "content-type": "text/plain"}, m.body), 400, "invalid_cloudevent",
         "datacontenttype"),
        (lambda m: ({"content-type": "text/plain"}, m.body), 400, "invalid_cloudevent", "content-type"),
        (lambda m: ({**m.headers, "ce-type": "com.example.other"}, m.body), 400, "unsupported_event_type", "type"),
        (lambda m: (m.headers, orjson.dumps({"card_id": "c", "merchant_id": "m", "amount": -1})), 422,
         "invalid_data", "amount"),
        (lambda m: (m.headers, orjson.dumps({"card_id": "", "merchant_id": "m", "amount": 1})), 422,
         "invalid_data", "card_id"),
        (lambda m: (m.headers, orjson.dumps({"card_id": "c", "merchant_id": "m", "amount": 1, "country": "XX"})),
         422, "invalid_data", "country"),
        (lambda m: (m.headers, orjson.dumps({"card_id": "c", "merchant_id": "m", "amount": 1, "extra": 1})),
         422, "invalid_data", "extra"),
    ],
    ids=["missing-id", "empty-source", "unknown-specversion", "time-without-seconds", "missing-time",
         "body-not-json", "wrong-datacontenttype", "not-a-cloudevent", "unsupported-type",
         "negative-amount", "empty-card-id", "unknown-country", "unknown-field"],
)
def test_invalid_events_get_a_4xx_naming_the_problem(scorer_url, mutate, status, error, field):
    headers, body = mutate(_binary())
    response = requests.post(scorer_url, headers=headers, data=body, timeout=30)
    assert response.status_code == status, response.text
    payload = response.json()
    assert payload["error"] == error
    assert payload["field"] == field
    assert payload["detail"]


def test_structured_event_with_data_and_data_base64_is_rejected(scorer_url):
    obj = structured_json(_event())
    obj["data_base64"] = "e30="
    response = requests.post(scorer_url, data=orjson.dumps(obj), headers={"content-type": STRUCTURED_CONTENT_TYPE})
    assert response.status_code == 400
    assert response.json()["field"] == "data_base64"


def test_extension_names_must_be_lowercase_alphanumeric(scorer_url):
    # Structured mode: HTTP header names cannot carry the case and underscores that make a name invalid.
    obj = structured_json(_event())
    obj["Bad_Name"] = "x"
    response = requests.post(scorer_url, data=orjson.dumps(obj), headers={"content-type": STRUCTURED_CONTENT_TYPE})
    assert response.status_code == 400
    assert response.json()["field"] == "Bad_Name"


def test_structured_event_without_id_is_rejected_not_given_a_made_up_id(scorer_url):
    obj = structured_json(_event())
    del obj["id"]
    response = requests.post(scorer_url, data=orjson.dumps(obj), headers={"content-type": STRUCTURED_CONTENT_TYPE})
    assert response.status_code == 400
    assert response.json()["field"] == "id"


def test_body_over_one_mebibyte_gets_413(scorer_url):
    message = _binary()
    response = requests.post(scorer_url, headers=message.headers, data=b" " * (1024 * 1024 + 10), timeout=30)
    assert response.status_code == 413
    assert response.json()["error"] == "payload_too_large"


def test_batch_with_one_bad_item_is_rejected_whole_naming_its_index_and_applies_nothing(scorer_url):
    card = f"card-{uuid.uuid4().hex}"
    items = [structured_json(_event(card=card)) for _ in range(3)]
    items[2]["data"]["amount"] = "12"
    response = requests.post(scorer_url, data=orjson.dumps(items), headers={"content-type": BATCH_CONTENT_TYPE})
    assert response.status_code == 422
    assert response.json()["index"] == 2
    assert response.json()["field"] == "amount"
    assert _score_of(_post_binary(scorer_url, _event(card=card)))["card_seq"] == 1


def test_metrics_expose_outcomes_batch_sizes_and_step_latency(scorer_url):
    _score_of(_post_binary(scorer_url, _event()))
    text = requests.get(f"{scorer_url}/metrics", timeout=10).text
    for name in ("scorer_requests_total", "scorer_batch_size_bucket", "scorer_step_seconds_bucket",
                 "scorer_state_conflicts_total", "scorer_duplicates_total",
                 # the state client's metrics (default registry) are part of the instance's /metrics too
                 "hiddenstate_state_updates_total", "hiddenstate_state_call_seconds_bucket"):
        assert name in text
    assert 'scorer_requests_total{outcome="scored"}' in text


def test_concurrent_duplicates_of_one_event_apply_once(scorer_url):
    card = f"card-{uuid.uuid4().hex}"
    event = _event(card=card)
    barrier = threading.Barrier(8)

    def send(_: int) -> dict:
        barrier.wait()
        return _score_of(_post_binary(scorer_url, event))

    with ThreadPoolExecutor(8) as pool:
        replies = list(pool.map(send, range(8)))
    assert {r["card_seq"] for r in replies} == {1}
    assert sum(not r["duplicate"] for r in replies) == 1
    assert _score_of(_post_binary(scorer_url, _event(card=card)))["card_seq"] == 2


def test_a_chunked_body_over_one_mebibyte_gets_413_too(scorer_url):
    message = _binary()
    chunks = (b" " * 65536 for _ in range(17))  # no Content-Length: requests sends it chunked
    response = requests.post(scorer_url, headers=message.headers, data=chunks, timeout=30)
    assert response.status_code == 413
    assert response.json()["field"] == "body"


@pytest.mark.parametrize(("method", "path", "status"), [("get", "/", 405), ("post", "/nowhere", 404),
                                                         ("put", "/", 405)])
def test_other_methods_and_paths_get_json_errors(scorer_url, method, path, status):
    response = requests.request(method, scorer_url + path, timeout=10)
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    assert response.json()["error"] in {"method_not_allowed", "not_found"}
