"""What to run for one Knative Service, read from its manifest: the local stand-in for a Revision.

The image is ignored: the container's ``command`` + ``args`` run as a local process with the container's ``env``
(ConfigMap and Secret references resolved from the same manifests), ``python`` meaning this interpreter, and the
runtime contract's ``PORT``, ``K_SERVICE``, ``K_REVISION`` and ``K_CONFIGURATION`` set per instance.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from knative import manifests
from knative.local.serving.config import ScalingSettings, scaling_settings

DEFAULT_TIMEOUT_S = 300.0
_PYTHON_NAMES = frozenset({"python", "python3", "python3.11"})


@dataclass(frozen=True)
class ServiceSpec:
    """One Knative Service as the local runtime runs it."""

    name: str
    command: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=dict)
    namespace: str = "default"
    revision: str = ""
    container_concurrency: int = 0
    timeout_s: float = DEFAULT_TIMEOUT_S
    readiness_path: str | None = "/health/readiness"
    scaling: ScalingSettings = field(default_factory=ScalingSettings)

    @property
    def revision_name(self) -> str:
        return self.revision or f"{self.name}-00001"

    @property
    def module(self) -> str | None:
        """The module of a ``python -m MODULE`` command, the only kind fork mode can pre-initialise."""
        if len(self.command) >= 3 and self.command[1] == "-m" and self.command[0] == sys.executable:
            return self.command[2]
        return None

    def instance_env(self, port: int) -> dict[str, str]:
        """The environment of one instance: the container env plus Knative's runtime-contract variables."""
        return {
            **self.env,
            "PORT": str(port),
            "K_SERVICE": self.name,
            "K_CONFIGURATION": self.name,
            "K_REVISION": self.revision_name,
        }


def resolve_command(command: Sequence[str]) -> tuple[str, ...]:
    """The container command with ``python`` replaced by this interpreter (the project's venv)."""
    if not command:
        raise manifests.ManifestError("container has no command; the local runtime cannot run an image entrypoint")
    head, *rest = command
    return (sys.executable if head in _PYTHON_NAMES else head, *rest)


def service_spec(
    service: dict[str, Any],
    objs: Sequence[dict[str, Any]],
    cluster: Mapping[str, str] | None = None,
    env_overrides: Mapping[str, str] | None = None,
) -> ServiceSpec:
    """The ``ServiceSpec`` of a Knative Service manifest, with env overrides (local Valkey, local model) applied."""
    metadata = service.get("metadata", {})
    template = service.get("spec", {}).get("template", {})
    container = manifests.main_container(service)
    env = manifests.container_env(container, objs)
    env.update(env_overrides or {})
    probe = container.get("readinessProbe") or {}
    readiness_path = probe["httpGet"].get("path", "/") if "httpGet" in probe else None
    cc = manifests.container_concurrency(service)
    return ServiceSpec(
        name=metadata["name"],
        namespace=metadata.get("namespace", "default"),
        revision=template.get("metadata", {}).get("name", ""),
        command=resolve_command([*container.get("command", []), *container.get("args", [])]),
        env=env,
        container_concurrency=cc,
        timeout_s=float(template.get("spec", {}).get("timeoutSeconds", DEFAULT_TIMEOUT_S)),
        readiness_path=readiness_path,
        scaling=scaling_settings(manifests.autoscaling_annotations(service), cc, cluster),
    )
