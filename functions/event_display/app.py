"""The event-display sink as a Flask app: like Knative's event_display, it takes any CloudEvent, logs it as one
JSON line, and appends it to a JSONL file when one is configured. Replies 202 with no body, so nothing loops back."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import orjson
from flask import Flask, Response, request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest
from werkzeug.exceptions import HTTPException

from functions.contract import MAX_BODY_BYTES, ContractError, PayloadTooLarge, parse_event
from functions.event_display.records import is_dead_letter, to_record

log = logging.getLogger("functions.event_display")


class EventFile:
    """Appends records to a JSONL file. One ``write`` per line on an O_APPEND file keeps lines whole even when
    several instances share the file."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()

    def append(self, record: dict) -> None:
        line = orjson.dumps(record) + b"\n"
        with self._lock, self.path.open("ab") as handle:
            handle.write(line)


def _json_error(status: int, error: str, detail: str) -> Response:
    return Response(orjson.dumps({"error": error, "detail": detail}), status=status, mimetype="application/json")


def create_app(events_file: Path | str | None = None) -> Flask:
    """The sink. ``events_file`` (the runtime passes ``EVENT_DISPLAY_FILE``) receives one record per event."""
    app = Flask("functions.event_display")
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES + 1
    sink = EventFile(Path(events_file)) if events_file else None
    registry = CollectorRegistry()
    received = Counter("event_display_events", "CloudEvents received, by type.", ["type"], registry=registry)
    dead_letters = Counter("event_display_dead_letters", "Dead-lettered events received.", registry=registry)
    rejected = Counter("event_display_rejected", "Requests that were not valid CloudEvents.", registry=registry)

    @app.post("/")
    def receive() -> tuple[str, int]:
        event = parse_event(list(request.headers.items()), request.get_data(), require_time=False, require_json=False)
        record = to_record(event, time.time())
        received.labels(event.get_type()).inc()
        if is_dead_letter(record):
            dead_letters.inc()
        log.info("cloudevent", extra={"event": record["event"]})
        if sink is not None:
            sink.append(record)
        return "", 202

    @app.get("/health/readiness")
    @app.get("/health/liveness")
    def health() -> Response:
        return Response(b'{"status": "ok"}', mimetype="application/json")

    @app.get("/metrics")
    def metrics() -> Response:
        return Response(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)

    @app.errorhandler(ContractError)
    def invalid_event(error: ContractError) -> Response:
        rejected.inc()
        status = 413 if isinstance(error, PayloadTooLarge) else 400
        return Response(orjson.dumps(error.to_dict()), status=status, mimetype="application/json")

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException) -> Response:
        name = (error.name or "error").lower().replace(" ", "_")
        return _json_error(error.code or 500, name, error.description or name)

    return app
