"""The HTTP floor: the scorer's server doing no work at all, as a reference for the scorer benchmark.

Not a scorer. It is granian in WSGI mode, configured as ``python -m functions.scorer`` configures it (one worker,
32 request threads by default), around an app that reads each request's body and answers one fixed binary-mode
score CloudEvent of the real reply's size. k6 against it measures what the server and the load generator alone
cost on this machine, so it bounds what any scorer behind this server could reach; whatever a scorer falls short
of it is the scorer's own work (parsing, state, model), not HTTP.

Run: ``python -m perf.baselines.http_floor`` with ``PORT`` (default 8080), ``SCORER_WORKERS`` and
``SCORER_HTTP_THREADS`` as for the scorer.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

from functions.contract import Score, ScoreReplies
from functions.scorer.config import ScorerConfig

_HEADERS, _BODY = ScoreReplies("/knative/http-floor/http-floor-bench").binary(
    Score("tx-000000000001", "card-000123-1", "merchant-00042", 0.5, "fraud-gru@champion", 1, 1, False),
    datetime.now(UTC),
)
_REPLY_HEADERS = [*_HEADERS, ("Content-Length", str(len(_BODY)))]
_READY = b'{"status":"ready"}'


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """Every POST gets the same score event; ``GET /health/readiness`` answers 200 so harnesses can wait on it."""
    if environ.get("REQUEST_METHOD") == "GET":
        start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(_READY)))])
        return [_READY]
    environ["wsgi.input"].read()
    start_response("200 OK", _REPLY_HEADERS)
    return [_BODY]


def main() -> None:
    """Exec granian with the scorer's server settings."""
    config = ScorerConfig.from_env()
    os.execvp(sys.executable, [sys.executable, "-m", "granian", "--interface", "wsgi",
                               "--host", "0.0.0.0", "--port", str(config.port), "--workers", str(config.workers),
                               "--blocking-threads", str(config.http_threads), "--backlog", "2048",
                               "--no-access-log", "--log-level", "warning", "perf.baselines.http_floor:app"])


if __name__ == "__main__":
    main()
