"""The kustomize output of ``knative/`` as plain dicts, and the small lookups both consumers need.

The manifests are the single source of truth: ``hiddenstate deploy`` applies these objects to a cluster and the
one-machine runtime reads the same objects to decide what to run and how to scale. Neither keeps a copy in Python.

Building uses ``kubectl kustomize`` (or a standalone ``kustomize``) when one is on PATH. Without either, a small
built-in builder handles exactly the kustomize features this tree uses (``resources``, ``namespace``, ``labels``
without selectors, JSON 6902 ``patches`` with a target, ``configMapGenerator``/``secretGenerator`` from files and
literals with ``disableNameSuffixHash``) and names anything else it meets, so users without kubectl can still run
the local runtime. A test checks that both builders give the same objects for every overlay.

>>> from knative.manifests import load_manifests, knative_services, autoscaling_annotations
>>> scorer = next(s for s in knative_services(load_manifests("dev")) if s["metadata"]["name"] == "scorer")
>>> autoscaling_annotations(scorer)["min-scale"]
'0'
"""

from __future__ import annotations

import base64
import copy
import os
import shutil
import subprocess
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

KNATIVE_ROOT = Path(__file__).resolve().parent
OVERLAYS = ("dev", "prod", "kafka")
SERVING_API = "serving.knative.dev/v1"
EVENTING_API = "eventing.knative.dev/v1"
AUTOSCALING_PREFIX = "autoscaling.knative.dev/"
# Knative still reads the old camelCase annotation keys as fallbacks.
_CAMEL_AUTOSCALING_KEYS = {
    "minScale": "min-scale", "maxScale": "max-scale", "initialScale": "initial-scale",
    "scaleDownDelay": "scale-down-delay", "targetUtilizationPercentage": "target-utilization-percentage",
    "panicWindowPercentage": "panic-window-percentage", "panicThresholdPercentage": "panic-threshold-percentage",
    "targetBurstCapacity": "target-burst-capacity",
}
_KUSTOMIZE_TIMEOUT_S = 60
_BUILTIN_FIELDS = frozenset(
    {"apiVersion", "kind", "resources", "namespace", "labels", "patches", "configMapGenerator", "secretGenerator",
     "generatorOptions"}
)

Obj = dict[str, Any]


class ManifestError(Exception):
    """The manifests cannot be built or do not hold what the caller asked for."""


def overlay_path(overlay: str = "dev", root: Path | None = None) -> Path:
    """The kustomization directory of ``overlay``: a name under ``overlays/``, ``"base"``, or a directory path."""
    root = root or KNATIVE_ROOT
    candidate = root / "base" if overlay == "base" else root / "overlays" / overlay
    if not candidate.is_dir() and Path(overlay).is_dir():
        candidate = Path(overlay)
    if not (candidate / "kustomization.yaml").is_file():
        known = ", ".join(("base", *sorted(p.name for p in (root / "overlays").glob("*") if p.is_dir())))
        raise ManifestError(f"unknown overlay {overlay!r}: no kustomization.yaml in {candidate} (known: {known})")
    return candidate


def load_manifests(overlay: str = "dev", root: Path | None = None) -> list[Obj]:
    """The objects ``kubectl kustomize`` builds for ``overlay`` (see ``overlay_path``), as dicts."""
    path = overlay_path(overlay, root)
    command = kustomize_command()
    return build_with_binary(path, command) if command else build_builtin(path)


def kustomize_command() -> list[str] | None:
    """``kubectl kustomize`` or ``kustomize build``, whichever is on PATH.

    ``HIDDENSTATE_KUSTOMIZE=builtin`` forces the built-in builder.
    """
    if os.environ.get("HIDDENSTATE_KUSTOMIZE") == "builtin":
        return None
    if kubectl := shutil.which("kubectl"):
        return [kubectl, "kustomize"]
    if kustomize := shutil.which("kustomize"):
        return [kustomize, "build"]
    return None


def build_with_binary(path: Path, command: list[str]) -> list[Obj]:
    """Run the real kustomize on ``path``."""
    try:
        done = subprocess.run([*command, str(path)], capture_output=True, text=True, timeout=_KUSTOMIZE_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ManifestError(f"{' '.join(command)} {path} failed to run: {exc}") from exc
    if done.returncode != 0:
        raise ManifestError(f"{' '.join(command)} {path} failed: {done.stderr.strip()}")
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


# --- the built-in builder -------------------------------------------------------------------------------------------


def build_builtin(path: Path) -> list[Obj]:
    """Build ``path`` without kustomize, for the subset of features this tree uses."""
    kustomization = _read_yaml(path / "kustomization.yaml")
    unsupported = sorted(set(kustomization) - _BUILTIN_FIELDS)
    if unsupported:
        raise ManifestError(
            f"{path}/kustomization.yaml uses {', '.join(unsupported)}, which the built-in builder does not support; "
            "install kubectl (it includes kustomize)"
        )
    objs: list[Obj] = []
    for entry in kustomization.get("resources", []):
        target = path / entry
        objs.extend(build_builtin(target) if target.is_dir() else _read_yaml_docs(target))
    hashing = not kustomization.get("generatorOptions", {}).get("disableNameSuffixHash", False)
    generated = [
        *(_generate(path, spec, "ConfigMap", hashing) for spec in kustomization.get("configMapGenerator", [])),
        *(_generate(path, spec, "Secret", hashing) for spec in kustomization.get("secretGenerator", [])),
    ]
    objs.extend(generated)
    for patch in kustomization.get("patches", []):
        _apply_patch(path, patch, objs)
    if labels := kustomization.get("labels"):
        _add_labels(labels, objs)
    if namespace := kustomization.get("namespace"):
        for obj in objs:
            if obj.get("kind") == "Namespace":
                continue
            obj.setdefault("metadata", {})["namespace"] = namespace
    return objs


def _read_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ManifestError(f"cannot read {path}: {exc}") from exc


def _read_yaml_docs(path: Path) -> list[Obj]:
    try:
        return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    except (OSError, yaml.YAMLError) as exc:
        raise ManifestError(f"cannot read {path}: {exc}") from exc


def _generate(path: Path, spec: Obj, kind: str, hashing: bool) -> Obj:
    if hashing:
        raise ManifestError(f"{path}: generated names with a hash suffix need kustomize; set disableNameSuffixHash")
    values: dict[str, str] = {}
    for literal in spec.get("literals", []):
        key, _, value = literal.partition("=")
        values[key] = value
    for entry in spec.get("files", []):
        key, _, file = entry.partition("=") if "=" in entry else (Path(entry).name, "", entry)
        try:
            values[key] = (path / file).read_text()
        except OSError as exc:
            raise ManifestError(f"{path}: generator file {file}: {exc}") from exc
    obj: Obj = {"apiVersion": "v1", "kind": kind, "metadata": {"name": spec["name"]}}
    if kind == "Secret":
        obj["type"] = "Opaque"
        obj["data"] = {k: base64.b64encode(v.encode()).decode() for k, v in values.items()}
    else:
        obj["data"] = values
    return obj


def _apply_patch(path: Path, patch: Obj, objs: list[Obj]) -> None:
    target = patch.get("target")
    if not target or "path" not in patch:
        raise ManifestError(f"{path}: the built-in builder supports only JSON 6902 patches with `path` and `target`")
    operations = _read_yaml(path / patch["path"])
    if not isinstance(operations, list):
        raise ManifestError(f"{path}/{patch['path']}: strategic-merge patches need kustomize; use JSON 6902 ops")
    matches = [obj for obj in objs if _matches(obj, target)]
    if not matches:
        raise ManifestError(f"{path}: patch {patch['path']} matches no object ({target})")
    for obj in matches:
        for op in operations:
            _apply_operation(obj, op, f"{path}/{patch['path']}")


def _matches(obj: Obj, target: Obj) -> bool:
    group = obj.get("apiVersion", "").rpartition("/")[0]
    return (
        target.get("kind", obj.get("kind")) == obj.get("kind")
        and target.get("name", obj["metadata"].get("name")) == obj["metadata"].get("name")
        and target.get("group", group) == group
    )


def _apply_operation(obj: Obj, op: Obj, where: str) -> None:
    tokens = [t.replace("~1", "/").replace("~0", "~") for t in op["path"].lstrip("/").split("/")]
    parent: Any = obj
    for token in tokens[:-1]:
        parent = parent[int(token)] if isinstance(parent, list) else parent.get(token)
        if parent is None:
            raise ManifestError(f"{where}: path {op['path']} does not exist")
    last = tokens[-1]
    kind = op.get("op")
    if isinstance(parent, list):
        index = len(parent) if last == "-" else int(last)
        if kind == "add":
            parent.insert(index, copy.deepcopy(op["value"]))
        elif kind == "replace":
            parent[index] = copy.deepcopy(op["value"])
        elif kind == "remove":
            del parent[index]
        else:
            raise ManifestError(f"{where}: JSON 6902 op {kind!r} needs kustomize")
        return
    if kind in ("replace", "remove") and last not in parent:
        raise ManifestError(f"{where}: path {op['path']} does not exist")
    if kind in ("add", "replace"):
        parent[last] = copy.deepcopy(op["value"])
    elif kind == "remove":
        del parent[last]
    else:
        raise ManifestError(f"{where}: JSON 6902 op {kind!r} needs kustomize")


def _add_labels(labels: list[Obj], objs: list[Obj]) -> None:
    for entry in labels:
        if entry.get("includeSelectors") or entry.get("includeTemplates"):
            raise ManifestError("labels with includeSelectors/includeTemplates need kustomize")
        for obj in objs:
            obj.setdefault("metadata", {}).setdefault("labels", {}).update(entry.get("pairs", {}))


# --- lookups --------------------------------------------------------------------------------------------------------


def of_kind(objs: Iterable[Obj], api_version: str, kind: str) -> list[Obj]:
    return [o for o in objs if o.get("apiVersion") == api_version and o.get("kind") == kind]


def knative_services(objs: Iterable[Obj]) -> list[Obj]:
    """The Knative Services (``serving.knative.dev/v1``), not core ``v1`` Services."""
    return of_kind(objs, SERVING_API, "Service")


def brokers(objs: Iterable[Obj]) -> list[Obj]:
    return of_kind(objs, EVENTING_API, "Broker")


def triggers(objs: Iterable[Obj]) -> list[Obj]:
    return of_kind(objs, EVENTING_API, "Trigger")


def find(objs: Iterable[Obj], kind: str, name: str, api_version: str | None = None) -> Obj:
    """The one object of ``kind`` named ``name``; ``ManifestError`` when there is none."""
    for obj in objs:
        if (obj.get("kind") == kind and obj["metadata"].get("name") == name
                and (api_version is None or obj.get("apiVersion") == api_version)):
            return obj
    raise ManifestError(f"no {kind} named {name!r} in the manifests")


def autoscaling_annotations(service: Obj) -> dict[str, str]:
    """The revision template's ``autoscaling.knative.dev/*`` annotations, keyed without the prefix.

    Old camelCase keys (``minScale``) are returned under their current names (``min-scale``), as Knative reads them.
    """
    annotations = service.get("spec", {}).get("template", {}).get("metadata", {}).get("annotations", {}) or {}
    out: dict[str, str] = {}
    for key, value in annotations.items():
        if key.startswith(AUTOSCALING_PREFIX):
            short = key[len(AUTOSCALING_PREFIX):]
            out.setdefault(_CAMEL_AUTOSCALING_KEYS.get(short, short), value)
    return out


def container_concurrency(service: Obj) -> int:
    """The per-pod request limit; 0 means unlimited."""
    return int(service.get("spec", {}).get("template", {}).get("spec", {}).get("containerConcurrency", 0))


def main_container(service: Obj) -> Obj:
    """The serving container of a Knative Service (the one with a port, else the only one)."""
    containers = service["spec"]["template"]["spec"]["containers"]
    with_port = [c for c in containers if c.get("ports")]
    return (with_port or containers)[0]


def container_env(container: Obj, objs: Iterable[Obj]) -> dict[str, str]:
    """The container's environment with ConfigMap and Secret references resolved from ``objs``.

    ``envFrom`` first, then ``env`` (which wins), as the kubelet does. A reference marked ``optional`` to an object
    that is not in ``objs`` is skipped; a required one raises ``ManifestError`` naming it.
    """
    objs = list(objs)
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        ref_kind, ref = ("ConfigMap", source["configMapRef"]) if "configMapRef" in source else (
            "Secret", source["secretRef"])
        data = _referenced_data(objs, ref_kind, ref["name"], bool(ref.get("optional")))
        prefix = source.get("prefix", "")
        env.update({prefix + k: v for k, v in data.items()})
    for var in container.get("env", []):
        if "value" in var:
            env[var["name"]] = str(var["value"])
            continue
        source = var.get("valueFrom", {})
        ref_kind, ref = ("ConfigMap", source.get("configMapKeyRef")) if "configMapKeyRef" in source else (
            "Secret", source.get("secretKeyRef"))
        if ref is None:
            continue  # fieldRef/resourceFieldRef only have meaning in a pod
        data = _referenced_data(objs, ref_kind, ref["name"], bool(ref.get("optional")))
        if ref["key"] in data:
            env[var["name"]] = data[ref["key"]]
        elif not ref.get("optional"):
            raise ManifestError(f"env {var['name']}: {ref_kind} {ref['name']!r} has no key {ref['key']!r}")
    return env


def _referenced_data(objs: list[Obj], kind: str, name: str, optional: bool) -> dict[str, str]:
    try:
        obj = find(objs, kind, name, "v1")
    except ManifestError:
        if optional:
            return {}
        raise
    data = {k: base64.b64decode(v).decode() for k, v in (obj.get("data") or {}).items()} if kind == "Secret" else {
        k: str(v) for k, v in (obj.get("data") or {}).items()}
    data.update(obj.get("stringData") or {})
    return data
