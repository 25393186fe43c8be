"""A tiny service for the local serving tests, speaking the same instance protocol as the scorer.

``prefork()`` does the slow part and opens nothing; ``serve(prepared)`` opens its own Valkey connection (when
``VALKEY_URL`` is set) and serves HTTP on ``$PORT`` until SIGTERM, finishing requests in flight first.
``python -m tests.local_serving_app`` is the fresh-mode entry point.

Routes: ``GET /health/readiness``; any method on ``/work?sleep=S`` answers, after S seconds, with the instance's
pid, the concurrency it saw, a random number drawn at ``serve()`` time, its Valkey ``CLIENT ID`` and its
Knative identity.
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse


def _coldstart(phase: str) -> None:
    print(json.dumps({"msg": "coldstart", "phase": phase, "t": time.time()}), file=sys.stderr, flush=True)


def prefork() -> dict[str, Any]:
    _coldstart("imports_done")
    prepared: dict[str, Any] = {"loaded_at": time.time()}
    if os.environ.get("APP_PREFORK_OPENS_SOCKET"):
        # Deliberately breaks the protocol, to show the zygote refuses it.
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        prepared["listener"] = listener
    _coldstart("model_loaded")
    return prepared


def serve(prepared: dict[str, Any]) -> int:
    client_id = None
    client = None
    if os.environ.get("VALKEY_URL"):
        import valkey

        client = valkey.Valkey.from_url(os.environ["VALKEY_URL"])
        client.client_setname(f"app-{os.environ['PORT']}")
        client_id = client.client_id()
    draw = random.getrandbits(62)
    lock = threading.Lock()
    state = {"concurrent": 0}

    class Handler(BaseHTTPRequestHandler):
        # One request per connection: an idle keep-alive connection would hold server_close() up at drain time.
        protocol_version = "HTTP/1.0"

        def log_message(self, *args: Any) -> None:  # keep stderr for JSON lines
            pass

        def _reply(self, status: int, body: dict[str, Any]) -> None:
            payload = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def _work(self) -> None:
            url = urlparse(self.path)
            if url.path == "/health/readiness":
                self._reply(200, {"ready": True})
                return
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            with lock:
                state["concurrent"] += 1
                seen = state["concurrent"]
            try:
                time.sleep(float(parse_qs(url.query).get("sleep", ["0"])[0]))
            finally:
                with lock:
                    state["concurrent"] -= 1
            self._reply(200, {
                "pid": os.getpid(), "port": int(os.environ["PORT"]), "concurrent": seen, "draw": draw,
                "client_id": client_id, "body_len": len(body),
                **{k: os.environ.get(k) for k in ("K_SERVICE", "K_REVISION", "K_CONFIGURATION")},
            })

        do_GET = do_POST = _work

    server = ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler)
    server.daemon_threads = False  # server_close() then waits for requests in flight: the drain
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    _coldstart("serving")
    server.serve_forever(poll_interval=0.05)
    server.server_close()
    if client is not None:
        client.close()
    return 0


if __name__ == "__main__":
    sys.exit(serve(prefork()))
