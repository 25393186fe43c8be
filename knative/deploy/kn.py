"""The ``kn`` commands equivalent to the manifests (pure), for ``hiddenstate deploy --print-kn``.

``kn`` covers only Knative kinds and not every field of them: Trigger delivery and annotations have no ``kn trigger``
flag, so a ``kubectl patch`` follows; an ``optional`` Secret reference cannot be expressed and is named in a comment.
There is no ``kn service deploy``: ``kn service apply`` is the declarative create-or-update.

>>> svc = {"apiVersion": "serving.knative.dev/v1", "kind": "Service", "metadata": {"name": "s", "namespace": "n"},
...        "spec": {"template": {"spec": {"containers": [{"image": "img"}]}}}}
>>> render(kn_commands([svc]))
'kn service create s --namespace n --image img'
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from typing import Any

from knative.manifests import AUTOSCALING_PREFIX, autoscaling_annotations, brokers, knative_services, triggers

SERVICE_VERBS = ("create", "update", "apply")
# Autoscaling annotations with a dedicated kn flag; the rest go through --annotation-revision.
SCALE_FLAGS = {
    "min-scale": "--scale-min", "max-scale": "--scale-max", "initial-scale": "--scale-init",
    "activation-scale": "--scale-activation", "metric": "--scale-metric", "target": "--scale-target",
    "target-utilization-percentage": "--scale-utilization", "window": "--scale-window",
}
_PROBE_OPTS = ("initialDelaySeconds", "periodSeconds", "timeoutSeconds", "failureThreshold", "successThreshold")

Obj = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Line:
    """One output line: a command (argv) or a ``#`` comment."""

    argv: tuple[str, ...] = ()
    comment: str = ""

    def render(self) -> str:
        return f"# {self.comment}" if self.comment else shlex.join(self.argv)


def render(lines: list[Line]) -> str:
    return "\n".join(line.render() for line in lines)


def kn_commands(objs: list[Obj], verb: str = "create") -> list[Line]:
    """Brokers first (triggers need them), then services, then triggers."""
    if verb not in SERVICE_VERBS:
        raise ValueError(f"verb {verb!r} must be one of {', '.join(SERVICE_VERBS)}")
    eventing_verb = "update" if verb == "update" else "create"
    lines: list[Line] = []
    for broker in brokers(objs):
        lines.extend(broker_lines(broker, eventing_verb))
    for service in knative_services(objs):
        lines.extend(service_lines(service, verb))
    for trigger in triggers(objs):
        lines.extend(trigger_lines(trigger, eventing_verb))
    return lines


def service_lines(service: Obj, verb: str = "create") -> list[Line]:
    meta = service["metadata"]
    template = service["spec"]["template"]
    spec = template["spec"]
    container = spec["containers"][0]
    argv = ["kn", "service", verb, meta["name"], *_namespace(meta), "--image", container["image"]]
    notes: list[str] = []
    for part in container.get("command", []):
        argv += ["--cmd", part]
    for part in container.get("args", []):
        argv += ["--arg", part]
    for port in container.get("ports", []):
        name = f"{port['name']}:" if port.get("name") else ""
        argv += ["--port", f"{name}{port['containerPort']}"]
    for source in container.get("envFrom", []):
        kind, ref = ("cm", source["configMapRef"]) if "configMapRef" in source else ("secret", source["secretRef"])
        if ref.get("optional"):
            notes.append(f"optional envFrom {kind}:{ref['name']} left out (kn cannot mark it optional); "
                         f"add --env-from {kind}:{ref['name']} once it exists")
            continue
        argv += ["--env-from", f"{kind}:{ref['name']}"]
    for var in container.get("env", []):
        if "value" in var:
            argv += ["--env", f"{var['name']}={var['value']}"]
            continue
        source = var.get("valueFrom", {})
        kind, ref = ("cm", source.get("configMapKeyRef")) if "configMapKeyRef" in source else (
            "secret", source.get("secretKeyRef"))
        if ref:
            argv += ["--env-value-from", f"{var['name']}={kind}:{ref['name']}:{ref['key']}"]
    for key, value in autoscaling_annotations(service).items():
        flag = SCALE_FLAGS.get(key)
        argv += [flag, value] if flag else ["--annotation-revision", f"{AUTOSCALING_PREFIX}{key}={value}"]
    for key, value in (template.get("metadata", {}).get("annotations") or {}).items():
        if not key.startswith(AUTOSCALING_PREFIX):
            argv += ["--annotation-revision", f"{key}={value}"]
    if "containerConcurrency" in spec:
        argv += ["--concurrency-limit", str(spec["containerConcurrency"])]
    if "timeoutSeconds" in spec:
        argv += ["--timeout", str(spec["timeoutSeconds"])]
    resources = container.get("resources", {})
    for kind in ("requests", "limits"):
        if resources.get(kind):
            argv += [f"--{kind[:-1] if kind == 'requests' else 'limit'}",
                     ",".join(f"{k}={v}" for k, v in resources[kind].items())]
    for probe_name, flag in (("readinessProbe", "--probe-readiness"), ("livenessProbe", "--probe-liveness")):
        probe = container.get(probe_name)
        if probe:
            argv += [flag, _probe(probe)]
            opts = [f"{name}={probe[name]}" for name in _PROBE_OPTS if name in probe]
            if opts:
                argv += [f"{flag}-opts", ",".join(opts)]
    if meta.get("labels", {}).get("networking.knative.dev/visibility") == "cluster-local":
        argv.append("--cluster-local")
    return [*(Line(comment=note) for note in notes), Line(tuple(argv))]


def broker_lines(broker: Obj, verb: str = "create") -> list[Line]:
    meta = broker["metadata"]
    argv = ["kn", "broker", verb, meta["name"], *_namespace(meta)]
    broker_class = (meta.get("annotations") or {}).get("eventing.knative.dev/broker.class")
    if broker_class and verb == "create":
        argv += ["--class", broker_class]
    spec = broker.get("spec", {})
    if config := spec.get("config"):
        argv += ["--broker-config", f"cm:{config['name']}" if config.get("kind") == "ConfigMap" else config["name"]]
    argv += _delivery_flags(spec.get("delivery") or {})
    return [Line(tuple(argv))]


def trigger_lines(trigger: Obj, verb: str = "create") -> list[Line]:
    meta = trigger["metadata"]
    spec = trigger["spec"]
    argv = ["kn", "trigger", verb, meta["name"], *_namespace(meta), "--broker", spec["broker"]]
    for key, value in (spec.get("filter", {}).get("attributes") or {}).items():
        argv += ["--filter", f"{key}={value}"]
    argv += ["--sink", sink(spec["subscriber"])]
    lines = [Line(tuple(argv))]
    patch: Obj = {}
    if spec.get("delivery"):
        patch["spec"] = {"delivery": spec["delivery"]}
    if meta.get("annotations"):
        patch["metadata"] = {"annotations": meta["annotations"]}
    if patch:
        lines.append(Line(comment="kn trigger has no flags for delivery or annotations; patch them on:"))
        lines.append(Line(("kubectl", "patch", "trigger", meta["name"], *_namespace(meta), "--type", "merge",
                           "-p", json.dumps(patch, separators=(",", ":"), sort_keys=True))))
    return lines


def sink(destination: Obj) -> str:
    """A Knative destination (``ref`` or ``uri``) as a ``kn --sink`` value."""
    if uri := destination.get("uri"):
        return uri
    ref = destination["ref"]
    prefix = {"Service": "ksvc" if ref.get("apiVersion", "").startswith("serving.") else "svc",
              "Broker": "broker", "Channel": "channel"}.get(ref["kind"], ref["kind"].lower())
    return f"{prefix}:{ref['name']}" + (f":{ref['namespace']}" if ref.get("namespace") else "")


def _delivery_flags(delivery: Obj) -> list[str]:
    argv: list[str] = []
    for field, flag in (("retry", "--retry"), ("backoffPolicy", "--backoff-policy"),
                        ("backoffDelay", "--backoff-delay"), ("timeout", "--timeout"),
                        ("retryAfterMax", "--retry-after-max")):
        if field in delivery:
            argv += [flag, str(delivery[field])]
    if dead_letter := delivery.get("deadLetterSink"):
        argv += ["--dl-sink", sink(dead_letter)]
    return argv


def _probe(probe: Obj) -> str:
    if http := probe.get("httpGet"):
        return f"{http.get('scheme', 'http').lower()}:{http.get('host', '')}:{http.get('port', '')}:{http['path']}"
    if tcp := probe.get("tcpSocket"):
        return f"tcp:{tcp.get('host', '')}:{tcp['port']}"
    if exec_ := probe.get("exec"):
        return "exec:" + ",".join(exec_["command"])
    raise ValueError(f"kn cannot express probe {sorted(probe)}")


def _namespace(meta: Obj) -> list[str]:
    return ["--namespace", meta["namespace"]] if meta.get("namespace") else []
