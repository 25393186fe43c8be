"""A real valkey-server for tests, started by ``state_service.server.ValkeyServer`` on a free port.

Use it from a test module with ``pytest_plugins = ["valkey_fixtures"]`` (tests/ is on sys.path under pytest).

- ``valkey_server`` (session): one server for the whole run, shipped config and ACL users, library loaded.
  ``.url`` logs in as the least-privileged ``scorer`` user, ``.admin_url`` as ``admin``.
- ``valkey_url`` (per test): the scorer URL of that server.
- ``state_namespace`` (per test): a fresh model namespace, so tests sharing the server never see each other's keys.
- ``state_store`` (per test): a ``StateStore`` (H=64) on the scorer URL, closed afterwards.
- ``fresh_valkey_server`` (per test): a private server in the test's tmp dir, for tests that kill or restart it.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from state_service.server import ValkeyServer
from state_service.store import StateStore


def start_with_library(data_dir: Path, **kwargs: object) -> ValkeyServer:
    server = ValkeyServer(data_dir, **kwargs).start()  # type: ignore[arg-type]
    try:
        with StateStore(server.admin_url) as admin:
            admin.ensure_library()
    except BaseException:
        server.stop()
        raise
    return server


@pytest.fixture(scope="session")
def valkey_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ValkeyServer]:
    server = start_with_library(tmp_path_factory.mktemp("valkey"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def valkey_url(valkey_server: ValkeyServer) -> str:
    return valkey_server.url


@pytest.fixture
def state_namespace() -> str:
    return f"test-{uuid.uuid4().hex[:12]}@v1"


@pytest.fixture
def state_store(valkey_server: ValkeyServer) -> Iterator[StateStore]:
    store = StateStore(valkey_server.url, hidden_size=64)
    try:
        yield store
    finally:
        store.close()


@pytest.fixture
def fresh_valkey_server(tmp_path: Path) -> Iterator[ValkeyServer]:
    server = start_with_library(tmp_path / "valkey")
    try:
        yield server
    finally:
        server.stop()
