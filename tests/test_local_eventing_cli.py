"""``hiddenstate send`` into a real local broker, and ``hiddenstate tail`` over a real event-display sink."""

from __future__ import annotations

import base64
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import orjson
import pytest
import requests
from cloudevents.core.bindings import http as ce_http
from cloudevents.core.v1.event import CloudEvent
from test_local_eventing_peers import BrokerThread, Subscriber, always, broker_manifest, trigger_manifest

from functions.contract import SCORE_TYPE, TRANSACTION_TYPE
from functions.event_display import sink_events_path
from functions.generator import GeneratorConfig, generate_columns

REPO = Path(__file__).resolve().parents[1]
WAIT_S = 20.0


def hiddenstate(*args: str, timeout_s: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "functions", *args], cwd=REPO, capture_output=True, timeout=timeout_s)


def write_endpoints(home: Path, **endpoints: object) -> None:
    home.mkdir(parents=True, exist_ok=True)
    (home / "endpoints.json").write_bytes(orjson.dumps(endpoints))


@pytest.fixture
def subscriber():
    peer = Subscriber(always(202))
    yield peer
    peer.close()


@pytest.fixture
def broker(subscriber):
    running = BrokerThread([broker_manifest()], [trigger_manifest("all", subscriber.url)])
    yield running
    running.close()


# -- send ----------------------------------------------------------------------------------------------------------


def test_send_streams_the_generators_transactions_to_the_broker_from_endpoints_json(tmp_path, broker, subscriber):
    home = tmp_path / "home"
    write_endpoints(home, broker=broker.broker.ingress_url("test", "default"), services={})
    result = hiddenstate("send", "--home", str(home), "--preset", "tiny", "--seed", "3", "--count", "40",
                         "--rate", "0", "--json")
    assert result.returncode == 0, result.stderr.decode()
    report = orjson.loads(result.stdout)
    assert (report["sent"], report["accepted"], report["failed"]) == (40, 40, 0)
    received = subscriber.wait_for(40)
    columns, _ = generate_columns(GeneratorConfig.preset("tiny", seed=3))
    assert {r.headers["ce-id"] for r in received} == {columns.transaction(i)[0] for i in range(40)}
    assert all(r.headers["ce-type"] == TRANSACTION_TYPE for r in received)
    assert all(r.headers["ce-partitionkey"] == orjson.loads(r.body)["card_id"] for r in received)
    broker.drain()
    assert broker.counters()["accepted"] == 40


def test_send_reports_refused_events_and_exits_1(tmp_path, broker):
    result = hiddenstate("send", "--url", f"{broker.broker.url}/test/no-such-broker", "--preset", "tiny",
                         "--count", "5", "--rate", "0", "--no-progress")
    assert result.returncode == 1
    assert b"0 accepted, 5 failed" in result.stdout and b"404: 5" in result.stdout


def test_send_without_a_running_runtime_says_how_to_start_it(tmp_path):
    result = hiddenstate("send", "--home", str(tmp_path / "nowhere"), "--count", "1")
    assert result.returncode == 2
    assert b"endpoints.json does not exist" in result.stderr and b"hiddenstate up" in result.stderr


def test_send_refuses_a_count_beyond_the_generated_stream(tmp_path, broker):
    result = hiddenstate("send", "--url", broker.broker.ingress_url("test", "default"), "--preset", "tiny",
                         "--count", "10000000")
    assert result.returncode == 2 and b"more than the" in result.stderr


def test_send_batch_posts_batches_to_the_service_and_counts_the_scores(tmp_path):
    def score_all(_index, request):
        events = orjson.loads(request.body)
        scores = [{"id": f"score-{e['id']}", "type": SCORE_TYPE} for e in events]
        return 200, {"content-type": "application/cloudevents-batch+json"}, orjson.dumps(scores)

    scorer = Subscriber(score_all)
    try:
        home = tmp_path / "home"
        write_endpoints(home, broker="http://127.0.0.1:1/unused", services={"scorer": scorer.url})
        result = hiddenstate("send", "--home", str(home), "--preset", "tiny", "--count", "25", "--batch",
                             "--batch-size", "10", "--rate", "0", "--json")
        assert result.returncode == 0, result.stderr.decode()
        report = orjson.loads(result.stdout)
        assert (report["accepted"], report["scored"]) == (25, 25)
        batches = scorer.wait_for(3)
        assert sorted(len(orjson.loads(b.body)) for b in batches) == [5, 10, 10]
        assert all(b.headers["content-type"] == "application/cloudevents-batch+json" for b in batches)
    finally:
        scorer.close()


# -- tail ----------------------------------------------------------------------------------------------------------


@pytest.fixture
def sink(tmp_path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    home = tmp_path / "home"
    env = {**os.environ, "PORT": str(port), "HOST": "127.0.0.1", "EVENT_DISPLAY_FILE": str(sink_events_path(home))}
    process = subprocess.Popen([sys.executable, "-m", "functions.event_display"], cwd=REPO, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + WAIT_S
    while True:
        assert process.poll() is None and time.monotonic() < deadline, "event-display did not start"
        try:
            requests.get(f"{url}health/readiness", timeout=1)
            break
        except requests.ConnectionError:
            time.sleep(0.05)  # readiness poll interval, bounded by the deadline
    yield home, url
    process.send_signal(signal.SIGTERM)
    process.wait(15)


def deliver(url: str, event: CloudEvent) -> None:
    message = ce_http.to_binary_event(event)
    assert requests.post(url, headers=message.headers, data=message.body, timeout=5).status_code == 202


def score(transaction_id: str, value: float) -> CloudEvent:
    return CloudEvent({"id": f"score-{transaction_id}", "source": "/scorer", "type": SCORE_TYPE,
                       "datacontenttype": "application/json"},
                      {"transaction_id": transaction_id, "card_id": "c1", "merchant_id": "m1", "score": value})


def dead_letter(event_id: str) -> CloudEvent:
    return CloudEvent({"id": event_id, "source": "/gen", "type": TRANSACTION_TYPE, "knativeerrorcode": "400",
                       "knativeerrordest": "http://scorer/",
                       "knativeerrordata": base64.b64encode(b'{"error": "invalid_data"}').decode()}, None)


def test_tail_prints_the_scores_and_dead_letters_that_reached_the_sink(sink):
    home, url = sink
    deliver(url, score("t-1", 0.02))
    deliver(url, CloudEvent({"id": "x", "source": "/other", "type": "com.example.other"}, None))
    deliver(url, dead_letter("t-2"))
    deliver(url, score("t-3", 0.97))
    result = hiddenstate("tail", "--home", str(home))
    assert result.returncode == 0, result.stderr.decode()
    lines = result.stdout.decode().splitlines()
    assert len(lines) == 3
    assert "score 0.0200" in lines[0] and "transaction=t-1" in lines[0]
    assert "DEAD LETTER" in lines[1] and "id=t-2" in lines[1] and "code=400" in lines[1] and "invalid_data" in lines[1]
    assert "transaction=t-3" in lines[2] and "FRAUD?" in lines[2]

    only_scores = hiddenstate("tail", "--home", str(home), "--type", SCORE_TYPE, "--json").stdout.splitlines()
    assert [orjson.loads(line)["event"]["id"] for line in only_scores] == ["score-t-1", "score-t-3"]
    everything = hiddenstate("tail", "--home", str(home), "--all").stdout.splitlines()
    assert len(everything) == 4


def test_tail_follow_prints_events_as_they_arrive(sink):
    home, url = sink
    # Ctrl-C reaches a foreground command with SIGINT at its default action. A shell starts background jobs with
    # SIGINT ignored, and Python then installs no KeyboardInterrupt handler: restore the default so that this test
    # checks the same thing whether or not the suite itself runs in the background (`scripts/test &`).
    process = subprocess.Popen([sys.executable, "-m", "functions", "tail", "--home", str(home), "--follow"],
                               cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    lines: queue.Queue[bytes] = queue.Queue()
    reader = threading.Thread(target=lambda: [lines.put(line) for line in process.stdout], daemon=True)
    reader.start()
    try:
        deliver(url, score("t-10", 0.1))
        assert b"transaction=t-10" in lines.get(timeout=WAIT_S)
        deliver(url, dead_letter("t-11"))
        assert b"DEAD LETTER" in lines.get(timeout=WAIT_S)
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()  # never leave it polling after the test; the failure still stands
            process.wait()
            raise
    assert process.returncode == 0


def test_tail_before_any_event_says_so(tmp_path):
    result = hiddenstate("tail", "--home", str(tmp_path))
    assert result.returncode == 2 and b"no event has reached the sink" in result.stderr


def test_the_projects_manifests_route_transactions_to_the_scorer_and_its_scores_to_the_sink(tmp_path, sink):
    from datetime import UTC, datetime

    from functions.contract import Score, score_event
    from knative.manifests import brokers, load_manifests, triggers

    home, sink_url = sink

    def scorer_reply(_index, request):
        data = orjson.loads(request.body)
        result = Score(request.headers["ce-id"], data["card_id"], data["merchant_id"], 0.25, "v1", 1, 1, False)
        message = ce_http.to_binary_event(score_event(result, source="/scorer", time=datetime.now(UTC)))
        return 200, message.headers, message.body

    scorer = Subscriber(scorer_reply)
    services = {"scorer": scorer.url, "event-display": sink_url}
    objs = load_manifests("dev")
    running = BrokerThread(brokers(objs), triggers(objs), lambda ref: services[ref["name"]])
    try:
        (broker_spec,) = brokers(objs)
        ingress = running.broker.ingress_url(broker_spec["metadata"]["namespace"], broker_spec["metadata"]["name"])
        write_endpoints(home, broker=ingress, services=services)
        result = hiddenstate("send", "--home", str(home), "--preset", "tiny", "--count", "20", "--rate", "0",
                             "--no-progress")
        assert result.returncode == 0, result.stderr.decode()
        running.drain()
        counters = running.counters()
        assert (counters["accepted"], counters["replies"], counters["delivered"]) == (20, 20, 40)
        lines = hiddenstate("tail", "--home", str(home)).stdout.decode().splitlines()
        assert len(lines) == 20 and all("score 0.2500" in line for line in lines)
    finally:
        running.close()
        scorer.close()
