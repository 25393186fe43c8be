"""The eventing half's errors: one type for a Broker, Trigger or delivery spec the local runtime cannot run."""

from __future__ import annotations


class EventingConfigError(ValueError):
    """A Broker, Trigger or delivery spec that is invalid, or valid for Knative but not supported locally.

    Raised when the broker is built, never while events flow, so a bad manifest fails ``up`` at once.
    """

    def __init__(self, detail: str, where: str | None = None) -> None:
        super().__init__(f"{where}: {detail}" if where else detail)
        self.detail = detail
        self.where = where


class UnsupportedFilter(EventingConfigError):
    """A Trigger filter dialect Knative knows but the local runtime does not run (``cesql``)."""
