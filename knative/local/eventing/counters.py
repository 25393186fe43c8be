"""The broker's counters: one dict of integers, read by ``GET /status``, ``status --json`` and ``GET /metrics``."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

# accepted: events taken in at an ingress (202). delivered: 2xx from a subscriber. retried: attempts after the
# first. dead_lettered: events a dead letter sink took. replies: reply events routed back into a broker.
# rejected: invalid events answered 400/413. undeliverable: failed with no sink, or the sink failed too.
# ttl_expired: replies dropped because their knativebrokerttl ran out (a reply loop).
COUNTER_NAMES = (
    "accepted", "delivered", "retried", "dead_lettered", "replies", "rejected", "undeliverable", "ttl_expired",
)


class BrokerCounters:
    """Event counts since start. Only touched from the broker's event loop, so plain integers suffice."""

    def __init__(self) -> None:
        self._values = dict.fromkeys(COUNTER_NAMES, 0)

    def add(self, name: str, amount: int = 1) -> None:
        self._values[name] += amount

    def snapshot(self) -> dict[str, int]:
        return dict(self._values)

    def registry(self, in_flight: Callable[[], int]) -> CollectorRegistry:
        """A Prometheus registry of its own, so several brokers in one process never clash."""
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_BrokerCollector(self, in_flight))
        return registry


class _BrokerCollector(Collector):
    def __init__(self, counters: BrokerCounters, in_flight: Callable[[], int]) -> None:
        self._counters = counters
        self._in_flight = in_flight

    def collect(self) -> Iterator[Metric]:
        events = CounterMetricFamily(
            "hiddenstate_broker_events", "Events by outcome at the local broker.", labels=["outcome"]
        )
        for name, value in self._counters.snapshot().items():
            events.add_metric([name], value)
        yield events
        yield GaugeMetricFamily(
            "hiddenstate_broker_in_flight", "Deliveries in progress, backoff waits included.", value=self._in_flight()
        )
