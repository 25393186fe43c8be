"""The local broker: Knative's MT channel-based broker on one asyncio loop (aiohttp server and client).

- Ingress at ``POST /<namespace>/<broker>`` takes any valid CloudEvent (binary or structured) with 202, answers an
  invalid one with 400 ``{"error", "detail"}``, OPTIONS with 200 and ``Allow``, other methods with 405.
- Each accepted event is matched against the broker's Triggers; each match becomes a delivery task that POSTs the
  event to the subscriber (binary mode, ``Prefer: reply``), retrying per the Trigger's delivery spec, then dead-letters
  it with Knative's error extensions. A CloudEvent in a 2xx response (not 202) re-enters the same broker with one
  hop less (``knativebrokerttl``).
- In memory, like Knative's InMemoryChannel: neither durable (a stop loses what is in flight) nor ordered (deliveries
  run concurrently, at most ``max_in_flight_per_trigger`` per Trigger). The production path is the Kafka broker,
  keyed by the ``partitionkey`` extension (the card id), with ``delivery.order: ordered`` for per-card order.
- ``GET /status`` (JSON counters) and ``GET /metrics`` (Prometheus) on the same port.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import aiohttp
from aiohttp import web
from cloudevents.core.v1.event import CloudEvent
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from functions.contract import MAX_BODY_BYTES, ContractError, PayloadTooLarge
from knative.local.eventing.counters import BrokerCounters
from knative.local.eventing.delivery import DeliverySpec
from knative.local.eventing.topology import Destination, TriggerSpec, read_topology
from knative.local.eventing.wire import (
    TTL_EXTENSION,
    AttemptResult,
    dead_letter_event,
    decode,
    dispatch_error,
    hops_left,
    read_response,
    string_attributes,
    to_request,
    with_attributes,
)

log = logging.getLogger(__name__)

DEFAULT_MAX_IN_FLIGHT_PER_TRIGGER = 64
_ALLOW = "POST, OPTIONS"


@dataclass
class _Trigger:
    spec: TriggerSpec
    slots: asyncio.Semaphore
    # Resolved URLs by Destination.where, which names each destination of the trigger uniquely.
    urls: dict[str, str] = field(default_factory=dict)


def _error(status: int, error: str, detail: str, **headers: str) -> web.Response:
    return web.json_response({"error": error, "detail": detail}, status=status, headers=headers or None)


def _status_of(error: ContractError) -> int:
    return 413 if isinstance(error, PayloadTooLarge) else 400


class LocalBroker:
    """Every Broker and Trigger of a manifest set, served from one port.

    ``resolve(ref) -> url`` turns a Destination ``ref`` (``kind``, ``apiVersion``, ``name``, ``namespace``) into the
    URL to POST to; the runtime passes its service router. It is called on a Trigger's first delivery and the URL
    kept; a resolve error counts as a failed, retryable attempt.
    """

    def __init__(
        self, brokers: list[dict], triggers: list[dict], resolve: Callable[[dict], str], *,
        host: str = "127.0.0.1", port: int = 0, config_defaults: dict | None = None,
        max_in_flight_per_trigger: int = DEFAULT_MAX_IN_FLIGHT_PER_TRIGGER,
    ) -> None:
        self._brokers, trigger_specs = read_topology(brokers, triggers, config_defaults)
        self._triggers: dict[tuple[str, str], list[_Trigger]] = {key: [] for key in self._brokers}
        self._max_in_flight = max_in_flight_per_trigger
        self._trigger_specs = trigger_specs
        self._resolve = resolve
        self._host = host
        self._port = port
        self._counters = BrokerCounters()
        self._tasks: set[asyncio.Task[None]] = set()
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    # -- lifecycle ---------------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Bind the port and start accepting events. Semaphores are made here, inside the running loop."""
        self._triggers = {key: [] for key in self._brokers}
        for spec in self._trigger_specs:
            self._triggers[spec.broker].append(_Trigger(spec, asyncio.Semaphore(self._max_in_flight)))
        self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        app = web.Application(client_max_size=MAX_BODY_BYTES + 1)
        app.router.add_get("/status", self._status)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_route("*", "/{namespace}/{name}", self._ingress)
        self._registry = self._counters.registry(lambda: len(self._tasks))
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port)
        await site.start()
        self._port = self._runner.addresses[0][1]
        log.info("broker ready", extra={"url": self.url, "brokers": [f"{ns}/{n}" for ns, n in self._brokers]})

    async def stop(self) -> None:
        """Stop the server and cancel deliveries still in flight (they are lost, as with InMemoryChannel)."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        pending = list(self._tasks)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        if pending:
            log.warning("broker stopped with deliveries in flight; they are lost", extra={"lost": len(pending)})
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def drain(self, timeout_s: float) -> bool:
        """Wait until no delivery is in flight (replies included). False if ``timeout_s`` passed first."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while self._tasks:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            await asyncio.wait(set(self._tasks), timeout=remaining)
        return True

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self._host in ("0.0.0.0", "", "::") else self._host
        return f"http://{host}:{self._port}"

    def ingress_url(self, namespace: str, name: str) -> str:
        if (namespace, name) not in self._brokers:
            raise KeyError(f"broker {namespace}/{name} is not declared")
        return f"{self.url}/{namespace}/{name}"

    def counters(self) -> dict[str, int]:
        """Counts since start (see ``counters.COUNTER_NAMES``) plus ``in_flight``, the deliveries in progress."""
        return {**self._counters.snapshot(), "in_flight": len(self._tasks)}

    # -- HTTP handlers -----------------------------------------------------------------------------------------

    async def _ingress(self, request: web.Request) -> web.Response:
        if request.method == "OPTIONS":
            return web.Response(status=200, headers={"Allow": _ALLOW})
        if request.method != "POST":
            return _error(405, "method_not_allowed", f"{request.method} is not allowed; POST events", Allow=_ALLOW)
        key = (request.match_info["namespace"], request.match_info["name"])
        if key not in self._brokers:
            return _error(404, "broker_not_found", f"no broker {key[0]}/{key[1]}")
        try:
            body = await request.read()
            event = decode(list(request.headers.items()), body)
            ttl = hops_left(event)
        except web.HTTPRequestEntityTooLarge:
            self._counters.add("rejected")
            return _error(413, "payload_too_large", f"body is over the {MAX_BODY_BYTES}-byte limit")
        except ContractError as exc:
            self._counters.add("rejected")
            return web.json_response(exc.to_dict(), status=_status_of(exc))
        if ttl <= 0:
            self._counters.add("rejected")
            return _error(400, "ttl_exhausted", f"'{TTL_EXTENSION}' is {ttl}: the event has no hops left")
        self._counters.add("accepted")
        self._publish(key, event, ttl)
        return web.Response(status=202)

    async def _status(self, _request: web.Request) -> web.Response:
        return web.json_response(self.counters())

    async def _metrics(self, _request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(self._registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _healthz(self, _request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    # -- routing and delivery ----------------------------------------------------------------------------------

    def _publish(self, broker: tuple[str, str], event: CloudEvent, ttl: int) -> None:
        attributes = string_attributes(event)
        for trigger in self._triggers[broker]:
            if trigger.spec.matches(attributes):
                task = asyncio.get_running_loop().create_task(self._deliver(trigger, event, ttl))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def _deliver(self, trigger: _Trigger, event: CloudEvent, ttl: int) -> None:
        spec = trigger.spec.delivery
        # Knative's filter strips the hop count before the subscriber sees the event and re-attaches it to replies.
        headers, body = to_request(with_attributes(event, **{TTL_EXTENSION: None}), spec.format)
        result, url = await self._send(trigger, trigger.spec.subscriber, headers, body, spec)
        if result.ok:
            self._counters.add("delivered")
            if result.reply is not None:
                self._route_reply(trigger, result.reply, ttl)
            return
        log.info(
            "delivery failed",
            extra={"trigger": trigger.spec.name, "event_id": event.get_id(), "status": result.status, "url": url},
        )
        await self._dead_letter(trigger, with_attributes(event, **{TTL_EXTENSION: str(ttl)}), url, result)

    def _route_reply(self, trigger: _Trigger, reply: CloudEvent, ttl: int) -> None:
        remaining = ttl - 1
        if remaining <= 0:
            self._counters.add("ttl_expired")
            log.warning("reply dropped: knativebrokerttl ran out (a reply loop?)",
                        extra={"trigger": trigger.spec.name, "event_id": reply.get_id(), "type": reply.get_type()})
            return
        self._counters.add("replies")
        self._publish(trigger.spec.broker, with_attributes(reply, **{TTL_EXTENSION: str(remaining)}), remaining)

    async def _dead_letter(self, trigger: _Trigger, event: CloudEvent, failed_url: str, failure: AttemptResult) -> None:
        sink = trigger.spec.dead_letter_sink
        if sink is None:
            self._counters.add("undeliverable")
            log.warning("event dropped: delivery failed and the trigger has no dead letter sink",
                        extra={"trigger": trigger.spec.name, "event_id": event.get_id(), "status": failure.status})
            return
        spec = trigger.spec.delivery
        headers, body = to_request(dead_letter_event(event, failed_url, failure), spec.format)
        result, url = await self._send(trigger, sink, headers, body, spec)
        if result.ok:
            self._counters.add("dead_lettered")
            return
        self._counters.add("undeliverable")
        log.error("event lost: the dead letter sink failed too",
                  extra={"trigger": trigger.spec.name, "event_id": event.get_id(), "status": result.status, "url": url})

    async def _send(
        self, trigger: _Trigger, destination: Destination, headers: dict[str, str], body: bytes, spec: DeliverySpec
    ) -> tuple[AttemptResult, str]:
        """One delivery: the first attempt plus up to ``spec.retry`` retries with backoff between them."""
        retries = 0
        while True:
            # The slot is held for the request only, so one trigger's backoff waits never starve its other events.
            async with trigger.slots:
                url, result = await self._attempt(trigger, destination, headers, body, spec.timeout_s)
            if result.ok or not result.retryable or retries >= spec.retry:
                return result, url
            retries += 1
            self._counters.add("retried")
            await asyncio.sleep(spec.backoff_s(retries))

    async def _attempt(
        self, trigger: _Trigger, destination: Destination, headers: dict[str, str], body: bytes, timeout_s: float
    ) -> tuple[str, AttemptResult]:
        url = trigger.urls.get(destination.where)
        if url is None:
            try:
                url = destination.url(self._resolve)
            # The resolver is the runtime's code; any failure of it means "not addressable yet", which Knative
            # also treats as a failed, retryable delivery.
            except Exception as exc:
                return destination.where, dispatch_error(exc)
            trigger.urls[destination.where] = url
        assert self._session is not None, "LocalBroker.start() was not awaited"
        try:
            async with self._session.post(
                url, data=body, headers=headers, timeout=aiohttp.ClientTimeout(total=timeout_s)
            ) as response:
                response_body = await response.read()
                return url, read_response(response.status, list(response.headers.items()), response_body)
        except (aiohttp.ClientError, TimeoutError) as exc:
            return url, dispatch_error(exc)

