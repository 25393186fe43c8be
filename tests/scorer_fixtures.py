"""A real scorer process for tests: ``python -m functions.scorer`` on a free port, with a model from a file registry.

Use it with ``pytest_plugins = ["valkey_fixtures", "scorer_fixtures"]``.

- ``model_uri`` (session): an untrained (seeded) FraudGRU published to a temporary file registry. Scorer tests check
  the protocol and the arithmetic, not quality, so they need no training run; its manifest says so.
- ``start_scorer(env)``: start a scorer with extra environment; it is stopped at the end of the test.
- ``scorer_url`` (session): one ready scorer on the session valkey-server.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from perf.models import publish_untrained_model
from perf.scorer_bench import ServerProcess, wait_ready
from state_service.server import ValkeyServer

# What a Knative revision would set; the tests check the reply's source against it.
IDENTITY = {"K_SERVICE": "scorer", "K_REVISION": "scorer-00001", "K_CONFIGURATION": "scorer"}


def scorer_process(name: str, env: dict[str, str], log_dir: Path) -> ServerProcess:
    """``python -m functions.scorer`` on a free port, logging to ``log_dir/<name>.log``."""
    return ServerProcess(name, "functions.scorer", {**IDENTITY, **env}, log_dir)


@pytest.fixture(scope="session")
def model_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    return publish_untrained_model(tmp_path_factory.mktemp("registry"), purpose="untrained test model")


@pytest.fixture
def start_scorer(tmp_path: Path, model_uri: str) -> Iterator[Callable[..., ServerProcess]]:
    started: list[ServerProcess] = []

    def start(env: dict[str, str], *, wait: bool = True) -> ServerProcess:
        scorer = scorer_process(f"scorer-{len(started)}", {"MODEL_URI": model_uri, **env}, tmp_path)
        started.append(scorer)
        if wait:
            wait_ready(scorer.url, scorer.process)
        return scorer

    yield start
    for scorer in started:
        scorer.stop()


@pytest.fixture(scope="session")
def scorer_url(tmp_path_factory: pytest.TempPathFactory, valkey_server: ValkeyServer, model_uri: str) -> Iterator[str]:
    scorer = scorer_process("scorer", {"MODEL_URI": model_uri, "VALKEY_URL": valkey_server.url},
                            tmp_path_factory.mktemp("scorer"))
    try:
        wait_ready(scorer.url, scorer.process)
        yield scorer.url
    finally:
        scorer.stop()
