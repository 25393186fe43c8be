"""The deploy tool's failures. Each carries a message that says what to do next."""

from __future__ import annotations


class DeployError(Exception):
    """Base class: the deploy could not be done as asked."""


class NoKubeconfig(DeployError):
    """No usable kubeconfig and not running inside a cluster."""


class ClusterUnreachable(DeployError):
    """The API server did not answer."""


class KnativeMissing(DeployError):
    """The cluster does not serve a Knative API group (its CRDs are not installed)."""


class NotReady(DeployError):
    """An object's Ready condition is False, or it did not become Ready in time."""


class ApiRejected(DeployError):
    """The API server refused a request (validation, permissions, conflict); ``status`` is the HTTP code."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class TrafficError(DeployError):
    """A canary or rollback cannot be computed from the Service's current revisions."""
