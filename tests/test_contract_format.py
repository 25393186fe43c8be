"""The orjson event format against the SDK's own JSON format: same events in, same JSON values out."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import orjson
import pytest
from cloudevents.core.bindings import http as ce_http
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent

from functions.contract import (
    EVENT_FORMAT,
    InvalidData,
    Score,
    ScoreReplies,
    batch_body,
    binary_message,
    score_event,
    structured_json,
    transaction_event,
)
from functions.scorer.errors import ModelNotReady, error_reply
from state_service.errors import StateUnavailable

SDK_FORMAT = JSONFormat()
NOW = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)


def _events() -> list[CloudEvent]:
    data = {"card_id": "cärd-1", "merchant_id": "m-1", "amount": 0.1, "channel": "pos", "mcc": 5411}
    return [
        transaction_event("e-1", data, time="2026-03-01T12:00:00Z", partitionkey="cärd-1"),
        transaction_event("e-2", data, time="2026-03-01T12:00:00.5+02:00"),
        score_event(Score("e-1", "c", "m", 0.25, "fraud-gru@v3", 3, 9, False), source="/knative/s/r", time=NOW),
        CloudEvent({"id": "b", "source": "/s", "type": "t", "specversion": "1.0",
                    "datacontenttype": "application/octet-stream"}, b"\x00\x01binary"),
        CloudEvent({"id": "n", "source": "/s", "type": "t", "specversion": "1.0"}, None),
    ]


def _assert_same(ours: CloudEvent, sdk: CloudEvent) -> None:
    assert type(ours) is type(sdk)
    assert ours.get_attributes() == sdk.get_attributes()
    assert ours.get_data() == sdk.get_data()


@pytest.mark.parametrize("event", _events(), ids=lambda e: e.get_id())
def test_structured_writes_the_same_json_values_as_the_sdk(event: CloudEvent) -> None:
    assert orjson.loads(EVENT_FORMAT.write(event)) == orjson.loads(SDK_FORMAT.write(event))
    assert structured_json(event) == orjson.loads(SDK_FORMAT.write(event))


@pytest.mark.parametrize("event", _events(), ids=lambda e: e.get_id())
def test_binary_messages_match_the_sdk_and_read_back_equal(event: CloudEvent) -> None:
    ours, sdk = binary_message(event), ce_http.to_binary_event(event)
    assert ours.headers == sdk.headers
    assert ours.body == sdk.body or orjson.loads(ours.body) == orjson.loads(sdk.body)
    _assert_same(ce_http.from_binary_event(ours, EVENT_FORMAT), ce_http.from_binary_event(sdk))


@pytest.mark.parametrize("event", _events(), ids=lambda e: e.get_id())
def test_structured_reads_give_the_same_event_as_the_sdk(event: CloudEvent) -> None:
    message = ce_http.to_structured_event(event)
    _assert_same(ce_http.from_structured_event(message, EVENT_FORMAT), ce_http.from_structured_event(message))


def test_batch_body_is_the_array_of_structured_events() -> None:
    events = _events()
    assert orjson.loads(batch_body(events)) == [orjson.loads(SDK_FORMAT.write(e)) for e in events]


def test_text_that_is_not_json_stays_text_as_in_the_sdk() -> None:
    message = ce_http.HTTPMessage({"ce-id": "x", "ce-source": "/s", "ce-type": "t", "ce-specversion": "1.0",
                                   "content-type": "application/json"}, b"not json")
    assert ce_http.from_binary_event(message, EVENT_FORMAT).get_data() == "not json"


@pytest.mark.parametrize(
    ("error", "status", "code", "retry"),
    [
        (InvalidData("'amount' must be a number", "amount"), 422, "invalid_data", False),
        (StateUnavailable("valkey timed out"), 503, "state_unavailable", True),
        (ModelNotReady("no model"), 503, "model_not_ready", True),
    ],
)
def test_errors_map_to_status_json_and_retry_after(error: Exception, status: int, code: str, retry: bool) -> None:
    reply = error_reply(error, retry_after_s=2)
    assert reply.status == status
    assert orjson.loads(reply.body)["error"] == code
    assert (("Retry-After", "2") in reply.headers) is retry


def test_an_unexpected_error_is_a_500_with_an_error_id_that_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, logger="functions.scorer"):
        reply = error_reply(RuntimeError("boom"), retry_after_s=2)
    body = orjson.loads(reply.body)
    assert (reply.status, body["error"]) == (500, "internal_error")
    assert any(getattr(r, "error_id", None) == body["error_id"] and r.exc_info for r in caplog.records)


@pytest.mark.parametrize("time", ["2026-03-01T12:00:00Z", "2026-03-01T12:00:00.123456789+02:00",
                                  "2026-03-01t12:00:00.5z"])
def test_binary_parsing_gives_the_event_the_sdk_would(time: str) -> None:
    """The contract hands the SDK the message without `time` and sets the time it parsed itself: same event."""
    from functions.contract import parse_event

    event = transaction_event("e-9", {"card_id": "cärd 1", "merchant_id": "m", "amount": 1.5}, time=time.upper(),
                              partitionkey="cärd 1")
    message = ce_http.to_binary_event(event)
    message.headers["ce-time"] = time
    ours = parse_event(message.headers, message.body)
    _assert_same(ours, ce_http.from_binary_event(message))
    assert ours.get_extension("partitionkey") == "cärd 1"  # percent-decoded by the SDK's binding


@pytest.mark.parametrize("event", _events(), ids=lambda e: e.get_id())
def test_reading_a_parsed_object_gives_the_event_the_sdk_reads_from_json(event: CloudEvent) -> None:
    message = ce_http.to_structured_event(event)
    obj = orjson.loads(message.body)
    before = dict(obj)
    _assert_same(EVENT_FORMAT.read_object(None, obj), ce_http.from_structured_event(message))
    assert obj == before  # the caller's object is left as it was


def test_a_batch_gives_the_transactions_its_items_give_one_by_one() -> None:
    from functions.contract import BATCH_CONTENT_TYPE, STRUCTURED_CONTENT_TYPE, parse_http_request

    events = [e for e in _events() if e.get_type() == "dev.hiddenstate.transaction"]
    items = [structured_json(e) for e in events]
    batch = parse_http_request({"content-type": BATCH_CONTENT_TYPE}, orjson.dumps(items))
    one_by_one = [parse_http_request({"content-type": STRUCTURED_CONTENT_TYPE}, orjson.dumps(i))[0] for i in items]
    assert batch == one_by_one


_ODD_SCORES = [
    Score("e-1", "c", "m", 0.25, "fraud-gru@v3", 3, 9, False),
    # ids and subjects that need percent-coding in a header: space, quote, percent, non-ASCII, control
    Score('tx 1%"é\t', "cärd/1 x", "m", 1.0, "fraud-gru@v3", 1, 1, True),
    Score("a:b+c/d?e=f&g", "card-%41", "m", 0.0, "m@1", 0, 7, False),
]


@pytest.mark.parametrize("score", _ODD_SCORES)
def test_a_binary_reply_is_what_the_sdk_writes_for_the_score_event(score: Score) -> None:
    headers, body = ScoreReplies("/knative/s/r 1").binary(score, NOW)
    sdk = binary_message(score_event(score, source="/knative/s/r 1", time=NOW))
    assert dict(headers) == dict(sdk.headers)
    assert len(headers) == len(sdk.headers)
    assert body == sdk.body
    read = ce_http.from_binary(ce_http.HTTPMessage(dict(headers), body), EVENT_FORMAT)
    assert read.get_id() == f"score-{score.transaction_id}"
    assert read.get_attributes()["subject"] == score.card_id


def test_a_batch_reply_is_what_the_sdk_writes_for_the_score_events() -> None:
    body = ScoreReplies("/knative/s/r").batch(_ODD_SCORES, NOW)
    sdk = batch_body([score_event(s, source="/knative/s/r", time=NOW) for s in _ODD_SCORES])
    assert body == sdk
    assert [item["data"]["transaction_id"] for item in orjson.loads(body)] == [s.transaction_id for s in _ODD_SCORES]
