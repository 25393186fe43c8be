"""The event-display sink as a real process (``python -m functions.event_display`` on a free port)."""

from __future__ import annotations

import base64
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest
import requests
from cloudevents.core.bindings import http as ce_http
from cloudevents.core.v1.event import CloudEvent

from functions.contract import SCORE_TYPE
from functions.event_display import sink_events_path
from functions.event_display.records import describe, read_records

REPO = Path(__file__).resolve().parents[1]
READY_WITHIN_S = 30.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_ready(url: str, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + READY_WITHIN_S
    while time.monotonic() < deadline:
        assert process.poll() is None, f"sink exited early with {process.returncode}"
        try:
            if requests.get(f"{url}/health/readiness", timeout=1).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.05)  # readiness poll interval, bounded by the deadline above
    raise AssertionError("event-display did not become ready")


@pytest.fixture(scope="module")
def sink(tmp_path_factory):
    home = tmp_path_factory.mktemp("home")
    events_file = sink_events_path(home)
    port = free_port()
    env = {**os.environ, "PORT": str(port), "HOST": "127.0.0.1", "EVENT_DISPLAY_FILE": str(events_file)}
    process = subprocess.Popen([sys.executable, "-m", "functions.event_display"], cwd=REPO, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, process)
        yield url, events_file, process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            process.wait(15)


def score(transaction_id: str, value: float = 0.02) -> CloudEvent:
    return CloudEvent({"id": f"score-{transaction_id}", "source": "/scorer", "type": SCORE_TYPE,
                       "datacontenttype": "application/json", "subject": "c1"},
                      {"transaction_id": transaction_id, "card_id": "c1", "merchant_id": "m1", "score": value})


def wait_records(path: Path, count: int) -> list[dict]:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        records = list(read_records(path))
        if len(records) >= count:
            return records
        time.sleep(0.02)
    raise AssertionError(f"expected {count} records in {path}")


def test_sink_path_is_under_the_home_folder(tmp_path):
    assert sink_events_path(tmp_path) == tmp_path / "sink" / "events.jsonl"


def test_each_event_is_answered_202_and_appended_to_the_file_as_one_json_line(sink):
    url, events_file, _ = sink
    before = len(list(read_records(events_file)))
    binary = ce_http.to_binary_event(score("t-1"))
    structured = ce_http.to_structured_event(score("t-2", 0.9))
    for message in (binary, structured):
        response = requests.post(f"{url}/", headers=message.headers, data=message.body, timeout=5)
        assert response.status_code == 202 and response.content == b""
    records = wait_records(events_file, before + 2)[before:]
    assert [r["event"]["id"] for r in records] == ["score-t-1", "score-t-2"]
    assert records[1]["event"]["data"]["score"] == 0.9
    assert all(isinstance(r["received"], float) for r in records)


def test_dead_letters_keep_their_knative_error_extensions(sink):
    url, events_file, _ = sink
    before = len(list(read_records(events_file)))
    letter = CloudEvent({"id": "t-7", "source": "/gen", "type": "dev.hiddenstate.transaction",
                         "knativeerrorcode": "503", "knativeerrordest": "http://scorer/",
                         "knativeerrordata": base64.b64encode(b"overloaded").decode()}, None)
    message = ce_http.to_binary_event(letter)
    assert requests.post(f"{url}/", headers=message.headers, data=message.body, timeout=5).status_code == 202
    (record,) = wait_records(events_file, before + 1)[before:]
    assert record["event"]["knativeerrorcode"] == "503"
    assert "DEAD LETTER" in describe(record) and "overloaded" in describe(record)


def test_invalid_event_gets_400_with_a_json_error(sink):
    url, _, _ = sink
    response = requests.post(f"{url}/", headers={"content-type": "application/json"}, data=b"{}", timeout=5)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_cloudevent" and "ce-*" in response.json()["detail"]


def test_unknown_paths_and_methods_get_json_errors(sink):
    url, _, _ = sink
    assert requests.get(f"{url}/nope", timeout=5).json()["error"] == "not_found"
    assert requests.get(f"{url}/", timeout=5).status_code == 405


def test_health_and_metrics_are_served(sink):
    url, _, _ = sink
    assert requests.get(f"{url}/health/liveness", timeout=5).status_code == 200
    message = ce_http.to_binary_event(score("t-m"))
    requests.post(f"{url}/", headers=message.headers, data=message.body, timeout=5)
    metrics = requests.get(f"{url}/metrics", timeout=5).text
    assert f'event_display_events_total{{type="{SCORE_TYPE}"}}' in metrics


def test_each_event_is_logged_as_one_json_line_and_sigterm_exits_cleanly(tmp_path):
    port = free_port()
    env = {**os.environ, "PORT": str(port), "HOST": "127.0.0.1"}
    env.pop("EVENT_DISPLAY_FILE", None)
    process = subprocess.Popen([sys.executable, "-m", "functions.event_display"], cwd=REPO, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_ready(url, process)
        message = ce_http.to_binary_event(score("t-log"))
        assert requests.post(f"{url}/", headers=message.headers, data=message.body, timeout=5).status_code == 202
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=15)
    assert process.returncode == 0
    logged = [orjson.loads(line) for line in stderr.splitlines() if line.startswith(b"{")]
    (entry,) = [line for line in logged if line.get("msg") == "cloudevent"]
    assert entry["event"]["id"] == "score-t-log"


def test_a_bad_port_is_refused_with_a_clear_message():
    env = {**os.environ, "PORT": "http"}
    result = subprocess.run([sys.executable, "-m", "functions.event_display"], cwd=REPO, env=env,
                            capture_output=True, timeout=30)
    assert result.returncode != 0 and b"PORT must be a TCP port number" in result.stderr
