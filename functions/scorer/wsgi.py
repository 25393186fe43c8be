"""The scorer as a plain WSGI application, for a WSGI server other than the built-in granian one.

    gunicorn --worker-class gthread --threads 32 --workers 1 'functions.scorer.wsgi:create()'

``create()`` runs in the server's worker process: it prepares (imports, model fetch and checksum, warm-up) and
builds the service (Valkey pool, micro-batcher) there, with the same environment variables as
``python -m functions.scorer``. Serve it with threads: concurrent requests in one process are what the
micro-batcher gathers, so a server with one request per process at a time (gunicorn's sync workers) scores every
event alone. ``perf/server_bench.py`` measures it on gunicorn against granian.
"""

from __future__ import annotations

from flask import Flask

from functions.scorer.app import create_app
from functions.scorer.server import build_service, prefork, tune_gc


def create() -> Flask:
    prepared = prefork()
    app = create_app(build_service(prepared))
    tune_gc(prepared.config.gc_gen0_threshold)
    return app
