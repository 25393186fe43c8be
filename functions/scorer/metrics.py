"""Prometheus metrics of one scorer instance, on a registry of its own (no global state across app factories)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class ScorerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("scorer_requests_total", "HTTP requests by outcome", ["outcome"],
                                registry=self.registry)
        self.in_flight = Gauge("scorer_in_flight_requests", "Scoring requests being handled", registry=self.registry)
        self.events = Counter("scorer_events_total", "Transactions scored", registry=self.registry)
        self.batch_size = Histogram("scorer_batch_size", "Events per micro-batch", registry=self.registry,
                                    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024))
        self.step_seconds = Histogram("scorer_step_seconds", "GRU step time per micro-batch", registry=self.registry,
                                      buckets=(1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1))
        self.batch_seconds = Histogram("scorer_batch_seconds", "Read + step + compare-and-set per micro-batch",
                                       registry=self.registry,
                                       buckets=(2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1, 0.25))
        self.conflicts = Counter("scorer_state_conflicts_total", "Compare-and-set conflicts retried",
                                 registry=self.registry)
        self.duplicates = Counter("scorer_duplicates_total", "Redelivered events recognised and not re-applied",
                                  registry=self.registry)
