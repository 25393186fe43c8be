"""Every error the scorer can answer, mapped to HTTP in one place."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable

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
from state_service.errors import ConflictRetriesExhausted, StateError, StateUnavailable

log = logging.getLogger("functions.scorer")


class ModelNotReady(Exception):
    """The model is not loaded (yet): 503, the caller retries."""


_CONTRACT_STATUS = {InvalidEvent: 400, UnsupportedEventType: 400, InvalidData: 422, PayloadTooLarge: 413}


def json_error(status: int, error: str, detail: str, headers: dict[str, str] | None = None,
               **extra: object) -> Response:
    body = {"error": error, "detail": detail, **extra}
    return Response(orjson.dumps(body), status=status, mimetype="application/json", headers=headers)


def register_error_handlers(app: Flask, retry_after_s: int, on_error: Callable[[str], None]) -> None:
    retry = {"Retry-After": str(retry_after_s)}

    @app.errorhandler(ContractError)
    def contract_error(exc: ContractError) -> Response:
        on_error("invalid")
        status = _CONTRACT_STATUS.get(type(exc), 400)
        return Response(orjson.dumps(exc.to_dict()), status=status, mimetype="application/json")

    @app.errorhandler(RequestEntityTooLarge)
    def too_large(exc: RequestEntityTooLarge) -> Response:
        on_error("invalid")
        return json_error(413, PayloadTooLarge.error, "request body is over the 1 MiB limit", field="body")

    @app.errorhandler(StateUnavailable)
    def state_unavailable(exc: StateUnavailable) -> Response:
        on_error("unavailable")
        log.warning("state service unavailable", extra={"detail": str(exc)})
        return json_error(503, "state_unavailable", str(exc), headers=retry)

    @app.errorhandler(ConflictRetriesExhausted)
    def too_contended(exc: ConflictRetriesExhausted) -> Response:
        on_error("conflict")
        return json_error(503, "state_conflict", str(exc), headers=retry)

    @app.errorhandler(ModelNotReady)
    def model_not_ready(exc: ModelNotReady) -> Response:
        on_error("unavailable")
        return json_error(503, "model_not_ready", str(exc), headers=retry)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        on_error("invalid")
        return json_error(exc.code or 400, exc.name.lower().replace(" ", "_"), exc.description or exc.name)

    @app.errorhandler(StateError)
    def state_error(exc: StateError) -> Response:
        return unexpected(exc)

    @app.errorhandler(Exception)
    def unexpected(exc: Exception) -> Response:
        on_error("error")
        error_id = uuid.uuid4().hex
        log.exception("unexpected error", extra={"error_id": error_id})
        return json_error(500, "internal_error", "unexpected server error; quote the error id", error_id=error_id)
