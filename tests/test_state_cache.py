"""The client's state cache, and the compare on stored bytes (protocol 3) that keeps it exact: on a real Valkey."""

from __future__ import annotations

import numpy as np
import pytest
import valkey

from state_service.cache import StateCache
from state_service.errors import InvalidStateRequest, LibraryMissing
from state_service.library import CAS_FUNCTION, VERSION_FUNCTION, library_source, library_version
from state_service.server import ValkeyServer
from state_service.settings import StateSettings
from state_service.store import AppliedEvent, EntityKey, EntityState, Outcome, StateStore, StateUpdate

pytest_plugins = ["valkey_fixtures"]

H = 64


def write(store: StateStore, key: EntityKey, state: EntityState, event: str, fill: float,
          *, with_bytes: bool = True) -> Outcome:
    """One event's update of ``key`` computed from ``state``: the hidden state becomes ``fill`` everywhere."""
    update = StateUpdate(key, state.version, (AppliedEvent(f"/src\x00{event}", b"r"),), 1_767_225_600.0,
                         np.full(H, fill, np.float16), b"pos", state.raw if with_bytes else None)
    return store.compare_and_set_many([update])[0].outcome


def mget_calls(admin: valkey.Valkey) -> int:
    return int(admin.info("commandstats").get("cmdstat_mget", {}).get("calls", 0))


@pytest.fixture
def admin(valkey_server: ValkeyServer):
    client = valkey.Valkey.from_url(valkey_server.admin_url)
    yield client
    client.close()


def test_a_state_this_client_wrote_is_read_back_without_a_round_trip(valkey_server, admin, state_namespace):
    key = EntityKey(state_namespace, "card", "c1")
    with StateStore(valkey_server.url, hidden_size=H, cache_entries=16) as store:
        [unseen] = store.read_many([key])
        assert write(store, key, unseen, "e1", 0.5) is Outcome.APPLIED
        before = mget_calls(admin)
        [state] = store.read_many([key])
        assert mget_calls(admin) == before
        assert state.version == 1 and np.all(state.hidden == np.float16(0.5))
        assert state.raw == admin.get(key.state_key)


def test_a_stale_cached_state_conflicts_and_the_cache_takes_the_stored_one(valkey_server, state_namespace):
    key = EntityKey(state_namespace, "card", "c1")
    with StateStore(valkey_server.url, hidden_size=H, cache_entries=16) as ours, \
            StateStore(valkey_server.url, hidden_size=H) as theirs:
        assert write(ours, key, ours.read_many([key])[0], "e1", 0.5) is Outcome.APPLIED
        assert write(theirs, key, theirs.read_many([key])[0], "e2", 0.25) is Outcome.APPLIED
        [stale] = ours.read_many([key])
        assert stale.version == 1  # from the cache: theirs moved the entity on behind its back
        assert write(ours, key, stale, "e3", 0.125) is Outcome.CONFLICT
        [fresh] = ours.read_many([key])
        assert fresh.version == 2 and np.all(fresh.hidden == np.float16(0.25))
        assert write(ours, key, fresh, "e3", 0.125) is Outcome.APPLIED


def test_bytes_catch_an_entity_erased_and_rebuilt_to_the_same_version(valkey_server, state_namespace):
    key = EntityKey(state_namespace, "card", "c1")
    with StateStore(valkey_server.url, hidden_size=H) as ours, \
            StateStore(valkey_server.admin_url, hidden_size=H) as other:
        assert write(ours, key, ours.read_many([key])[0], "e1", 0.5) is Outcome.APPLIED
        [read] = ours.read_many([key])
        other.delete(key)
        assert write(other, key, other.read_many([key])[0], "e2", 0.75) is Outcome.APPLIED
        [rebuilt] = other.read_many([key])
        assert rebuilt.version == read.version == 1 and rebuilt.raw != read.raw
        # The version alone would let an update computed from the erased state overwrite the rebuilt one.
        assert write(ours, key, read, "e3", 0.125) is Outcome.CONFLICT
        assert other.read_many([key])[0].raw == rebuilt.raw


def test_an_expected_value_that_is_not_the_expected_version_is_refused_before_valkey(state_store, state_namespace):
    key = EntityKey(state_namespace, "card", "c1")
    assert write(state_store, key, state_store.read_many([key])[0], "e1", 0.5) is Outcome.APPLIED
    [state] = state_store.read_many([key])
    wrong = StateUpdate(key, state.version + 1, (AppliedEvent("/src\x00e2", b"r"),), 1.0, state.hidden, b"", state.raw)
    with pytest.raises(InvalidStateRequest, match="expected_value"):
        state_store.compare_and_set_many([wrong])


def test_the_library_refuses_an_expectation_that_is_neither_a_version_nor_a_value(admin, state_namespace):
    key = EntityKey(state_namespace, "card", "c1")
    value = bytes([1]) + (1).to_bytes(5, "little") + bytes(6 + 2 * H)
    with pytest.raises(valkey.exceptions.ResponseError, match="BADEXPECT"):
        admin.fcall(CAS_FUNCTION, 3, key.state_key, key.dedupe_key(1), key.dedupe_key(0), 2 ** 40, 0,
                    b"soon", 1, value, b"d" * 16, b"r")
    assert admin.get(key.state_key) is None


def test_the_library_answers_protocol_2_clients_as_before_and_this_client_with_its_own(admin):
    assert library_version() == "3"
    assert admin.fcall_ro(VERSION_FUNCTION, 0) == b"2"  # what a scorer of an older revision checks for
    assert admin.fcall_ro(VERSION_FUNCTION, 0, "2") == b"2"
    assert admin.fcall_ro(VERSION_FUNCTION, 0, "3") == b"3"
    assert admin.fcall_ro(VERSION_FUNCTION, 0, "9") == b"3"


def test_a_protocol_2_body_is_replaced_by_the_admin_and_keeps_the_scorer_unready(tmp_path):
    protocol_2 = library_source().replace("if SPOKEN[asked] then return asked end", "if asked then return '2' end", 1)
    assert protocol_2 != library_source()
    with ValkeyServer(tmp_path) as server:
        admin = valkey.Valkey.from_url(server.admin_url)
        admin.function_load(protocol_2, replace=True)
        with StateStore(server.url) as scorer, pytest.raises(LibraryMissing, match="v3"):
            scorer.check_ready()
        with StateStore(server.admin_url) as store:
            store.ensure_library()
            store.check_ready()
        admin.close()


def test_a_key_that_conflicts_twice_is_shared_and_left_to_valkey():
    cache = StateCache(8)
    cache.put_many(["a", "b"], [b"a", b"b"])
    cache.conflicted(["a"])  # once: as after a store emptied or restored under the client
    cache.put("a", b"a2")
    assert cache.get("a") == b"a2" and not cache.is_shared("a")
    cache.conflicted(["a"])  # again: another writer takes turns at it
    assert cache.is_shared("a") and cache.get("a") is None
    cache.put_many(["a", "b"], [b"a3", b"b3"])
    assert cache.lookup(["a", "b"]) == [None, b"b3"]


def test_the_governor_pauses_cached_reads_while_repeat_conflicts_are_many_and_resumes_later():
    now = [0.0]
    cache = StateCache(64, window=10, max_stale=0.25, pause_s=30.0, clock=lambda: now[0])
    names = [f"k{i}" for i in range(10)]
    cache.put_many(names, [b"x"] * 10)
    cache.lookup(names)
    cache.conflicted(names)  # every key once: a refresh, not a sign of sharing
    cache.lookup(names)
    assert cache.reading
    cache.conflicted(names[:4])  # four keys again: shared now
    cache.lookup(names)
    assert cache.reading  # 6 cached reads: the window is not full
    cache.lookup(names)
    assert not cache.reading  # 4 repeat conflicts in 12 cached reads
    now[0] = 29.0
    assert not cache.reading
    now[0] = 31.0
    assert cache.reading
    cache.lookup(names * 2)
    assert cache.reading  # counting started afresh


def test_the_cache_keeps_at_most_its_entries_and_evicts_the_first_cached():
    cache = StateCache(3)
    cache.put_many(["a", "b"], [b"a", b"b"])
    cache.put("a", b"a2")  # written again: keeps its place
    cache.put_many(["c", "d"], [b"c", b"d"])
    assert len(cache) == 3
    assert cache.get("a") is None
    assert [cache.get(n) for n in ("b", "c", "d")] == [b"b", b"c", b"d"]
    cache.put_many(["e", "f", "g", "h"], [b"e", b"f", b"g", b"h"])
    assert len(cache) == 3


def test_two_clients_taking_turns_at_the_same_entities_leave_them_to_valkey(valkey_server, state_namespace):
    keys = [EntityKey(state_namespace, "merchant", f"m{i}") for i in range(4)]
    stores = [StateStore(valkey_server.url, hidden_size=H, cache_entries=64) for _ in range(2)]
    conflicts_by_round = []
    try:
        for round_ in range(12):
            store = stores[round_ % 2]
            conflicts = 0
            for key, state in zip(keys, store.read_many(keys), strict=True):
                event = f"e{round_}-{key.entity_id}"
                if write(store, key, state, event, 0.5) is Outcome.CONFLICT:
                    conflicts += 1  # recompute on the state the store handed back, as the scorer does
                    assert write(store, key, store.read_many([key])[0], event, 0.5) is Outcome.APPLIED
            conflicts_by_round.append(conflicts)
        assert all(store.cache.is_shared(key.state_key) for store in stores for key in keys)
        assert conflicts_by_round[-6:] == [0] * 6  # shared keys are read from Valkey, fresh
        assert [s.version for s in stores[0].read_many(keys)] == [12] * 4
    finally:
        for store in stores:
            store.close()


def test_state_cache_entries_come_from_the_environment(valkey_server, monkeypatch):
    assert StateSettings.from_env({}).cache_entries == 65536
    assert StateSettings.from_env({"STATE_CACHE_ENTRIES": "100"}).cache_entries == 100
    monkeypatch.setenv("VALKEY_URL", valkey_server.url)
    monkeypatch.setenv("STATE_CACHE_ENTRIES", "0")
    with StateStore.from_env() as store:
        assert store.cache is None
    monkeypatch.setenv("STATE_CACHE_ENTRIES", "10")
    with StateStore.from_env() as store:
        assert store.cache is not None and store.cache.entries == 10


def test_writing_cached_keys_again_evicts_nothing():
    cache = StateCache(4)
    cache.put_many(["a", "b", "c", "d"], [b"a", b"b", b"c", b"d"])
    cache.put_many(["c", "d"], [b"c2", b"d2"])
    assert [cache.get(n) for n in "abcd"] == [b"a", b"b", b"c2", b"d2"]
