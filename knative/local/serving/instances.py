"""Instances of a service: local processes standing in for pods, started fresh or forked from a zygote.

``FreshLauncher`` starts the container command as a new process, as a container start would. ``ForkLauncher``
keeps one zygote per service (``zygote.py``) that has done the imports and loaded the model, and forks it per
instance. Either way an ``Instance`` gets its own port, its output piped back line by line (JSON log lines are
tagged with the instance id and scanned for cold-start phases), and a readiness probe polled until it answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import aiohttp
import orjson

from knative.local.serving.zygote import CONTROL_FD_ENV

PROJECT_ROOT = Path(__file__).resolve().parents[3]
READINESS_POLL_S = 0.005  # a fork-mode instance is ready in tens of ms: a coarse poll would dominate
# Knative fails a revision whose first pod is not ready within progress-deadline (600 s by default).
PROGRESS_DEADLINE_S = 600.0

LineSink = Callable[["Instance", bytes], None]


class InstanceError(RuntimeError):
    """An instance (or a zygote) could not be started or never became ready."""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


@dataclass(eq=False)
class Instance:
    """One running instance. ``in_flight`` is maintained by the router; the state by the service."""

    id: str
    service: str
    port: int
    mode: str
    host: str = "127.0.0.1"
    spawned_at: float = field(default_factory=time.time)
    pid: int = 0
    ready_at: float | None = None
    state: str = "starting"  # starting -> ready -> draining -> exited
    in_flight: int = 0
    served: int = 0
    phases: dict[str, float] = field(default_factory=dict)
    exit_status: int | None = None
    exited: asyncio.Future[int] | None = None
    _signal: Callable[[int], None] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def send_signal(self, signum: int) -> None:
        if self._signal is not None and self.exit_status is None:
            with contextlib.suppress(ProcessLookupError):
                self._signal(signum)

    def record(self) -> dict[str, Any]:
        """The instance's cold-start record, as kept in ``<home>/instances.jsonl``."""
        return {
            "service": self.service,
            "instance": self.id,
            "mode": self.mode,
            "pid": self.pid,
            "spawned_at": self.spawned_at,
            "ready_at": self.ready_at,
            "ready_s": None if self.ready_at is None else round(self.ready_at - self.spawned_at, 6),
            "phases": self.phases,
        }


def tag_line(instance: Instance, line: bytes) -> bytes:
    """A log line from an instance, tagged with its id; cold-start phase timestamps are kept on the instance."""
    text = line.rstrip(b"\n")
    try:
        entry = orjson.loads(text)
    except orjson.JSONDecodeError:
        entry = None
    if not isinstance(entry, dict):
        raw = text.decode(errors="replace")
        return orjson.dumps({"instance": instance.id, "service": instance.service, "raw": raw})
    if entry.get("msg") == "coldstart" and isinstance(entry.get("phase"), str):
        with contextlib.suppress(TypeError, ValueError):
            instance.phases[entry["phase"]] = float(entry["t"])
    entry.setdefault("instance", instance.id)
    return orjson.dumps(entry)


async def _pump(reader: asyncio.StreamReader, instance: Instance, sink: LineSink) -> None:
    while line := await reader.readline():
        sink(instance, line)


async def wait_ready(instance: Instance, path: str | None, session: aiohttp.ClientSession,
                     deadline_s: float = PROGRESS_DEADLINE_S) -> None:
    """Poll the readiness probe (HTTP ``path``, or a TCP connect when None) until it passes or the process exits."""
    assert instance.exited is not None
    deadline = time.monotonic() + deadline_s
    timeout = aiohttp.ClientTimeout(total=1.0)
    while time.monotonic() < deadline:
        if instance.exited.done():
            raise InstanceError(f"instance {instance.id} exited with status {instance.exited.result()} before ready")
        try:
            if path is None:
                _, writer = await asyncio.open_connection(instance.host, instance.port)
                writer.close()
                return
            async with session.get(instance.url + path, timeout=timeout) as response:
                if response.status == 200:
                    return
        except (TimeoutError, OSError, aiohttp.ClientError):
            pass
        await asyncio.wait({instance.exited}, timeout=READINESS_POLL_S)
    raise InstanceError(f"instance {instance.id} not ready within the {deadline_s:g} s progress deadline")


class Launcher(Protocol):
    mode: str

    async def start(self) -> None: ...

    async def launch(self, instance: Instance, env: Mapping[str, str], sink: LineSink) -> None: ...

    async def stop(self) -> None: ...


class FreshLauncher:
    """A new process per instance: the full cold start (interpreter, imports, model load) every time."""

    mode = "fresh"

    def __init__(self, command: tuple[str, ...], cwd: Path = PROJECT_ROOT) -> None:
        self.command = command
        self.cwd = cwd

    async def start(self) -> None:
        return None

    async def launch(self, instance: Instance, env: Mapping[str, str], sink: LineSink) -> None:
        # A new session: Ctrl-C on the runtime must not reach instances, which the runtime drains itself.
        process = await asyncio.create_subprocess_exec(
            *self.command, env={**os.environ, **env}, cwd=self.cwd, stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, start_new_session=True,
        )
        assert process.stdout is not None
        instance.pid = process.pid
        instance._signal = process.send_signal
        pump = asyncio.ensure_future(_pump(process.stdout, instance, sink))

        async def exit_status() -> int:
            status = await process.wait()
            await pump
            return status

        instance.exited = asyncio.ensure_future(exit_status())

    async def stop(self) -> None:
        return None


class ForkLauncher:
    """One zygote per service, pre-initialised with the module's ``prefork()``; each instance is a fork of it."""

    mode = "fork"

    def __init__(self, module: str, args: tuple[str, ...], env: Mapping[str, str], sink: Callable[[bytes], None],
                 cwd: Path = PROJECT_ROOT) -> None:
        self.module = module
        self.args = args
        self.env = env
        self.sink = sink
        self.cwd = cwd
        self._control: socket.socket | None = None
        self._process: asyncio.subprocess.Process | None = None
        self._spawned: dict[str, asyncio.Future[int]] = {}
        self._exits: dict[int, asyncio.Future[int]] = {}
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        ours, theirs = socket.socketpair()
        env = {**os.environ, **self.env, CONTROL_FD_ENV: str(theirs.fileno())}
        self._process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "knative.local.serving.zygote", self.module, *self.args, env=env, cwd=self.cwd,
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            pass_fds=(theirs.fileno(),), start_new_session=True,
        )
        theirs.close()
        self._control = ours
        assert self._process.stdout is not None and self._process.stderr is not None
        self._tasks.append(asyncio.ensure_future(self._pump_stderr(self._process.stderr)))
        first = await self._process.stdout.readline()
        message = orjson.loads(first) if first.strip() else {"error": "the zygote exited before prefork() finished"}
        if not message.get("ready"):
            await self._process.wait()
            raise InstanceError(f"fork-mode zygote for {self.module} failed: {message.get('error')}")
        self._tasks.append(asyncio.ensure_future(self._read_replies(self._process.stdout)))

    async def _pump_stderr(self, reader: asyncio.StreamReader) -> None:
        while line := await reader.readline():
            self.sink(line)

    async def _read_replies(self, reader: asyncio.StreamReader) -> None:
        while line := await reader.readline():
            message = orjson.loads(line)
            if "spawned" in message:
                future = self._spawned.pop(message["spawned"], None)
                if future is not None and not future.done():
                    future.set_result(int(message["pid"]))
            elif "exited" in message:
                future = self._exits.setdefault(int(message["exited"]), asyncio.get_running_loop().create_future())
                if not future.done():
                    future.set_result(int(message["status"]))
        # The zygote is gone: no more exits will be reported, so none must be awaited forever.
        for future in [*self._spawned.values(), *self._exits.values()]:
            if not future.done():
                future.set_exception(InstanceError("the fork-mode zygote exited"))

    async def launch(self, instance: Instance, env: Mapping[str, str], sink: LineSink) -> None:
        if self._control is None:
            raise InstanceError("the fork-mode zygote is not running")
        loop = asyncio.get_running_loop()
        read_fd, write_fd = os.pipe()
        spawned = self._spawned[instance.id] = loop.create_future()
        try:
            socket.send_fds(self._control, [orjson.dumps({"spawn": instance.id, "env": dict(env)})], [write_fd])
        finally:
            os.close(write_fd)
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(read_fd, "rb"))
        pid = await spawned
        instance.pid = pid
        instance._signal = lambda signum: os.kill(pid, signum)
        exit_future = self._exits.setdefault(pid, loop.create_future())
        pump = asyncio.ensure_future(_pump(reader, instance, sink))

        async def exit_status() -> int:
            status = await exit_future
            await pump
            self._exits.pop(pid, None)
            return status

        instance.exited = asyncio.ensure_future(exit_status())

    async def stop(self) -> None:
        if self._process is not None and self._process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self._process.send_signal(signal.SIGTERM)
            await self._process.wait()
        if self._control is not None:
            self._control.close()
            self._control = None
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
