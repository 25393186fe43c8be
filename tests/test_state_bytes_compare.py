"""Compare-and-set on the stored bytes (library protocol 3), and the protocol probe, on a real valkey-server."""

from __future__ import annotations

import numpy as np
import pytest
import valkey

from state_service.errors import InvalidStateRequest, LibraryMissing
from state_service.library import CAS_FUNCTION, VERSION_FUNCTION, library_source, library_version
from state_service.server import ValkeyServer
from state_service.store import AppliedEvent, EntityKey, EntityState, Outcome, StateStore, StateUpdate

pytest_plugins = ["valkey_fixtures"]

H = 64


def write(store: StateStore, key: EntityKey, state: EntityState, event: str, fill: float,
          *, with_bytes: bool = True) -> Outcome:
    """One event's update of ``key`` computed from ``state``: the hidden state becomes ``fill`` everywhere."""
    update = StateUpdate(key, state.version, (AppliedEvent(f"/src\x00{event}", b"r"),), 1_767_225_600.0,
                         np.full(H, fill, np.float16), b"pos", state.raw if with_bytes else None)
    return store.compare_and_set_many([update])[0].outcome


@pytest.fixture
def admin(valkey_server: ValkeyServer):
    client = valkey.Valkey.from_url(valkey_server.admin_url)
    yield client
    client.close()


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
        # What protocol 2 allows: the same update, expecting the version only, overwrites the rebuilt state.
        assert write(ours, key, read, "e3", 0.125, with_bytes=False) is Outcome.APPLIED


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
