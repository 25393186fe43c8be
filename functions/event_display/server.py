"""Process lifecycle of the sink: ``prefork`` (imports and configuration, no sockets or threads) then ``serve``
(granian in WSGI mode on ``$PORT``). The split lets the runtime's fork mode run ``prefork`` once in a zygote."""

from __future__ import annotations

import logging
import multiprocessing
import os
from dataclasses import dataclass

from functions.logs import configure_logging

log = logging.getLogger("functions.event_display")


@dataclass(frozen=True)
class Prepared:
    port: int
    host: str
    events_file: str | None

    @classmethod
    def from_env(cls) -> Prepared:
        """``PORT`` (default 8080, as Knative sets it), ``HOST`` (default all interfaces), ``EVENT_DISPLAY_FILE``."""
        port = os.environ.get("PORT", "8080")
        if not port.isdigit() or not 0 < int(port) < 65536:
            raise SystemExit(f"PORT must be a TCP port number, got {port!r}")
        return cls(port=int(port), host=os.environ.get("HOST", "0.0.0.0"),
                   events_file=os.environ.get("EVENT_DISPLAY_FILE") or None)


def prefork() -> Prepared:
    """Imports and configuration only: safe to fork from."""
    configure_logging()
    import flask  # noqa: F401 - imported here so forked instances inherit it

    from functions.event_display import app  # noqa: F401

    return Prepared.from_env()


def serve(prepared: Prepared) -> int:
    """Serve on ``$PORT`` until SIGTERM; granian drains in-flight requests, then this returns 0.

    The port and file are read again here, not taken from ``prepared``: in fork mode one zygote prepares once and
    every forked instance gets its own ``PORT``."""
    prepared = Prepared.from_env()
    from granian import Granian
    from granian.constants import Interfaces

    from functions.event_display.app import create_app

    multiprocessing.set_start_method("fork", force=True)

    def load_app(_target: str):  # noqa: ANN202 - runs inside granian's worker process
        return create_app(prepared.events_file)

    server = Granian(
        target="functions.event_display", address=prepared.host, port=prepared.port,
        interface=Interfaces.WSGI, workers=1, log_enabled=False,
    )
    log.info("serving", extra={"port": prepared.port, "events_file": prepared.events_file})
    server.serve(target_loader=load_app)
    return 0
