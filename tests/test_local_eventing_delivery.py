"""Delivery specs, durations, backoff, retry classes, and reading subscriber responses (pure)."""

from __future__ import annotations

import base64

import pytest
from cloudevents.core.bindings import http as ce_http
from cloudevents.core.v1.event import CloudEvent

from knative.local.eventing.delivery import (
    DEFAULT_ATTEMPT_TIMEOUT_S,
    DeliverySpec,
    choose_delivery,
    default_delivery,
    is_retryable,
    load_config_br_defaults,
    parse_duration,
)
from knative.local.eventing.errors import EventingConfigError
from knative.local.eventing.topology import read_topology
from knative.local.eventing.wire import ERROR_DATA_MAX_BYTES, AttemptResult, dead_letter_event, read_response

EVENT = CloudEvent({"id": "e-1", "source": "/t", "type": "t.v1", "datacontenttype": "application/json"}, {"a": 1})


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("PT0.2S", 0.2), ("PT1S", 1.0), ("PT1M30S", 90.0), ("PT2H", 7200.0), ("P1DT1S", 86401.0), ("PT0S", 0.0)],
)
def test_iso8601_durations_parse_to_seconds(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["0.2s", "P", "PT", "P1M", "P1Y", "PT-1S", "", None, 5])
def test_malformed_or_ambiguous_durations_are_rejected(text):
    with pytest.raises(EventingConfigError, match="ISO 8601 duration"):
        parse_duration(text)


def test_exponential_backoff_doubles_from_twice_the_delay():
    spec = DeliverySpec.from_manifest({"retry": 3, "backoffPolicy": "exponential", "backoffDelay": "PT0.2S"})
    assert [spec.backoff_s(n) for n in (1, 2, 3)] == pytest.approx([0.4, 0.8, 1.6])


def test_linear_backoff_grows_by_the_delay():
    spec = DeliverySpec.from_manifest({"backoffPolicy": "linear", "backoffDelay": "PT1S"})
    assert [spec.backoff_s(n) for n in (1, 2, 3)] == [1.0, 2.0, 3.0]


def test_absent_fields_mean_no_retry_no_delay_binary_and_a_default_timeout():
    spec = DeliverySpec.from_manifest({})
    expected = (0, 0.0, "binary", DEFAULT_ATTEMPT_TIMEOUT_S)
    assert (spec.retry, spec.backoff_delay_s, spec.format, spec.timeout_s) == expected
    assert DeliverySpec.from_manifest({"timeout": "PT5S"}).timeout_s == 5.0


@pytest.mark.parametrize(
    ("delivery", "message"),
    [({"retry": -1}, "'retry'"), ({"retry": "3"}, "'retry'"), ({"backoffPolicy": "fibonacci"}, "backoffPolicy"),
     ({"backoffDelay": "200ms"}, "ISO 8601"), ({"format": "xml"}, "'format'"), ({"timeout": "PT0S"}, "timeout"),
     ({"deadLetterSink": "http://x"}, "deadLetterSink")],
)
def test_invalid_delivery_specs_are_rejected(delivery, message):
    with pytest.raises(EventingConfigError, match=message):
        DeliverySpec.from_manifest(delivery)


def test_trigger_delivery_wins_whole_over_broker_and_cluster_default():
    trigger, broker, cluster = {"retry": 1}, {"retry": 2, "backoffDelay": "PT1S"}, {"retry": 10}
    assert choose_delivery(trigger, broker, cluster) is trigger
    assert choose_delivery(None, broker, cluster) is broker
    assert choose_delivery(None, None, cluster) is cluster


def test_cluster_default_comes_from_config_br_defaults():
    delivery = default_delivery(load_config_br_defaults(), "any")
    assert delivery == {"retry": 10, "backoffPolicy": "exponential", "backoffDelay": "PT0.2S"}


def test_namespace_default_wins_over_cluster_default():
    configmap = {"data": {"default-br-config": (
        "clusterDefault:\n  delivery: {retry: 10}\nnamespaceDefaults:\n  team:\n    delivery: {retry: 2}\n")}}
    assert default_delivery(configmap, "team") == {"retry": 2}
    assert default_delivery(configmap, "other") == {"retry": 10}


def test_a_trigger_without_delivery_on_a_broker_without_delivery_gets_the_cluster_default():
    _, (trigger,) = read_topology(
        [{"metadata": {"name": "default", "namespace": "ns"}}],
        [{"metadata": {"name": "t", "namespace": "ns"}, "spec": {"broker": "default", "subscriber": {"uri": "http://x/"}}}],
        None,
    )
    assert (trigger.delivery.retry, trigger.delivery.backoff_policy, trigger.delivery.backoff_delay_s) == (
        10, "exponential", 0.2)


def test_trigger_on_an_undeclared_broker_is_rejected():
    with pytest.raises(EventingConfigError, match="broker ns/missing is not declared"):
        read_topology([], [{"metadata": {"name": "t", "namespace": "ns"},
                            "spec": {"broker": "missing", "subscriber": {"uri": "http://x/"}}}], None)


def test_trigger_filter_errors_name_the_trigger():
    with pytest.raises(EventingConfigError, match="Trigger ns/t spec.filters"):
        read_topology([{"metadata": {"name": "default", "namespace": "ns"}}],
                      [{"metadata": {"name": "t", "namespace": "ns"},
                        "spec": {"subscriber": {"uri": "http://x/"}, "filters": [{"cesql": "true"}]}}], None)


def test_the_projects_own_manifests_load():
    from knative.manifests import brokers, load_manifests, triggers

    objs = load_manifests("dev")
    by_key, specs = read_topology(brokers(objs), triggers(objs), None)
    assert by_key and {spec.name for spec in specs} >= {"scorer-transactions", "scores-to-display"}
    assert all(spec.broker in by_key for spec in specs)


@pytest.mark.parametrize(("status", "retried"), [
    (404, True), (408, True), (409, True), (429, True), (500, True), (502, True), (503, True),
    (400, False), (401, False), (403, False), (413, False), (422, False), (301, False),
])
def test_retry_classes_follow_knative(status, retried):
    assert is_retryable(status) is retried


def test_empty_2xx_is_success_without_reply():
    assert read_response(200, {}, b"") == AttemptResult(ok=True, status=200)
    assert read_response(204, {}, b"") == AttemptResult(ok=True, status=204)


def test_202_is_never_a_reply():
    message = ce_http.to_binary_event(EVENT)
    result = read_response(202, message.headers, message.body)
    assert result.ok and result.reply is None


@pytest.mark.parametrize("mode", ["binary", "structured"])
def test_200_with_a_cloudevent_is_a_reply(mode):
    message = ce_http.to_binary_event(EVENT) if mode == "binary" else ce_http.to_structured_event(EVENT)
    result = read_response(200, message.headers, message.body)
    assert result.ok and result.reply is not None and result.reply.get_id() == "e-1"


def test_2xx_with_a_body_that_is_not_a_cloudevent_is_a_retryable_502():
    result = read_response(200, {"content-type": "text/plain"}, b"ok")
    assert (result.ok, result.status, result.retryable) == (False, 502, True)


def test_dead_letter_event_carries_knative_error_extensions():
    body = b"x" * (ERROR_DATA_MAX_BYTES + 100)
    letter = dead_letter_event(EVENT, "http://sub/", AttemptResult(ok=False, status=503, body=body))
    assert letter.get_id() == "e-1" and letter.get_data() == {"a": 1}
    assert letter.get_extension("knativeerrorcode") == "503"
    assert letter.get_extension("knativeerrordest") == "http://sub/"
    assert base64.b64decode(letter.get_extension("knativeerrordata")) == body[:ERROR_DATA_MAX_BYTES]
