"""The k6 load scripts under scripts/k6: they all pass ``k6 inspect``, and score.js drives a real scorer cleanly."""

from __future__ import annotations

import subprocess
import sys
import uuid
from dataclasses import replace
from pathlib import Path

import orjson
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from functions.generator.config import GeneratorConfig
from functions.generator.events import write_jsonl

pytest_plugins = ["valkey_fixtures", "scorer_fixtures"]

ROOT = Path(__file__).resolve().parents[1]
K6 = Path(sys.executable).parent / "k6"
SCORE_JS = ROOT / "scripts" / "k6" / "score.js"
K6_SCRIPTS = sorted((ROOT / "scripts" / "k6").glob("*.js"))


@pytest.fixture(scope="module")
def events_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("k6") / "tiny.jsonl"
    write_jsonl(replace(GeneratorConfig.preset("tiny", seed=3), days=5), path, progress=False, labels=True)
    return path


def _k6(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    command = [str(K6), *args]
    for name, value in env.items():
        command[2:2] = ["-e", f"{name}={value}"]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=ROOT)


def _inspect(script: Path, **env: str) -> dict:
    result = _k6("inspect", str(script), env=env)
    assert result.returncode == 0, result.stderr
    return orjson.loads(result.stdout)


def test_there_are_k6_scripts_to_check():
    assert SCORE_JS in K6_SCRIPTS


@pytest.mark.parametrize("script", K6_SCRIPTS, ids=lambda p: p.name)
def test_every_k6_script_passes_k6_inspect(script: Path, events_file: Path):
    options = _inspect(script, EVENTS_FILE=str(events_file))
    assert options["scenarios"], "a script must declare its scenarios"
    assert options["thresholds"], "a script must declare thresholds"


def test_score_js_selects_the_closed_model_by_default_and_the_open_model_on_request(events_file: Path):
    closed = _inspect(SCORE_JS, EVENTS_FILE=str(events_file), VUS="7", DURATION="3s")["scenarios"]["score"]
    opened = _inspect(SCORE_JS, EVENTS_FILE=str(events_file), SCENARIO="open", RATE="250")["scenarios"]["score"]
    assert (closed["executor"], closed["vus"], closed["duration"]) == ("constant-vus", 7, "3s")
    assert (opened["executor"], opened["rate"], opened["timeUnit"]) == ("constant-arrival-rate", 250, "1s")


def test_score_js_thresholds_cover_error_rate_and_p99(events_file: Path):
    thresholds = _inspect(SCORE_JS, EVENTS_FILE=str(events_file), P99_MS="12")["thresholds"]
    assert thresholds["http_req_failed"] == ["rate<0.01"]
    assert thresholds["http_req_duration"] == ["p(99)<12"]


def test_score_js_without_an_events_file_says_so():
    result = _k6("inspect", str(SCORE_JS), env={})
    assert result.returncode != 0
    assert "EVENTS_FILE is not set" in result.stderr


def _duplicates(url: str) -> float:
    for family in text_string_to_metric_families(requests.get(f"{url}/metrics", timeout=10).text):
        if family.name == "scorer_duplicates":
            return sum(s.value for s in family.samples if s.name == "scorer_duplicates_total")
    raise AssertionError("the scorer's /metrics has no scorer_duplicates_total")


def _run_score_js(scorer_url: str, events_file: Path, summary: Path, **env: str) -> dict:
    settings = {"TARGET_URL": f"{scorer_url}/", "EVENTS_FILE": str(events_file), "DURATION": "2s",
                "SUMMARY_FILE": str(summary), "RUN_ID": uuid.uuid4().hex[:8], **env}
    result = _k6("run", "--quiet", str(SCORE_JS), env=settings)
    # 99 means a threshold was crossed: p99 on a busy test machine is not this test's business, counts are.
    assert result.returncode in (0, 99), result.stderr
    return orjson.loads(summary.read_bytes())["metrics"]


def _count(metrics: dict, name: str) -> int:
    return int(metrics.get(name, {}).get("values", {}).get("count", 0))


def test_two_second_closed_run_against_a_real_scorer_has_no_failed_requests(scorer_url, events_file, tmp_path):
    metrics = _run_score_js(scorer_url, events_file, tmp_path / "summary.json", VUS="4")
    assert _count(metrics, "events_scored") > 0
    assert _count(metrics, "events_failed") == 0
    assert metrics["http_req_failed"]["values"]["passes"] == 0


def test_batch_mode_run_scores_whole_batches_without_failures(scorer_url, events_file, tmp_path):
    metrics = _run_score_js(scorer_url, events_file, tmp_path / "summary.json", VUS="2", BATCH="16")
    scored, requests_made = _count(metrics, "events_scored"), _count(metrics, "http_reqs")
    assert _count(metrics, "events_failed") == 0
    assert requests_made > 0
    assert scored == 16 * requests_made


def test_vus_wrapping_round_their_slice_send_new_event_ids_not_redeliveries(scorer_url, events_file, tmp_path):
    before = _duplicates(scorer_url)
    metrics = _run_score_js(scorer_url, events_file, tmp_path / "summary.json", VUS="2", MAX_EVENTS="20",
                            SCENARIO="open", RATE="100", PRE_VUS="2", MAX_VUS="2")
    assert _count(metrics, "events_scored") > 20  # more than the file holds: every VU went round its slice
    assert _count(metrics, "events_failed") == 0
    assert _duplicates(scorer_url) == before
