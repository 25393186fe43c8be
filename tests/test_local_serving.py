"""Local Knative Serving with real processes: the activator buffers and limits, the KPA scales out and to zero,
instances drain on SIGTERM, and fork-mode instances get their own connections and random state.

The service under test is ``tests/local_serving_app.py``; windows are shortened with config-autoscaler
overrides (stable window 6 s, grace period 1 s) so the whole file runs in well under a minute.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
import orjson
import pytest
import valkey

from knative.local.serving.config import scaling_settings
from knative.local.serving.instances import InstanceError
from knative.local.serving.service import ServingService
from knative.local.serving.spec import ServiceSpec
from state_service.server import ValkeyServer

APP = (sys.executable, "-m", "tests.local_serving_app")
FAST = {"stable-window": "6s", "scale-to-zero-grace-period": "1s", "allow-zero-initial-scale": "true"}


def app_spec(cc: int = 0, annotations: dict[str, str] | None = None, env: dict[str, str] | None = None) -> ServiceSpec:
    return ServiceSpec(name="app", command=APP, env=env or {}, container_concurrency=cc, timeout_s=30,
                       scaling=scaling_settings(annotations or {}, cc, FAST))


@contextlib.asynccontextmanager
async def running(spec: ServiceSpec, mode: str = "fresh", home: Path | None = None) -> AsyncIterator[ServingService]:
    service = ServingService(spec, mode=mode, home=home)
    await service.start()
    try:
        yield service
    finally:
        await asyncio.wait_for(service.stop(), 60)


async def until(predicate: Callable[[], bool], timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


async def work(session: aiohttp.ClientSession, service: ServingService, sleep: float = 0.0) -> dict:
    async with session.post(f"{service.url}/work?sleep={sleep}", data=b"x" * 10) as response:
        assert response.status == 200, await response.text()
        return await response.json()


def test_scale_from_zero_buffers_every_request_and_loses_none(tmp_path):
    async def scenario():
        async with running(app_spec(annotations={"initial-scale": "0"}), home=tmp_path) as service:
            assert service.status()["ready_instances"] == 0
            async with aiohttp.ClientSession() as session:
                replies = await asyncio.gather(*(work(session, service) for _ in range(20)))
            assert len(replies) == 20
            assert service.status()["ready_instances"] >= 1
            assert service.status()["requests"] == 20
            return replies

    replies = asyncio.run(scenario())
    assert all(r["body_len"] == 10 for r in replies)
    assert {(r["K_SERVICE"], r["K_REVISION"], r["K_CONFIGURATION"]) for r in replies} == {("app", "app-00001", "app")}
    records = [orjson.loads(line) for line in (tmp_path / "instances.jsonl").read_bytes().splitlines()]
    ready = [r for r in records if "ready_s" in r]
    assert ready and ready[0]["ready_s"] > 0
    assert {"imports_done", "model_loaded", "serving"} <= set(ready[0]["phases"])


def test_container_concurrency_is_a_hard_limit_and_excess_requests_queue():
    async def scenario():
        spec = app_spec(cc=2, annotations={"max-scale": "1"})
        async with running(spec) as service:
            await asyncio.wait_for(service.wait_ready(1), 30)
            async with aiohttp.ClientSession() as session:
                return await asyncio.gather(*(work(session, service, sleep=0.2) for _ in range(8)))

    replies = asyncio.run(scenario())
    assert len(replies) == 8
    assert max(r["concurrent"] for r in replies) == 2


def test_concurrent_load_scales_out_and_spreads_over_instances():
    async def scenario():
        spec = app_spec(cc=1, annotations={"max-scale": "3"})
        async with running(spec) as service:
            await asyncio.wait_for(service.wait_ready(1), 30)
            pids: set[int] = set()
            peak = 0
            async with aiohttp.ClientSession() as session:
                deadline = time.monotonic() + 30
                while len(service.ready) < 3 and time.monotonic() < deadline:
                    replies = await asyncio.gather(*(work(session, service, sleep=0.3) for _ in range(6)))
                    pids |= {r["pid"] for r in replies}
                    peak = max(peak, len(service.ready))
                replies = await asyncio.gather(*(work(session, service, sleep=0.3) for _ in range(6)))
                pids |= {r["pid"] for r in replies}
            return peak, service.desired, pids, replies

    peak, desired, pids, replies = asyncio.run(scenario())
    assert desired == 3
    assert len(pids) == 3
    assert all(r["concurrent"] == 1 for r in replies)


def test_idle_service_scales_to_zero_after_the_grace_period_and_comes_back():
    async def scenario():
        async with running(app_spec()) as service:
            await asyncio.wait_for(service.wait_ready(1), 30)
            first = service.ready[0]
            await until(lambda: service.status()["ready_instances"] == 0 and not service.draining)
            assert first.exit_status == 0
            async with aiohttp.ClientSession() as session:
                reply = await work(session, service)
            return first.pid, reply

    first_pid, reply = asyncio.run(scenario())
    assert reply["pid"] != first_pid


def test_draining_instance_finishes_its_in_flight_request_before_exiting():
    async def scenario():
        async with running(app_spec(annotations={"min-scale": "1"})) as service:
            await asyncio.wait_for(service.wait_ready(1), 30)
            instance = service.ready[0]
            async with aiohttp.ClientSession() as session:
                slow = asyncio.ensure_future(work(session, service, sleep=1.0))
                await until(lambda: instance.in_flight == 1)
                drain = asyncio.ensure_future(service.drain(instance))
                await until(lambda: instance.state == "draining")
                assert not slow.done()
                reply = await slow
            await drain
            return instance, reply

    instance, reply = asyncio.run(scenario())
    assert reply["pid"] == instance.pid
    assert instance.exit_status == 0


@pytest.fixture
def valkey_server(tmp_path):
    server = ValkeyServer(tmp_path / "valkey").start()
    yield server
    server.stop()


def test_fork_mode_instances_do_not_share_connections_or_random_state(valkey_server):
    async def scenario():
        spec = app_spec(cc=1, annotations={"min-scale": "2"}, env={"VALKEY_URL": valkey_server.admin_url})
        async with running(spec, mode="fork") as service:
            await asyncio.wait_for(service.wait_ready(2), 30)
            async with aiohttp.ClientSession() as session:
                replies = await asyncio.gather(*(work(session, service, sleep=0.3) for _ in range(2)))
            admin = valkey.Valkey.from_url(valkey_server.admin_url)
            clients = [c for c in admin.client_list() if c["name"].startswith("app-")]
            admin.close()
            return replies, clients

    replies, clients = asyncio.run(scenario())
    assert len({r["pid"] for r in replies}) == 2
    assert len({r["client_id"] for r in replies}) == 2
    assert len({r["draw"] for r in replies}) == 2
    assert {int(c["id"]) for c in clients} == {r["client_id"] for r in replies}
    assert len({c["addr"] for c in clients}) == 2


def test_fork_mode_refuses_a_prefork_that_opens_sockets():
    async def scenario():
        spec = app_spec(env={"APP_PREFORK_OPENS_SOCKET": "1"})
        service = ServingService(spec, mode="fork")
        with pytest.raises(InstanceError, match="inet sockets"):
            await service.start()
        await service.stop()

    asyncio.run(scenario())


def test_unknown_instance_mode_is_rejected_by_name():
    with pytest.raises(InstanceError, match="unknown instance mode 'thread'"):
        ServingService(app_spec(), mode="thread")


def test_instance_killed_from_outside_is_replaced():
    async def scenario():
        async with running(app_spec(annotations={"min-scale": "1"})) as service:
            await asyncio.wait_for(service.wait_ready(1), 30)
            victim = service.ready[0]
            victim.send_signal(signal.SIGKILL)
            await until(lambda: service.ready and service.ready[0] is not victim)
            async with aiohttp.ClientSession() as session:
                return victim.pid, await work(session, service)

    victim_pid, reply = asyncio.run(scenario())
    assert reply["pid"] != victim_pid
