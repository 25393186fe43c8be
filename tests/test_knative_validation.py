"""The offline validator accepts every overlay and is proven to reject what the cluster would reject."""

from __future__ import annotations

import copy

import pytest

from knative.manifests import OVERLAYS, SERVING_API, find, load_manifests
from knative.validation import (
    ManifestInvalid,
    annotation_problems,
    check_objects,
    go_duration_seconds,
    knative_schemas,
    schemas_dir,
    traffic_problems,
    validate_objects,
    validate_overlay,
)

ANNOTATION = "autoscaling.knative.dev/"


@pytest.fixture(scope="module")
def dev_objects() -> list[dict]:
    return load_manifests("dev")


def _scorer(objs: list[dict]) -> dict:
    return copy.deepcopy(find(objs, "Service", "scorer", SERVING_API))


def _messages(objs: list[dict]) -> str:
    return "\n".join(str(p) for p in validate_objects(objs))


@pytest.mark.parametrize("overlay", [*OVERLAYS, "base"])
def test_every_overlay_validates(overlay):
    assert [str(p) for p in validate_overlay(overlay)] == []


def test_unknown_field_in_a_knative_service_container_is_rejected(dev_objects):
    scorer = _scorer(dev_objects)
    scorer["spec"]["template"]["spec"]["containers"][0]["imagePullPolcy"] = "Always"
    assert "'imagePullPolcy' was unexpected" in _messages([scorer])


def test_unknown_field_in_a_revision_template_metadata_is_rejected(dev_objects):
    scorer = _scorer(dev_objects)
    scorer["spec"]["template"]["metadata"]["anotations"] = {}
    assert "'anotations' is not one of" in _messages([scorer])


def test_misspelled_trigger_fields_are_rejected_despite_preserve_unknown_fields(dev_objects):
    trigger = copy.deepcopy(find(dev_objects, "Trigger", "scorer-transactions"))
    trigger["spec"]["delivery"]["retries"] = 3
    trigger["spec"]["subscribr"] = trigger["spec"].pop("subscriber")
    messages = _messages([trigger])
    assert "'retries' is not one of" in messages
    assert "'subscribr' is not one of" in messages
    assert "a subscriber is required" in messages


def test_integer_annotation_value_is_rejected_by_the_schema(dev_objects):
    scorer = _scorer(dev_objects)
    scorer["spec"]["template"]["metadata"]["annotations"][f"{ANNOTATION}min-scale"] = 1
    assert "min-scale" in _messages([scorer])


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("target-utilization-percentage", "150", "between 1 and 100"),
        ("min-scale", "-1", "between 0"),
        ("scale-down-delay", "2h", "between 0s and 3600s"),
        ("scale-down-delay", "1500ms", "whole number of seconds"),
        ("window", "5s", "between 6s"),
        ("initial-scale", "0", "allow-zero-initial-scale"),
        ("target", "0", "between 0.01"),
        ("panic-threshold-percentage", "100", "between 110"),
        ("target-burst-capacity", "-2", "between -1"),
        ("activation-scale", "1", "between 2"),
        ("metric", "cpu", "concurrency or rps"),
        ("class", "foo.knative.dev", "must be kpa"),
        ("min-scael", "1", "unknown autoscaling annotation"),
    ],
)
def test_out_of_range_autoscaling_annotations_are_rejected(key, value, expected):
    problems = annotation_problems({f"{ANNOTATION}{key}": value})
    assert len(problems) == 1 and expected in problems[0], problems


def test_max_scale_below_min_scale_is_rejected():
    assert annotation_problems({f"{ANNOTATION}min-scale": "5", f"{ANNOTATION}max-scale": "3"}) == [
        f"{ANNOTATION}max-scale: 3 is below min-scale 5"]


def test_autoscaling_annotations_on_the_service_itself_are_rejected(dev_objects):
    scorer = _scorer(dev_objects)
    scorer["metadata"]["annotations"] = {f"{ANNOTATION}min-scale": "1"}
    assert "belong on spec.template.metadata.annotations" in _messages([scorer])


def test_container_concurrency_and_timeout_limits_are_enforced(dev_objects):
    scorer = _scorer(dev_objects)
    scorer["spec"]["template"]["spec"]["containerConcurrency"] = 1001
    scorer["spec"]["template"]["spec"]["timeoutSeconds"] = 601
    messages = _messages([scorer])
    assert "1001 is outside 0-1000" in messages
    assert "601 is outside 0-600" in messages


def test_a_knative_container_serves_exactly_one_port_with_an_allowed_name(dev_objects):
    scorer = _scorer(dev_objects)
    scorer["spec"]["template"]["spec"]["containers"][0]["ports"] = [
        {"name": "http", "containerPort": 8080}, {"containerPort": 9090}]
    messages = _messages([scorer])
    assert "2 ports declared" in messages
    assert "port name 'http' must be empty, 'http1' or 'h2c'" in messages


def test_revision_names_must_carry_the_service_prefix(dev_objects):
    scorer = _scorer(dev_objects)
    scorer["spec"]["template"]["metadata"]["name"] = "v2"
    assert "must start with 'scorer-'" in _messages([scorer])


def test_traffic_must_sum_to_100_and_name_its_targets():
    problems = traffic_problems([{"revisionName": "scorer-1", "percent": 80, "tag": "a"},
                                 {"percent": 10, "tag": "a"}])
    assert "traffic percents sum to 90, not 100" in problems
    assert "tag 'a' is used more than once" in problems
    assert "[1]: needs revisionName or latestRevision: true" in problems


def test_delivery_durations_must_be_iso_8601(dev_objects):
    broker = copy.deepcopy(find(dev_objects, "Broker", "default"))
    broker["spec"]["delivery"]["backoffDelay"] = "200ms"
    broker["spec"]["delivery"]["backoffPolicy"] = "fibonacci"
    messages = _messages([broker])
    assert "'200ms' is not an ISO 8601 duration" in messages
    assert "'fibonacci' must be linear or exponential" in messages


def test_core_kinds_are_validated_strictly_against_kubernetes_1_37(dev_objects):
    statefulset = copy.deepcopy(find(dev_objects, "StatefulSet", "valkey", "apps/v1"))
    statefulset["spec"]["replica"] = 1
    config = copy.deepcopy(find(dev_objects, "ConfigMap", "scorer-config", "v1"))
    config["data"]["SCORER_MAX_BATCH"] = 256
    messages = _messages([statefulset, config])
    assert "'replica' was unexpected" in messages
    assert "ConfigMap/scorer-config" in messages


def test_check_objects_raises_with_every_problem_located(dev_objects):
    scorer = _scorer(dev_objects)
    scorer["spec"]["template"]["spec"]["containerConcurrency"] = 5000
    with pytest.raises(ManifestInvalid) as raised:
        check_objects([scorer])
    assert raised.value.problems[0].obj == "Service/scorer"
    assert raised.value.problems[0].path == "spec.template.spec.containerConcurrency"


def test_go_durations_parse_like_time_parse_duration():
    assert go_duration_seconds("1m30s") == 90.0
    assert go_duration_seconds("0") == 0.0
    with pytest.raises(ValueError):
        go_duration_seconds("90")


def test_schemas_directory_can_be_overridden_and_a_missing_one_is_named(monkeypatch, tmp_path):
    monkeypatch.setenv("KNATIVE_SCHEMAS_DIR", str(tmp_path / "nowhere"))
    assert schemas_dir() == tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError, match="KNATIVE_SCHEMAS_DIR"):
        knative_schemas(schemas_dir())
