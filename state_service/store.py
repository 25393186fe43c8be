"""``StateStore``: the one client that speaks the state protocol (key layout, value codec, the Functions library).

>>> store = StateStore("redis://127.0.0.1:6379/0", hidden_size=64)          # doctest: +SKIP
>>> store.ensure_library()                                                  # doctest: +SKIP
>>> [state] = store.read_many([EntityKey("fraud-gru@v3", "card", "c1")])     # doctest: +SKIP
>>> state.version                                                           # doctest: +SKIP
0

Round trips: ``read_many`` is one MGET, ``compare_and_set_many`` one FCALL, whatever the batch size.
"""

from __future__ import annotations

import enum
import logging
import os
import random
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import valkey
from prometheus_client import Histogram
from valkey.backoff import EqualJitterBackoff
from valkey.exceptions import (
    BusyLoadingError,
    NoPermissionError,
    OutOfMemoryError,
    ReadOnlyError,
    ResponseError,
)
from valkey.exceptions import ConnectionError as ValkeyConnectionError
from valkey.exceptions import TimeoutError as ValkeyTimeoutError
from valkey.retry import Retry

from state_service import metrics
from state_service.codec import (
    HEADER_SIZE,
    LAYOUT_VERSION,
    VERSION_BYTES,
    EntityState,
    InvalidEntry,
    decode_applied,
    decode_state,
    decode_states,
    encode_applied,
    encode_states,
    event_digest,
)
from state_service.errors import (
    ConflictRetriesExhausted,
    InvalidStateRequest,
    LibraryMissing,
    StateCorrupt,
    StateError,
    StateUnavailable,
)
from state_service.keys import EntityKey, check_state_key, state_key_pattern
from state_service.library import (
    CAS_FUNCTION,
    LIBRARY_NAME,
    RESTORE_FUNCTION,
    VERSION_FUNCTION,
    library_source,
    library_version,
)
from state_service.settings import StateSettings

__all__ = [
    "AppliedEvent",
    "EntityKey",
    "EntityState",
    "Outcome",
    "StateStore",
    "StateUpdate",
    "UpdateResult",
]

log = logging.getLogger(__name__)
URL_SCHEMES = ("redis", "rediss", "valkey", "valkeys")
_TLS_SCHEMES = ("rediss", "valkeys")
_BACKOFF_DOUBLINGS = 5
MAX_EVENTS_PER_UPDATE = 1000  # the library unpacks an update's digests onto Lua's stack (about 8,000 slots)


@dataclass(frozen=True, slots=True)
class AppliedEvent:
    event_key: str  # the contract's Transaction.dedupe_key; the store keeps only a 16-byte hash of it
    receipt: bytes  # opaque, at most 16 bytes; returned when the event is redelivered


@dataclass(frozen=True, slots=True)
class StateUpdate:
    key: EntityKey
    expected_version: int  # compare-and-set against the stored version; 0 = the entity must be unseen
    events: tuple[AppliedEvent, ...]  # folded into this state, in order; the version grows by len(events)
    last_event_time: float
    hidden: np.ndarray
    context: bytes = b""
    # The stored bytes the update was computed from (``EntityState.raw``, at ``expected_version``). When given, the
    # compare is on these bytes, not on the version: a state erased and rebuilt to the same version conflicts.
    expected_value: bytes | None = None


class Outcome(enum.Enum):
    APPLIED = "applied"
    CONFLICT = "conflict"
    DUPLICATE = "duplicate"


# Label children bound once: ``labels()`` takes a lock and builds a key on every call, and a lone event's two calls
# to Valkey counted it. Bound at import, every outcome shows on /metrics from the start, at zero.
_OUTCOME_COUNTS = {outcome: metrics.OUTCOMES.labels(outcome.value) for outcome in Outcome}
_CALL_SECONDS: dict[str, Histogram] = {}


@dataclass(frozen=True, slots=True)
class UpdateResult:
    outcome: Outcome
    version: int  # APPLIED: the new version; CONFLICT / DUPLICATE: the stored version
    current: EntityState | None = None  # CONFLICT / DUPLICATE: the stored state, saving the caller a re-read
    duplicates: dict[str, tuple[int, bytes]] = field(default_factory=dict)  # event_key -> (version, receipt)


class StateStore:
    """Per-entity GRU state in Valkey: batched reads, atomic idempotent compare-and-set, bounded conflict retry.

    Thread-safe: one blocking connection pool of ``pool_size`` connections is shared by all threads."""

    def __init__(
        self,
        url: str,
        *,
        hidden_size: int = 64,
        timeout_s: float = 0.5,
        connect_timeout_s: float = 1.0,
        pool_size: int = 32,
        ca_cert: str | None = None,
        dedupe_window_s: int = 900,
        idle_ttl_s: int = 0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        scheme = urlsplit(url).scheme.lower()
        if scheme not in URL_SCHEMES:
            raise InvalidStateRequest(f"VALKEY_URL must start with one of {[s + '://' for s in URL_SCHEMES]}")
        if hidden_size < 1:
            raise InvalidStateRequest("hidden_size must be >= 1")
        tls = {"ssl_ca_certs": ca_cert} if ca_cert and scheme in _TLS_SCHEMES else {}
        self.hidden_size = hidden_size
        self.dedupe_window_s = dedupe_window_s
        self.idle_ttl_s = idle_ttl_s
        self._clock = clock
        # One quick retry on a dropped connection: safe even for FCALL, because a retried update that had been
        # applied comes back as DUPLICATE (dedupe) rather than being applied twice.
        self._url = url
        self._connection_options: dict[str, Any] = dict(
            socket_timeout=timeout_s,
            socket_connect_timeout=connect_timeout_s,
            retry=Retry(EqualJitterBackoff(cap=0.05, base=0.005), 1),
            retry_on_error=[ValkeyConnectionError, ValkeyTimeoutError],
            **tls,
        )
        self._pool = valkey.BlockingConnectionPool.from_url(
            url, max_connections=pool_size, timeout=timeout_s + connect_timeout_s, **self._connection_options)
        self._client = valkey.Valkey(connection_pool=self._pool)
        # Reads and compare-and-sets go through a connection of the calling thread's own: taking one from the shared
        # pool and checking it for stray data cost ~18 us of CPU a command, ~4 % of a lone event's. The pool keeps
        # everything else (readiness, admin), so threads holding connections never starve it.
        # Weakly held: a thread that ends (granian retires idle threads) takes its client and connection with it.
        self._own = threading.local()
        self._own_clients: weakref.WeakSet[valkey.Valkey] = weakref.WeakSet()
        self._own_lock = threading.Lock()
        self._where = _redact(url)

    @classmethod
    def from_env(cls, hidden_size: int = 64) -> StateStore:
        """Build from ``VALKEY_URL`` and friends (see ``StateSettings.from_env``)."""
        s = StateSettings.from_env()
        return cls(
            s.url,
            hidden_size=hidden_size,
            timeout_s=s.timeout_s,
            connect_timeout_s=s.connect_timeout_s,
            pool_size=s.pool_size,
            ca_cert=s.ca_cert,
            dedupe_window_s=s.dedupe_window_s,
            idle_ttl_s=s.idle_ttl_s,
        )

    # -- library -------------------------------------------------------------------------------------------

    def ensure_library(self, *, replace: bool = False) -> None:
        """Load the Functions library unless the expected version is already there (a cheap FCALL_RO), or always
        with ``replace``: the version names the protocol, so a newer body of the same protocol is loaded only so."""
        if not replace and self._loaded_version() == library_version():
            return
        with self._calling("function_load"):
            try:
                self._client.function_load(library_source(), replace=True)
            except NoPermissionError as error:
                raise LibraryMissing(
                    f"library {LIBRARY_NAME!r} v{library_version()} is not loaded and this user may not load it; "
                    "run `hiddenstate state load-library` with the admin URL"
                ) from error
        log.info("loaded valkey functions library", extra={"library": LIBRARY_NAME, "version": library_version()})

    def check_ready(self) -> None:
        """Raise ``StateUnavailable`` unless Valkey answers and the library is loaded at the expected version."""
        with self._calling("ping"):
            self._client.ping()
        loaded = self._loaded_version()
        if loaded != library_version():
            found = "absent" if loaded is None else f"at version {loaded}"
            raise LibraryMissing(
                f"library {LIBRARY_NAME!r} is {found}; this client needs v{library_version()}: "
                "run `hiddenstate state load-library` with the admin URL"
            )

    def _loaded_version(self) -> str | None:
        try:
            with self._calling("library_version"):
                # Asked for our protocol, a body answers with it if it speaks it (protocol-2 bodies ignore the ask).
                reply = self._client.fcall_ro(VERSION_FUNCTION, 0, library_version())
        except LibraryMissing:
            return None
        return reply.decode() if isinstance(reply, bytes) else str(reply)

    # -- reads and writes ----------------------------------------------------------------------------------

    def read_many(self, keys: Sequence[EntityKey]) -> list[EntityState]:
        """States of ``keys`` in order, the unseen default for absent ones; one MGET. Each state carries the bytes
        it was read as (``EntityState.raw``), for an update to expect."""
        if not keys:
            return []
        names = [k.state_key for k in keys]
        with self._calling("read_many"):
            raws = self._thread_client().mget(names)
        try:
            return decode_states(names, raws, self.hidden_size)
        except StateCorrupt as error:
            entity = next(str(k) for k in keys if k.state_key == error.key)
            raise StateCorrupt(error.key, error.detail, entity=entity) from None

    def _decode(self, key: EntityKey, raw: bytes | None) -> EntityState:
        try:
            return decode_state(key.state_key, raw, self.hidden_size)
        except StateCorrupt as error:
            raise StateCorrupt(error.key, error.detail, entity=str(key)) from None

    def compare_and_set_many(self, updates: Sequence[StateUpdate]) -> list[UpdateResult]:
        """Apply a batch of updates in ONE atomic FCALL; per update: APPLIED, CONFLICT or DUPLICATE.

        Entities are independent: one entity's conflict does not stop another's write. Dedupe is checked first,
        so a redelivered event comes back DUPLICATE with its receipt even if the entity moved on since."""
        if not updates:
            return []
        bucket = int(self._clock() // self.dedupe_window_s)
        keys: list[str] = []
        args: list[bytes | int | str] = [(bucket + 2) * self.dedupe_window_s, self.idle_ttl_s * 1000]
        for update in updates:
            _check_update(update)
        try:
            values = encode_states([u.expected_version + len(u.events) for u in updates],
                                   [u.last_event_time for u in updates], [u.hidden for u in updates],
                                   [u.context for u in updates], self.hidden_size)
        except InvalidEntry as error:
            raise InvalidStateRequest(f"{updates[error.index].key}: {error}") from None
        digests: dict[str, bytes] = {}  # an event usually updates two entities: its card and its merchant
        for update, value in zip(updates, values, strict=True):
            keys += [update.key.state_key, update.key.dedupe_key(bucket), update.key.dedupe_key(bucket - 1)]
            args += _update_args(update, value, digests)
        try:
            with self._calling("compare_and_set_many"):
                replies = self._thread_client().fcall(CAS_FUNCTION, len(keys), *keys, *args)
        except StateError as error:
            raise _located(error, updates) from error
        results = [self._result(update, reply) for update, reply in zip(updates, replies, strict=True)]
        counts: dict[Outcome, int] = {}
        for result in results:
            counts[result.outcome] = counts.get(result.outcome, 0) + 1
        for outcome, count in counts.items():
            _OUTCOME_COUNTS[outcome].inc(count)
        return results

    def _result(self, update: StateUpdate, reply: list) -> UpdateResult:
        code, version = int(reply[0]), int(reply[1])
        if code == 0:
            return UpdateResult(Outcome.APPLIED, version)
        current = self._decode(update.key, reply[2])
        if code == 1:
            return UpdateResult(Outcome.CONFLICT, version, current)
        hits = reply[3]
        duplicates = {
            update.events[int(hits[i])].event_key: decode_applied(update.key.state_key, hits[i + 1])
            for i in range(0, len(hits), 2)
        }
        return UpdateResult(Outcome.DUPLICATE, version, current, duplicates)

    def update_with_retry(
        self,
        keys: Sequence[EntityKey],
        compute: Callable[[list[EntityState]], list[StateUpdate]],
        *,
        max_attempts: int = 5,
        backoff_s: float = 0.002,
    ) -> list[UpdateResult]:
        """Read ``keys``, let ``compute`` turn their states into one update per key (same order), compare-and-set,
        and on conflicts re-run ``compute`` with the conflicting entities' fresh states, backing off with jitter
        (up to ``backoff_s`` × 2^attempt, at most 32 × ``backoff_s``).

        ``compute`` always receives a state per key: fresh ones for entities that conflicted, the originally read
        ones for entities already written, so a joint computation (card and merchant together) stays consistent;
        only the conflicting updates are re-sent. Results are aligned with ``keys``. Raises
        ``ConflictRetriesExhausted`` after ``max_attempts`` rounds."""
        keys = list(keys)
        if len(set(keys)) != len(keys):
            raise InvalidStateRequest("update_with_retry needs distinct keys; fold one entity's events together")
        states = self.read_many(keys)
        results: list[UpdateResult | None] = [None] * len(keys)
        pending = list(range(len(keys)))
        for attempt in range(1, max_attempts + 1):
            updates = compute(list(states))
            if len(updates) != len(keys) or any(u.key != k for u, k in zip(updates, keys, strict=False)):
                raise InvalidStateRequest("compute must return one StateUpdate per key, in the order of keys")
            replies = self.compare_and_set_many([updates[i] for i in pending])
            conflicting = []
            for i, result in zip(pending, replies, strict=True):
                results[i] = result
                if result.outcome is Outcome.CONFLICT:
                    conflicting.append(i)
                    states[i] = result.current
            if not conflicting:
                return results  # type: ignore[return-value]
            pending = conflicting
            if attempt < max_attempts:
                metrics.CONFLICT_RETRIES.inc(len(conflicting))
                # Full jitter spreads racing scorers apart; the cap keeps a long retry budget from sleeping seconds.
                time.sleep(random.uniform(0, backoff_s * 2 ** min(attempt - 1, _BACKOFF_DOUBLINGS)))
        raise ConflictRetriesExhausted([keys[i] for i in pending], max_attempts, results)

    def delete(self, key: EntityKey) -> bool:
        """Erase an entity (right to erasure): its state and every dedupe bucket that can still exist.
        Returns whether anything was stored."""
        bucket = int(self._clock() // self.dedupe_window_s)
        # Buckets expire two windows after they open; bucket+1 covers a writer whose clock runs ahead.
        names = [key.state_key] + [key.dedupe_key(b) for b in range(bucket - 2, bucket + 2)]
        with self._calling("delete"):
            return int(self._client.delete(*names)) > 0

    # -- bulk access for snapshots -------------------------------------------------------------------------

    def scan_raw(self, namespace: str | None = None, batch: int = 1000) -> Iterator[list[tuple[str, bytes]]]:
        """Yield batches of (state key, stored bytes) by SCAN + MGET. SCAN returns every key present for the
        whole scan at least once; each value carries its own version, so a restore can order concurrent copies."""
        cursor = 0
        pattern = state_key_pattern(namespace)
        while True:
            with self._calling("scan"):
                cursor, names = self._client.scan(cursor, match=pattern, count=batch, _type="string")
                raws = self._client.mget(names) if names else []
            items = []
            for name, raw in zip(names, raws, strict=True):
                if raw is not None:  # deleted or expired between SCAN and MGET
                    key = name.decode() if isinstance(name, bytes) else name
                    decode_state(key, raw, self.hidden_size)  # never export bytes we could not read back
                    items.append((key, raw))
            if items:
                yield items
            if int(cursor) == 0:
                return

    def restore_raw(self, items: Sequence[tuple[str, bytes]]) -> int:
        """Write exported values unless the stored version is as new or newer. Returns how many were written."""
        if not items:
            return 0
        for name, raw in items:
            check_state_key(name)
            decode_state(name, raw, self.hidden_size)
        with self._calling("restore"):
            return int(
                self._client.fcall(
                    RESTORE_FUNCTION, len(items), *[n for n, _ in items], self.idle_ttl_s * 1000, *[r for _, r in items]
                )
            )

    def count_states(self, namespace: str | None = None) -> int:
        return sum(len(batch) for batch in self.scan_raw(namespace))

    def _thread_client(self) -> valkey.Valkey:
        """This thread's client with a connection of its own, opened on first use (inside ``_calling``, so a
        Valkey that is down maps to ``StateUnavailable``). Keyed by process too: a forked child must not share its
        parent's socket."""
        owned = getattr(self._own, "client", None)
        if owned is not None and owned[0] == os.getpid():
            return owned[1]
        client = valkey.Valkey.from_url(self._url, single_connection_client=True, **self._connection_options)
        self._own.client = (os.getpid(), client)
        with self._own_lock:
            self._own_clients.add(client)
        return client

    def close(self) -> None:
        self._pool.disconnect()
        with self._own_lock:
            clients, self._own_clients = list(self._own_clients), weakref.WeakSet()
        for client in clients:
            client.close()

    def __enter__(self) -> StateStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _calling(self, op: str) -> Iterator[None]:
        """Map valkey-py exceptions onto the state service's few error types, and time the call."""
        started = time.perf_counter()
        try:
            yield
        except NoPermissionError as error:
            raise StateUnavailable(f"{op}: Valkey at {self._where} refused this user the command: {error}") from None
        except (ValkeyConnectionError, ValkeyTimeoutError, BusyLoadingError) as error:
            metrics.UNAVAILABLE.inc()
            raise StateUnavailable(f"{op}: Valkey at {self._where} unavailable: {error}") from None
        except (OutOfMemoryError, ReadOnlyError) as error:
            metrics.UNAVAILABLE.inc()
            raise StateUnavailable(f"{op}: Valkey at {self._where} cannot write: {error}") from None
        except ResponseError as error:
            message = str(error)
            if "Function not found" in message or "Library not found" in message:
                raise LibraryMissing(
                    f"{op}: library {LIBRARY_NAME!r} is not loaded at {self._where}; "
                    "run `hiddenstate state load-library`"
                ) from None
            if message.startswith(("LOADING", "BUSY", "MASTERDOWN", "TRYAGAIN")):
                metrics.UNAVAILABLE.inc()
                raise StateUnavailable(f"{op}: Valkey at {self._where} busy: {message}") from None
            raise StateError(f"{op}: Valkey error: {message}") from None
        finally:
            histogram = _CALL_SECONDS.get(op) or _CALL_SECONDS.setdefault(op, metrics.CALL_SECONDS.labels(op))
            histogram.observe(time.perf_counter() - started)


def _check_update(update: StateUpdate) -> None:
    if not update.events:
        raise InvalidStateRequest(f"{update.key}: an update must carry at least one event")
    if len(update.events) > MAX_EVENTS_PER_UPDATE:
        raise InvalidStateRequest(f"{update.key}: at most {MAX_EVENTS_PER_UPDATE} events per update")
    if update.expected_version < 0:
        raise InvalidStateRequest(f"{update.key}: expected_version must be >= 0")
    expected = update.expected_value
    if expected is not None and not (
            isinstance(expected, bytes) and len(expected) >= HEADER_SIZE and expected[0] == LAYOUT_VERSION
            and int.from_bytes(expected[1 : 1 + VERSION_BYTES], "little") == update.expected_version):
        raise InvalidStateRequest(f"{update.key}: expected_value must be a stored value at expected_version")
    if len(update.events) > 1 and len({e.event_key for e in update.events}) != len(update.events):
        raise InvalidStateRequest(f"{update.key}: an update lists the same event twice")


def _update_args(update: StateUpdate, value: bytes, digests: dict[str, bytes]) -> list[bytes | int]:
    """The library's arguments for one update; ``digests`` caches event digests across the updates of a call."""
    expected = update.expected_value
    args: list[bytes | int] = [update.expected_version if expected is None else expected, len(update.events), value]
    for offset, event in enumerate(update.events, start=1):
        digest = digests.get(event.event_key)
        if digest is None:
            digest = digests[event.event_key] = event_digest(event.event_key)
        args += (digest, encode_applied(update.expected_version + offset, event.receipt))
    return args


def _located(error: StateError, updates: Sequence[StateUpdate]) -> StateError:
    """Turn the library's CORRUPT reply (which carries the 1-based batch index) into StateCorrupt for that key."""
    message = str(error)
    marker = "CORRUPT "
    if marker not in message:
        return error
    index = int(message.split(marker, 1)[1].split(" ", 1)[0]) - 1
    key = updates[index].key
    return StateCorrupt(
        key.state_key, "stored bytes are not a layout-1 state value; nothing in the batch was written", str(key)
    )


def _redact(url: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or ""
    return f"{parts.scheme}://{host}:{parts.port}" if parts.port else f"{parts.scheme}://{host}"
