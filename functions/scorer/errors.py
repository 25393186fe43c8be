"""Every error the scorer can answer, mapped to HTTP in one place.

``error_reply`` is the mapping; the Flask error handler and the lean scoring route both answer through it, so a
request gets the same status, body and headers whichever path served it.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import orjson
from flask import Flask, Response
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from functions.contract import (
    ContractError,
    InvalidData,
    InvalidEvent,
    PayloadTooLarge,
    UnsupportedEventType,
)
from state_service.errors import ConflictRetriesExhausted, StateUnavailable

log = logging.getLogger("functions.scorer")


class ModelNotReady(Exception):
    """The model is not loaded (yet): 503, the caller retries."""


_CONTRACT_STATUS = {InvalidEvent: 400, UnsupportedEventType: 400, InvalidData: 422, PayloadTooLarge: 413}


@dataclass(frozen=True)
class ErrorReply:
    """An error as HTTP: status, JSON body, extra headers, and the ``scorer_requests_total`` outcome label."""

    status: int
    body: bytes
    headers: tuple[tuple[str, str], ...]
    outcome: str

    def response(self) -> Response:
        return Response(self.body, status=self.status, mimetype="application/json", headers=list(self.headers))


def _reply(status: int, outcome: str, error: str, detail: str, retry_after_s: int | None = None,
           **extra: object) -> ErrorReply:
    headers = (("Retry-After", str(retry_after_s)),) if retry_after_s is not None else ()
    return ErrorReply(status, orjson.dumps({"error": error, "detail": detail, **extra}), headers, outcome)


def error_reply(exc: BaseException, retry_after_s: int) -> ErrorReply:
    """The answer to ``exc``. Bad input is 4xx naming the problem, an unavailable dependency 503 with Retry-After,
    and anything unexpected 500 with an error id that is also logged with the traceback."""
    if isinstance(exc, ContractError):
        return ErrorReply(_CONTRACT_STATUS.get(type(exc), 400), orjson.dumps(exc.to_dict()), (), "invalid")
    if isinstance(exc, RequestEntityTooLarge):
        return _reply(413, "invalid", PayloadTooLarge.error, "request body is over the 1 MiB limit", field="body")
    if isinstance(exc, StateUnavailable):
        log.warning("state service unavailable", extra={"detail": str(exc)})
        return _reply(503, "unavailable", "state_unavailable", str(exc), retry_after_s)
    if isinstance(exc, ConflictRetriesExhausted):
        return _reply(503, "conflict", "state_conflict", str(exc), retry_after_s)
    if isinstance(exc, ModelNotReady):
        return _reply(503, "unavailable", "model_not_ready", str(exc), retry_after_s)
    if isinstance(exc, HTTPException):
        return _reply(exc.code or 400, "invalid", exc.name.lower().replace(" ", "_"), exc.description or exc.name)
    error_id = uuid.uuid4().hex
    log.error("unexpected error", exc_info=exc, extra={"error_id": error_id})
    return _reply(500, "error", "internal_error", "unexpected server error; quote the error id", error_id=error_id)


def json_error(status: int, error: str, detail: str) -> Response:
    """A JSON error outside the mapping (readiness: not ready)."""
    return Response(orjson.dumps({"error": error, "detail": detail}), status=status, mimetype="application/json")


def register_error_handlers(app: Flask, retry_after_s: int, on_error: Callable[[str], None]) -> None:
    @app.errorhandler(Exception)
    def any_error(exc: Exception) -> Response:
        reply = error_reply(exc, retry_after_s)
        on_error(reply.outcome)
        return reply.response()
