"""Brokers and Triggers read from Knative v1 manifests into what the local broker runs (pure).

Each Trigger gets its compiled filter and its effective delivery once, here, so a manifest error surfaces when the
broker is built. Destinations (subscribers and dead letter sinks) keep their ``ref``/``uri`` and are turned into
URLs later through the runtime's ``resolve(ref) -> url``, because services may get their URLs after the broker starts.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin, urlsplit

from knative.local.eventing.delivery import (
    DeliverySpec,
    choose_delivery,
    default_delivery,
    load_config_br_defaults,
)
from knative.local.eventing.errors import EventingConfigError
from knative.local.eventing.filters import Predicate, compile_trigger_filter

DEFAULT_NAMESPACE = "default"
DEFAULT_BROKER = "default"
Resolver = Callable[[dict[str, Any]], str]


@dataclass(frozen=True, slots=True)
class Destination:
    """A Knative Destination: a ``ref`` to an addressable, a ``uri``, or a ref plus a relative uri."""

    ref: Mapping[str, Any] | None
    uri: str | None
    where: str

    @classmethod
    def from_manifest(cls, value: Any, namespace: str, where: str) -> Destination:
        if not isinstance(value, Mapping):
            raise EventingConfigError("must be an object with 'ref' and/or 'uri'", where)
        ref, uri = value.get("ref"), value.get("uri")
        if ref is None and not uri:
            raise EventingConfigError("needs 'ref' or 'uri'", where)
        if ref is not None:
            if not isinstance(ref, Mapping) or not ref.get("name") or not ref.get("kind"):
                raise EventingConfigError("'ref' needs 'kind' and 'name'", where)
            # A ref without a namespace means the namespace of the object that holds it.
            ref = {**ref, "namespace": ref.get("namespace") or namespace}
        elif not urlsplit(uri).scheme or not urlsplit(uri).netloc:
            raise EventingConfigError(f"'uri' {uri!r} must be absolute when there is no 'ref'", where)
        return cls(ref=ref, uri=uri or None, where=where)

    def url(self, resolve: Resolver) -> str:
        """The URL to POST to. A uri with a ref is resolved against the ref's URL, as Knative does."""
        if self.ref is None:
            return str(self.uri)
        base = resolve(dict(self.ref))
        return urljoin(base, self.uri) if self.uri else base


@dataclass(frozen=True, slots=True)
class BrokerSpec:
    namespace: str
    name: str
    delivery: Mapping[str, Any] | None

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.name)


@dataclass(frozen=True, slots=True)
class TriggerSpec:
    namespace: str
    name: str
    broker: tuple[str, str]
    subscriber: Destination
    matches: Predicate
    delivery: DeliverySpec
    dead_letter_sink: Destination | None


def _metadata(obj: Mapping[str, Any], kind: str) -> tuple[str, str]:
    metadata = obj.get("metadata") or {}
    name = metadata.get("name")
    if not isinstance(name, str) or not name:
        raise EventingConfigError("metadata.name is required", kind)
    return metadata.get("namespace") or DEFAULT_NAMESPACE, name


def read_broker(obj: Mapping[str, Any]) -> BrokerSpec:
    namespace, name = _metadata(obj, "Broker")
    delivery = (obj.get("spec") or {}).get("delivery")
    if delivery is not None:
        DeliverySpec.from_manifest(delivery, f"Broker {namespace}/{name} spec.delivery")
    return BrokerSpec(namespace=namespace, name=name, delivery=delivery)


def read_trigger(
    obj: Mapping[str, Any], brokers: Mapping[tuple[str, str], BrokerSpec], config_br_defaults: Mapping[str, Any] | None
) -> TriggerSpec:
    namespace, name = _metadata(obj, "Trigger")
    where = f"Trigger {namespace}/{name}"
    spec = obj.get("spec") or {}
    broker_ref = spec.get("brokerRef")
    if broker_ref:
        broker_key = (broker_ref.get("namespace") or namespace, broker_ref.get("name") or "")
    else:
        broker_key = (namespace, spec.get("broker") or DEFAULT_BROKER)
    broker = brokers.get(broker_key)
    if broker is None:
        raise EventingConfigError(f"broker {broker_key[0]}/{broker_key[1]} is not declared", f"{where} spec.broker")
    if "subscriber" not in spec:
        raise EventingConfigError("spec.subscriber is required", where)
    subscriber = Destination.from_manifest(spec["subscriber"], namespace, f"{where} spec.subscriber")
    try:
        matches = compile_trigger_filter(spec)
    except EventingConfigError as exc:
        raise type(exc)(exc.detail, f"{where} {exc.where}") from None
    raw = choose_delivery(spec.get("delivery"), broker.delivery, default_delivery(config_br_defaults, namespace))
    delivery = DeliverySpec.from_manifest(raw, f"{where} delivery")
    sink = None
    if delivery.dead_letter_sink is not None:
        sink = Destination.from_manifest(delivery.dead_letter_sink, namespace, f"{where} delivery.deadLetterSink")
    return TriggerSpec(
        namespace=namespace, name=name, broker=broker_key, subscriber=subscriber,
        matches=matches, delivery=delivery, dead_letter_sink=sink,
    )


def read_topology(
    brokers: list[dict[str, Any]], triggers: list[dict[str, Any]], config_br_defaults: Mapping[str, Any] | None
) -> tuple[dict[tuple[str, str], BrokerSpec], list[TriggerSpec]]:
    """Brokers by (namespace, name), and Triggers in manifest order. Raises ``EventingConfigError``."""
    if config_br_defaults is None:
        config_br_defaults = load_config_br_defaults()
    by_key: dict[tuple[str, str], BrokerSpec] = {}
    for obj in brokers:
        broker = read_broker(obj)
        if broker.key in by_key:
            raise EventingConfigError("declared twice", f"Broker {broker.namespace}/{broker.name}")
        by_key[broker.key] = broker
    return by_key, [read_trigger(obj, by_key, config_br_defaults) for obj in triggers]
