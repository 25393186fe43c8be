"""The state service's errors: a small set of types that callers map to HTTP answers in one place.

``StateUnavailable`` means "try again later" (the scorer answers 503 with Retry-After); ``StateCorrupt`` and
``InvalidStateRequest`` are bugs or bad data that a retry will not fix.
"""

from __future__ import annotations

from typing import Any


class StateError(Exception):
    """Base class of every state-service error."""


class StateUnavailable(StateError):
    """Valkey cannot be reached, timed out, is loading its data set, or refused our credentials."""


class LibraryMissing(StateError):
    """The Valkey Functions library is absent or at another version than this client speaks."""


class StateCorrupt(StateError):
    """Stored bytes that do not decode as a state value. ``key`` names the Valkey key and ``entity``, when known,
    the entity it belongs to (keys are digests, so an operator needs both)."""

    def __init__(self, key: str, detail: str, entity: str | None = None) -> None:
        where = f"of {entity} at key {key!r}" if entity else f"at key {key!r}"
        super().__init__(f"corrupt state {where}: {detail}")
        self.key = key
        self.detail = detail
        self.entity = entity


class ConflictRetriesExhausted(StateError):
    """Compare-and-set kept conflicting after the bounded number of attempts.

    ``results`` holds the last result per key, so a caller can tell which entities were written."""

    def __init__(self, keys: list[Any], attempts: int, results: list[Any]) -> None:
        names = ", ".join(str(k) for k in keys[:5]) + (" ..." if len(keys) > 5 else "")
        super().__init__(f"{len(keys)} entities still conflicting after {attempts} attempts: {names}")
        self.keys = keys
        self.attempts = attempts
        self.results = results


class InvalidStateRequest(StateError, ValueError):
    """A caller passed something the protocol cannot store (bad entity id, wrong hidden size, oversized receipt)."""
