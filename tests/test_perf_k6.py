"""The k6 scenario scripts: each passes `k6 inspect`, and each really scores events against a real scorer."""

from __future__ import annotations

import json
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from functions.generator.config import GeneratorConfig
from functions.generator.events import write_jsonl
from perf.run import K6, K6_DIR, condense_k6, run_k6, scenarios

pytest_plugins = ["valkey_fixtures", "scorer_fixtures"]

SCRIPTS = ("steady", "ramp", "spike", "idle_burst", "soak")
EXECUTORS = {"steady": "constant-arrival-rate", "ramp": "ramping-arrival-rate", "spike": "ramping-arrival-rate",
             "idle_burst": "constant-arrival-rate", "soak": "constant-arrival-rate"}
# Two-second versions of every scenario: the shapes are the same, the durations and rates small.
SHORT_RUNS = {
    "steady": {"RATE": "40", "DURATION": "2s"},
    "ramp": {"START_RATE": "10", "PEAK_RATE": "60", "DURATION": "2s"},
    "spike": {"RATE": "10", "FACTOR": "5", "BASE": "1s", "RISE": "1s", "HOLD": "1s"},
    "idle_burst": {"RATE": "40", "DURATION": "2s"},
    "soak": {"RATE": "40", "DURATION": "2s"},
}


@pytest.fixture(scope="module")
def events_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("events") / "events.jsonl"
    write_jsonl(replace(GeneratorConfig.preset("quick", seed=3), days=1), path, progress=False)
    return path


@pytest.mark.parametrize("name", SCRIPTS)
def test_every_scenario_script_passes_k6_inspect(name: str, events_file: Path) -> None:
    result = subprocess.run([str(K6), "inspect", "-e", f"EVENTS_FILE={events_file}", str(K6_DIR / f"{name}.js")],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    options = json.loads(result.stdout)
    (scenario,) = options["scenarios"].values()
    assert scenario["executor"] == EXECUTORS[name]
    assert set(options["thresholds"]) == {"http_req_failed", "http_req_duration"}


def test_a_script_without_an_events_file_fails_with_a_clear_message() -> None:
    result = subprocess.run([str(K6), "inspect", str(K6_DIR / "steady.js")], capture_output=True, text=True,
                            check=False)
    assert result.returncode != 0
    assert "EVENTS_FILE is not set" in result.stdout + result.stderr


def test_every_harness_scenario_names_an_existing_script() -> None:
    for scenario in scenarios().values():
        assert (K6_DIR / scenario.script).is_file(), scenario.script


@pytest.mark.parametrize("name", SCRIPTS)
def test_two_second_run_scores_every_event_against_a_real_scorer(name: str, events_file: Path, scorer_url: str,
                                                                 tmp_path: Path) -> None:
    env = {**SHORT_RUNS[name], "MAX_VUS": "20", "PRE_VUS": "5", "P99_MS": "10000", "RUN_ID": f"{name}-{tmp_path.name}"}
    result = run_k6(K6_DIR / f"{name}.js", scorer_url + "/", events_file, tmp_path / "summary.json", env)
    figures = condense_k6(result["summary"])
    assert figures["requests"] > 0
    assert figures["failed"] == 0
    assert figures["accepted"] == figures["requests"]
    assert figures["error_rate"] == 0.0
