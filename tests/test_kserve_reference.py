"""The KServe reference (perf/baselines/kserve_predictor.py) in its own environment, and its benchmark harness.

The environment (``.venv-kserve``, perf/kserve_env.py) is built once and reused: KServe 0.21 pins the CloudEvents
SDK v1, which cannot share the project's environment with SDK v2.
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
import requests
import valkey
from cloudevents.core.bindings import http as ce_http
from parity import assert_served_scores_equal_the_offline_step

from functions.contract import SCORE_TYPE, transaction_event
from functions.model.package import load_predictor
from perf import kserve_bench
from perf.baselines.naive_step import state_key
from perf.kserve_env import ensure_kserve_env, server_env
from perf.scorer_bench import ROOT, ServerProcess, wait_ready
from state_service.server import ValkeyServer

pytest_plugins = ["valkey_fixtures", "scorer_fixtures"]

MODEL_NAME = "fraud-gru"


@pytest.fixture(scope="session")
def kserve_python() -> Path:
    return ensure_kserve_env()


@pytest.fixture(scope="module")
def kserve(tmp_path_factory: pytest.TempPathFactory, kserve_python: Path, valkey_server: ValkeyServer,
           model_uri: str) -> Iterator[ServerProcess]:
    env = {"VALKEY_URL": valkey_server.url, "MODEL_URI": model_uri, "KSERVE_WORKERS": "1",
           "KSERVE_MODEL_NAME": MODEL_NAME, **server_env()}
    server = ServerProcess("kserve", "perf.baselines.kserve_predictor", env, tmp_path_factory.mktemp("kserve"),
                           python=str(kserve_python), score_path=f"/v1/models/{MODEL_NAME}:predict",
                           ready_path=f"/v1/models/{MODEL_NAME}")
    try:
        wait_ready(server.url, server.process, path=server.ready_path)
        yield server
    finally:
        server.stop()


def _message(card: str):
    data = {"card_id": card, "merchant_id": "m-kserve", "amount": 12.5, "channel": "pos", "country": "DE"}
    return ce_http.to_binary_event(transaction_event(uuid.uuid4().hex, data, time="2026-03-01T12:00:00Z"))


def test_the_environment_has_kserve_with_sdk_v1_and_the_model_loads_there_without_sdk_v2(kserve_python: Path):
    probe = ("import sys, importlib.metadata as m, perf.baselines.kserve_predictor; "
             "print(m.version('kserve'), m.version('cloudevents'), 'cloudevents.core' in sys.modules)")
    result = subprocess.run([str(kserve_python), "-c", probe], env=server_env(), cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    kserve_version, sdk_version, sdk_v2_loaded = result.stdout.split()
    assert kserve_version == "0.21.0"
    assert sdk_version.startswith("1.")
    assert sdk_v2_loaded == "False"


def test_the_model_and_the_naive_step_import_no_cloudevents_sdk():
    """What lets the KServe environment run our model: neither imports the contract's SDK."""
    probe = ("import sys, functions.model.package, functions.registry, perf.baselines.naive_step; "
             "print(sorted(m for m in sys.modules if m.startswith('cloudevents') or m == 'functions.contract'))")
    result = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_kserve_scores_equal_the_offline_step_with_float16_states(kserve: ServerProcess, model_uri: str):
    assert_served_scores_equal_the_offline_step(kserve.score_url, model_uri, count=60)


def test_kserve_answers_a_binary_cloudevent_with_a_score_cloudevent_and_stores_both_states(
        kserve: ServerProcess, valkey_server: ValkeyServer, model_uri: str):
    card = f"card-{uuid.uuid4().hex[:8]}"
    message = _message(card)
    first = requests.post(kserve.score_url, headers=message.headers, data=message.body, timeout=30)
    second_message = _message(card)
    second = requests.post(kserve.score_url, headers=second_message.headers, data=second_message.body, timeout=30)
    assert first.status_code == 200 and second.status_code == 200, (first.text, second.text)
    assert first.headers["ce-type"] == SCORE_TYPE
    assert first.headers["ce-specversion"] == "1.0"
    assert 0.0 <= first.json()["score"] <= 1.0
    assert (first.json()["card_seq"], second.json()["card_seq"]) == (1, 2)
    namespace = load_predictor(model_uri).namespace
    assert valkey.Valkey.from_url(valkey_server.admin_url).exists(state_key(namespace, "card", card)) == 1


def test_kserve_refuses_data_without_a_card_with_400_and_writes_nothing(kserve: ServerProcess,
                                                                        valkey_server: ValkeyServer, model_uri: str):
    merchant = f"m-{uuid.uuid4().hex[:8]}"
    message = _message("unused")  # valid headers; the body is replaced, as the contract would refuse to build it
    response = requests.post(kserve.score_url, headers=message.headers,
                             data=orjson.dumps({"merchant_id": merchant, "amount": 3.0}), timeout=30)
    assert response.status_code == 400
    assert "card_id" in response.json()["error"]
    namespace = load_predictor(model_uri).namespace
    assert valkey.Valkey.from_url(valkey_server.admin_url).exists(state_key(namespace, "merchant", merchant)) == 0


def test_the_benchmark_measures_every_server_and_reports_each_ones_peak(tmp_path: Path, model_uri: str,
                                                                             kserve_python: Path):
    out = tmp_path / "results"
    assert kserve_bench.main(["--duration", "1", "--rounds", "1", "--days", "1", "--model-uri", model_uri,
                              "--out", str(out)]) == 0
    result = orjson.loads((out / "kserve.json").read_bytes())
    runs = result["runs"]
    assert {r["server"] for r in runs} == {"ours", "naive", "kserve", "kserve_1_worker"}
    for run in runs:
        assert run["events_scored"] > 0, run["label"]
        assert run["events_failed"] == 0, run["label"]
    for server, label in result["ratios"]["peak_runs"].items():
        saturation = [r for r in runs if r["server"] == server and r["group"] == "saturation"]
        assert label == max(saturation, key=lambda r: r["events_per_s"])["label"]
    peak = {r["server"]: r for r in runs if r["label"] in result["ratios"]["peak_runs"].values()}
    assert result["ratios"]["kserve_over_naive"] == round(peak["kserve"]["events_per_s"]
                                                          / peak["naive"]["events_per_s"], 2)
    table = (out / "kserve.md").read_text()
    assert f"{peak['kserve']['events_per_s']:,.0f} events/s" in table
    assert result["machine"]["date"] in table
    assert (out / "kserve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
