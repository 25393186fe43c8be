"""The activator/router of one service: every request to the service's stable URL goes through it.

It plays Knative's activator and queue-proxy together (activator-in-path mode, ``target-burst-capacity: -1``):
requests wait in a FIFO while no instance has a free slot, a request meeting zero instances signals the
autoscaler at once, ``containerConcurrency`` is a hard per-instance limit, the least-loaded ready instance gets
the next request, and concurrency, request counts and latencies are measured for the autoscaler's 1 s metric ticks.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import aiohttp
from aiohttp import web

from knative.local.serving.instances import Instance

# Hop-by-hop headers are for one connection only (RFC 9110 §7.6.1), and aiohttp sets its own length.
_HOP_HEADERS = frozenset(
    {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer", "transfer-encoding",
     "upgrade", "host", "content-length"}
)
# A refused connection, or a kept-alive one the instance closed before answering, means the instance did not
# process the request, so another instance may take it.
CONNECT_ATTEMPTS = 3


class InstancePool:
    """The routable instances of a service and the requests waiting for a free slot on one of them."""

    def __init__(self, container_concurrency: int) -> None:
        self.container_concurrency = container_concurrency
        self._instances: list[Instance] = []
        self._changed = asyncio.Condition()
        self._order = itertools.count()
        self._last_pick: dict[Instance, int] = {}
        self.waiting = 0

    @property
    def instances(self) -> list[Instance]:
        return list(self._instances)

    @property
    def in_flight(self) -> int:
        return sum(i.in_flight for i in self._instances)

    def _pick(self) -> Instance | None:
        cc = self.container_concurrency
        free = [i for i in self._instances if cc <= 0 or i.in_flight < cc]
        if not free:
            return None
        # Least loaded first; among equals the one picked longest ago, so idle instances share the work.
        return min(free, key=lambda i: (i.in_flight, self._last_pick.get(i, -1)))

    async def add(self, instance: Instance) -> None:
        async with self._changed:
            self._instances.append(instance)
            self._changed.notify_all()

    async def remove(self, instance: Instance) -> None:
        """Stop routing new requests to ``instance``; requests already on it carry on."""
        async with self._changed:
            if instance in self._instances:
                self._instances.remove(instance)
            self._last_pick.pop(instance, None)

    @contextlib.asynccontextmanager
    async def slot(self, on_wait: Callable[[], None]) -> AsyncIterator[Instance]:
        """Hold one request slot on the least-loaded instance, waiting (FIFO) until one is free."""
        async with self._changed:
            instance = self._pick()
            if instance is None:
                self.waiting += 1
                on_wait()
                try:
                    while (instance := self._pick()) is None:
                        await self._changed.wait()
                finally:
                    self.waiting -= 1
            instance.in_flight += 1
            self._last_pick[instance] = next(self._order)
        try:
            yield instance
        finally:
            async with self._changed:
                instance.in_flight -= 1
                instance.served += 1
                self._changed.notify_all()


@dataclass
class RequestMeter:
    """Time-weighted concurrency (requests in the activator: waiting + in flight) and per-tick request stats."""

    concurrency: int = 0
    requests_total: int = 0
    errors_total: int = 0
    _area: float = 0.0
    _since: float = field(default_factory=time.monotonic)
    _tick_start: float = field(default_factory=time.monotonic)
    _tick_requests: int = 0
    _tick_latencies_ms: list[float] = field(default_factory=list)

    def _advance(self, now: float) -> None:
        self._area += self.concurrency * (now - self._since)
        self._since = now

    def started(self) -> None:
        self._advance(time.monotonic())
        self.concurrency += 1

    def finished(self, latency_s: float, ok: bool) -> None:
        self._advance(time.monotonic())
        self.concurrency -= 1
        self.requests_total += 1
        self.errors_total += 0 if ok else 1
        self._tick_requests += 1
        self._tick_latencies_ms.append(latency_s * 1000.0)

    def tick(self) -> dict[str, float]:
        """Close one metric period: average concurrency, requests/s and latency percentiles over it."""
        now = time.monotonic()
        self._advance(now)
        elapsed = max(now - self._tick_start, 1e-9)
        latencies = sorted(self._tick_latencies_ms)
        stats = {
            "concurrency": self._area / elapsed,
            "rps": self._tick_requests / elapsed,
            "p50_ms": _percentile(latencies, 0.50),
            "p99_ms": _percentile(latencies, 0.99),
        }
        self._area, self._tick_start, self._tick_requests, self._tick_latencies_ms = 0.0, now, 0, []
        return stats


def _percentile(ordered: list[float], q: float) -> float | None:
    if not ordered:
        return None
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 3)


class Router:
    """The aiohttp app in front of one service's instances."""

    def __init__(self, pool: InstancePool, timeout_s: float, on_cold_request: Callable[[], None]) -> None:
        self.pool = pool
        self.timeout_s = timeout_s
        self.on_cold_request = on_cold_request
        self.meter = RequestMeter()
        self._session: aiohttp.ClientSession | None = None
        self._drained = asyncio.Event()
        self._drained.set()

    def app(self) -> web.Application:
        app = web.Application(client_max_size=16 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self.handle)
        app.on_startup.append(self._open)
        app.on_cleanup.append(self._close)
        return app

    async def _open(self, _: web.Application) -> None:
        # No pooled keep-alive limit below containerConcurrency: the pool already bounds concurrency per instance.
        self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), auto_decompress=False)

    async def _close(self, _: web.Application) -> None:
        if self._session is not None:
            await self._session.close()

    async def wait_idle(self) -> None:
        """Until no request is in the activator (waiting or in flight)."""
        await self._drained.wait()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        started = time.monotonic()
        self.meter.started()
        self._drained.clear()
        ok = False
        try:
            response = await asyncio.wait_for(self._forward(request, body), timeout=self.timeout_s)
            ok = response.status < 500
            return response
        except TimeoutError:
            return web.json_response(
                {"error": "timeout", "detail": f"no response within the revision timeout of {self.timeout_s:g} s"},
                status=504)
        finally:
            self.meter.finished(time.monotonic() - started, ok)
            if self.meter.concurrency == 0:
                self._drained.set()

    async def _forward(self, request: web.Request, body: bytes) -> web.Response:
        assert self._session is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_HEADERS}
        headers["X-Forwarded-For"] = request.remote or ""
        last_error: Exception | None = None
        for _ in range(CONNECT_ATTEMPTS):
            async with self.pool.slot(self._on_wait) as instance:
                try:
                    async with self._session.request(
                        request.method, instance.url + request.path_qs, headers=headers, data=body,
                        allow_redirects=False,
                    ) as upstream:
                        payload = await upstream.read()
                        out_headers = {k: v for k, v in upstream.headers.items() if k.lower() not in _HOP_HEADERS}
                        return web.Response(status=upstream.status, headers=out_headers, body=payload)
                except (aiohttp.ClientConnectorError, aiohttp.ServerDisconnectedError) as exc:
                    last_error = exc
                except aiohttp.ClientError as exc:
                    return web.json_response(
                        {"error": "upstream_failed", "detail": f"instance {instance.id}: {exc}"}, status=502)
        return web.json_response({"error": "upstream_unreachable", "detail": str(last_error)}, status=502)

    def _on_wait(self) -> None:
        if not self.pool.instances:
            self.on_cold_request()
