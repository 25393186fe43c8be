"""The local broker against real HTTP subscribers: ingress, routing, retries, dead letters, replies and hop limits."""

from __future__ import annotations

import base64
import socket
import time

import orjson
import pytest
import requests
from cloudevents.core.bindings import http as ce_http
from cloudevents.core.v1.event import CloudEvent
from test_local_eventing_peers import (
    BrokerThread,
    Subscriber,
    always,
    broker_manifest,
    trigger_manifest,
)

from functions.contract import SCORE_TYPE, TRANSACTION_TYPE, transaction_event

FAST_RETRY = {"retry": 3, "backoffPolicy": "linear", "backoffDelay": "PT0.01S"}


def transaction(event_id: str = "t-1", **extensions: str) -> CloudEvent:
    event = transaction_event(event_id, {"card_id": "c1", "merchant_id": "m1", "amount": 9.5},
                              time="2026-01-01T10:00:00Z", partitionkey="c1")
    if not extensions:
        return event
    return CloudEvent({**event.get_attributes(), **extensions}, event.get_data())


def score_reply(transaction_id: str) -> CloudEvent:
    return CloudEvent({"id": f"score-{transaction_id}", "source": "/scorer", "type": SCORE_TYPE,
                       "datacontenttype": "application/json"}, {"transaction_id": transaction_id, "score": 0.1})


def post(url: str, event: CloudEvent, mode: str = "binary") -> requests.Response:
    message = ce_http.to_binary_event(event) if mode == "binary" else ce_http.to_structured_event(event)
    return requests.post(url, headers=message.headers, data=message.body, timeout=10)


@pytest.fixture
def peers():
    started: list[Subscriber] = []

    def start(respond=None) -> Subscriber:
        subscriber = Subscriber(respond or always(202))
        started.append(subscriber)
        return subscriber

    yield start
    for subscriber in started:
        subscriber.close()


@pytest.fixture
def broker():
    started: list[BrokerThread] = []

    def start(triggers: list[dict], brokers: list[dict] | None = None, **kwargs) -> BrokerThread:
        running = BrokerThread(brokers or [broker_manifest()], triggers, **kwargs)
        started.append(running)
        return running

    yield start
    for running in started:
        running.close()


def free_port_url() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{probe.getsockname()[1]}/"


# -- ingress -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["binary", "structured"])
def test_valid_event_is_accepted_with_202_and_delivered_in_binary_mode_with_prefer_reply(broker, peers, mode):
    subscriber = peers()
    running = broker([trigger_manifest("all", subscriber.url)])
    response = post(running.broker.ingress_url("test", "default"), transaction(), mode)
    assert response.status_code == 202
    (received,) = subscriber.wait_for(1)
    assert received.headers["ce-id"] == "t-1"
    assert received.headers["ce-type"] == TRANSACTION_TYPE
    assert received.headers["ce-partitionkey"] == "c1"
    assert received.headers["prefer"] == "reply"
    assert "ce-knativebrokerttl" not in received.headers
    assert orjson.loads(received.body)["card_id"] == "c1"
    running.drain()
    assert running.counters()["accepted"] == 1 and running.counters()["delivered"] == 1


def test_generic_cloudevents_without_time_or_json_data_are_accepted(broker, peers):
    subscriber = peers()
    running = broker([trigger_manifest("all", subscriber.url)])
    headers = {"ce-id": "x-1", "ce-source": "/elsewhere", "ce-type": "com.example.ping", "ce-specversion": "1.0",
               "content-type": "text/plain"}
    response = requests.post(running.broker.ingress_url("test", "default"), headers=headers, data=b"hello", timeout=10)
    assert response.status_code == 202
    assert subscriber.wait_for(1)[0].body == b"hello"


@pytest.mark.parametrize(
    ("headers", "body", "field"),
    [
        ({"ce-source": "/s", "ce-type": "t", "ce-specversion": "1.0"}, b"", "id"),
        ({"ce-id": "1", "ce-source": "/s", "ce-type": "t", "ce-specversion": "0.3"}, b"", "specversion"),
        ({"content-type": "application/cloudevents+json"}, b'{"id": "1", "source": "/s", "specversion": "1.0"}',
         "type"),
        ({"content-type": "application/json"}, b'{"card_id": "c1"}', "content-type"),
        ({"ce-id": "1", "ce-source": "/s", "ce-type": "t", "ce-specversion": "1.0", "ce-knativebrokerttl": "x"},
         b"", "knativebrokerttl"),
    ],
)
def test_invalid_event_gets_400_with_a_json_error_naming_the_problem(broker, peers, headers, body, field):
    subscriber = peers()
    running = broker([trigger_manifest("all", subscriber.url)])
    response = requests.post(running.broker.ingress_url("test", "default"), headers=headers, data=body, timeout=10)
    assert response.status_code == 400
    error = response.json()
    assert error["error"] and field in error["detail"] + error.get("field", "")
    running.drain()
    assert running.counters()["rejected"] == 1 and running.counters()["accepted"] == 0
    assert subscriber.received == []


def test_oversized_body_gets_413_with_a_json_error(broker, peers):
    running = broker([trigger_manifest("all", peers().url)])
    headers = {"ce-id": "1", "ce-source": "/s", "ce-type": "t", "ce-specversion": "1.0"}
    response = requests.post(running.broker.ingress_url("test", "default"), headers=headers,
                             data=b"x" * (2 * 1024 * 1024), timeout=10)
    assert response.status_code == 413 and response.json()["error"] == "payload_too_large"


def test_event_with_no_hops_left_is_rejected(broker, peers):
    running = broker([trigger_manifest("all", peers().url)])
    response = post(running.broker.ingress_url("test", "default"), transaction(knativebrokerttl="0"))
    assert response.status_code == 400 and response.json()["error"] == "ttl_exhausted"


def test_ingress_answers_options_rejects_other_methods_and_unknown_brokers(broker, peers):
    running = broker([trigger_manifest("all", peers().url)])
    ingress = running.broker.ingress_url("test", "default")
    options = requests.options(ingress, timeout=10)
    assert options.status_code == 200 and options.headers["Allow"] == "POST, OPTIONS"
    wrong_method = requests.get(ingress, timeout=10)
    assert wrong_method.status_code == 405 and "POST" in wrong_method.headers["Allow"]
    assert requests.post(f"{running.broker.url}/test/nope", timeout=10).status_code == 404
    assert requests.post(f"{running.broker.url}/test", timeout=10).status_code == 404
    assert requests.post(f"{running.broker.url}/test/default/x", timeout=10).status_code == 404
    with pytest.raises(KeyError):
        running.broker.ingress_url("test", "nope")


# -- routing -------------------------------------------------------------------------------------------------------


def test_each_event_reaches_only_the_triggers_whose_filters_match(broker, peers):
    transactions, scores, prefixed = peers(), peers(), peers()
    running = broker([
        trigger_manifest("transactions", transactions.url, filter_attributes={"type": TRANSACTION_TYPE}),
        trigger_manifest("scores", scores.url, filters=[{"exact": {"type": SCORE_TYPE}}]),
        trigger_manifest("everything-hiddenstate", prefixed.url, filters=[{"prefix": {"type": "dev.hiddenstate."}}]),
    ])
    ingress = running.broker.ingress_url("test", "default")
    assert post(ingress, transaction("t-1")).status_code == 202
    assert post(ingress, score_reply("t-0")).status_code == 202
    running.drain()
    assert [r.headers["ce-id"] for r in transactions.received] == ["t-1"]
    assert [r.headers["ce-id"] for r in scores.received] == ["score-t-0"]
    assert sorted(r.headers["ce-id"] for r in prefixed.received) == ["score-t-0", "t-1"]


def test_subscriber_refs_are_resolved_through_the_runtime(broker, peers):
    subscriber = peers()
    resolved: list[dict] = []

    def resolve(ref: dict) -> str:
        resolved.append(ref)
        return subscriber.url

    trigger = trigger_manifest("by-ref", "unused")
    trigger["spec"]["subscriber"] = {"ref": {"apiVersion": "serving.knative.dev/v1", "kind": "Service",
                                             "name": "scorer"}, "uri": "/events"}
    running = broker([trigger], resolve=resolve)
    ingress = running.broker.ingress_url("test", "default")
    assert post(ingress, transaction("t-1")).status_code == 202
    assert post(ingress, transaction("t-2")).status_code == 202
    received = subscriber.wait_for(2)
    assert {r.path for r in received} == {"/events"}
    assert resolved[0] == {"apiVersion": "serving.knative.dev/v1", "kind": "Service", "name": "scorer",
                           "namespace": "test"}


# -- retries and dead letters --------------------------------------------------------------------------------------


def dead_letter_delivery(sink_url: str, **overrides) -> dict:
    return {**FAST_RETRY, "deadLetterSink": {"uri": sink_url}, **overrides}


def test_retryable_failures_are_retried_with_backoff_then_dead_lettered_with_knative_extensions(broker, peers):
    failing = peers(always(503, {"content-type": "text/plain"}, b"overloaded"))
    sink = peers()
    running = broker([trigger_manifest("t", failing.url, delivery=dead_letter_delivery(sink.url))])
    assert post(running.broker.ingress_url("test", "default"), transaction("t-9")).status_code == 202
    (letter,) = sink.wait_for(1)
    running.drain()
    assert len(failing.received) == 1 + FAST_RETRY["retry"]
    assert letter.headers["ce-id"] == "t-9"
    assert letter.headers["ce-knativeerrorcode"] == "503"
    assert letter.headers["ce-knativeerrordest"] == failing.url
    assert base64.b64decode(letter.headers["ce-knativeerrordata"]) == b"overloaded"
    assert orjson.loads(letter.body)["card_id"] == "c1"
    counters = running.counters()
    assert (counters["retried"], counters["dead_lettered"], counters["delivered"]) == (3, 1, 0)


def test_retries_wait_out_the_backoff_between_attempts(broker, peers):
    arrivals: list[float] = []

    def record(_index, _request):
        arrivals.append(time.monotonic())
        return 500, {}, b""

    failing = peers(record)
    delivery = {"retry": 3, "backoffPolicy": "exponential", "backoffDelay": "PT0.05S"}
    running = broker([trigger_manifest("t", failing.url, delivery=delivery)])
    post(running.broker.ingress_url("test", "default"), transaction())
    failing.wait_for(4)
    running.drain()
    # Exponential from 0.05 s waits 0.1 + 0.2 + 0.4 s in all. Only a lower bound, with slack for thread scheduling
    # in the peer: a busy machine makes the waits longer, never shorter.
    assert arrivals[-1] - arrivals[0] >= 0.7 * (0.1 + 0.2 + 0.4)
    assert running.counters()["undeliverable"] == 1


def test_400_is_not_retried_and_goes_straight_to_the_dead_letter_sink(broker, peers):
    rejecting = peers(always(400, {"content-type": "application/json"}, b'{"error": "invalid_data"}'))
    sink = peers()
    running = broker([trigger_manifest("t", rejecting.url, delivery=dead_letter_delivery(sink.url))])
    post(running.broker.ingress_url("test", "default"), transaction())
    (letter,) = sink.wait_for(1)
    running.drain()
    assert len(rejecting.received) == 1
    assert letter.headers["ce-knativeerrorcode"] == "400"
    assert running.counters()["retried"] == 0


def test_an_event_that_succeeds_on_a_retry_is_delivered_once_and_not_dead_lettered(broker, peers):
    flaky = peers(lambda index, _request: (429 if index < 2 else 200, {}, b""))
    sink = peers()
    running = broker([trigger_manifest("t", flaky.url, delivery=dead_letter_delivery(sink.url))])
    post(running.broker.ingress_url("test", "default"), transaction())
    flaky.wait_for(3)
    running.drain()
    counters = running.counters()
    assert (counters["delivered"], counters["retried"], counters["dead_lettered"]) == (1, 2, 0)
    assert sink.received == []


def test_network_errors_are_retried_then_dead_lettered_as_dispatch_errors(broker, peers):
    sink = peers()
    unreachable = free_port_url()
    running = broker([trigger_manifest("t", unreachable, delivery=dead_letter_delivery(sink.url, retry=1))])
    post(running.broker.ingress_url("test", "default"), transaction())
    (letter,) = sink.wait_for(1)
    assert letter.headers["ce-knativeerrorcode"] == "500"
    assert base64.b64decode(letter.headers["ce-knativeerrordata"]).startswith(b"dispatch error")
    running.drain()
    assert running.counters()["retried"] == 1


def test_a_2xx_body_that_is_not_a_cloudevent_is_a_retried_failure(broker, peers):
    chatty = peers(always(200, {"content-type": "text/plain"}, b"thanks!"))
    sink = peers()
    running = broker([trigger_manifest("t", chatty.url, delivery=dead_letter_delivery(sink.url, retry=2))])
    post(running.broker.ingress_url("test", "default"), transaction())
    (letter,) = sink.wait_for(1)
    assert len(chatty.received) == 3
    assert letter.headers["ce-knativeerrorcode"] == "502"


def test_a_slow_subscriber_times_out_and_is_retried(broker, peers):
    def slow_first(index, _request):
        if index == 0:
            time.sleep(1.0)  # a peer that hangs on its first request; the broker's timeout is what is tested
        return 200, {}, b""

    slow = peers(slow_first)
    delivery = {"retry": 2, "backoffDelay": "PT0.01S", "timeout": "PT0.2S"}
    running = broker([trigger_manifest("t", slow.url, delivery=delivery)])
    post(running.broker.ingress_url("test", "default"), transaction())
    slow.wait_for(2)
    running.drain()
    assert running.counters()["retried"] >= 1 and running.counters()["delivered"] == 1


# -- replies -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["binary", "structured"])
def test_a_reply_event_reenters_the_broker_and_reaches_the_trigger_for_its_type(broker, peers, mode):
    def score(_index, request):
        message = ce_http.to_binary_event(score_reply(request.headers["ce-id"])) if mode == "binary" else \
            ce_http.to_structured_event(score_reply(request.headers["ce-id"]))
        return 200, message.headers, message.body

    scorer, display = peers(score), peers()
    running = broker([
        trigger_manifest("scorer", scorer.url, filter_attributes={"type": TRANSACTION_TYPE}),
        trigger_manifest("display", display.url, filter_attributes={"type": SCORE_TYPE}),
    ])
    post(running.broker.ingress_url("test", "default"), transaction("t-5"))
    (shown,) = display.wait_for(1)
    running.drain()
    assert shown.headers["ce-id"] == "score-t-5"
    assert orjson.loads(shown.body)["transaction_id"] == "t-5"
    assert len(scorer.received) == 1
    counters = running.counters()
    assert (counters["accepted"], counters["replies"], counters["delivered"]) == (1, 1, 2)


def test_202_with_an_event_body_is_not_treated_as_a_reply(broker, peers):
    message = ce_http.to_binary_event(score_reply("t-1"))
    scorer, display = peers(always(202, message.headers, message.body)), peers()
    running = broker([
        trigger_manifest("scorer", scorer.url, filter_attributes={"type": TRANSACTION_TYPE}),
        trigger_manifest("display", display.url, filter_attributes={"type": SCORE_TYPE}),
    ])
    post(running.broker.ingress_url("test", "default"), transaction())
    scorer.wait_for(1)
    running.drain()
    assert display.received == [] and running.counters()["replies"] == 0


def echo_forever(index, request):
    # Replies with an event of the same type, so the trigger matches its own replies: a loop only the TTL ends.
    reply = CloudEvent({"id": f"echo-{index}", "source": "/echo", "type": request.headers["ce-type"]}, None)
    message = ce_http.to_binary_event(reply)
    return 200, message.headers, message.body


def test_the_hop_limit_stops_a_reply_loop(broker, peers):
    echo = peers(echo_forever)
    running = broker([trigger_manifest("loop", echo.url)])
    post(running.broker.ingress_url("test", "default"), transaction(knativebrokerttl="5"))
    echo.wait_for(5)
    running.drain()
    counters = running.counters()
    assert len(echo.received) == 5
    assert (counters["replies"], counters["ttl_expired"]) == (4, 1)


def test_a_reply_loop_ends_after_255_hops_by_default(broker, peers):
    echo = peers(echo_forever)
    running = broker([trigger_manifest("loop", echo.url)])
    post(running.broker.ingress_url("test", "default"), transaction())
    echo.wait_for(255, timeout_s=60)
    running.drain(60)
    assert len(echo.received) == 255 and running.counters()["ttl_expired"] == 1


# -- observability -------------------------------------------------------------------------------------------------


def test_status_and_metrics_report_the_counters(broker, peers):
    running = broker([trigger_manifest("all", peers().url)])
    post(running.broker.ingress_url("test", "default"), transaction())
    running.drain()
    status = requests.get(f"{running.broker.url}/status", timeout=10).json()
    assert status["accepted"] == 1 and status["delivered"] == 1 and status["in_flight"] == 0
    assert set(status) >= {"accepted", "delivered", "retried", "dead_lettered", "replies"}
    metrics = requests.get(f"{running.broker.url}/metrics", timeout=10).text
    assert 'hiddenstate_broker_events_total{outcome="accepted"} 1.0' in metrics
    assert "hiddenstate_broker_in_flight 0.0" in metrics
