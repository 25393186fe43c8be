"""Shared helpers for the local eventing tests (no tests here): a broker on its own event loop thread, and tiny
real HTTP subscribers that answer with chosen responses and record what they got. The subscribers are test peers
standing in for user services, not fakes of hiddenstate components."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from knative.local.eventing import LocalBroker

WAIT_S = 20.0


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


Response = tuple[int, dict[str, str], bytes]
Responder = Callable[[int, Received], Response]


def always(status: int, headers: dict[str, str] | None = None, body: bytes = b"") -> Responder:
    return lambda _index, _request: (status, headers or {}, body)


class Subscriber:
    """A real HTTP server on a free port. ``respond(n, request)`` chooses the answer to the n-th request (from 0)."""

    def __init__(self, respond: Responder) -> None:
        self.received: list[Received] = []
        self._changed = threading.Condition()
        peer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                length = int(self.headers.get("Content-Length", "0"))
                request = Received(self.path, {k.lower(): v for k, v in self.headers.items()}, self.rfile.read(length))
                with peer._changed:
                    index = len(peer.received)
                    peer.received.append(request)
                    peer._changed.notify_all()
                status, headers, body = respond(index, request)
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        # A short poll interval keeps shutdown() quick; the default 0.5 s adds up over many tests.
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/"

    def wait_for(self, count: int, timeout_s: float = WAIT_S) -> list[Received]:
        """Block until at least ``count`` requests arrived; fail the test past the deadline."""
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while len(self.received) < count:
                remaining = deadline - time.monotonic()
                assert remaining > 0, f"expected {count} requests, got {len(self.received)}"
                self._changed.wait(remaining)
            return list(self.received)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class BrokerThread:
    """A LocalBroker running on an asyncio loop in a background thread, driven from synchronous tests."""

    def __init__(self, brokers: list[dict], triggers: list[dict], resolve: Callable[[dict], str] | None = None,
                 **kwargs: Any) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self.broker = LocalBroker(brokers, triggers, resolve or _no_refs, **kwargs)
        self.run(self.broker.start())

    def run(self, coroutine: Any, timeout_s: float = WAIT_S) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout_s)

    def counters(self) -> dict[str, int]:
        return self.run(_call(self.broker.counters))

    def drain(self, timeout_s: float = WAIT_S) -> None:
        assert self.run(self.broker.drain(timeout_s), timeout_s + 5), "deliveries still in flight at the deadline"

    def close(self) -> None:
        self.run(self.broker.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
        self.loop.close()


async def _call(function: Callable[[], Any]) -> Any:
    return function()


def _no_refs(ref: dict) -> str:
    raise LookupError(f"no service {ref.get('name')}")


def broker_manifest(name: str = "default", namespace: str = "test", delivery: dict | None = None) -> dict:
    spec = {"delivery": delivery} if delivery is not None else {}
    return {"apiVersion": "eventing.knative.dev/v1", "kind": "Broker",
            "metadata": {"name": name, "namespace": namespace}, "spec": spec}


def trigger_manifest(name: str, subscriber_url: str, *, filter_attributes: dict | None = None,
                     filters: list | None = None, delivery: dict | None = None, namespace: str = "test",
                     broker: str = "default") -> dict:
    spec: dict[str, Any] = {"broker": broker, "subscriber": {"uri": subscriber_url}}
    if filter_attributes is not None:
        spec["filter"] = {"attributes": filter_attributes}
    if filters is not None:
        spec["filters"] = filters
    if delivery is not None:
        spec["delivery"] = delivery
    return {"apiVersion": "eventing.knative.dev/v1", "kind": "Trigger",
            "metadata": {"name": name, "namespace": namespace}, "spec": spec}
