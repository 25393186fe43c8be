"""The kustomize tree under knative/: what it builds, and that both builders agree."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from knative.manifests import (
    EVENTING_API,
    OVERLAYS,
    SERVING_API,
    ManifestError,
    autoscaling_annotations,
    brokers,
    build_builtin,
    build_with_binary,
    container_concurrency,
    container_env,
    find,
    knative_services,
    load_manifests,
    main_container,
    overlay_path,
    triggers,
)

REPO = Path(__file__).resolve().parent.parent


def _normalised(objs: list[dict]) -> list[dict]:
    """Secrets compared by decoded value: kubectl wraps long base64 lines, the built-in builder does not."""
    out = []
    for obj in objs:
        if obj.get("kind") == "Secret":
            obj = {**obj, "data": {k: base64.b64decode(v) for k, v in obj.get("data", {}).items()}}
        out.append(obj)
    return sorted(out, key=lambda o: (o["apiVersion"], o["kind"], o["metadata"]["name"]))


@pytest.mark.parametrize("overlay", [*OVERLAYS, "base"])
def test_builtin_builder_gives_the_same_objects_as_kubectl_kustomize(overlay):
    path = overlay_path(overlay)
    assert _normalised(build_builtin(path)) == _normalised(build_with_binary(path, ["kubectl", "kustomize"]))


@pytest.mark.parametrize("overlay", [*OVERLAYS, "base"])
def test_every_object_lands_in_the_hiddenstate_namespace(overlay):
    for obj in load_manifests(overlay):
        where = obj["metadata"]["name"] if obj["kind"] == "Namespace" else obj["metadata"].get("namespace")
        assert where == "hiddenstate", f"{obj['kind']}/{obj['metadata']['name']}"


def test_scorer_service_runs_the_scorer_module_with_config_and_secret_env():
    objs = load_manifests("dev")
    scorer = find(objs, "Service", "scorer", SERVING_API)
    container = main_container(scorer)
    assert container["command"] == ["python", "-m", "functions.scorer"]
    assert scorer["metadata"]["namespace"] == "hiddenstate"
    assert scorer["metadata"]["labels"]["networking.knative.dev/visibility"] == "cluster-local"
    assert container["readinessProbe"]["httpGet"]["path"] == "/health/readiness"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health/liveness"
    env = container_env(container, objs)
    assert env["SCORER_MAX_BATCH"] == "256"
    assert env["SCORER_HTTP_THREADS"] == str(container_concurrency(scorer)) == "32"
    assert env["TORCH_NUM_THREADS"] == "1"
    assert env["MODEL_CACHE_DIR"] == "/tmp/models"
    assert env["VALKEY_URL"].startswith("redis://scorer:")


def test_base_scales_the_scorer_to_zero_and_prod_keeps_one_warm():
    base = autoscaling_annotations(find(load_manifests("base"), "Service", "scorer", SERVING_API))
    prod = autoscaling_annotations(find(load_manifests("prod"), "Service", "scorer", SERVING_API))
    assert base["class"] == "kpa.autoscaling.knative.dev"
    assert base["metric"] == "concurrency"
    assert base["min-scale"] == "0"
    assert prod["min-scale"] == "1"
    assert int(prod["max-scale"]) > int(base["max-scale"])
    assert {"target", "target-utilization-percentage", "initial-scale", "scale-down-delay"} <= base.keys()


def test_prod_gives_the_scorer_more_resources_than_base():
    def cpu_request(overlay: str) -> str:
        return main_container(find(load_manifests(overlay), "Service", "scorer", SERVING_API))["resources"][
            "requests"]["cpu"]

    assert (cpu_request("base"), cpu_request("prod")) == ("500m", "1")


def test_transactions_trigger_routes_to_the_scorer_with_retries_and_a_dead_letter_sink():
    objs = load_manifests("dev")
    trigger = find(triggers(objs), "Trigger", "scorer-transactions")
    assert trigger["spec"]["filter"]["attributes"] == {"type": "dev.hiddenstate.transaction"}
    assert trigger["spec"]["subscriber"]["ref"] == {"apiVersion": SERVING_API, "kind": "Service", "name": "scorer"}
    delivery = trigger["spec"]["delivery"]
    assert delivery["retry"] > 0 and delivery["backoffPolicy"] == "exponential"
    assert delivery["deadLetterSink"]["ref"]["name"] == "event-display"
    scores = find(objs, "Trigger", "scores-to-display", EVENTING_API)
    assert scores["spec"]["filter"]["attributes"] == {"type": "dev.hiddenstate.score"}
    assert main_container(find(knative_services(objs), "Service", "event-display"))["command"] == [
        "python", "-m", "functions.event_display"]


def test_kafka_overlay_uses_a_kafka_broker_and_an_ordered_trigger():
    objs = load_manifests("kafka")
    broker = find(brokers(objs), "Broker", "default")
    assert broker["metadata"]["annotations"]["eventing.knative.dev/broker.class"] == "Kafka"
    assert broker["spec"]["config"]["name"] == "kafka-broker-config"
    find(objs, "ConfigMap", "kafka-broker-config", "v1")
    trigger = find(objs, "Trigger", "scorer-transactions", EVENTING_API)
    assert trigger["metadata"]["annotations"]["kafka.eventing.knative.dev/delivery.order"] == "ordered"


def test_only_dev_carries_credentials():
    def secrets(overlay: str) -> set[str]:
        return {o["metadata"]["name"] for o in load_manifests(overlay) if o["kind"] == "Secret"}

    assert secrets("dev") == {"valkey-scorer", "valkey-acl", "state-admin"}
    assert secrets("prod") == secrets("kafka") == set()


def test_valkey_config_is_the_state_service_config_plus_pod_overrides():
    shipped = (REPO / "state_service" / "valkey.conf").read_text()
    config = find(load_manifests("prod"), "ConfigMap", "valkey-config", "v1")["data"]["valkey.conf"]
    assert config.startswith(shipped)
    overrides = config[len(shipped):]
    assert "dir /data" in overrides and "aclfile /etc/valkey/acl/users.acl" in overrides


def test_dev_acl_grants_the_state_service_users_their_shipped_rules():
    shipped = [line for line in (REPO / "state_service" / "users.acl").read_text().splitlines()
               if line.strip() and not line.startswith("#")]
    expected = [line.replace("#$scorer_hash", ">dev-scorer-password").replace("#$admin_hash", ">dev-admin-password")
                for line in shipped]
    acl = find(load_manifests("dev"), "Secret", "valkey-acl", "v1")["data"]["users.acl"]
    assert base64.b64decode(acl).decode().splitlines() == expected


def test_valkey_keeps_its_append_only_file_on_a_persistent_volume():
    statefulset = find(load_manifests("dev"), "StatefulSet", "valkey", "apps/v1")
    assert statefulset["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "data"
    mounts = {m["name"]: m["mountPath"] for m in statefulset["spec"]["template"]["spec"]["containers"][0][
        "volumeMounts"]}
    assert mounts["data"] == "/data"


def test_admin_api_reads_its_token_from_the_state_admin_secret():
    objs = load_manifests("dev")
    admin = find(objs, "Deployment", "state-admin", "apps/v1")["spec"]["template"]["spec"]["containers"][0]
    assert admin["command"] == ["python", "-m", "state_service.admin"]
    env = container_env(admin, objs)
    assert env["STATE_ADMIN_TOKEN"] == "dev-admin-token"
    assert env["STATE_ADMIN_PORT"] == "8080"


def test_a_required_secret_missing_from_the_manifests_is_named():
    objs = load_manifests("prod")
    with pytest.raises(ManifestError, match="valkey-scorer"):
        container_env(main_container(find(objs, "Service", "scorer", SERVING_API)), objs)


def test_old_camel_case_autoscaling_keys_are_read_under_their_current_names():
    service = {"spec": {"template": {"metadata": {"annotations": {"autoscaling.knative.dev/minScale": "2"}}}}}
    assert autoscaling_annotations(service) == {"min-scale": "2"}


def test_unknown_overlay_is_an_error_listing_the_known_ones():
    with pytest.raises(ManifestError, match="known: base, dev, kafka, prod"):
        load_manifests("staging")


def test_builtin_builder_names_a_kustomize_feature_it_does_not_support(tmp_path):
    (tmp_path / "kustomization.yaml").write_text("resources: []\nreplicas:\n  - name: x\n    count: 2\n")
    with pytest.raises(ManifestError, match="replicas"):
        build_builtin(tmp_path)
