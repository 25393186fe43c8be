"""StateStore against a real valkey-server: compare-and-set, dedupe, batching, retries, errors."""

from __future__ import annotations

import threading
import time

import numpy as np
import psutil
import pytest
import valkey

from functions.cli import main as hiddenstate
from state_service.codec import EntityState
from state_service.errors import (
    ConflictRetriesExhausted,
    InvalidStateRequest,
    LibraryMissing,
    StateCorrupt,
    StateUnavailable,
)
from state_service.library import LIBRARY_NAME, library_source
from state_service.server import ValkeyServer, free_port
from state_service.store import AppliedEvent, EntityKey, Outcome, StateStore, StateUpdate

pytest_plugins = ["valkey_fixtures"]

H = 64


def step(hidden: np.ndarray, seed: int) -> np.ndarray:
    """A deterministic, order-sensitive fold: the result depends on the previous state and on the event."""
    event = np.sin(np.arange(H, dtype=np.float32) * 0.1 + seed)
    return (hidden.astype(np.float32) * 0.75 + event * 0.5).astype(np.float16)


def update(key: EntityKey, state: EntityState, *event_ids: str, t: float = 1_767_225_600.0) -> StateUpdate:
    hidden = state.hidden
    for event_id in event_ids:
        hidden = step(hidden, hash(event_id) % 1000)
    events = tuple(AppliedEvent(f"/src\x00{e}", e.encode()[:16]) for e in event_ids)
    return StateUpdate(key, state.version, events, t, hidden, b"pos")


def test_unseen_entities_read_as_version_zero_with_a_zero_state(state_store: StateStore, state_namespace: str) -> None:
    keys = [EntityKey(state_namespace, "card", "nobody"), EntityKey(state_namespace, "merchant", "m")]
    states = state_store.read_many(keys)
    assert [s.version for s in states] == [0, 0]
    assert all(not s.hidden.any() and s.hidden.shape == (H,) for s in states)


def test_applied_update_is_read_back_with_its_new_version(state_store: StateStore, state_namespace: str) -> None:
    key = EntityKey(state_namespace, "card", "c1")
    [state] = state_store.read_many([key])
    [result] = state_store.compare_and_set_many([update(key, state, "e1", "e2")])
    assert (result.outcome, result.version) == (Outcome.APPLIED, 2)
    [stored] = state_store.read_many([key])
    assert stored.version == 2 and stored.context == b"pos"
    np.testing.assert_array_equal(stored.hidden, update(key, state, "e1", "e2").hidden)


def test_stale_expected_version_is_a_conflict_that_writes_nothing(
    state_store: StateStore, state_namespace: str
) -> None:
    key = EntityKey(state_namespace, "card", "c1")
    [unseen] = state_store.read_many([key])
    state_store.compare_and_set_many([update(key, unseen, "first")])
    [result] = state_store.compare_and_set_many([update(key, unseen, "racing")])
    assert result.outcome is Outcome.CONFLICT
    assert result.version == 1 and result.current is not None and result.current.version == 1
    np.testing.assert_array_equal(result.current.hidden, update(key, unseen, "first").hidden)
    assert state_store.read_many([key])[0].version == 1


def test_conflict_is_retried_with_the_fresh_state_through_the_callback(
    state_store: StateStore, state_namespace: str
) -> None:
    key = EntityKey(state_namespace, "card", "c1")
    seen_versions: list[int] = []

    def compute(states: list[EntityState]) -> list[StateUpdate]:
        seen_versions.append(states[0].version)
        if len(seen_versions) == 1:  # another scorer instance writes between our read and our write
            state_store.compare_and_set_many([update(key, states[0], "other-instance")])
        return [update(key, states[0], "mine")]

    [result] = state_store.update_with_retry([key], compute)
    assert seen_versions == [0, 1]
    assert (result.outcome, result.version) == (Outcome.APPLIED, 2)


def test_retry_gives_up_after_the_bounded_number_of_attempts(state_store: StateStore, state_namespace: str) -> None:
    key = EntityKey(state_namespace, "card", "c1")
    calls = 0

    def always_raced(states: list[EntityState]) -> list[StateUpdate]:
        nonlocal calls
        calls += 1
        state_store.compare_and_set_many([update(key, states[0], f"other-{calls}")])
        return [update(key, states[0], f"mine-{calls}")]

    with pytest.raises(ConflictRetriesExhausted, match="after 3 attempts") as caught:
        state_store.update_with_retry([key], always_raced, max_attempts=3, backoff_s=0.0)
    assert calls == 3
    assert caught.value.results[0].outcome is Outcome.CONFLICT


def test_redelivered_event_is_not_applied_twice_and_returns_its_receipt(
    state_store: StateStore, state_namespace: str
) -> None:
    key = EntityKey(state_namespace, "merchant", "m1")
    [unseen] = state_store.read_many([key])
    state_store.compare_and_set_many([update(key, unseen, "e1")])
    [after_one] = state_store.read_many([key])
    state_store.compare_and_set_many([update(key, after_one, "e2")])
    # Redelivery of e1, computed from a fresh read (version 2): CAS alone would accept it.
    [fresh] = state_store.read_many([key])
    [result] = state_store.compare_and_set_many([update(key, fresh, "e1")])
    assert result.outcome is Outcome.DUPLICATE
    assert result.duplicates == {"/src\x00e1": (1, b"e1")}
    assert result.version == 2 and result.current is not None and result.current.version == 2
    assert state_store.read_many([key])[0].version == 2


def test_an_update_with_any_already_applied_event_is_a_duplicate_as_a_whole(
    state_store: StateStore, state_namespace: str
) -> None:
    key = EntityKey(state_namespace, "card", "c1")
    [unseen] = state_store.read_many([key])
    state_store.compare_and_set_many([update(key, unseen, "a", "b")])
    [state] = state_store.read_many([key])
    [result] = state_store.compare_and_set_many([update(key, state, "c", "b")])
    assert result.outcome is Outcome.DUPLICATE
    assert result.duplicates == {"/src\x00b": (2, b"b")}
    assert state_store.read_many([key])[0].version == 2


def test_entities_in_one_batch_are_independent(state_store: StateStore, state_namespace: str) -> None:
    keys = [EntityKey(state_namespace, "card", f"c{i}") for i in range(3)]
    states = state_store.read_many(keys)
    state_store.compare_and_set_many([update(keys[1], states[1], "pre")])
    updates = [update(k, s, f"x{i}") for i, (k, s) in enumerate(zip(keys, states, strict=True))]
    results = state_store.compare_and_set_many(updates)
    assert [r.outcome for r in results] == [Outcome.APPLIED, Outcome.CONFLICT, Outcome.APPLIED]
    assert [s.version for s in state_store.read_many(keys)] == [1, 1, 1]


def test_event_is_remembered_across_a_dedupe_bucket_boundary(valkey_server: ValkeyServer, state_namespace: str) -> None:
    now = [(time.time() // 60 + 1) * 60 - 1]  # one second before the next 60 s bucket boundary
    store = StateStore(valkey_server.url, dedupe_window_s=60, clock=lambda: now[0])
    key = EntityKey(state_namespace, "card", "c1")
    [unseen] = store.read_many([key])
    store.compare_and_set_many([update(key, unseen, "e1")])
    now[0] += 2  # the next bucket: e1 now lives in the "previous" bucket
    [state] = store.read_many([key])
    [result] = store.compare_and_set_many([update(key, state, "e1")])
    assert result.outcome is Outcome.DUPLICATE
    store.close()


def test_dedupe_buckets_expire_two_windows_after_they_open(valkey_server: ValkeyServer, state_namespace: str) -> None:
    store = StateStore(valkey_server.url, dedupe_window_s=60)
    key = EntityKey(state_namespace, "card", "c1")
    [unseen] = store.read_many([key])
    store.compare_and_set_many([update(key, unseen, "e1")])
    admin = valkey.Valkey.from_url(valkey_server.admin_url)
    [bucket_key] = admin.keys(key.state_key.replace("{", "\\{").replace("}", "\\}") + "d*")
    bucket = int(bucket_key.rsplit(b"}d", 1)[1])
    assert admin.expiretime(bucket_key) == (bucket + 2) * 60
    store.close()


def test_every_dedupe_bucket_written_keeps_its_expiry(valkey_server: ValkeyServer, state_namespace: str) -> None:
    # The library sets a bucket's expiry only when a write creates the bucket: later writes must not lose it, and
    # a bucket created by a several-event update must get it too.
    started = time.time()  # one bucket for the whole test, even across a minute boundary
    store = StateStore(valkey_server.url, dedupe_window_s=60, clock=lambda: started)
    admin = valkey.Valkey.from_url(valkey_server.admin_url)
    one, many = EntityKey(state_namespace, "card", "one"), EntityKey(state_namespace, "card", "many")
    for key, batches in ((one, [["e1"], ["e2", "e3"], ["e4"]]), (many, [["f1", "f2", "f3"], ["f4"]])):
        for event_ids in batches:
            [state] = store.read_many([key])
            [result] = store.compare_and_set_many([update(key, state, *event_ids)])
            assert result.outcome is Outcome.APPLIED
            [bucket_key] = admin.keys(key.state_key.replace("{", "\\{").replace("}", "\\}") + "d*")
            bucket = int(bucket_key.rsplit(b"}d", 1)[1])
            assert admin.expiretime(bucket_key) == (bucket + 2) * 60
    assert admin.hlen(bucket_key) == 4
    store.close()


def test_idle_ttl_expires_state_that_is_not_updated(valkey_server: ValkeyServer, state_namespace: str) -> None:
    store = StateStore(valkey_server.url, idle_ttl_s=3600)
    key = EntityKey(state_namespace, "card", "c1")
    [unseen] = store.read_many([key])
    store.compare_and_set_many([update(key, unseen, "e1")])
    admin = valkey.Valkey.from_url(valkey_server.admin_url)
    assert 3590 < admin.ttl(key.state_key) <= 3600
    store.close()


def test_sixteen_threads_of_500_updates_on_one_entity_lose_nothing(
    state_store: StateStore, state_namespace: str
) -> None:
    key = EntityKey(state_namespace, "merchant", "hot")
    threads, per_thread = 16, 500
    applied: list[tuple[int, int]] = []  # (version, event seed)
    lock = threading.Lock()
    errors: list[BaseException] = []

    def worker(t: int) -> None:
        try:
            for i in range(per_thread):
                seed = t * per_thread + i

                def compute(states: list[EntityState], seed: int = seed) -> list[StateUpdate]:
                    s = states[0]
                    return [StateUpdate(key, s.version, (AppliedEvent(f"/load\x00{seed}", b""),), float(seed),
                                        step(s.hidden, seed), b"")]

                [result] = state_store.update_with_retry([key], compute, max_attempts=10_000, backoff_s=0.001)
                assert result.outcome is Outcome.APPLIED
                with lock:
                    applied.append((result.version, seed))
        except BaseException as error:  # surfaced below: a thread's assertion must fail the test
            errors.append(error)

    pool = [threading.Thread(target=worker, args=(t,)) for t in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    assert not errors, errors[0]
    [final] = state_store.read_many([key])
    assert final.version == threads * per_thread
    assert sorted(v for v, _ in applied) == list(range(1, threads * per_thread + 1))
    serial = np.zeros(H, dtype=np.float16)
    for _, seed in sorted(applied):
        serial = step(serial, seed)
    np.testing.assert_array_equal(final.hidden, serial)


def test_corrupt_stored_bytes_give_state_corrupt_and_block_nothing_else(
    valkey_server: ValkeyServer, state_store: StateStore, state_namespace: str
) -> None:
    bad, good = EntityKey(state_namespace, "card", "bad"), EntityKey(state_namespace, "card", "good")
    valkey.Valkey.from_url(valkey_server.admin_url).set(bad.state_key, b"\x00garbage")
    with pytest.raises(StateCorrupt, match="bad"):
        state_store.read_many([good, bad])
    unseen = EntityState.unseen(H)
    with pytest.raises(StateCorrupt, match="bad") as caught:
        state_store.compare_and_set_many([update(good, unseen, "e1"), update(bad, unseen, "e2")])
    assert caught.value.key == bad.state_key
    assert state_store.read_many([good])[0].version == 0  # the batch was refused as a whole
    assert [r.outcome for r in state_store.compare_and_set_many([update(good, unseen, "e1")])] == [Outcome.APPLIED]


def test_bad_updates_are_refused_before_reaching_valkey(state_store: StateStore, state_namespace: str) -> None:
    key = EntityKey(state_namespace, "card", "c1")
    unseen = EntityState.unseen(H)
    with pytest.raises(InvalidStateRequest, match="at least one event"):
        state_store.compare_and_set_many([StateUpdate(key, 0, (), 1.0, unseen.hidden, b"")])
    with pytest.raises(InvalidStateRequest, match="same event twice"):
        state_store.compare_and_set_many([update(key, unseen, "e", "e")])
    too_many = tuple(AppliedEvent(f"e{i}", b"") for i in range(1001))
    with pytest.raises(InvalidStateRequest, match="at most 1000 events"):
        state_store.compare_and_set_many([StateUpdate(key, 0, too_many, 1.0, unseen.hidden, b"")])
    with pytest.raises(InvalidStateRequest, match="shape"):
        state_store.compare_and_set_many([StateUpdate(key, 0, (AppliedEvent("e", b""),), 1.0, np.zeros(3), b"")])
    # In a batch, the error names the entity whose state cannot be stored, and nothing of the batch is written.
    other = EntityKey(state_namespace, "card", "c2")
    with pytest.raises(InvalidStateRequest, match=f"{state_namespace}/card/c2: hidden state has NaN"):
        state_store.compare_and_set_many([update(key, unseen, "e1"),
                                          StateUpdate(other, 0, (AppliedEvent("e2", b""),), 1.0,
                                                      np.full(H, np.nan), b"")])
    assert [s.version for s in state_store.read_many([key, other])] == [0, 0]


def test_delete_erases_state_and_dedupe_memory(valkey_server: ValkeyServer, state_namespace: str) -> None:
    admin_store = StateStore(valkey_server.admin_url)
    key = EntityKey(state_namespace, "card", "forget-me")
    unseen = EntityState.unseen(H)
    admin_store.compare_and_set_many([update(key, unseen, "e1")])
    assert admin_store.delete(key) is True
    admin = valkey.Valkey.from_url(valkey_server.admin_url)
    assert admin.keys(key.state_key.replace("{", "\\{").replace("}", "\\}") + "*") == []
    # With the dedupe memory gone too, the same event is new again.
    assert admin_store.compare_and_set_many([update(key, unseen, "e1")])[0].outcome is Outcome.APPLIED
    assert admin_store.delete(EntityKey(state_namespace, "card", "never-seen")) is False
    admin_store.close()


@pytest.mark.parametrize("scheme", ["redis", "valkey"])
def test_valkey_url_accepts_both_schemes_with_user_and_password(valkey_server: ValkeyServer, scheme: str) -> None:
    url = valkey_server.url.replace("redis://", f"{scheme}://", 1)
    assert url.startswith(f"{scheme}://scorer:")
    with StateStore(url) as store:
        store.check_ready()


def test_unknown_url_scheme_is_refused_by_name() -> None:
    with pytest.raises(InvalidStateRequest, match="valkeys://"):
        StateStore("http://127.0.0.1:6379")


def test_from_env_reads_valkey_url_and_timeouts(valkey_server: ValkeyServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VALKEY_URL", valkey_server.url)
    monkeypatch.setenv("VALKEY_TIMEOUT_S", "0.25")
    monkeypatch.setenv("STATE_DEDUPE_WINDOW_S", "600")
    with StateStore.from_env(hidden_size=32) as store:
        store.check_ready()
        assert (store.hidden_size, store.dedupe_window_s) == (32, 600)
    monkeypatch.setenv("VALKEY_TIMEOUT_S", "soon")
    with pytest.raises(ValueError, match="VALKEY_TIMEOUT_S"):
        StateStore.from_env()


def test_wrong_password_is_state_unavailable(valkey_server: ValkeyServer) -> None:
    with StateStore(f"redis://scorer:wrong@127.0.0.1:{valkey_server.port}/0") as store, pytest.raises(StateUnavailable):
        store.check_ready()


def test_load_library_command_replaces_an_older_body_of_the_same_version(
    tmp_path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    def loaded_code(client: valkey.Valkey) -> str:
        [library] = client.function_list(library=LIBRARY_NAME, withcode=True)
        code = dict(zip(library[::2], library[1::2], strict=True))[b"library_code"]
        return code.decode()

    older = library_source().replace("local LAYOUT = 1", "local LAYOUT = 1 -- an older body", 1)
    assert older != library_source()
    with ValkeyServer(tmp_path) as server:
        admin = valkey.Valkey.from_url(server.admin_url)
        admin.function_load(older, replace=True)
        with StateStore(server.admin_url) as store:
            store.ensure_library()  # what a scorer does at start: the version matches, so nothing is reloaded
        assert loaded_code(admin) == older
        monkeypatch.setenv("VALKEY_URL", server.admin_url)
        assert hiddenstate(["state", "load-library"]) == 0
        assert "library loaded" in capsys.readouterr().out
        assert loaded_code(admin) == library_source()
        admin.close()


def test_nothing_listening_is_state_unavailable_not_a_crash(state_namespace: str) -> None:
    with StateStore(f"redis://127.0.0.1:{free_port()}/0", connect_timeout_s=0.2) as store:
        with pytest.raises(StateUnavailable, match="unavailable"):
            store.read_many([EntityKey(state_namespace, "card", "c1")])
        with pytest.raises(StateUnavailable):
            store.compare_and_set_many([update(EntityKey(state_namespace, "card", "c1"), EntityState.unseen(H), "e")])


def test_missing_library_is_reported_and_the_scorer_user_may_not_load_it(tmp_path) -> None:
    with ValkeyServer(tmp_path) as server:
        with StateStore(server.url) as scorer:
            with pytest.raises(LibraryMissing, match="load-library"):
                scorer.check_ready()
            with pytest.raises(LibraryMissing, match="may not load it"):
                scorer.ensure_library()
        with StateStore(server.admin_url) as admin:
            admin.ensure_library()
            admin.ensure_library()  # second call: version matches, no reload
        with StateStore(server.url) as scorer:
            scorer.check_ready()


def test_a_state_at_hidden_size_64_costs_at_most_200_bytes_whatever_the_id(tmp_path, state_namespace: str) -> None:
    # A server of its own: chunks freed by other tests' keys would be reused in other size classes.
    with ValkeyServer(tmp_path) as server, StateStore(server.admin_url) as state_store:
        state_store.ensure_library()
        _measure_state_sizes(valkey.Valkey.from_url(server.admin_url), state_store, state_namespace)


def _measure_state_sizes(admin: valkey.Valkey, state_store: StateStore, state_namespace: str) -> None:
    unseen = EntityState.unseen(H)
    ids = ("c1", "card-000123-1", "4111111111111111", "x" * 128)
    usage = []
    for i in range(200):
        key = EntityKey(state_namespace, "merchant", f"{ids[i % 4]}{i}"[-128:])
        # An 8-byte receipt and a full 8-byte context: the largest value the scorer writes.
        [result] = state_store.compare_and_set_many(
            [StateUpdate(key, 0, (AppliedEvent(f"/src\x00{key.entity_id}", b"r" * 8),), 1_767_225_600.0,
                         unseen.hidden + 0.5, b"c" * 8)]
        )
        assert result.outcome is Outcome.APPLIED
        usage.append(admin.memory_usage(key.state_key))
    # The bundled valkey-server uses libc malloc, which sometimes hands out a reused chunk one 16-byte class larger
    # (about one key in ten here): the target is the mean per entity, and no key may take more than that one class.
    assert sum(usage) / len(usage) <= 200, sorted(set(usage))
    assert max(usage) <= 208, sorted(set(usage))


def test_one_key_twice_in_a_batch_is_applied_in_order_never_overwriting_itself(
    state_store: StateStore, state_namespace: str
) -> None:
    key = EntityKey(state_namespace, "card", "twice")
    unseen = EntityState.unseen(H)
    first = update(key, unseen, "e1")
    stale = update(key, unseen, "e2")  # expects version 0, which the first update moves on
    results = state_store.compare_and_set_many([first, stale])
    assert [r.outcome for r in results] == [Outcome.APPLIED, Outcome.CONFLICT]
    assert results[1].version == 1
    assert state_store.read_many([key])[0].version == 1


def test_a_server_started_twice_is_one_server_and_stops_once(tmp_path) -> None:
    server = ValkeyServer(tmp_path / "valkey").start()
    try:
        first = server.pid
        with server:  # __enter__ starts it again: the running server is kept, not a second one
            assert server.pid == first
            assert valkey.Valkey.from_url(server.admin_url).ping()
        assert not server.is_running()
        assert not psutil.pid_exists(first)
    finally:
        server.stop()


def test_a_fixed_port_taken_by_another_server_is_refused_not_adopted(tmp_path) -> None:
    with ValkeyServer(tmp_path / "first") as first:
        second = ValkeyServer(tmp_path / "second", port=first.port, start_timeout_s=5.0)
        # The other server answers on that port; the second process cannot bind it and exits.
        with pytest.raises(StateUnavailable, match="exited during start-up"):
            second.start()
        assert not second.is_running()
        assert first.is_running() and valkey.Valkey.from_url(first.admin_url).ping()


def test_each_thread_reads_and_writes_on_a_connection_of_its_own_and_close_releases_them(
        tmp_path, state_namespace: str) -> None:
    """The hot path's per-thread connections: one per thread however many calls it makes, never taken from the
    shared pool (whose one connection stays free for readiness), all closed by close(). A server of its own, so
    that no other test's connections come and go in the count."""
    with ValkeyServer(tmp_path / "valkey") as server:
        with StateStore(server.admin_url) as admin:
            admin.ensure_library()
        _check_thread_connections(server, state_namespace)


def _check_thread_connections(valkey_server: ValkeyServer, state_namespace: str) -> None:
    admin = valkey.Valkey.from_url(valkey_server.admin_url)
    store = StateStore(valkey_server.url, pool_size=1)
    key = EntityKey(state_namespace, "card", "threads")
    before = {c["id"] for c in admin.client_list()}
    counted, release = threading.Barrier(4), threading.Event()

    def work() -> None:
        for _ in range(3):
            store.read_many([key])
        counted.wait()
        release.wait()

    threads = [threading.Thread(target=work) for _ in range(3)]
    for thread in threads:
        thread.start()
    counted.wait()  # every thread has made its calls and is still alive
    store.check_ready()  # the pool's one connection is not held by any of the three threads
    opened = {c["id"] for c in admin.client_list()} - before
    release.set()
    for thread in threads:
        thread.join()
    assert len(opened) == 4  # three threads' own, and the pool's one for readiness
    store.close()
    _wait_until_closed(admin, opened)


def _wait_until_closed(admin: valkey.Valkey, ids: set[int]) -> None:
    deadline = time.monotonic() + 5
    while {c["id"] for c in admin.client_list()} & ids and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not {c["id"] for c in admin.client_list()} & ids


def test_a_thread_that_ends_takes_its_connection_with_it(tmp_path, state_namespace: str) -> None:
    """granian retires idle request threads and starts new ones: their connections must not pile up."""
    import gc

    with ValkeyServer(tmp_path / "valkey") as server:
        admin = valkey.Valkey.from_url(server.admin_url)
        with StateStore(server.admin_url) as store:
            store.ensure_library()
            before = {c["id"] for c in admin.client_list()}
            called, release = threading.Event(), threading.Event()

            def work() -> None:
                store.read_many([EntityKey(state_namespace, "card", "c")])
                called.set()
                release.wait()

            thread = threading.Thread(target=work)
            thread.start()
            called.wait()
            opened = {c["id"] for c in admin.client_list()} - before
            release.set()
            thread.join()
            assert len(opened) == 1
            gc.collect()
            _wait_until_closed(admin, opened)
            assert store.read_many([EntityKey(state_namespace, "card", "c")])[0].version == 0  # the store still works


def test_a_forked_child_opens_its_own_connection_instead_of_sharing_its_parents(
        valkey_server: ValkeyServer, state_namespace: str) -> None:
    import os

    key = EntityKey(state_namespace, "card", "fork")
    with StateStore(valkey_server.url) as store:
        store.compare_and_set_many([update(key, store.read_many([key])[0], "e1")])
        parent_client = store._thread_client()
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: report whether it got a client of its own and could use it, then leave at once
            ok = store._thread_client() is not parent_client and store.read_many([key])[0].version == 1
            os.write(write, b"1" if ok else b"0")
            os._exit(0)
        os.waitpid(pid, 0)
        assert os.read(read, 1) == b"1"
        # The parent's connection was not disturbed by the child.
        assert store.read_many([key])[0].version == 1
