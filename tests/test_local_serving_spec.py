"""What the local runtime runs for a Knative Service of the real manifests, and what it overrides locally."""

from __future__ import annotations

import sys
from types import SimpleNamespace

import pytest

from knative import manifests
from knative.local.runtime import local_overrides
from knative.local.serving.spec import resolve_command, service_spec


@pytest.fixture(scope="module")
def objs():
    return manifests.load_manifests("dev")


def scorer_manifest(objs):
    return next(s for s in manifests.knative_services(objs) if s["metadata"]["name"] == "scorer")


def test_scorer_spec_runs_the_container_command_with_this_interpreter_and_resolved_env(objs):
    spec = service_spec(scorer_manifest(objs), objs, {"stable-window": "6s"})
    assert spec.command == (sys.executable, "-m", "functions.scorer")
    assert spec.module == "functions.scorer"
    assert spec.env["VALKEY_URL"].startswith("redis://scorer:")
    assert spec.env["TORCH_NUM_THREADS"] == "1"
    assert spec.container_concurrency == 32
    assert spec.timeout_s == 30
    assert spec.readiness_path == "/health/readiness"
    assert spec.scaling.max_scale == 10 and spec.scaling.stable_window_s == 6.0
    assert spec.scaling.scale_down_delay_s == 60.0


def test_instances_get_the_knative_runtime_contract_variables(objs):
    spec = service_spec(scorer_manifest(objs), objs)
    env = spec.instance_env(41234)
    assert (env["PORT"], env["K_SERVICE"], env["K_CONFIGURATION"], env["K_REVISION"]) == (
        "41234", "scorer", "scorer", "scorer-00001")


def test_local_overrides_point_valkey_and_model_at_local_things_keeping_the_privilege_level(tmp_path):
    valkey = SimpleNamespace(url="redis://scorer:s@127.0.0.1:1/0", admin_url="redis://admin:a@127.0.0.1:1/0")
    scorer = local_overrides({"VALKEY_URL": "redis://scorer:x@valkey:6379/0", "MODEL_URI": "s3://m/x@champion",
                              "MODEL_CACHE_DIR": "/tmp/models"}, valkey, "file:///r/fraud-gru@champion", tmp_path)
    assert scorer["VALKEY_URL"] == valkey.url
    assert scorer["MODEL_URI"] == "file:///r/fraud-gru@champion"
    assert scorer["MODEL_CACHE_DIR"] == str((tmp_path / "model-cache").resolve())
    admin = local_overrides({"VALKEY_URL": "redis://admin:x@valkey:6379/0"}, valkey, None, tmp_path)
    assert admin == {"VALKEY_URL": valkey.admin_url}
    assert local_overrides({"LOG_LEVEL": "info"}, valkey, "file:///m", tmp_path) == {}


def test_a_container_without_command_is_refused_by_name():
    with pytest.raises(manifests.ManifestError, match="no command"):
        resolve_command([])
