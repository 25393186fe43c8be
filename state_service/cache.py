"""A client's own recent writes, kept so that its next update of the same entity skips the read.

An update computed from a cached state expects exactly the cached bytes (``hs_cas_many`` compares them), so the
cache can be stale but never wrong: a state another writer moved on, or erased and rebuilt to the same version,
comes back as a conflict with the stored state, and the caller recomputes on that. What a stale entry wastes is a
compare-and-set round and a recomputation, against the read it saves.

That pays while one instance sees an entity's events one after another (one scorer, or events routed by entity),
and loses for entities that instances take turns at: a hot merchant whose events every pod gets. Those show up as
keys that conflict again and again, where a store emptied or restored under the client makes each key conflict
once. So the first conflict of a key only refreshes its entry; a key that conflicts again is *shared*, and is read
from Valkey from then on. A governor watches the rest: when repeat conflicts still come to more than a quarter of
the cached reads (instances taking turns at everything: a Trigger spreading a stream over many pods), reads bypass
the cache for a while, then try it again.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from contextlib import suppress

from state_service import metrics


def _trim(keys: dict, limit: int) -> None:
    """Drop the keys inserted first until at most ``limit`` remain."""
    with suppress(StopIteration, RuntimeError):  # emptied or resized by another thread meanwhile
        for _ in range(len(keys) - limit):
            keys.pop(next(iter(keys)), None)


class StateCache:
    """Stored bytes by state key, at most ``entries`` of them; shared keys left out; a governor over the rest.

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
        self._conflicted: dict[str, None] = {}  # keys that conflicted once
        self._shared: dict[str, None] = {}  # keys that conflicted again: read from Valkey
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

    def lookup(self, state_keys: list[str]) -> list[bytes | None]:
        """The cached bytes of each key, None for keys not cached or shared. Counts the hits for the governor."""
        get = self._raws.get
        raws = [get(name) for name in state_keys]
        self._used += len(raws) - raws.count(None)
        if self._used >= self.window:
            self._judge()
        return raws

    def is_shared(self, state_key: str) -> bool:
        return state_key in self._shared

    def put(self, state_key: str, raw: bytes) -> None:
        self.put_many([state_key], [raw])

    def put_many(self, state_keys: list[str], raws: list[bytes]) -> None:
        """Keep ``raws`` by key, except shared keys. Past ``entries``, the keys cached first go first: a key written
        again keeps its place, which spares a batch the per-key work of moving it (one ``dict.update``)."""
        shared = self._shared
        if shared:
            kept = [i for i, name in enumerate(state_keys) if name not in shared]
            if len(kept) < len(state_keys):
                state_keys, raws = [state_keys[i] for i in kept], [raws[i] for i in kept]
        if len(state_keys) > self.entries:
            state_keys, raws = state_keys[-self.entries :], raws[-self.entries :]
        self._raws.update(zip(state_keys, raws, strict=True))
        _trim(self._raws, self.entries)

    def drop(self, state_key: str) -> None:
        self._raws.pop(state_key, None)

    def conflicted(self, state_keys: Iterable[str]) -> None:
        """Account for updates of ``state_keys`` that conflicted (their entries are refreshed by the caller)."""
        repeats = 0
        for name in state_keys:
            if self._conflicted.pop(name, 0) is None:
                self._shared[name] = None
                self._raws.pop(name, None)
                repeats += 1
            else:
                self._conflicted[name] = None
        if repeats:
            metrics.CACHE_STALE.inc(repeats)
            _trim(self._shared, self.entries)
        _trim(self._conflicted, self.entries)
        self._stale += repeats

    def _judge(self) -> None:
        """Close a window of cached reads: too many repeat conflicts since the last one pause cached reads."""
        if self._stale > self.max_stale * self._used:
            self._paused_until = self._clock() + self.pause_s
            metrics.CACHE_BYPASSED.set(1)
        self._used = self._stale = 0
