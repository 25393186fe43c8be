"""Command-line overrides applied to the kustomize output (pure: objects in, new objects out)."""

from __future__ import annotations

import copy
from typing import Any

from knative.manifests import SERVING_API, ManifestError, find, main_container

SCORER_SERVICE = "scorer"
SCORER_CONFIG = "scorer-config"

Obj = dict[str, Any]


def customize(
    objs: list[Obj], *, namespace: str | None = None, image: str | None = None, model_uri: str | None = None,
    admin_image: str | None = None,
) -> list[Obj]:
    """A copy of ``objs`` with the namespace, the scorer image, the admin image and the model URI overridden.

    ``image`` replaces the scorer's image everywhere it is used (the event-display sink runs from the same image).
    """
    out = copy.deepcopy(objs)
    if image:
        old = main_container(find(out, "Service", SCORER_SERVICE, SERVING_API))["image"]
        _replace_image(out, old, image)
    if admin_image:
        old = find(out, "Deployment", "state-admin", "apps/v1")["spec"]["template"]["spec"]["containers"][0]["image"]
        _replace_image(out, old, admin_image)
    if model_uri:
        config = find(out, "ConfigMap", SCORER_CONFIG, "v1")
        if "MODEL_URI" not in (config.get("data") or {}):
            raise ManifestError(f"ConfigMap {SCORER_CONFIG} has no MODEL_URI to override")
        config["data"]["MODEL_URI"] = model_uri
    if namespace:
        _move_namespace(out, namespace)
    return out


def namespace_of(objs: list[Obj]) -> str:
    """The namespace the manifests put their objects in."""
    for obj in objs:
        if ns := obj.get("metadata", {}).get("namespace"):
            return ns
    raise ManifestError("the manifests set no namespace")


def _replace_image(objs: list[Obj], old: str, new: str) -> None:
    for obj in objs:
        for container in _pod_spec(obj).get("containers", []):
            if container.get("image") == old:
                container["image"] = new


def _pod_spec(obj: Obj) -> Obj:
    return obj.get("spec", {}).get("template", {}).get("spec", {}) if obj.get("kind") in (
        "Service", "Deployment", "StatefulSet") else {}


def _move_namespace(objs: list[Obj], namespace: str) -> None:
    old = namespace_of(objs)
    for obj in objs:
        metadata = obj.setdefault("metadata", {})
        if obj.get("kind") == "Namespace" and metadata.get("name") == old:
            metadata["name"] = namespace
        elif "namespace" in metadata:
            metadata["namespace"] = namespace
        # References that name the namespace explicitly (the Kafka broker's config) move with it.
        config = obj.get("spec", {}).get("config") if obj.get("kind") == "Broker" else None
        if config and config.get("namespace") == old:
            config["namespace"] = namespace
