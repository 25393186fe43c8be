"""One Knative Service on one machine: its router, its KPA, and the instances it starts and drains.

Every second the router's metrics feed the KPA and a timeline row is kept; every 2 s the KPA decides and the
service reconciles: new instances are launched (and join the router once their readiness probe passes), surplus
ones are drained the way Knative drains a pod (no new requests, SIGTERM, wait for the exit, SIGKILL after the
revision timeout).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import signal
import time
from collections import deque
from pathlib import Path
from typing import Any, TextIO

import aiohttp
import orjson
from aiohttp import web

from knative.local.serving.instances import (
    ForkLauncher,
    FreshLauncher,
    Instance,
    InstanceError,
    Launcher,
    free_port,
    tag_line,
    wait_ready,
)
from knative.local.serving.kpa import DECISION_TICK_S, METRIC_TICK_S, Kpa, PodAutoscaler
from knative.local.serving.router import InstancePool, Router
from knative.local.serving.spec import ServiceSpec

log = logging.getLogger(__name__)
INSTANCE_MODES = ("fresh", "fork")
TIMELINE_KEEP = 3600
# A failed start is retried, but not in a tight loop (Kubernetes backs off a crash-looping pod too).
RESTART_BACKOFF_S = 2.0


def make_launcher(spec: ServiceSpec, mode: str, sink: Any) -> Launcher:
    if mode == "fresh":
        return FreshLauncher(spec.command)
    if mode == "fork":
        if spec.module is None:
            raise InstanceError(f"service {spec.name}: fork mode needs a 'python -m MODULE' command: {spec.command}")
        base_env = {k: v for k, v in spec.instance_env(0).items() if k != "PORT"}
        return ForkLauncher(spec.module, spec.command[3:], base_env, sink)
    raise InstanceError(f"unknown instance mode {mode!r} (expected one of {', '.join(INSTANCE_MODES)})")


class ServingService:
    """Runs one service: ``await start()``, send requests to ``url``, ``await stop()``."""

    def __init__(self, spec: ServiceSpec, mode: str = "fresh", home: Path | None = None,
                 host: str = "127.0.0.1", port: int = 0) -> None:
        self.spec = spec
        self.mode = mode
        self.home = home
        self.host = host
        self.port = port
        self.kpa = Kpa(spec.scaling)
        self.autoscaler = PodAutoscaler(spec.scaling)
        self.pool = InstancePool(spec.container_concurrency)
        self.router = Router(self.pool, spec.timeout_s, self.poke)
        self.desired = 0
        self.starting: set[Instance] = set()
        self.draining: set[Instance] = set()
        self.timeline: deque[dict[str, Any]] = deque(maxlen=TIMELINE_KEEP)
        self.instance_records: list[dict[str, Any]] = []
        self._numbers = itertools.count(1)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._loop_task: asyncio.Task[None] | None = None
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self._log_file: TextIO | None = None
        self._reconcile_lock = asyncio.Lock()
        self._retry_after = 0.0
        self.launcher = make_launcher(spec, mode, self._zygote_line)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def ready(self) -> list[Instance]:
        return self.pool.instances

    async def start(self) -> None:
        if self.home is not None:
            (self.home / "logs").mkdir(parents=True, exist_ok=True)
            self._log_file = open(self.home / "logs" / f"{self.spec.name}.log", "a", buffering=1)  # noqa: SIM115
        self._session = aiohttp.ClientSession()
        await self.launcher.start()
        self._runner = web.AppRunner(self.router.app(), access_log=None)
        await self._runner.setup()
        self.port = self.port or free_port(self.host)
        await web.TCPSite(self._runner, self.host, self.port).start()
        now = time.monotonic()
        self.kpa.record(now, 0.0)
        await self._scale_to(self.autoscaler.desired(now, 0, 0))
        self._loop_task = asyncio.ensure_future(self._ticks())

    async def wait_ready(self, count: int = 1) -> None:
        """Until ``count`` instances are ready (for ``up`` with initial scale, and tests)."""
        while len(self.ready) < count:
            await asyncio.sleep(0.02)

    async def stop(self) -> None:
        """Stop scaling, let requests in the router finish, drain every instance, stop the zygote."""
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.router.wait_idle(), timeout=self.spec.timeout_s)
        async with self._reconcile_lock:
            victims = [*self.pool.instances, *self.starting]
            await asyncio.gather(*(self.drain(i) for i in victims))
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.launcher.stop()
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()
        if self._log_file is not None:
            self._log_file.close()

    def status(self) -> dict[str, int]:
        return {
            "ready_instances": len(self.ready),
            "desired_instances": self.desired,
            "in_flight": self.router.meter.concurrency,
            "requests": self.router.meter.requests_total,
        }

    def poke(self) -> None:
        """A request met no ready instance: decide now instead of at the next tick (Knative's activator poke)."""
        if self.starting or self.desired > 0:
            return
        now = time.monotonic()
        self.kpa.record(now, float(max(1, self.router.meter.concurrency)))
        self._spawn_task(self._decide(now))

    async def _ticks(self) -> None:
        ticks = itertools.count(1)
        start = time.monotonic()
        for n in ticks:
            await asyncio.sleep(max(0.0, start + n * METRIC_TICK_S - time.monotonic()))
            now = time.monotonic()
            stats = self.router.meter.tick()
            value = stats["rps"] if self.spec.scaling.metric == "rps" else stats["concurrency"]
            self.kpa.record(now, value)
            if n % round(DECISION_TICK_S / METRIC_TICK_S) == 0:
                await self._decide(now)
            self._record_timeline(stats)

    async def _decide(self, now: float) -> None:
        decision = self.kpa.decide(now, len(self.ready))
        desired = self.autoscaler.desired(now, decision.desired, len(self.ready))
        await self._scale_to(desired)

    def _record_timeline(self, stats: dict[str, Any]) -> None:
        row = {"t": round(time.time(), 3), "service": self.spec.name, "ready": len(self.ready),
               "desired": self.desired, "starting": len(self.starting), "waiting": self.pool.waiting,
               **{k: (round(v, 3) if isinstance(v, float) else v) for k, v in stats.items()},
               "panicking": self.kpa.panicking}
        self.timeline.append(row)
        self._append("timeline.jsonl", row)

    def _append(self, name: str, row: dict[str, Any]) -> None:
        if self.home is not None:
            with open(self.home / name, "ab") as out:
                out.write(orjson.dumps(row) + b"\n")

    async def _scale_to(self, desired: int) -> None:
        async with self._reconcile_lock:
            self.desired = desired
            current = [*self.starting, *self.pool.instances]
            if desired > len(current) and time.monotonic() >= self._retry_after:
                for _ in range(desired - len(current)):
                    self._spawn_task(self._run_instance())
            elif desired < len(current):
                # Instances still starting go first (they serve nobody), then the least busy ready ones.
                surplus = sorted(current, key=lambda i: (i.state != "starting", i.in_flight))
                for instance in surplus[: len(current) - desired]:
                    self._spawn_task(self.drain(instance))

    def _spawn_task(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run_instance(self) -> None:
        number = next(self._numbers)
        instance = Instance(id=f"{self.spec.revision_name}-{number}", service=self.spec.name, port=free_port(),
                            mode=self.mode)
        self.starting.add(instance)
        try:
            await self.launcher.launch(instance, self.spec.instance_env(instance.port), self._instance_line)
            assert self._session is not None
            await wait_ready(instance, self.spec.readiness_path, self._session)
        except (InstanceError, OSError) as exc:
            self.starting.discard(instance)
            instance.send_signal(signal.SIGKILL)
            if instance.state == "draining":
                return  # stopped on purpose while starting
            log.error("instance failed to start", extra={"service": self.spec.name, "instance": instance.id,
                                                         "error": str(exc)})
            self._retry_after = time.monotonic() + RESTART_BACKOFF_S
            return
        if instance.state == "draining":
            # Scaled down while it was starting: it never joins the router.
            instance.send_signal(signal.SIGTERM)
            instance.exit_status = await instance.exited
            return
        self.starting.discard(instance)
        instance.ready_at = time.time()
        instance.state = "ready"
        record = instance.record()
        self.instance_records.append(record)
        self._append("instances.jsonl", record)
        await self.pool.add(instance)
        log.info("instance ready", extra={"service": self.spec.name, "instance": instance.id,
                                          "ready_s": record["ready_s"]})
        assert instance.exited is not None
        status = await instance.exited
        instance.exit_status = status
        instance.state = "exited"
        if instance not in self.draining:
            # Died on its own: stop routing to it; the next decision starts a replacement.
            log.warning("instance exited", extra={"service": self.spec.name, "instance": instance.id,
                                                  "status": status})
            await self.pool.remove(instance)

    async def drain(self, instance: Instance) -> None:
        """Knative's pod shutdown: out of the routing set first, then SIGTERM, then SIGKILL after the timeout."""
        if instance in self.draining:
            return
        self.draining.add(instance)
        self.starting.discard(instance)
        instance.state = "draining"
        await self.pool.remove(instance)
        if instance.exited is None:
            # Still launching: _run_instance sees the state and stops it once it has a process.
            self.draining.discard(instance)
            return
        instance.send_signal(signal.SIGTERM)
        try:
            instance.exit_status = await asyncio.wait_for(asyncio.shield(instance.exited), self.spec.timeout_s)
        except TimeoutError:
            instance.send_signal(signal.SIGKILL)
            instance.exit_status = await instance.exited
        instance.state = "exited"
        self.draining.discard(instance)
        self._append("instances.jsonl", {"service": self.spec.name, "instance": instance.id, "event": "exit",
                                         "exited_at": time.time(), "status": instance.exit_status,
                                         "served": instance.served})

    def _instance_line(self, instance: Instance, line: bytes) -> None:
        tagged = tag_line(instance, line)
        if self._log_file is not None:
            self._log_file.write(tagged.decode() + "\n")

    def _zygote_line(self, line: bytes) -> None:
        if self._log_file is not None:
            self._log_file.write(line.decode(errors="replace"))
