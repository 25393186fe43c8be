"""Offline validation of the kustomize output, as strict as the cluster's admission webhooks where it matters.

Knative kinds are checked with jsonschema against the CRDs copied into ``shared/knative-schemas`` (found at
``<repo>/../shared/knative-schemas`` or ``$KNATIVE_SCHEMAS_DIR``). The shipped schemas allow unknown fields, but
Knative's webhooks decode with ``DisallowUnknownFields``, so every object node that lists ``properties`` gets
``additionalProperties: false``, and the preserve-unknown nodes we write into get explicit allow-lists. The schemas
also lack the webhooks' value checks (annotation ranges, ``containerConcurrency`` 0-1000, one port, ...), which are
re-implemented here as pure functions. Core kinds go to ``kubernetes_validate`` (Kubernetes 1.37, strict).

>>> from knative.validation import annotation_problems
>>> annotation_problems({"autoscaling.knative.dev/min-scale": "3", "autoscaling.knative.dev/max-scale": "2"})
['autoscaling.knative.dev/max-scale: 2 is below min-scale 3']
"""

from __future__ import annotations

import copy
import functools
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml

from knative.manifests import AUTOSCALING_PREFIX, KNATIVE_ROOT, load_manifests

KUBERNETES_VERSION = "1.37"
KPA = "kpa.autoscaling.knative.dev"
HPA = "hpa.autoscaling.knative.dev"
MAX_CONTAINER_CONCURRENCY = 1000
MAX_TIMEOUT_SECONDS = 600  # config-defaults max-revision-timeout-seconds
HOUR_S = 3600.0
INT32_MAX = 2**31 - 1
DELIVERY_FIELDS = frozenset(
    {"retry", "backoffPolicy", "backoffDelay", "deadLetterSink", "timeout", "retryAfterMax", "format"}
)
# Preserve-unknown schema nodes that hold fields we write: what the webhooks accept there (notes §9).
_ALLOW_LISTS: dict[tuple[str, str], frozenset[str]] = {
    ("Trigger", "spec"): frozenset({"broker", "brokerRef", "subscriber", "filter", "filters", "delivery"}),
    ("Trigger", "spec/delivery"): DELIVERY_FIELDS,
    ("Broker", "spec/delivery"): DELIVERY_FIELDS,
    ("Service", "spec/template/metadata"): frozenset({"name", "generateName", "labels", "annotations"}),
    ("Configuration", "spec/template/metadata"): frozenset({"name", "generateName", "labels", "annotations"}),
}
# Eventing CRDs do not describe apiVersion/kind/metadata at the top, so the root gets an allow-list, not a closure.
_TOP_LEVEL = frozenset({"apiVersion", "kind", "metadata", "spec", "status"})
_PORT_NAMES = frozenset({"", "http1", "h2c"})
_PROBE_HANDLERS = ("httpGet", "tcpSocket", "exec", "grpc")
_GO_DURATION = re.compile(r"^(?:(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h))+$")
_GO_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_GO_UNITS_S = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_ISO8601_DURATION = re.compile(r"^P(?!$)(\d+Y)?(\d+M)?(\d+W)?(\d+D)?(T(?=\d)(\d+H)?(\d+M)?(\d+(\.\d+)?S)?)?$")


class ManifestInvalid(Exception):
    """One or more objects would be rejected by the cluster. ``problems`` lists each, located."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("\n".join(str(p) for p in problems))
        self.problems = problems


@dataclass(frozen=True, slots=True)
class Problem:
    """One reason an object would be rejected: which object, where in it, and why."""

    obj: str
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.obj} {self.path}: {self.message}" if self.path else f"{self.obj}: {self.message}"


# --- entry points ---------------------------------------------------------------------------------------------------


def schemas_dir() -> Path:
    """``$KNATIVE_SCHEMAS_DIR``, else ``shared/knative-schemas`` next to the repository."""
    override = os.environ.get("KNATIVE_SCHEMAS_DIR")
    return Path(override) if override else KNATIVE_ROOT.parent.parent / "shared" / "knative-schemas"


def validate_overlay(overlay: str = "dev", root: Path | None = None) -> list[Problem]:
    """Every problem in the kustomize output of ``overlay``; empty when it would all be admitted."""
    return validate_objects(load_manifests(overlay, root))


def check_objects(objs: Iterable[Mapping[str, Any]]) -> None:
    """Raise ``ManifestInvalid`` listing every problem, or return quietly."""
    problems = validate_objects(objs)
    if problems:
        raise ManifestInvalid(problems)


def validate_objects(objs: Iterable[Mapping[str, Any]], schemas: Path | None = None) -> list[Problem]:
    """Schema and webhook problems of Knative objects; strict Kubernetes schema problems of core objects."""
    crds = knative_schemas(schemas or schemas_dir())
    problems: list[Problem] = []
    for obj in objs:
        key = (obj.get("apiVersion"), obj.get("kind"))
        if key in crds:
            problems.extend(schema_problems(obj, crds[key]))
            problems.extend(webhook_problems(obj))
        else:
            problems.extend(core_problems(obj))
    return problems


def describe(obj: Mapping[str, Any]) -> str:
    return f"{obj.get('kind', '?')}/{(obj.get('metadata') or {}).get('name', '?')}"


# --- schemas --------------------------------------------------------------------------------------------------------


@functools.cache
def knative_schemas(directory: Path) -> dict[tuple[str, str], dict[str, Any]]:
    """``(apiVersion, kind) -> strict schema`` for every CRD in ``directory``."""
    if not directory.is_dir():
        raise FileNotFoundError(
            f"Knative CRD schemas not found at {directory}; set KNATIVE_SCHEMAS_DIR to the folder holding "
            "serving-service.yaml, eventing-trigger.yaml, ..."
        )
    schemas: dict[tuple[str, str], dict[str, Any]] = {}
    for path in sorted(directory.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if not doc or doc.get("kind") != "CustomResourceDefinition":
                continue
            group, kind = doc["spec"]["group"], doc["spec"]["names"]["kind"]
            for version in doc["spec"]["versions"]:
                schema = strict_schema(version["schema"]["openAPIV3Schema"], kind)
                schemas[(f"{group}/{version['name']}", kind)] = schema
    return schemas


def strict_schema(schema: dict[str, Any], kind: str) -> dict[str, Any]:
    """A copy of a CRD schema that rejects unknown fields the way the webhooks do."""
    strict = copy.deepcopy(schema)
    _tighten(strict, kind, "")
    return strict


def _tighten(node: Any, kind: str, path: str) -> None:
    if not isinstance(node, dict):
        return
    allowed = _TOP_LEVEL if path == "" else _ALLOW_LISTS.get((kind, path))
    if allowed is not None:
        node["propertyNames"] = {"enum": sorted(allowed)}
    elif "properties" in node and not node.get("x-kubernetes-preserve-unknown-fields"):
        node.setdefault("additionalProperties", False)
    for name, child in node.get("properties", {}).items():
        _tighten(child, kind, f"{path}/{name}".lstrip("/"))
    if isinstance(node.get("items"), dict):
        _tighten(node["items"], kind, f"{path}/[]")
    if isinstance(node.get("additionalProperties"), dict):
        _tighten(node["additionalProperties"], kind, f"{path}/*")


def schema_problems(obj: Mapping[str, Any], schema: dict[str, Any]) -> list[Problem]:
    validator = jsonschema.Draft7Validator(schema)
    return [
        Problem(describe(obj), ".".join(str(p) for p in error.absolute_path), error.message)
        for error in sorted(validator.iter_errors(obj), key=lambda e: list(map(str, e.absolute_path)))
    ]


def core_problems(obj: Mapping[str, Any]) -> list[Problem]:
    try:
        kubernetes_validate.validate(dict(obj), KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as error:
        return [Problem(describe(obj), ".".join(str(p) for p in error.absolute_path), error.message)]
    except kubernetes_validate.SchemaNotFoundError:
        return [Problem(describe(obj), "", f"unknown kind {obj.get('apiVersion')}/{obj.get('kind')}")]
    return []


# --- the webhook checks the schemas lack (pure) ---------------------------------------------------------------------


def webhook_problems(obj: Mapping[str, Any]) -> list[Problem]:
    """Knative admission checks on one object that a JSON schema cannot express."""
    where = describe(obj)
    kind = obj.get("kind")
    spec = obj.get("spec") or {}
    found: list[tuple[str, str]] = []
    if kind in ("Service", "Configuration"):
        template = spec.get("template") or {}
        found += _revision_template_problems(obj, template)
        own = (obj.get("metadata") or {}).get("annotations") or {}
        found += [
            ("metadata.annotations", f"{key}: autoscaling annotations belong on spec.template.metadata.annotations")
            for key in own if key.startswith(AUTOSCALING_PREFIX)
        ]
    if kind in ("Service", "Route"):
        found += [("spec.traffic", m) for m in traffic_problems(spec.get("traffic"))]
    if kind == "Trigger":
        found += _trigger_problems(spec)
    if kind in ("Trigger", "Broker") and spec.get("delivery") is not None:
        found += [("spec.delivery", m) for m in delivery_problems(spec["delivery"])]
    return [Problem(where, path, message) for path, message in found]


def _revision_template_problems(obj: Mapping[str, Any], template: Mapping[str, Any]) -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    metadata = template.get("metadata") or {}
    annotations = metadata.get("annotations") or {}
    found += [("spec.template.metadata.annotations", m) for m in annotation_problems(annotations)]
    service_name = (obj.get("metadata") or {}).get("name", "")
    revision_name = metadata.get("name")
    if revision_name and not revision_name.startswith(f"{service_name}-"):
        found.append(("spec.template.metadata.name", f"revision name {revision_name!r} must start with "
                                                      f"{service_name + '-'!r}"))
    spec = template.get("spec") or {}
    cc = spec.get("containerConcurrency")
    if isinstance(cc, int) and not 0 <= cc <= MAX_CONTAINER_CONCURRENCY:
        found.append(("spec.template.spec.containerConcurrency", f"{cc} is outside 0-{MAX_CONTAINER_CONCURRENCY}"))
    timeout = spec.get("timeoutSeconds")
    if isinstance(timeout, int) and not 0 <= timeout <= MAX_TIMEOUT_SECONDS:
        found.append(("spec.template.spec.timeoutSeconds", f"{timeout} is outside 0-{MAX_TIMEOUT_SECONDS}"))
    containers = spec.get("containers") or []
    if not containers:
        found.append(("spec.template.spec.containers", "at least one container is required"))
    serving = [c for c in containers if c.get("ports")]
    if len(containers) > 1 and len(serving) != 1:
        found.append(("spec.template.spec.containers", "with several containers exactly one must declare a port"))
    for index, container in enumerate(containers):
        at = f"spec.template.spec.containers[{index}]"
        if not container.get("image"):
            found.append((f"{at}.image", "an image is required"))
        ports = container.get("ports") or []
        if len(ports) > 1:
            found.append((f"{at}.ports", f"{len(ports)} ports declared; Knative serves exactly one"))
        for port in ports:
            if port.get("name", "") not in _PORT_NAMES:
                found.append((f"{at}.ports", f"port name {port.get('name')!r} must be empty, 'http1' or 'h2c'"))
        for probe_name in ("readinessProbe", "livenessProbe", "startupProbe"):
            probe = container.get(probe_name)
            if probe is not None:
                handlers = [h for h in _PROBE_HANDLERS if h in probe]
                if len(handlers) != 1:
                    found.append((f"{at}.{probe_name}", f"needs exactly one handler of {', '.join(_PROBE_HANDLERS)}"))
    return found


def annotation_problems(annotations: Mapping[str, str]) -> list[str]:
    """The ``autoscaling.knative.dev/*`` value checks of knative/serving ``annotation_validation.go``.

    Stricter in one way: an unknown key under the prefix (a typo such as ``min-scael``) is reported, where Knative
    would silently ignore it.
    """
    values = {k[len(AUTOSCALING_PREFIX):]: v for k, v in annotations.items() if k.startswith(AUTOSCALING_PREFIX)}
    found: list[str] = []

    def report(key: str, message: str) -> None:
        found.append(f"{AUTOSCALING_PREFIX}{key}: {message}")

    for key in values:
        if key not in _ANNOTATION_CHECKS and key not in _CAMEL_KEYS:
            report(key, "unknown autoscaling annotation")
    normalised = {_CAMEL_KEYS.get(k, k): v for k, v in values.items()}
    parsed: dict[str, float] = {}
    for key, check in _ANNOTATION_CHECKS.items():
        if key in normalised:
            value = normalised[key]
            if not isinstance(value, str):
                report(key, f"must be a string, got {type(value).__name__}")
                continue
            try:
                parsed_value = check(value, normalised)
            except ValueError as error:
                report(key, f"{value}: {error}" if str(error) else f"{value!r} is invalid")
                continue
            if parsed_value is not None:
                parsed[key] = parsed_value
    low, high = parsed.get("min-scale", 0), parsed.get("max-scale", 0)
    if high and low > high:
        report("max-scale", f"{normalised['max-scale']} is below min-scale {normalised['min-scale']}")
    if "activation-scale" in parsed:
        activation = parsed["activation-scale"]
        if activation < low or (high and activation > high):
            report("activation-scale", f"{normalised['activation-scale']} must lie between min-scale and max-scale")
    return found


def _int(value: str, low: int, high: int = INT32_MAX) -> float:
    try:
        number = int(value)
    except ValueError:
        raise ValueError("not an integer") from None
    if not low <= number <= high:
        raise ValueError(f"must be between {low} and {high}")
    return float(number)


def _float(value: str, low: float, high: float = float("inf")) -> float:
    try:
        number = float(value)
    except ValueError:
        raise ValueError("not a number") from None
    if not low <= number <= high:
        raise ValueError(f"must be between {low:g} and {high:g}")
    return number


def go_duration_seconds(value: str) -> float:
    """Parse a Go ``time.Duration`` string (``"90s"``, ``"1m30s"``, ``"0"``) into seconds."""
    if value == "0":
        return 0.0
    if not _GO_DURATION.match(value):
        raise ValueError("not a duration such as 30s or 2m")
    return sum(float(n) * _GO_UNITS_S[unit] for n, unit in _GO_DURATION_PART.findall(value))


def _duration(value: str, low_s: float, high_s: float) -> float:
    seconds = go_duration_seconds(value)
    if not low_s <= seconds <= high_s:
        raise ValueError(f"must be between {low_s:g}s and {high_s:g}s")
    if seconds != int(seconds):
        raise ValueError("must be a whole number of seconds")
    return seconds


def _class(value: str, _: Mapping[str, str]) -> None:
    if value.endswith(".knative.dev") and value not in (KPA, HPA):
        raise ValueError(f"must be {KPA} or {HPA}")


def _metric(value: str, values: Mapping[str, str]) -> None:
    if values.get("class", KPA) == KPA and value not in ("concurrency", "rps"):
        raise ValueError("the KPA scales on concurrency or rps")
    if not value:
        raise ValueError("must not be empty")


def _aggregation(value: str, values: Mapping[str, str]) -> None:
    if values.get("class", KPA) != KPA:
        raise ValueError("only the KPA has a metric aggregation algorithm")
    if value not in ("linear", "weighted-exponential", "weightedExponential"):
        raise ValueError("must be linear or weighted-exponential")


def _initial_scale(value: str, _: Mapping[str, str]) -> float:
    number = _int(value, 0)
    if number == 0:
        # Allowed only with the cluster-wide allow-zero-initial-scale, which is off by default.
        raise ValueError("0 needs allow-zero-initial-scale: \"true\" in config-autoscaler (off by default)")
    return number


def _burst(value: str, _: Mapping[str, str]) -> float:
    number = _float(value, -1.0)
    if number < 0 and number != -1:
        raise ValueError("must be at least 0, or exactly -1")
    return number


_ANNOTATION_CHECKS: dict[str, Any] = {
    "class": _class,
    "metric": _metric,
    "target": lambda v, _: _float(v, 0.01),
    "target-utilization-percentage": lambda v, _: _float(v, 1.0, 100.0),
    "min-scale": lambda v, _: _int(v, 0),
    "max-scale": lambda v, _: _int(v, 0),
    "initial-scale": _initial_scale,
    "activation-scale": lambda v, _: _int(v, 2),
    "scale-down-delay": lambda v, _: _duration(v, 0.0, HOUR_S),
    "window": lambda v, _: _duration(v, 6.0, HOUR_S),
    "panic-window-percentage": lambda v, _: _float(v, 1.0, 100.0),
    "panic-threshold-percentage": lambda v, _: _float(v, 110.0, 1000.0),
    "target-burst-capacity": _burst,
    "scale-to-zero-pod-retention-period": lambda v, _: _duration(v, 0.0, HOUR_S),
    "metric-aggregation-algorithm": _aggregation,
}
_CAMEL_KEYS = {
    "minScale": "min-scale", "maxScale": "max-scale", "initialScale": "initial-scale",
    "scaleDownDelay": "scale-down-delay", "targetUtilizationPercentage": "target-utilization-percentage",
    "panicWindowPercentage": "panic-window-percentage", "panicThresholdPercentage": "panic-threshold-percentage",
    "targetBurstCapacity": "target-burst-capacity",
}


def traffic_problems(traffic: list[Mapping[str, Any]] | None) -> list[str]:
    """Route traffic: percents summing to 100, each target naming a revision or the latest, unique tags."""
    if not traffic:
        return []
    found: list[str] = []
    total = sum(int(t.get("percent") or 0) for t in traffic)
    if total != 100:
        found.append(f"traffic percents sum to {total}, not 100")
    tags = [t["tag"] for t in traffic if t.get("tag")]
    for tag in sorted({t for t in tags if tags.count(t) > 1}):
        found.append(f"tag {tag!r} is used more than once")
    for index, target in enumerate(traffic):
        latest = target.get("latestRevision")
        has_name = bool(target.get("revisionName") or target.get("configurationName"))
        if latest is True and target.get("revisionName"):
            found.append(f"[{index}]: latestRevision true conflicts with revisionName")
        elif latest is not True and not has_name:
            found.append(f"[{index}]: needs revisionName or latestRevision: true")
    return found


def delivery_problems(delivery: Mapping[str, Any]) -> list[str]:
    """Delivery spec values: backoff policy, ISO 8601 durations, retry count, a dead-letter sink with a target."""
    found: list[str] = []
    if delivery.get("backoffPolicy") not in (None, "linear", "exponential"):
        found.append(f"backoffPolicy {delivery['backoffPolicy']!r} must be linear or exponential")
    for field in ("backoffDelay", "timeout", "retryAfterMax"):
        value = delivery.get(field)
        if value is not None and not (isinstance(value, str) and _ISO8601_DURATION.match(value)):
            found.append(f"{field} {value!r} is not an ISO 8601 duration such as PT0.2S")
    retry = delivery.get("retry")
    if retry is not None and (not isinstance(retry, int) or retry < 0):
        found.append(f"retry {retry!r} must be a non-negative integer")
    sink = delivery.get("deadLetterSink")
    if sink is not None and not (sink.get("ref") or sink.get("uri")):
        found.append("deadLetterSink needs a ref or a uri")
    return found


def _trigger_problems(spec: Mapping[str, Any]) -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    if not spec.get("broker") and not spec.get("brokerRef"):
        found.append(("spec.broker", "a broker is required"))
    subscriber = spec.get("subscriber")
    if not subscriber:
        found.append(("spec.subscriber", "a subscriber is required"))
    elif not (subscriber.get("ref") or subscriber.get("uri")):
        found.append(("spec.subscriber", "needs a ref or a uri"))
    attributes = (spec.get("filter") or {}).get("attributes") or {}
    for name, value in attributes.items():
        if not isinstance(value, str):
            found.append((f"spec.filter.attributes.{name}", "filter values are exact-match strings"))
    return found
