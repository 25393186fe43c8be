"""A real scorer process for tests: ``python -m functions.scorer`` on a free port, with a model from a file registry.

Use it with ``pytest_plugins = ["valkey_fixtures", "scorer_fixtures"]``.

- ``model_uri`` (session): an untrained (seeded) FraudGRU published to a temporary file registry. Scorer tests check
  the protocol and the arithmetic, not quality, so they need no training run; its manifest says so.
- ``start_scorer(env)``: start a scorer with extra environment; it is stopped at the end of the test.
- ``scorer_url`` (session): one ready scorer on the session valkey-server.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from perf.models import publish_untrained_model
from perf.scorer_bench import wait_ready
from state_service.server import ValkeyServer, free_port

ROOT = Path(__file__).resolve().parents[1]


class ScorerProcess:
    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        full_env = {**os.environ, "PORT": str(self.port), "K_SERVICE": "scorer", "K_REVISION": "scorer-00001",
                    "K_CONFIGURATION": "scorer", **env}
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen([sys.executable, "-m", "functions.scorer"], env=full_env, cwd=ROOT,
                                        stdout=self._log, stderr=subprocess.STDOUT)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout_s: float = 20.0) -> int:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
        return self.process.returncode


@pytest.fixture(scope="session")
def model_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    return publish_untrained_model(tmp_path_factory.mktemp("registry"), purpose="untrained test model")


@pytest.fixture
def start_scorer(tmp_path: Path, model_uri: str) -> Iterator[Callable[..., ScorerProcess]]:
    started: list[ScorerProcess] = []

    def start(env: dict[str, str], *, wait: bool = True) -> ScorerProcess:
        scorer = ScorerProcess({"MODEL_URI": model_uri, **env}, tmp_path / f"scorer-{len(started)}.log")
        started.append(scorer)
        if wait:
            wait_ready(scorer.url, scorer.process)
        return scorer

    yield start
    for scorer in started:
        scorer.stop()


@pytest.fixture(scope="session")
def scorer_url(tmp_path_factory: pytest.TempPathFactory, valkey_server: ValkeyServer, model_uri: str) -> Iterator[str]:
    scorer = ScorerProcess({"MODEL_URI": model_uri, "VALKEY_URL": valkey_server.url},
                           tmp_path_factory.mktemp("scorer") / "scorer.log")
    try:
        wait_ready(scorer.url, scorer.process)
        yield scorer.url
    finally:
        scorer.stop()
