"""The scorer's life: readiness, draining on SIGTERM, surviving Valkey outages, and parity with the offline step."""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import orjson
import psutil
import pytest
import requests
import valkey
from cloudevents.core.bindings import http as ce_http
from parity import assert_served_scores_equal_the_offline_step
from valkey_fixtures import start_with_library

from functions.contract import transaction_event
from state_service.server import ValkeyServer, free_port
from state_service.store import StateStore

pytest_plugins = ["valkey_fixtures", "scorer_fixtures"]

TIME = "2026-03-01T12:00:00Z"


def _message(card: str | None = None):
    data = {"card_id": card or f"card-{uuid.uuid4().hex}", "merchant_id": "m-1", "amount": 10.0}
    return ce_http.to_binary_event(transaction_event(uuid.uuid4().hex, data, time=TIME))


def _post(url: str, message, timeout: float = 30) -> requests.Response:
    return requests.post(url, headers=message.headers, data=message.body, timeout=timeout)


def _poll(predicate, timeout_s: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _readiness(url: str) -> int:
    try:
        return requests.get(f"{url}/health/readiness", timeout=2).status_code
    except requests.ConnectionError:
        return 0


def test_readiness_stays_false_until_valkey_is_there(start_scorer, tmp_path: Path):
    port = free_port()
    server = ValkeyServer(tmp_path / "valkey", port=port)
    scorer = start_scorer({"VALKEY_URL": server.url, "VALKEY_CONNECT_TIMEOUT_S": "0.2"}, wait=False)
    _poll(lambda: _readiness(scorer.url) == 503, what="the scorer to answer 503 on readiness")
    assert requests.get(f"{scorer.url}/health/liveness", timeout=2).status_code == 200
    assert _post(scorer.url, _message()).status_code == 503
    with server, StateStore(server.admin_url) as admin:
        admin.ensure_library()
        _poll(lambda: _readiness(scorer.url) == 200, what="readiness once valkey is up")
        assert _post(scorer.url, _message()).status_code == 200


def test_valkey_killed_mid_run_gives_503_with_retry_after_then_recovers_without_restart(
    start_scorer, fresh_valkey_server: ValkeyServer
):
    scorer = start_scorer({"VALKEY_URL": fresh_valkey_server.url, "VALKEY_CONNECT_TIMEOUT_S": "0.2"})
    card = f"card-{uuid.uuid4().hex}"
    assert _post(scorer.url, _message(card)).status_code == 200
    fresh_valkey_server.kill()
    failed = _post(scorer.url, _message(card))
    assert failed.status_code == 503
    assert failed.headers["Retry-After"].isdigit()
    assert failed.json()["error"] == "state_unavailable"
    fresh_valkey_server.restart()
    _poll(lambda: _post(scorer.url, _message(card)).status_code == 200, what="scoring to recover")
    assert scorer.process.poll() is None


@pytest.fixture
def debuggable_valkey(tmp_path: Path) -> Iterator[ValkeyServer]:
    """A private server that accepts DEBUG SLEEP from loopback, to make Valkey slow on purpose."""
    server = start_with_library(tmp_path / "debuggable", extra_args={"enable-debug-command": "local"})
    try:
        yield server
    finally:
        server.stop()


def _sleep_valkey(server: ValkeyServer, seconds: float) -> threading.Thread:
    """Make Valkey sleep, and return once it is asleep: a request sent earlier could have read the state before
    the sleep and then written it after, which is a different case (an ambiguous timeout, answered on retry as a
    duplicate) from the one these tests are about."""
    admin = valkey.Valkey.from_url(server.admin_url)
    sleeper = threading.Thread(target=lambda: admin.execute_command("DEBUG", "SLEEP", str(seconds)))
    sleeper.start()
    probe = valkey.Valkey.from_url(server.admin_url, socket_timeout=0.05)
    deadline = time.monotonic() + seconds / 2
    while time.monotonic() < deadline:
        try:
            probe.ping()
        except valkey.exceptions.TimeoutError:
            return sleeper
        time.sleep(0.01)
    raise AssertionError("valkey did not start sleeping")


def test_slow_valkey_gives_503_and_writes_nothing(start_scorer, debuggable_valkey: ValkeyServer):
    fresh_valkey_server = debuggable_valkey
    scorer = start_scorer({"VALKEY_URL": fresh_valkey_server.url, "VALKEY_TIMEOUT_S": "0.2"})
    card = f"card-{uuid.uuid4().hex}"
    sleeper = _sleep_valkey(fresh_valkey_server, 1.5)
    response = _post(scorer.url, _message(card))
    sleeper.join()
    assert response.status_code == 503
    assert "Retry-After" in response.headers
    _poll(lambda: _readiness(scorer.url) == 200, what="readiness after the slow spell")
    assert _post(scorer.url, _message(card)).json()["card_seq"] == 1


def test_sigterm_drains_in_flight_requests_and_exits_zero(start_scorer, debuggable_valkey: ValkeyServer):
    scorer = start_scorer({"VALKEY_URL": debuggable_valkey.url, "VALKEY_TIMEOUT_S": "5"})
    result: dict[str, requests.Response] = {}
    sleeper = _sleep_valkey(debuggable_valkey, 1.5)
    request = threading.Thread(target=lambda: result.setdefault("r", _post(scorer.url, _message())))
    request.start()

    def in_flight() -> bool:
        text = requests.get(f"{scorer.url}/metrics", timeout=2).text
        line = next(x for x in text.splitlines() if x.startswith("scorer_in_flight_requests"))
        return float(line.split()[-1]) >= 1

    _poll(in_flight, what="the request to be in flight")
    scorer.process.send_signal(signal.SIGTERM)
    request.join(30)
    sleeper.join()
    assert result["r"].status_code == 200
    assert scorer.process.wait(30) == 0


def test_http_scores_equal_the_offline_step_with_float16_states(scorer_url, model_uri):
    assert_served_scores_equal_the_offline_step(scorer_url, model_uri)


def test_the_compiled_step_serves_the_offline_step_scores_too(start_scorer, valkey_server: ValkeyServer, model_uri):
    scorer = start_scorer({"VALKEY_URL": valkey_server.url, "SCORER_COMPILE_STEP": "1"})
    assert_served_scores_equal_the_offline_step(scorer.url, model_uri)


def test_two_instances_racing_on_one_card_lose_no_update(start_scorer, valkey_server: ValkeyServer):
    """Across instances only compare-and-set keeps the fold exact: each instance batches on its own. A 503 (conflicts
    still unresolved after the bounded retries) is retried by the caller with the same event, as a broker would."""
    scorers = [start_scorer({"VALKEY_URL": valkey_server.url}) for _ in range(2)]
    card = f"card-{uuid.uuid4().hex}"

    def send(index: int) -> list[int]:
        url = scorers[index % 2].url
        with requests.Session() as session:
            seqs = []
            for _ in range(20):
                message = _message(card)
                for _attempt in range(20):
                    reply = session.post(url, headers=message.headers, data=message.body, timeout=30)
                    if reply.status_code != 503:
                        break
                assert reply.status_code == 200, reply.text
                seqs.append(reply.json()["card_seq"])
            return seqs

    with ThreadPoolExecutor(8) as pool:
        seqs = [s for chunk in pool.map(send, range(8)) for s in chunk]
    assert sorted(seqs) == list(range(1, 161))


def test_tune_gc_freezes_start_up_objects_and_raises_the_young_threshold(monkeypatch):
    import gc

    from functions.scorer.config import ScorerConfig
    from functions.scorer.server import tune_gc

    monkeypatch.setenv("SCORER_GC_GEN0_THRESHOLD", "12345")
    threshold = gc.get_threshold()
    try:
        tune_gc(ScorerConfig.from_env().gc_gen0_threshold)
        assert gc.get_threshold()[0] == 12345
        assert gc.get_threshold()[1:] == threshold[1:]
        assert gc.get_freeze_count() > 0
        tune_gc(0)  # 0: the interpreter's settings stay as they are
        assert gc.get_threshold()[0] == 12345
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)


def _metric_values(url: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    from prometheus_client.parser import text_string_to_metric_families

    text = requests.get(f"{url}/metrics", timeout=10).text
    return {tuple(sorted(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples if s.name == name}


def test_metrics_of_a_two_worker_instance_count_both_workers(start_scorer, valkey_server: ValkeyServer):
    scorer = start_scorer({"VALKEY_URL": valkey_server.url, "SCORER_WORKERS": "2"})
    sent = 60
    with ThreadPoolExecutor(16) as pool:
        statuses = list(pool.map(lambda _: _post(scorer.url, _message()).status_code, range(sent)))
    assert statuses == [200] * sent
    # Each scrape lands on either worker; every one must report the instance's totals, not one worker's share.
    for _ in range(6):
        assert _metric_values(scorer.url, "scorer_events_total") == {(): sent}
        assert _metric_values(scorer.url, "scorer_requests_total")[(("outcome", "scored"),)] == sent
        assert sum(_metric_values(scorer.url, "scorer_batch_size_count").values()) >= 1
        assert _metric_values(scorer.url, "hiddenstate_state_updates_total")[(("outcome", "applied"),)] >= sent
    serving = next(orjson.loads(line) for line in scorer.log().splitlines() if '"serving"' in line)
    metrics_dir = Path(serving["metrics_dir"])
    assert any(metrics_dir.iterdir())
    assert scorer.stop() == 0
    assert not metrics_dir.exists()  # the instance made it, the instance removes it


def test_the_wsgi_entry_point_serves_the_scorer_under_gunicorn(tmp_path: Path, model_uri: str,
                                                               valkey_server: ValkeyServer):
    from perf.scorer_bench import ServerProcess, wait_ready

    scorer = ServerProcess("gunicorn", "gunicorn", {"MODEL_URI": model_uri, "VALKEY_URL": valkey_server.url,
                                                    "K_SERVICE": "scorer", "K_REVISION": "scorer-00002"}, tmp_path,
                           ("--worker-class", "gthread", "--threads", "8", "--workers", "1",
                            "--bind", "127.0.0.1:{port}", "functions.scorer.wsgi:create()"))
    try:
        wait_ready(scorer.url, scorer.process)
        card = f"card-{uuid.uuid4().hex}"
        with ThreadPoolExecutor(8) as pool:
            replies = list(pool.map(lambda _: _post(scorer.url, _message(card)), range(8)))
        assert [r.status_code for r in replies] == [200] * 8
        assert {r.headers["ce-source"] for r in replies} == {"/knative/scorer/scorer-00002"}
        assert sorted(r.json()["card_seq"] for r in replies) == list(range(1, 9))
        bad = requests.post(scorer.url, data=b"{}", headers={"content-type": "text/plain"}, timeout=10)
        assert bad.status_code == 400 and bad.json()["error"]
    finally:
        assert scorer.stop() == 0


def _worker_thread_affinities(scorer) -> list[set[frozenset[int]]]:
    """Per granian worker process: the distinct affinities of its threads."""
    workers = psutil.Process(scorer.process.pid).children(recursive=True)
    return [{frozenset(os.sched_getaffinity(t.id)) for t in worker.threads()} for worker in workers]


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="pinning workers apart needs two cores")
def test_pinned_workers_each_run_every_thread_on_a_core_of_their_own(start_scorer, valkey_server: ValkeyServer):
    scorer = start_scorer({"VALKEY_URL": valkey_server.url, "SCORER_WORKERS": "2", "SCORER_PIN_WORKERS": "on"})
    with ThreadPoolExecutor(8) as pool:  # every request thread granian starts must inherit its worker's core
        assert list(pool.map(lambda _: _post(scorer.url, _message()).status_code, range(40))) == [200] * 40

    per_worker = _worker_thread_affinities(scorer)

    assert len(per_worker) == 2
    assert all(len(affinities) == 1 and len(next(iter(affinities))) == 1 for affinities in per_worker)
    assert per_worker[0] != per_worker[1]
    pinned = [orjson.loads(line) for line in scorer.log().splitlines() if '"worker pinned"' in line]
    assert sorted(p["worker"] for p in pinned) == [0, 1]


def test_by_default_a_single_worker_with_two_cores_is_not_pinned(start_scorer, valkey_server: ValkeyServer):
    scorer = start_scorer({"VALKEY_URL": valkey_server.url})
    assert _post(scorer.url, _message()).status_code == 200

    per_worker = _worker_thread_affinities(scorer)

    assert per_worker and all(affinities == {frozenset(os.sched_getaffinity(0))} for affinities in per_worker)
    assert '"worker pinned"' not in scorer.log()


def test_an_unknown_pinning_mode_stops_the_scorer_with_the_choices(start_scorer, valkey_server: ValkeyServer):
    scorer = start_scorer({"VALKEY_URL": valkey_server.url, "SCORER_PIN_WORKERS": "sometimes"}, wait=False)
    _poll(lambda: scorer.process.poll() is not None, what="the scorer to exit")
    assert scorer.process.returncode != 0
    assert "SCORER_PIN_WORKERS must be one of auto, on, off, got 'sometimes'" in scorer.log()
