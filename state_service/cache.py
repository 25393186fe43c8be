"""A client's own recent writes, kept so that its next update of the same entity skips the read.

An update computed from a cached state expects exactly the cached bytes (``hs_cas_many`` compares them), so the
cache can be stale but never wrong: a state another writer moved on, or erased and rebuilt to the same version,
comes back as a conflict with the stored state, and the caller recomputes on that. What a stale entry wastes is a
compare-and-set round and a recomputation, against the read it saves. That pays while one instance sees an entity's
events one after another (one scorer, or events routed by entity), and loses when instances take turns at the same
entities (Knative spreads a Trigger's events over every pod). So a governor watches the reads the cache answered:
when too many of them turn out stale, reads bypass the cache for a while, then try it again.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import suppress

from state_service import metrics


class StateCache:
    """Stored bytes by state key, at most ``entries`` of them, with a governor that turns reads off while stale.

    Safe to share between threads without a lock: each operation is one or two dict operations, and a lost race
    costs at most a read or a stale entry, which the compare-and-set catches."""

    def __init__(self, entries: int, *, window: int = 512, max_stale: float = 0.25, pause_s: float = 30.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if entries < 1:
            raise ValueError("a StateCache needs room for at least one entry")
        self.entries = entries
        self.window = window
        self.max_stale = max_stale
        self.pause_s = pause_s
        self._clock = clock
        self._raws: dict[str, bytes] = {}
        self._used = 0
        self._stale = 0
        self._paused_until = 0.0
        metrics.CACHE_BYPASSED.set(0)

    def __len__(self) -> int:
        return len(self._raws)

    @property
    def reading(self) -> bool:
        """Whether reads use the cache now (the governor has not paused it)."""
        if not self._paused_until:
            return True
        if self._clock() < self._paused_until:
            return False
        self._paused_until = 0.0
        self._used = self._stale = 0  # conflicts while paused say nothing about cached reads
        metrics.CACHE_BYPASSED.set(0)
        return True

    def get(self, state_key: str) -> bytes | None:
        return self._raws.get(state_key)

    def put(self, state_key: str, raw: bytes) -> None:
        self.put_many([state_key], [raw])

    def put_many(self, state_keys: list[str], raws: list[bytes]) -> None:
        """Keep ``raws`` by key. Past ``entries``, the keys cached first go first: a key written again keeps its
        place, which spares a batch the per-key work of moving it (one ``dict.update`` for the batch)."""
        if len(state_keys) > self.entries:
            state_keys, raws = state_keys[-self.entries :], raws[-self.entries :]
        cached = self._raws
        cached.update(zip(state_keys, raws, strict=True))
        with suppress(StopIteration, RuntimeError):  # emptied or resized by another thread meanwhile
            for _ in range(len(cached) - self.entries):
                cached.pop(next(iter(cached)), None)

    def drop(self, state_key: str) -> None:
        self._raws.pop(state_key, None)

    def hits(self, count: int) -> None:
        """Account for ``count`` states read from the cache."""
        self._used += count

    def conflicts(self, count: int) -> None:
        """Account for ``count`` conflicting updates. Conflicts per cached read is what the governor watches: a
        conflict costs a compare-and-set round and a recomputation, a cached read saves a read."""
        if not count and self._used < self.window:
            return
        if count:
            metrics.CACHE_STALE.inc(count)
        self._stale += count
        if self._used < self.window:
            return
        if self._stale > self.max_stale * self._used:
            self._paused_until = self._clock() + self.pause_s
            metrics.CACHE_BYPASSED.set(1)
        self._used = self._stale = 0
