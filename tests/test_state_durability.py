"""Durability and security of the state service: AOF after kill -9, S3 snapshots, the shipped ACL users."""

from __future__ import annotations

import numpy as np
import pytest
import valkey

from functions.cli import main as hiddenstate
from state_service.codec import EntityState
from state_service.errors import InvalidStateRequest
from state_service.library import library_version
from state_service.server import ValkeyServer
from state_service.snapshot import read_manifest, restore, snapshot
from state_service.store import AppliedEvent, EntityKey, Outcome, StateStore, StateUpdate

pytest_plugins = ["valkey_fixtures", "s3_fixtures"]

H = 64


def write(store: StateStore, key: EntityKey, state: EntityState, event_id: str) -> int:
    hidden = (state.hidden.astype(np.float32) + 0.25).astype(np.float16)
    update = StateUpdate(key, state.version, (AppliedEvent(f"/src\x00{event_id}", b"r"),), 1_767_225_600.0, hidden, b"")
    [result] = store.compare_and_set_many([update])
    assert result.outcome is Outcome.APPLIED
    return result.version


def test_acknowledged_updates_survive_kill_9_with_appendfsync_always(tmp_path) -> None:
    server = ValkeyServer(tmp_path / "valkey", appendfsync="always").start()
    try:
        with StateStore(server.admin_url) as admin:
            admin.ensure_library()
        keys = [EntityKey("durable@v1", "card", f"c{i}") for i in range(20)]
        acknowledged: dict[EntityKey, int] = {}
        with StateStore(server.url) as store:
            for round_ in range(5):
                for key, state in zip(keys, store.read_many(keys), strict=True):
                    acknowledged[key] = write(store, key, state, f"{key.entity_id}-{round_}")
            server.kill()  # SIGKILL: no shutdown, no final fsync
            server.restart()
            store.check_ready()  # the Functions library is persisted in the AOF too
            recovered = {key: state.version for key, state in zip(keys, store.read_many(keys), strict=True)}
        assert recovered == acknowledged == {key: 5 for key in keys}
    finally:
        server.stop()


def test_snapshot_and_restore_round_trip_through_s3(
    valkey_server: ValkeyServer, fresh_valkey_server: ValkeyServer, state_namespace: str, s3_bucket: str
) -> None:
    source = StateStore(valkey_server.admin_url)
    keys = [EntityKey(state_namespace, kind, f"{kind[0]}{i}") for i in range(30) for kind in ("card", "merchant")]
    for round_ in range(2):
        for key, state in zip(keys, source.read_many(keys), strict=True):
            write(source, key, state, f"{key.entity_id}-{round_}")
    original = source.read_many(keys)

    manifest = snapshot(source, f"s3://{s3_bucket}/snap/1", namespace=state_namespace, part_entities=25, progress=False)
    assert manifest["entities"] == 60 and len(manifest["parts"]) == 3

    target = StateStore(fresh_valkey_server.admin_url)
    report = restore(target, f"s3://{s3_bucket}/snap/1", progress=False)
    assert (report.entities, report.written, report.skipped) == (60, 60, 0)
    for before, after in zip(original, target.read_many(keys), strict=True):
        assert (after.version, after.last_event_time, after.context) == (before.version, before.last_event_time,
                                                                         before.context)
        np.testing.assert_array_equal(after.hidden, before.hidden)
    source.close()
    target.close()


def test_restore_never_overwrites_a_newer_version(
    fresh_valkey_server: ValkeyServer, state_namespace: str, s3_bucket: str
) -> None:
    store = StateStore(fresh_valkey_server.admin_url)
    moved, kept = EntityKey(state_namespace, "card", "moved-on"), EntityKey(state_namespace, "card", "kept")
    for key in (moved, kept):
        write(store, key, EntityState.unseen(H), f"{key.entity_id}-0")
    snapshot(store, f"s3://{s3_bucket}/old", progress=False)
    [state] = store.read_many([moved])
    write(store, moved, state, "moved-on-1")  # now at version 2, newer than the snapshot
    store.delete(kept)  # lost since the snapshot: restore brings it back

    report = restore(store, f"s3://{s3_bucket}/old", progress=False)
    assert (report.written, report.skipped) == (1, 1)
    assert [s.version for s in store.read_many([moved, kept])] == [2, 1]
    store.close()


def test_snapshot_and_restore_commands_print_counts(
    valkey_server: ValkeyServer, state_namespace: str, s3_bucket: str, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    with StateStore(valkey_server.admin_url) as store:
        write(store, EntityKey(state_namespace, "card", "c1"), EntityState.unseen(H), "e1")
    monkeypatch.setenv("VALKEY_URL", valkey_server.admin_url)
    to = f"s3://{s3_bucket}/cli"
    assert hiddenstate(["state", "snapshot", "--to", to, "--namespace", state_namespace, "--no-progress"]) == 0
    assert '"entities": 1' in capsys.readouterr().out
    assert hiddenstate(["state", "restore", "--from", to, "--no-progress"]) == 0
    assert '"skipped": 1' in capsys.readouterr().out
    assert read_manifest(to)["namespace"] == state_namespace


def test_restore_from_an_unfinished_snapshot_is_refused(valkey_server: ValkeyServer, s3_bucket: str) -> None:
    with StateStore(valkey_server.admin_url) as store, pytest.raises(InvalidStateRequest, match="no finished"):
        restore(store, f"s3://{s3_bucket}/nothing-here", progress=False)
    with StateStore(valkey_server.admin_url) as store, pytest.raises(InvalidStateRequest, match="s3://bucket"):
        snapshot(store, "/tmp/not-s3", progress=False)


def test_scorer_user_cannot_flushall_config_or_keys_but_can_fcall(valkey_server: ValkeyServer) -> None:
    scorer = valkey.Valkey.from_url(valkey_server.url)
    for command in (("FLUSHALL",), ("CONFIG", "GET", "*"), ("KEYS", "*"), ("FUNCTION", "FLUSH"), ("DEL", "hs:{x}")):
        with pytest.raises(valkey.exceptions.NoPermissionError):
            scorer.execute_command(*command)
    with pytest.raises(valkey.exceptions.NoPermissionError):
        scorer.get("not-a-state-key")  # keys outside hs* are out of reach
    assert scorer.fcall_ro("hs_library_version", 0, library_version()) == library_version().encode()
    admin = valkey.Valkey.from_url(valkey_server.admin_url)
    assert admin.acl_whoami() == "admin" or admin.acl_whoami() == b"admin"


def test_default_user_is_off(valkey_server: ValkeyServer) -> None:
    anonymous = valkey.Valkey(host="127.0.0.1", port=valkey_server.port)
    with pytest.raises(valkey.exceptions.AuthenticationError):
        anonymous.ping()
