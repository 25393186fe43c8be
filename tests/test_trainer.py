"""A quick training run, end to end: generate, train, evaluate, publish, and load back what the scorer would."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson

from functions.model.package import load_predictor
from functions.registry import open_registry

ROOT = Path(__file__).resolve().parents[1]


def test_quick_training_publishes_a_verified_package_and_prints_its_uri_last(tmp_path: Path):
    registry = tmp_path / "registry"
    done = subprocess.run(
        [sys.executable, "-m", "functions.trainer", "--quick", "--registry", registry.as_uri()],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    assert lines[-1] == f"{registry.as_uri()}/fraud-gru@champion"
    assert any(line.startswith("| GRU") for line in lines)
    assert any(line.startswith("| stateless per-event baseline") for line in lines)

    manifest = open_registry(registry.as_uri()).manifest("fraud-gru", "v1")
    for key in ("recall_at_1pct_fpr", "baseline_recall_at_1pct_fpr", "auc_pr", "baseline_auc_pr"):
        assert 0.0 <= manifest["metrics"][key] <= 1.0
    for key in ("training_seconds", "package_bytes", "save_seconds", "load_seconds"):
        assert manifest["lifecycle"][key] > 0
    assert manifest["training"]["seed"] == 7
    assert manifest["hidden_size"] == 64 and manifest["state_dtype"] == "float16"
    assert set(manifest["metrics_by_scenario"]) >= {"burst", "card_testing", "geo_jump"}

    predictor = load_predictor(lines[-1])
    assert predictor.namespace == "fraud-gru@v1"
    assert predictor.spec.to_dict() == manifest["feature_spec"]
    assert orjson.loads((registry / "fraud-gru" / "aliases.json").read_bytes()) == {"champion": "v1"}


def test_training_without_enough_days_explains_why(tmp_path: Path):
    from dataclasses import replace

    from functions.generator import GeneratorConfig, write_jsonl

    stream = tmp_path / "short.jsonl"
    short = replace(GeneratorConfig.preset("tiny"), days=12)
    write_jsonl(short, stream, truth_path=tmp_path / "short.truth.jsonl", progress=False)
    done = subprocess.run(
        [sys.executable, "-m", "functions.trainer", "--data", str(stream), "--registry", (tmp_path / "r").as_uri()],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
    )
    assert done.returncode == 2
    assert "too short" in done.stderr
    assert "Traceback" not in done.stderr
