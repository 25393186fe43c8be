"""The one-machine runtime: valkey-server, the model registry, the broker and every Knative Service of the
manifests, started together under one home folder and stopped cleanly.

``LocalRuntime`` is what ``hiddenstate up`` runs. It reads the same kustomize output as the cluster deploy tool,
overrides only what must be local (``VALKEY_URL`` to the local valkey-server, ``MODEL_URI`` to the local
registry's champion, the sink's file), serves ``GET /status`` on a control port, and writes
``<home>/endpoints.json`` and ``<home>/runtime.json`` (pid and control URL, for ``status`` and ``down``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson
from aiohttp import web

from knative import manifests
from knative.local.serving.instances import PROJECT_ROOT, free_port
from knative.local.serving.service import INSTANCE_MODES, ServingService
from knative.local.serving.spec import ServiceSpec, service_spec

log = logging.getLogger(__name__)

DEFAULT_HOME = Path(".hiddenstate")
MODEL_NAME = "fraud-gru"
MODEL_ALIAS = "champion"
ENDPOINTS_FILE = "endpoints.json"
RUNTIME_FILE = "runtime.json"
# How long `up` waits for the initial instances, and `down` for the drain.
READY_TIMEOUT_S = 180.0
DRAIN_TIMEOUT_S = 60.0


class LocalRuntimeError(Exception):
    """The runtime cannot start or be reached; the message says what to do."""


@dataclass(frozen=True)
class RuntimeOptions:
    home: Path = DEFAULT_HOME
    overlay: str = "dev"
    instance_mode: str = "fresh"
    config_autoscaler: Mapping[str, str] = field(default_factory=dict)
    host: str = "127.0.0.1"


def registry_uri(home: Path) -> str:
    return (home.resolve() / "registry").as_uri()


def champion_uri(home: Path) -> str | None:
    """The local registry's champion model URI, or None when the registry holds no model yet."""
    from functions.registry import open_registry
    from functions.registry.errors import RegistryError

    try:
        registry = open_registry(registry_uri(home))
        if registry.aliases(MODEL_NAME).get(MODEL_ALIAS):
            return f"{registry_uri(home)}/{MODEL_NAME}@{MODEL_ALIAS}"
    except RegistryError:
        return None
    return None


def ensure_model(home: Path) -> str:
    """The champion URI, training a ``--quick`` model first when the registry is empty (the trainer shows progress)."""
    uri = champion_uri(home)
    if uri is not None:
        return uri
    (home / "registry").mkdir(parents=True, exist_ok=True)
    print("==> the local registry is empty: training a quick model first", file=sys.stderr, flush=True)
    result = subprocess.run(
        [sys.executable, "-m", "functions.trainer", "--quick", "--registry", registry_uri(home)],
        cwd=PROJECT_ROOT, stdout=subprocess.PIPE, text=True, check=False,
    )
    sys.stderr.write(result.stdout)
    lines = result.stdout.strip().splitlines()
    if result.returncode != 0 or not lines:
        raise LocalRuntimeError(f"training the quick model failed (exit {result.returncode}); see the output above")
    return lines[-1].strip()


def load_state_library(admin_url: str) -> None:
    from state_service.store import StateStore

    with StateStore(admin_url) as store:
        store.ensure_library()


def local_overrides(env: Mapping[str, str], valkey: Any, model_uri: str | None, home: Path) -> dict[str, str]:
    """The container env entries that must point at local things instead of cluster ones."""
    overrides: dict[str, str] = {}
    if "VALKEY_URL" in env:
        # Keep the privilege level the manifest asked for: the admin user stays admin, everyone else is the scorer.
        admin = urlsplit(env["VALKEY_URL"]).username == "admin"
        overrides["VALKEY_URL"] = valkey.admin_url if admin else valkey.url
    if "MODEL_URI" in env and model_uri:
        overrides["MODEL_URI"] = model_uri
    if "MODEL_CACHE_DIR" in env:
        overrides["MODEL_CACHE_DIR"] = str((home / "model-cache").resolve())
    return overrides


class LocalRuntime:
    """Everything ``up`` starts. ``await start()``, then ``status()``; ``await stop()`` drains and stops it all."""

    def __init__(self, options: RuntimeOptions, model_uri: str | None = None) -> None:
        if options.instance_mode not in INSTANCE_MODES:
            raise LocalRuntimeError(f"--instance-mode {options.instance_mode!r}: expected fresh or fork")
        self.options = options
        self.home = options.home.resolve()
        self.model_uri = model_uri
        self.valkey: Any = None
        self.broker: Any = None
        self.services: dict[str, ServingService] = {}
        self.started_at = time.time()
        self._broker_keys: list[tuple[str, str]] = []
        self._control: web.AppRunner | None = None
        self.control_url = ""

    # -- lifecycle ---------------------------------------------------------------------------------------------

    async def start(self) -> None:
        from functions.event_display import sink_events_path
        from knative.local.eventing.broker import LocalBroker
        from state_service.server import ValkeyServer

        self.home.mkdir(parents=True, exist_ok=True)
        for stale in ("timeline.jsonl", "instances.jsonl"):
            (self.home / stale).unlink(missing_ok=True)
        objs = manifests.load_manifests(self.options.overlay)
        try:
            self.valkey = await asyncio.to_thread(ValkeyServer(self.home / "valkey").start)
            # The scorer's user may call the state library but not load it: an operator step, done here as admin.
            await asyncio.to_thread(load_state_library, self.valkey.admin_url)
            sink_file = sink_events_path(self.home)
            sink_file.parent.mkdir(parents=True, exist_ok=True)
            for obj in manifests.knative_services(objs):
                spec = self._spec(obj, objs, sink_file)
                service = ServingService(spec, mode=self.options.instance_mode, home=self.home,
                                         host=self.options.host)
                self.services[spec.name] = service
                await service.start()
            self._broker_keys = [(b["metadata"].get("namespace", "default"), b["metadata"]["name"])
                                 for b in manifests.brokers(objs)]
            self.broker = LocalBroker(manifests.brokers(objs), manifests.triggers(objs), self.resolve,
                                      host=self.options.host)
            await self.broker.start()
            await self._start_control()
            await self._initial_instances_ready(READY_TIMEOUT_S)
        except BaseException:
            await self.stop()
            raise
        self._write(ENDPOINTS_FILE, self.endpoints())
        self._write(RUNTIME_FILE, {"pid": os.getpid(), "control_url": self.control_url, "started_at": self.started_at,
                                   "instance_mode": self.options.instance_mode})
        log.info("runtime ready", extra={"home": str(self.home), "control": self.control_url})

    def _spec(self, obj: dict[str, Any], objs: list[dict[str, Any]], sink_file: Path) -> ServiceSpec:
        base = service_spec(obj, objs, self.options.config_autoscaler)
        overrides = local_overrides(base.env, self.valkey, self.model_uri, self.home)
        # The sink writes where `hiddenstate tail` and the demo read; other services ignore the variable.
        overrides["EVENT_DISPLAY_FILE"] = str(sink_file)
        return service_spec(obj, objs, self.options.config_autoscaler, overrides)

    async def _initial_instances_ready(self, timeout_s: float) -> None:
        waits = {name: asyncio.ensure_future(service.wait_ready(min(service.spec.scaling.initial_scale, 1)))
                 for name, service in self.services.items()}
        _, pending = await asyncio.wait(waits.values(), timeout=timeout_s)
        for future in pending:
            future.cancel()
        late = [name for name, future in waits.items() if future in pending]
        if late:
            logs = ", ".join(str(self.home / "logs" / f"{name}.log") for name in late)
            raise LocalRuntimeError(f"no ready instance of {', '.join(late)} after {timeout_s:g} s; see {logs}")

    async def stop(self) -> None:
        """Knative's order, backwards: stop taking events, let deliveries finish, drain services, stop Valkey."""
        if self.broker is not None:
            with contextlib.suppress(Exception):
                await self.broker.drain(DRAIN_TIMEOUT_S)
            await self.broker.stop()
            self.broker = None
        await asyncio.gather(*(s.stop() for s in self.services.values()), return_exceptions=True)
        self.services.clear()
        if self._control is not None:
            await self._control.cleanup()
            self._control = None
        if self.valkey is not None:
            await asyncio.to_thread(self.valkey.stop)
            self.valkey = None
        (self.home / RUNTIME_FILE).unlink(missing_ok=True)
        log.info("runtime stopped", extra={"home": str(self.home)})

    # -- what others read ----------------------------------------------------------------------------------------

    def resolve(self, ref: dict[str, Any]) -> str:
        """A Destination ``ref`` as a URL: a Knative Service's router, or a Broker's ingress."""
        kind, name = ref.get("kind"), ref.get("name")
        if kind == "Service" and str(ref.get("apiVersion", "")).startswith("serving.knative.dev/"):
            if name in self.services:
                return self.services[name].url
        elif kind == "Broker" and self.broker is not None:
            return self.broker.ingress_url(ref.get("namespace", "default"), name)
        raise LookupError(f"cannot resolve {kind} {name!r}: not declared in the manifests")

    def endpoints(self) -> dict[str, Any]:
        namespace, name = self._default_broker()
        return {
            "broker": self.broker.ingress_url(namespace, name) if self.broker else None,
            "services": {name: service.url for name, service in self.services.items()},
            "valkey": self.valkey.url if self.valkey else None,
        }

    def _default_broker(self) -> tuple[str, str]:
        if not self._broker_keys:
            raise LocalRuntimeError("the manifests declare no Broker")
        return next((key for key in self._broker_keys if key[1] == "default"), self._broker_keys[0])

    def status(self) -> dict[str, Any]:
        counters = self.broker.counters() if self.broker is not None else {}
        return {
            "services": {name: service.status() for name, service in self.services.items()},
            "broker": {key: counters.get(key, 0) for key in ("accepted", "delivered", "retried", "dead_lettered",
                                                             "replies")},
            "uptime_s": round(time.time() - self.started_at, 3),
        }

    # -- control endpoint -----------------------------------------------------------------------------------------

    async def _start_control(self) -> None:
        app = web.Application()
        app.router.add_get("/status", lambda _: web.json_response(self.status()))
        app.router.add_get("/endpoints", lambda _: web.json_response(self.endpoints()))
        app.router.add_get("/healthz", lambda _: web.json_response({"ok": True}))
        self._control = web.AppRunner(app, access_log=None)
        await self._control.setup()
        port = free_port(self.options.host)
        await web.TCPSite(self._control, self.options.host, port).start()
        self.control_url = f"http://{self.options.host}:{port}"

    def _write(self, name: str, content: dict[str, Any]) -> None:
        path = self.home / name
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(orjson.dumps(content, option=orjson.OPT_INDENT_2) + b"\n")
        tmp.replace(path)
