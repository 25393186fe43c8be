"""The sink's record of an event: one JSON object per line in ``EVENT_DISPLAY_FILE``, and how to read it back.

A record is ``{"received": <unix seconds>, "event": <the event in structured JSON>}``: the event exactly as it
arrived (dead letters keep their ``knativeerror*`` extensions) plus the sink's arrival time, which end-to-end
latency needs.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
from cloudevents.core.v1.event import CloudEvent

from functions.contract import SCORE_TYPE, structured_json

DEAD_LETTER_MARK = "knativeerrorcode"


def sink_events_path(home: Path) -> Path:
    """Where the local runtime's event-display sink writes its records: ``<home>/sink/events.jsonl``."""
    return Path(home) / "sink" / "events.jsonl"


def to_record(event: CloudEvent, received_s: float) -> dict[str, Any]:
    return {"received": round(received_s, 6), "event": structured_json(event)}


def is_dead_letter(record: dict[str, Any]) -> bool:
    return DEAD_LETTER_MARK in record.get("event", {})


def describe(record: dict[str, Any]) -> str:
    """One human line per record: arrival time, then what the event says."""
    event = record.get("event", {})
    stamp = time.strftime("%H:%M:%S", time.localtime(record.get("received", 0)))
    millis = int((record.get("received", 0) % 1) * 1000)
    head = f"{stamp}.{millis:03d}"
    if is_dead_letter(record):
        reason = ""
        if event.get("knativeerrordata"):
            reason = base64.b64decode(event["knativeerrordata"]).decode("utf-8", "replace").replace("\n", " ")[:120]
        return (f"{head}  DEAD LETTER  {event.get('type')}  id={event.get('id')}  code={event.get('knativeerrorcode')}"
                f"  dest={event.get('knativeerrordest')}  {reason}").rstrip()
    data = event.get("data")
    if event.get("type") == SCORE_TYPE and isinstance(data, dict):
        flag = "  FRAUD?" if data.get("score", 0) >= 0.5 else ""
        return (f"{head}  score {data.get('score', float('nan')):.4f}  transaction={data.get('transaction_id')}"
                f"  card={data.get('card_id')}  merchant={data.get('merchant_id')}{flag}")
    return f"{head}  {event.get('type')}  id={event.get('id')}  source={event.get('source')}"


def read_records(path: Path, *, follow: bool = False, poll_s: float = 0.2) -> Iterator[dict[str, Any]]:
    """The records in ``path`` in order; with ``follow``, keep waiting for new ones (the file may not exist yet).

    A partly written last line is left for the next read, so a record is never split.
    """
    offset = 0
    pending = b""
    while True:
        if path.exists():
            with path.open("rb") as handle:
                handle.seek(offset)
                chunk = handle.read()
            offset += len(chunk)
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                if line.strip():
                    yield orjson.loads(line)
        if not follow:
            return
        time.sleep(poll_s)
