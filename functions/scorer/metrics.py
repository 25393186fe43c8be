"""Prometheus metrics of one scorer instance, on a registry of its own (no global state across app factories).

With ``SCORER_WORKERS`` > 1 an instance is several processes behind one port, and a scrape lands on any one of
them. ``use_multiprocess_metrics`` (called before the workers start) switches prometheus_client to its multiprocess
mode: every worker writes its values to files in one directory and ``exposition`` sums them, so a scrape reports the
instance, not one worker.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, generate_latest, values
from prometheus_client.multiprocess import MultiProcessCollector

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


class ScorerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("scorer_requests_total", "HTTP requests by outcome", ["outcome"],
                                registry=self.registry)
        self.in_flight = Gauge("scorer_in_flight_requests", "Scoring requests being handled", registry=self.registry,
                               multiprocess_mode="livesum")
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


def use_multiprocess_metrics() -> tuple[Path, bool]:
    """Switch to multiprocess mode for the metrics created from now on; returns the directory and whether it was
    created here (then the caller removes it). ``PROMETHEUS_MULTIPROC_DIR`` names the directory if set; it must be
    empty, as prometheus_client requires. Metrics created before this call (module-level ones) must be created
    after it instead: call it before importing the modules that define them."""
    directory = os.environ.get(MULTIPROC_ENV, "")
    created = not directory
    if created:
        directory = tempfile.mkdtemp(prefix="scorer-metrics-")
        os.environ[MULTIPROC_ENV] = directory
    values.ValueClass = values.MultiProcessValue()
    return Path(directory), created


def exposition(registry: CollectorRegistry) -> bytes:
    """What ``GET /metrics`` answers: this instance's scorer metrics and the state client's (default registry) —
    summed over the workers' files in multiprocess mode."""
    if os.environ.get(MULTIPROC_ENV):
        combined = CollectorRegistry()
        MultiProcessCollector(combined)
        return generate_latest(combined)
    return generate_latest(registry) + generate_latest(REGISTRY)
