"""The thin I/O shell around the Kubernetes API: connect, check Knative is installed, apply, wait, read, set traffic.

Knative kinds go through ``CustomObjectsApi`` (``serving.knative.dev/v1``, ``eventing.knative.dev/v1``), core kinds
through the typed ``CoreV1Api`` and ``AppsV1Api``. Apply is create-or-patch: GET, then POST on 404 or PATCH on 200
(a JSON merge patch for Knative objects, a strategic merge patch for core ones). Fields absent from the manifests
are left as they are on the cluster, which is what keeps a canary's ``spec.traffic`` across deploys.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from tqdm import tqdm

from knative.deploy.errors import ApiRejected, ClusterUnreachable, KnativeMissing, NoKubeconfig, NotReady
from knative.validation import describe

FIELD_MANAGER = "hiddenstate"
# A revision that failed this way will not recover by waiting; everything else may still converge.
TERMINAL_REASONS = frozenset({"RevisionFailed", "ContainerMissing"})
MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"

Obj = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Kind:
    """How to reach one kind: a custom resource (group, version, plural) or a typed API (``core``/``apps``, suffix)."""

    api_version: str
    kind: str
    plural: str
    typed: tuple[str, str] | None = None
    namespaced: bool = True

    @property
    def group(self) -> str:
        return self.api_version.rpartition("/")[0]

    @property
    def version(self) -> str:
        return self.api_version.rpartition("/")[2]


KINDS: dict[tuple[str, str], Kind] = {(k.api_version, k.kind): k for k in (
    Kind("v1", "Namespace", "namespaces", ("core", "namespace"), namespaced=False),
    Kind("v1", "ConfigMap", "configmaps", ("core", "config_map")),
    Kind("v1", "Secret", "secrets", ("core", "secret")),
    Kind("v1", "Service", "services", ("core", "service")),
    Kind("apps/v1", "Deployment", "deployments", ("apps", "deployment")),
    Kind("apps/v1", "StatefulSet", "statefulsets", ("apps", "stateful_set")),
    Kind("serving.knative.dev/v1", "Service", "services"),
    Kind("eventing.knative.dev/v1", "Broker", "brokers"),
    Kind("eventing.knative.dev/v1", "Trigger", "triggers"),
)}
KSVC = KINDS[("serving.knative.dev/v1", "Service")]


def kind_of(obj: Obj) -> Kind:
    try:
        return KINDS[(obj.get("apiVersion", ""), obj.get("kind", ""))]
    except KeyError:
        raise ApiRejected(f"{describe(obj)}: the deploy tool does not handle {obj.get('apiVersion')} "
                          f"{obj.get('kind')}") from None


def readiness(obj: Obj) -> tuple[str, str]:
    """``("ready" | "pending" | "failed", why)`` for an object as read back from the cluster (pure)."""
    meta, status = obj.get("metadata", {}), obj.get("status") or {}
    if obj.get("kind") in ("Deployment", "StatefulSet"):
        want = obj.get("spec", {}).get("replicas", 1)
        have = status.get("availableReplicas" if obj["kind"] == "Deployment" else "readyReplicas") or 0
        return ("ready", "") if have >= want else ("pending", f"{have}/{want} replicas ready")
    if obj.get("kind") not in ("Service", "Broker", "Trigger") or not obj.get("apiVersion", "").endswith(
            "knative.dev/v1"):
        return "ready", ""
    if status.get("observedGeneration", 0) < meta.get("generation", 0):
        return "pending", "the controller has not seen this generation yet"
    ready = next((c for c in status.get("conditions", []) if c.get("type") == "Ready"), None)
    if ready is None:
        return "pending", "no Ready condition yet"
    why = ": ".join(p for p in (ready.get("reason"), ready.get("message")) if p)
    if ready.get("status") == "True":
        return "ready", ""
    if ready.get("status") == "False" and ready.get("reason") in TERMINAL_REASONS:
        return "failed", why
    return "pending", f"Ready={ready.get('status')} {why}".strip()


class Cluster:
    """One connection to an API server."""

    def __init__(self, api_client: client.ApiClient) -> None:
        self.api_client = api_client
        self.core = client.CoreV1Api(api_client)
        self.apps = client.AppsV1Api(api_client)
        self.custom = client.CustomObjectsApi(api_client)

    @classmethod
    def connect(cls, kubeconfig: str | Path | None = None, context: str | None = None) -> Cluster:
        """From ``kubeconfig`` (else ``$KUBECONFIG``, else ``~/.kube/config``), or the in-cluster service account."""
        try:
            return cls(config.new_client_from_config(config_file=str(kubeconfig) if kubeconfig else None,
                                                     context=context))
        except (config.ConfigException, OSError) as kube_error:
            configuration = client.Configuration()
            try:
                config.load_incluster_config(client_configuration=configuration)
            except config.ConfigException:
                raise NoKubeconfig(
                    f"no usable kubeconfig ({kube_error}); set KUBECONFIG or pass --kubeconfig, or run in a pod "
                    "with a service account"
                ) from kube_error
            return cls(client.ApiClient(configuration))

    # --- reads ------------------------------------------------------------------------------------------------------

    def require_groups(self, objs: Iterable[Obj]) -> None:
        """Fail with ``KnativeMissing`` when a Knative group the objects use is not served."""
        groups = sorted({(k.group, k.version) for k in map(kind_of, objs) if k.typed is None})
        for group, version in groups:
            try:
                self._call(self.custom.get_api_resources, group, version)
            except ApiRejected as error:
                if error.status == 404:
                    raise KnativeMissing(
                        f"the cluster does not serve {group}/{version}: install Knative "
                        f"{'Serving' if group.startswith('serving') else 'Eventing'} (its CRDs) first"
                    ) from error
                raise

    def get(self, obj: Obj) -> Obj | None:
        """The object as the cluster has it, or ``None`` when it does not exist."""
        kind, name, namespace = kind_of(obj), obj["metadata"]["name"], obj["metadata"].get("namespace")
        try:
            if kind.typed:
                found = self._call(self._typed(kind, "read"), *self._where(kind, name, namespace))
                return self.api_client.sanitize_for_serialization(found)
            return self._call(self.custom.get_namespaced_custom_object, kind.group, kind.version, namespace,
                              kind.plural, name)
        except ApiRejected as error:
            if error.status == 404:
                return None
            raise

    def list_revisions(self, namespace: str, service: str) -> list[Obj]:
        listed = self._call(self.custom.list_namespaced_custom_object, "serving.knative.dev", "v1", namespace,
                            "revisions", label_selector=f"serving.knative.dev/service={service}")
        return listed.get("items", [])

    # --- writes -----------------------------------------------------------------------------------------------------

    def apply(self, obj: Obj, dry_run: bool = False) -> tuple[str, Obj]:
        """Create ``obj``, or patch it if it exists. Returns ``("created" | "patched", object as stored)``."""
        kind, name, namespace = kind_of(obj), obj["metadata"]["name"], obj["metadata"].get("namespace")
        if kind.namespaced and not namespace:
            raise ApiRejected(f"{describe(obj)} has no metadata.namespace; set `namespace:` in the kustomization")
        options: dict[str, Any] = {"field_manager": FIELD_MANAGER, "field_validation": "Strict"}
        if dry_run:
            options["dry_run"] = "All"
        exists = self.get(obj) is not None
        if kind.typed:
            if exists:
                result = self._call(self._typed(kind, "patch"), *self._where(kind, name, namespace), obj,
                                    _content_type=STRATEGIC_MERGE_PATCH, **options)
            else:
                where = (namespace,) if kind.namespaced else ()
                result = self._call(self._typed(kind, "create"), *where, obj, **options)
            return ("patched" if exists else "created"), self.api_client.sanitize_for_serialization(result)
        if exists:
            result = self._call(self.custom.patch_namespaced_custom_object, kind.group, kind.version, namespace,
                                kind.plural, name, obj, _content_type=MERGE_PATCH, **options)
            return "patched", result
        result = self._call(self.custom.create_namespaced_custom_object, kind.group, kind.version, namespace,
                            kind.plural, obj, **options)
        return "created", result

    def set_traffic(self, namespace: str, service: str, traffic: list[Obj]) -> Obj:
        """Replace the Knative Service's ``spec.traffic`` (a merge patch replaces the whole list)."""
        return self._call(self.custom.patch_namespaced_custom_object, KSVC.group, KSVC.version, namespace,
                          KSVC.plural, service, {"spec": {"traffic": traffic}}, _content_type=MERGE_PATCH,
                          field_manager=FIELD_MANAGER)

    # --- waiting ----------------------------------------------------------------------------------------------------

    def wait_ready(self, objs: list[Obj], timeout_s: float = 600.0, poll_s: float = 2.0,
                   progress: bool = True, clock: Callable[[], float] = time.monotonic) -> list[Obj]:
        """Poll until every object is ready; returns them as read back. ``NotReady`` names each laggard and why."""
        waiting = {describe(o): o for o in objs if _waits_for(o)}
        done: dict[str, Obj] = {}
        deadline = clock() + timeout_s
        with tqdm(total=len(waiting), desc="waiting for Ready", unit="obj", disable=not progress) as bar:
            while True:
                reasons: dict[str, str] = {}
                for label, obj in list(waiting.items()):
                    current = self.get(obj)
                    state, why = readiness(current) if current else ("pending", "not found")
                    if state == "failed":
                        raise NotReady(f"{label} is not Ready: {why}")
                    if state == "ready":
                        done[label] = current or obj
                        del waiting[label]
                        bar.update(1)
                    else:
                        reasons[label] = why
                if not waiting:
                    return list(done.values())
                bar.set_postfix_str(", ".join(sorted(waiting))[:60])
                if clock() >= deadline:
                    raise NotReady("timed out waiting for Ready: " + "; ".join(
                        f"{label} ({reasons[label]})" for label in sorted(reasons)))
                time.sleep(poll_s)

    # --- plumbing ---------------------------------------------------------------------------------------------------

    def _typed(self, kind: Kind, verb: str) -> Callable[..., Any]:
        api = self.core if kind.typed[0] == "core" else self.apps
        scope = "namespaced_" if kind.namespaced else ""
        return getattr(api, f"{verb}_{scope}{kind.typed[1]}")

    @staticmethod
    def _where(kind: Kind, name: str, namespace: str | None) -> tuple[str, ...]:
        return (name, namespace) if kind.namespaced else (name,)

    def _call(self, method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        try:
            return method(*args, **kwargs)
        except ApiException as error:
            raise ApiRejected(f"{method.__name__}: HTTP {error.status} {error.reason}: {_message(error)}",
                              status=error.status) from error
        except (urllib3.exceptions.HTTPError, OSError) as error:
            host = self.api_client.configuration.host
            raise ClusterUnreachable(f"the API server at {host} did not answer: {error}") from error


def _waits_for(obj: Obj) -> bool:
    """Kinds whose readiness is worth waiting for (the rest are ready once stored)."""
    return obj.get("kind") in ("Deployment", "StatefulSet", "Broker", "Trigger") or (
        obj.get("kind") == "Service" and obj.get("apiVersion") == KSVC.api_version)


def _message(error: ApiException) -> str:
    try:
        return json.loads(error.body or "{}").get("message") or str(error.body)
    except ValueError:
        return str(error.body)


def urls(objs: Iterable[Obj]) -> dict[str, str]:
    """``{"Service/scorer": url, "Broker/default": url}`` from objects read back after they became Ready."""
    out: dict[str, str] = {}
    for obj in objs:
        status = obj.get("status") or {}
        url = status.get("url") or (status.get("address") or {}).get("url")
        if url:
            out[describe(obj)] = url
    return out
