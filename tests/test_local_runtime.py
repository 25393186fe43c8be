"""`hiddenstate up | status | down | demo` over the real dev manifests: valkey-server, broker, scorer and sink as
real processes under a temporary home. The registry is pre-filled with an untrained model so nothing trains."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from functions.cli import main as hiddenstate
from knative.local.runtime import RUNTIME_FILE, champion_uri
from perf.models import publish_untrained_model

ROOT = Path(__file__).resolve().parents[1]
FAST = ["--config-autoscaler", "stable-window=6s", "--config-autoscaler", "scale-to-zero-grace-period=1s"]


@pytest.fixture
def home(tmp_path) -> Path:
    home = tmp_path / "home"
    publish_untrained_model(home / "registry")
    return home


def cli(*args: str, timeout_s: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "functions", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout_s, check=False)


def test_up_detach_writes_endpoints_status_reports_and_down_stops_everything(home):
    assert champion_uri(home) is not None
    up = cli("up", "--detach", "--home", str(home), *FAST)
    assert up.returncode == 0, up.stderr[-2000:]
    try:
        endpoints = json.loads((home / "endpoints.json").read_text())
        assert endpoints["broker"].endswith("/hiddenstate/default")
        assert set(endpoints["services"]) == {"scorer", "event-display"}
        assert endpoints["valkey"].startswith("redis://")

        status = cli("status", "--json", "--home", str(home))
        assert status.returncode == 0, status.stderr
        report = json.loads(status.stdout)
        assert set(report["services"]["scorer"]) == {"ready_instances", "desired_instances", "in_flight", "requests"}
        assert report["services"]["scorer"]["ready_instances"] >= 1
        assert set(report["broker"]) == {"accepted", "delivered", "retried", "dead_lettered", "replies"}

        table = cli("status", "--home", str(home))
        assert "scorer" in table.stdout and "broker: accepted 0" in table.stdout

        again = cli("up", "--detach", "--home", str(home))
        assert again.returncode == 1 and "already running" in again.stderr

        plot = cli("status", "--plot", str(home / "timeline.png"), "--home", str(home))
        assert plot.returncode == 0, plot.stderr
        assert (home / "timeline.png").read_bytes()[:4] == b"\x89PNG"
        pid = json.loads((home / RUNTIME_FILE).read_text())["pid"]
    finally:
        down = cli("down", "--home", str(home))
    assert down.returncode == 0, down.stderr
    assert f"pid {pid}" in down.stdout
    assert not (home / RUNTIME_FILE).exists()
    after = cli("status", "--home", str(home))
    assert after.returncode == 1 and "no runtime is running" in after.stderr


def test_demo_scores_every_transaction_from_a_scaled_to_zero_scorer_and_stops(home, capsys):
    status = hiddenstate(["demo", "--home", str(home), "--count", "80", *FAST])
    out = capsys.readouterr().out
    assert status == 0
    summary = orjson.loads((home / "demo-summary.json").read_bytes())
    assert summary["sent"] == summary["scored"] == 80
    assert 0 < summary["p50_ms"] <= summary["p99_ms"]
    assert summary["scale_from_zero_ms"] > 0
    assert summary["peak_instances"] >= 1
    assert "scale from zero (ms)" in out
    assert not (home / RUNTIME_FILE).exists()
    records = [orjson.loads(line) for line in (home / "instances.jsonl").read_bytes().splitlines()]
    scorer_starts = [r for r in records if r["service"] == "scorer" and "ready_s" in r]
    # One instance from initial-scale, one more from the scale from zero.
    assert len(scorer_starts) >= 2
    assert {"start", "imports", "model_load"} <= set(scorer_starts[-1]["phases"])


def test_up_rejects_an_unknown_autoscaler_key_by_name(home):
    result = cli("up", "--home", str(home), "--config-autoscaler", "stable-windows=6s")
    assert result.returncode == 2
    assert "stable-windows" in result.stderr and "unknown config-autoscaler key" in result.stderr


def test_demo_in_fork_mode_scores_every_transaction_with_instances_forked_from_a_zygote(home, capsys):
    status = hiddenstate(["demo", "--home", str(home), "--count", "60", "--instance-mode", "fork", *FAST])
    capsys.readouterr()
    assert status == 0
    summary = orjson.loads((home / "demo-summary.json").read_bytes())
    assert summary["sent"] == summary["scored"] == 60
    records = [orjson.loads(line) for line in (home / "instances.jsonl").read_bytes().splitlines()]
    scorer_starts = [r for r in records if r["service"] == "scorer" and "ready_s" in r]
    assert len(scorer_starts) >= 2
    assert {r["mode"] for r in scorer_starts} == {"fork"}
    # A forked instance inherits the imports and the model: it only connects to Valkey before it is ready.
    assert "imports" not in scorer_starts[-1]["phases"]
    assert "valkey" in scorer_starts[-1]["phases"]
