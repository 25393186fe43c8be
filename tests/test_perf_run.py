"""The load harness end to end: a scenario brings the one-machine runtime up, runs k6 and writes its results."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from urllib.parse import urlsplit

import orjson
import pytest

from functions.generator.config import GeneratorConfig
from functions.generator.events import write_jsonl
from perf.run import condense_k6, main, run_scenario, scenarios

pytest_plugins = ["valkey_fixtures", "scorer_fixtures"]


def test_steady_scenario_compares_broker_and_direct_in_one_run_and_writes_every_result(
        tmp_path: Path, model_uri: str) -> None:
    events = tmp_path / "events.jsonl"
    write_jsonl(replace(GeneratorConfig.preset("quick", seed=9), days=1), events, progress=False)
    registry = Path(urlsplit(model_uri.split("/fraud-gru@")[0]).path)
    scenario = scenarios(scale=0.07)["steady"]  # two seconds per run
    report = run_scenario(scenario, tmp_path / "results", model_registry=registry, events_file=events)

    assert [v["target"] for v in report["variants"]] == ["service", "broker"]
    for variant in report["variants"]:
        assert variant["k6"]["requests"] > 0
        assert variant["k6"]["failed"] == 0
        assert variant["timeline"], "the runtime's timeline covers the run"
    broker = report["variants"][1]["broker"]
    assert broker["accepted"] == report["variants"][1]["k6"]["accepted"]
    saved = orjson.loads((tmp_path / "results" / "steady.json").read_bytes())
    assert saved["machine"]["cores"] >= 1 and saved["machine"]["date"]
    table = (tmp_path / "results" / "steady.md").read_text()
    assert "broker ingress" in table and "cores" in table
    assert (tmp_path / "results" / "steady.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_condensed_summary_reports_a_failed_threshold() -> None:
    summary = {"metrics": {
        "http_reqs": {"values": {"count": 10, "rate": 5.0}},
        "http_req_failed": {"values": {"rate": 0.0}, "thresholds": {"rate<0.01": {"ok": True}}},
        "http_req_duration": {"values": {"p(50)": 1.0, "p(90)": 2.0, "p(99)": 80.0, "max": 90.0},
                              "thresholds": {"p(99)<50": {"ok": False}}},
    }}
    figures = condense_k6(summary)
    assert figures["requests"] == 10
    assert figures["p99_ms"] == 80.0
    assert figures["thresholds_ok"] is False


def test_an_unknown_scenario_is_refused_with_the_choices(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["warp-speed"])
    assert exit_info.value.code == 2
    assert "steady" in capsys.readouterr().err
