"""``hiddenstate deploy --print-kn`` says what the manifests say: each flag is parsed back and compared."""

from __future__ import annotations

import json
import shlex
from collections import defaultdict

import pytest

from knative.deploy.kn import kn_commands, render
from knative.manifests import OVERLAYS, brokers, find, knative_services, load_manifests, triggers

# From `kn service create --help` (knative/client docs/cmd/kn_service_create.md), written out independently of
# the module under test.
KN_SCALE_ANNOTATIONS = {
    "--scale-min": "min-scale", "--scale-max": "max-scale", "--scale-init": "initial-scale",
    "--scale-activation": "activation-scale", "--scale-metric": "metric", "--scale-target": "target",
    "--scale-utilization": "target-utilization-percentage", "--scale-window": "window",
}
BOOLEAN_FLAGS = {"--cluster-local"}


def parse(line: str) -> tuple[list[str], dict[str, list[str]]]:
    """``kn service create NAME --a 1 --a 2 --b`` -> (["kn", "service", "create", "NAME"], {"--a": ["1", "2"], ...})."""
    words = shlex.split(line)
    positional, flags = [], defaultdict(list)
    i = 0
    while i < len(words):
        word = words[i]
        if word.startswith("--"):
            name, eq, value = word.partition("=")
            if eq:
                flags[name].append(value)
            elif name in BOOLEAN_FLAGS:
                flags[name].append("true")
            else:
                flags[name].append(words[i + 1])
                i += 1
        elif word == "-p" and positional[:1] == ["kubectl"]:
            flags["-p"].append(words[i + 1])
            i += 1
        else:
            positional.append(word)
        i += 1
    return positional, dict(flags)


def commands(overlay: str, verb: str = "create") -> dict[tuple[str, ...], dict[str, list[str]]]:
    out = {}
    for line in render(kn_commands(load_manifests(overlay), verb)).splitlines():
        if not line.startswith("#"):
            positional, flags = parse(line)
            out[tuple(positional)] = flags
    return out


def _resources(value: str) -> dict[str, str]:
    return dict(part.split("=", 1) for part in value.split(","))


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_kn_service_flags_match_the_knative_services(overlay):
    objs = load_manifests(overlay)
    printed = commands(overlay)
    for service in knative_services(objs):
        name = service["metadata"]["name"]
        flags = printed[("kn", "service", "create", name)]
        template = service["spec"]["template"]
        container = template["spec"]["containers"][0]
        assert flags["--namespace"] == [service["metadata"]["namespace"]]
        assert flags["--image"] == [container["image"]]
        assert flags["--cmd"] == container["command"]
        port = container["ports"][0]
        assert flags["--port"] == [f"{port['name']}:{port['containerPort']}"]
        annotations = {KN_SCALE_ANNOTATIONS[f]: v[0] for f, v in flags.items() if f in KN_SCALE_ANNOTATIONS}
        annotations.update(dict(a.removeprefix("autoscaling.knative.dev/").split("=", 1)
                                for a in flags.get("--annotation-revision", [])))
        assert annotations == {k.removeprefix("autoscaling.knative.dev/"): v
                               for k, v in template["metadata"]["annotations"].items()}
        assert flags["--concurrency-limit"] == [str(template["spec"]["containerConcurrency"])]
        assert flags["--timeout"] == [str(template["spec"]["timeoutSeconds"])]
        assert _resources(flags["--request"][0]) == container["resources"]["requests"]
        assert _resources(flags["--limit"][0]) == container["resources"]["limits"]
        for probe, flag in (("readinessProbe", "--probe-readiness"), ("livenessProbe", "--probe-liveness")):
            assert flags[flag][0].split(":")[-1] == container[probe]["httpGet"]["path"]
            opts = _resources(flags[f"{flag}-opts"][0]) if f"{flag}-opts" in flags else {}
            assert {k: int(v) for k, v in opts.items()} == {
                k: v for k, v in container[probe].items() if k != "httpGet"}
        required_from = [
            f"cm:{s['configMapRef']['name']}" if "configMapRef" in s else f"secret:{s['secretRef']['name']}"
            for s in container.get("envFrom", []) if not (s.get("configMapRef") or s.get("secretRef")).get("optional")
        ]
        assert flags.get("--env-from", []) == required_from
        value_from = [f"{e['name']}=secret:{e['valueFrom']['secretKeyRef']['name']}:"
                      f"{e['valueFrom']['secretKeyRef']['key']}" for e in container.get("env", []) if "valueFrom" in e]
        assert flags.get("--env-value-from", []) == value_from
        assert flags.get("--env", []) == [f"{e['name']}={e['value']}" for e in container.get("env", []) if "value" in e]
        assert ("--cluster-local" in flags) == (
            service["metadata"]["labels"].get("networking.knative.dev/visibility") == "cluster-local")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_kn_broker_flags_match_the_broker(overlay):
    broker = brokers(load_manifests(overlay))[0]
    flags = commands(overlay)[("kn", "broker", "create", broker["metadata"]["name"])]
    delivery = broker["spec"]["delivery"]
    assert flags["--class"] == [broker["metadata"]["annotations"]["eventing.knative.dev/broker.class"]]
    assert flags["--retry"] == [str(delivery["retry"])]
    assert flags["--backoff-policy"] == [delivery["backoffPolicy"]]
    assert flags["--backoff-delay"] == [delivery["backoffDelay"]]
    assert flags["--dl-sink"] == [f"ksvc:{delivery['deadLetterSink']['ref']['name']}"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_kn_trigger_flags_plus_the_kubectl_patch_match_each_trigger(overlay):
    printed = commands(overlay)
    for trigger in triggers(load_manifests(overlay)):
        name, spec = trigger["metadata"]["name"], trigger["spec"]
        flags = printed[("kn", "trigger", "create", name)]
        assert flags["--broker"] == [spec["broker"]]
        assert dict(f.split("=", 1) for f in flags["--filter"]) == spec["filter"]["attributes"]
        assert flags["--sink"] == [f"ksvc:{spec['subscriber']['ref']['name']}"]
        patch = json.loads(printed[("kubectl", "patch", "trigger", name)]["-p"][0])
        assert patch["spec"]["delivery"] == spec["delivery"]
        assert patch.get("metadata", {}).get("annotations") == trigger["metadata"].get("annotations")


def test_kafka_ordering_annotation_reaches_the_printed_commands():
    patch = json.loads(commands("kafka")[("kubectl", "patch", "trigger", "scorer-transactions")]["-p"][0])
    assert patch["metadata"]["annotations"]["kafka.eventing.knative.dev/delivery.order"] == "ordered"


def test_optional_secret_reference_is_named_instead_of_silently_required():
    text = render(kn_commands(load_manifests("dev")))
    assert "# optional envFrom secret:s3-credentials left out" in text
    assert "--env-from secret:s3-credentials" not in text.replace("add --env-from secret:s3-credentials", "")


def test_kn_service_apply_is_offered_and_there_is_no_deploy_verb():
    assert ("kn", "service", "apply", "scorer") in commands("dev", verb="apply")
    with pytest.raises(ValueError, match="create, update, apply"):
        kn_commands(load_manifests("dev"), verb="deploy")


def test_commands_come_in_dependency_order():
    order = [key[:2] for key in commands("dev")]
    assert order.index(("kn", "broker")) < order.index(("kn", "service")) < order.index(("kn", "trigger"))
    assert find(load_manifests("dev"), "Broker", "default")  # the broker the triggers name exists
