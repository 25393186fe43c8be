"""Fork-mode instances: a zygote imports a service module and calls its ``prefork()`` once, then forks each new
instance, so an instance starts with the imports done and the model loaded.

Run as ``python -m knative.local.serving.zygote MODULE [ARGS...]`` by ``ForkLauncher``. The protocol:

- requests arrive on the Unix socket whose fd is in ``HIDDENSTATE_ZYGOTE_FD``: one JSON object per message,
  ``{"spawn": "<instance id>", "env": {...}}``, with one file descriptor attached (the write end of the pipe the
  instance's stdout and stderr go to);
- replies are JSON lines on stdout: ``{"ready": true}`` once ``prefork()`` has returned, then ``{"spawned": id,
  "pid": n}`` and ``{"exited": n, "status": code}``. Anything the module prints goes to stderr instead.

What a forked child must re-initialise, and how this module ensures it:

- **Connections** (Valkey, HTTP pools): a socket shared by two processes interleaves their traffic. The module's
  ``prefork()`` must open none; the zygote checks that it holds no inet socket afterwards and refuses to start
  otherwise. ``serve()`` opens the instance's own connections after the fork.
- **Threads**: ``fork()`` copies only the calling thread, so a lock held by another thread stays locked forever in
  the child. The zygote refuses a ``prefork()`` that leaves Python threads running. Torch's intra-op pool is native:
  the child sets ``torch.set_num_threads`` (``TORCH_NUM_THREADS``, default 1) before any torch work, which rebuilds
  the pool in the child instead of reusing the parent's dead workers, and limits numpy's BLAS pool the same way.
- **Random state**: every child would otherwise draw the same numbers. The child re-seeds ``random``,
  ``numpy.random`` and torch from ``os.urandom``.
- **Signals**: the zygote's SIGCHLD/SIGTERM handling is reset to the defaults; ``serve()`` installs its own.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import os
import random
import selectors
import signal
import socket
import sys
import threading
from collections.abc import Mapping
from typing import Any

import orjson
import psutil

CONTROL_FD_ENV = "HIDDENSTATE_ZYGOTE_FD"
MAX_MESSAGE_BYTES = 1 << 20


class ForkProtocolError(RuntimeError):
    """The service module cannot be pre-initialised safely for fork mode."""


def check_fork_safe(process: psutil.Process | None = None) -> None:
    """Raise ``ForkProtocolError`` if this process holds state a forked child must not inherit."""
    process = process or psutil.Process()
    sockets = process.net_connections(kind="inet")
    if sockets:
        names = ", ".join(f"{c.laddr.ip}:{c.laddr.port}->{c.raddr.ip if c.raddr else '-'}" for c in sockets)
        raise ForkProtocolError(f"prefork() left inet sockets open ({names}); open connections in serve()")
    extra = [t.name for t in threading.enumerate() if t is not threading.main_thread()]
    if extra:
        raise ForkProtocolError(f"prefork() left threads running ({', '.join(extra)}); start them in serve()")


def reinitialise_after_fork(env: Mapping[str, str]) -> None:
    """Everything a freshly forked instance redoes before ``serve()``; see the module docstring for why."""
    for signum in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, signal.SIG_DFL)
    signal.set_wakeup_fd(-1)
    os.environ.update(env)
    seed = int.from_bytes(os.urandom(8), "little")
    random.seed(seed)
    if "numpy" in sys.modules:
        sys.modules["numpy"].random.seed(seed % 2**32)
    if "torch" in sys.modules:
        torch = sys.modules["torch"]
        torch.manual_seed(seed)
        torch.set_num_threads(int(os.environ.get("TORCH_NUM_THREADS", "1")))
    if "numpy" in sys.modules:
        from threadpoolctl import threadpool_limits

        threadpool_limits(int(os.environ.get("TORCH_NUM_THREADS", "1")), user_api="blas")


class Zygote:
    def __init__(self, module_name: str, control: socket.socket, replies: int) -> None:
        self.module_name = module_name
        self.control = control
        self.replies = replies
        self.children: set[int] = set()

    def reply(self, message: dict[str, Any]) -> None:
        os.write(self.replies, orjson.dumps(message) + b"\n")

    def prepare(self) -> tuple[Any, Any]:
        module = importlib.import_module(self.module_name)
        if not (callable(getattr(module, "prefork", None)) and callable(getattr(module, "serve", None))):
            raise ForkProtocolError(f"{self.module_name} has no prefork() and serve(); use --instance-mode fresh")
        prepared = module.prefork()
        numpy = sys.modules.get("numpy")
        if numpy is not None:
            # The first seed in a process builds numpy's legacy global generator (~20 ms measured by
            # perf.coldstart); paying it here spares every forked child. Children re-seed from os.urandom.
            numpy.random.seed(0)
        check_fork_safe()
        # Out of the collector's reach: a child's collections would otherwise walk, and so write to, every object it
        # shares with the zygote, turning shared pages into private copies (the gc module's advice for fork servers).
        gc.freeze()
        return module, prepared

    def run(self) -> int:
        module, prepared = self.prepare()
        wake_r, wake_w = socket.socketpair()
        wake_r.setblocking(False)
        wake_w.setblocking(False)
        signal.set_wakeup_fd(wake_w.fileno())
        signal.signal(signal.SIGCHLD, lambda *_: None)
        stop = False

        def on_term(*_: object) -> None:
            nonlocal stop
            stop = True

        signal.signal(signal.SIGTERM, on_term)
        selector = selectors.DefaultSelector()
        selector.register(self.control, selectors.EVENT_READ, "control")
        selector.register(wake_r, selectors.EVENT_READ, "wake")
        self.reply({"ready": True})
        while not stop:
            for key, _ in selector.select():
                if key.data == "wake":
                    with contextlib.suppress(BlockingIOError):
                        wake_r.recv(4096)
                    self.reap()
                    continue
                message, fds, _, _ = socket.recv_fds(self.control, MAX_MESSAGE_BYTES, 1)
                if not message:
                    stop = True  # the runtime went away
                    break
                self.spawn(module, prepared, orjson.loads(message), fds[0], (wake_r, wake_w))
        self.reap()
        return 0

    def reap(self) -> None:
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                self.children.clear()
                return
            if pid == 0:
                return
            self.children.discard(pid)
            self.reply({"exited": pid, "status": os.waitstatus_to_exitcode(status)})

    def spawn(self, module: Any, prepared: Any, request: dict[str, Any], out_fd: int, private: tuple) -> None:
        pid = os.fork()
        if pid == 0:
            status = 1
            try:
                for sock in (self.control, *private):
                    sock.close()
                os.close(self.replies)
                os.dup2(out_fd, 1)
                os.dup2(out_fd, 2)
                os.close(out_fd)
                reinitialise_after_fork(request["env"])
                status = int(module.serve(prepared) or 0)
            except BaseException as exc:  # the child must never fall back into the zygote's loop
                print(f"instance {request.get('spawn')} failed: {exc!r}", file=sys.stderr)
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(status)
        os.close(out_fd)
        self.children.add(pid)
        self.reply({"spawned": request["spawn"], "pid": pid})


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:
        print("usage: python -m knative.local.serving.zygote MODULE [ARGS...]", file=sys.stderr)
        return 2
    control = socket.socket(fileno=int(os.environ.pop(CONTROL_FD_ENV)))
    # Keep the real stdout for replies; anything the module prints goes to stderr instead.
    replies = os.dup(1)
    os.dup2(2, 1)
    sys.argv = [argv[0], *argv[1:]]
    try:
        return Zygote(argv[0], control, replies).run()
    except Exception as exc:  # reported to the launcher, which names the service in its error
        os.write(replies, orjson.dumps({"error": f"{type(exc).__name__}: {exc}"}) + b"\n")
        return 3


if __name__ == "__main__":
    sys.exit(main())
