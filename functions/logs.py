"""Structured (JSON lines) logging shared by every hiddenstate process.

One line per record on stderr, with the Knative identity (``K_SERVICE``, ``K_REVISION``) attached when set, so
logs from many instances of many revisions can be told apart once collected.
"""

from __future__ import annotations

import logging
import os
import sys
import time

import orjson

_RESERVED = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None)).keys()) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": round(record.created, 6),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        # Read per record: a forked instance may carry another identity than the zygote that configured logging.
        for key, variable in (("service", "K_SERVICE"), ("revision", "K_REVISION")):
            if value := os.environ.get(variable):
                entry[key] = value
        for key, value in vars(record).items():
            if key not in _RESERVED and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


class _CurrentStderr(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time of the record, not the one seen at configuration (test
    runners and daemonisation swap it, and a handler holding the old, closed stream would fail)."""

    def __init__(self) -> None:
        super().__init__()

    @property
    def stream(self):  # noqa: ANN201 - the logging module's own attribute
        return sys.stderr

    @stream.setter
    def stream(self, _value: object) -> None:
        pass


def configure_logging(level: str | None = None) -> None:
    """Send JSON lines to stderr. ``LOG_LEVEL`` (default ``info``) sets the level."""
    handler = _CurrentStderr()
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel((level or os.environ.get("LOG_LEVEL", "info")).upper())
    logging.Formatter.converter = time.gmtime
