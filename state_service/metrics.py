"""Prometheus metrics of the state service, in the default registry so every server's /metrics shows them.

They live here, not in the modules that count them, so that ``python -m state_service.admin`` (which runs admin.py
as ``__main__`` and then imports it again in the server worker) registers each metric once."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

OUTCOMES = Counter(
    "hiddenstate_state_updates_total", "Entity updates by outcome (applied, conflict, duplicate).", ["outcome"]
)
CALL_SECONDS = Histogram(
    "hiddenstate_state_call_seconds",
    "Round-trip time of one state-service call to Valkey.",
    ["op"],
    buckets=(0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
)
UNAVAILABLE = Counter("hiddenstate_state_unavailable_total", "Calls that failed because Valkey was unavailable.")
CONFLICT_RETRIES = Counter("hiddenstate_state_conflict_retries_total", "Re-computations after a CAS conflict.")
ADMIN_REQUESTS = Counter(
    "hiddenstate_state_admin_requests_total", "Admin API requests by endpoint and status.", ["endpoint", "status"]
)
