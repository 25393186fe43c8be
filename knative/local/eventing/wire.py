"""CloudEvents on the broker's wire: attributes for filtering, hop counting, requests to subscribers, reading their
responses, and dead-letter events (pure: bytes and headers in, values out).

Decoding goes through ``functions.contract.parse_event`` in its generic mode, so the broker accepts any valid
CloudEvent, not only hiddenstate's, and applies the same raw checks (no invented ids) as every other receiver.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cloudevents.core.bindings import http as ce_http
from cloudevents.core.v1.event import CloudEvent

from functions.contract import ContractError, InvalidEvent, format_time, parse_event
from knative.local.eventing.delivery import BAD_REPLY_STATUS, DISPATCH_ERROR_STATUS, is_retryable

TTL_EXTENSION = "knativebrokerttl"
# Knative's ingress MAX_TTL: a reply loop ends after this many hops.
DEFAULT_TTL = 255
ERROR_CODE_EXTENSION = "knativeerrorcode"
ERROR_DEST_EXTENSION = "knativeerrordest"
ERROR_DATA_EXTENSION = "knativeerrordata"
# Knative's KnativeErrorDataExtensionMaxLength: the response body kept in a dead letter.
ERROR_DATA_MAX_BYTES = 1024


def decode(headers: Mapping[str, str] | Sequence[tuple[str, str]], body: bytes) -> CloudEvent:
    """Any valid CloudEvent in binary or structured mode. Raises ``ContractError``."""
    return parse_event(headers, body, require_time=False, require_json=False)


def string_attributes(event: CloudEvent) -> dict[str, str]:
    """Every attribute as the string it would carry in an HTTP header, which is what filters compare."""
    out = {}
    for name, value in event.get_attributes().items():
        if value is None:
            continue
        if isinstance(value, datetime):
            out[name] = format_time(value)
        elif isinstance(value, bool):
            out[name] = "true" if value else "false"
        else:
            out[name] = str(value)
    return out


def hops_left(event: CloudEvent) -> int:
    """The ``knativebrokerttl`` of an event entering the broker: its own if set, else the default."""
    value = event.get_extension(TTL_EXTENSION)
    if value is None:
        return DEFAULT_TTL
    try:
        return int(str(value))
    except ValueError:
        raise InvalidEvent(f"extension '{TTL_EXTENSION}' must be an integer, got {value!r}", TTL_EXTENSION) from None


def with_attributes(event: CloudEvent, **changes: Any) -> CloudEvent:
    """A copy of ``event`` with attributes set, or removed where the value is ``None``."""
    attributes = {**event.get_attributes(), **changes}
    return CloudEvent({k: v for k, v in attributes.items() if v is not None}, event.get_data())


def to_request(event: CloudEvent, fmt: str = "binary") -> tuple[dict[str, str], bytes]:
    """Headers and body for a subscriber: binary mode (Knative's default) or structured (``format: json``).

    ``Prefer: reply`` tells the subscriber that a CloudEvent in its response will be routed, as Knative's broker does.
    """
    message = ce_http.to_structured_event(event) if fmt == "json" else ce_http.to_binary_event(event)
    return {**message.headers, "prefer": "reply"}, message.body


@dataclass(frozen=True, slots=True)
class AttemptResult:
    """What one delivery attempt came to. ``status`` is the HTTP status (500 for a network error or timeout)."""

    ok: bool
    status: int
    body: bytes = b""
    reply: CloudEvent | None = None

    @property
    def retryable(self) -> bool:
        return not self.ok and is_retryable(self.status)


def read_response(status: int, headers: Mapping[str, str] | Sequence[tuple[str, str]], body: bytes) -> AttemptResult:
    """Classify a subscriber's response as Knative's broker filter does.

    2xx with an empty body is success; 2xx (other than 202) carrying a CloudEvent is success with a reply; 2xx with
    any other body is a failure recorded as 502, which is retried. Non-2xx is a failure with its own status.
    """
    if not 200 <= status < 300:
        return AttemptResult(ok=False, status=status, body=body)
    lowered = {k.lower(): v for k, v in (headers.items() if isinstance(headers, Mapping) else headers)}
    has_event_headers = any(name.startswith("ce-") for name in lowered)
    if status == 202 or (not body and not has_event_headers):
        return AttemptResult(ok=True, status=status)
    try:
        reply = decode(lowered, body)
    except ContractError as exc:
        detail = f"subscriber answered {status} with a body that is not a CloudEvent: {exc.detail}".encode()
        return AttemptResult(ok=False, status=BAD_REPLY_STATUS, body=detail)
    return AttemptResult(ok=True, status=status, reply=reply)


def dispatch_error(error: BaseException) -> AttemptResult:
    """A network error or timeout, recorded the way Knative's dispatcher records it."""
    text = f"dispatch error: {type(error).__name__}: {error}".strip().rstrip(":")
    return AttemptResult(ok=False, status=DISPATCH_ERROR_STATUS, body=text.encode())


def dead_letter_event(event: CloudEvent, destination: str, failure: AttemptResult) -> CloudEvent:
    """The event as the dead letter sink receives it: unchanged, plus Knative's error extensions."""
    changes: dict[str, Any] = {ERROR_DEST_EXTENSION: destination, ERROR_CODE_EXTENSION: str(failure.status)}
    if failure.body:
        changes[ERROR_DATA_EXTENSION] = base64.b64encode(failure.body[:ERROR_DATA_MAX_BYTES]).decode("ascii")
    return with_attributes(event, **changes)
