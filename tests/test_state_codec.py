"""The pure parts of the state protocol: key layout and value encoding."""

from __future__ import annotations

import numpy as np
import pytest

from state_service.codec import (
    HEADER_SIZE,
    EntityState,
    InvalidEntry,
    _encode_matrix,
    _encode_rows,
    decode_applied,
    decode_state,
    decode_states,
    encode_applied,
    encode_state,
    encode_states,
    event_digest,
)
from state_service.errors import InvalidStateRequest, StateCorrupt
from state_service.keys import (
    STATE_KEY_LENGTH,
    EntityKey,
    EntityKeys,
    check_state_key,
    namespace_tag,
    state_key_pattern,
)


def test_entity_key_is_hash_tagged_so_state_and_dedupe_share_a_slot() -> None:
    key = EntityKey("fraud-gru@v3", "card", "c1")
    assert key.state_key == "hsEUY{UMxhbx7XcssBND}"  # pinned: a changed digest would orphan every stored state
    assert key.dedupe_key(7) == "hsEUY{UMxhbx7XcssBND}d7"
    # The hash tag is the text between the first { and the next }: identical for both keys.
    tag = lambda k: k[k.index("{") + 1 : k.index("}")]  # noqa: E731
    assert tag(key.state_key) == tag(key.dedupe_key(7))


@pytest.mark.parametrize("entity_id", ["a}b{c", "x:y:z", "100%", "ünïcödé", "with space", "a" * 128, "}", "\udc80"])
def test_any_entity_id_gives_a_21_character_state_key_that_keeps_the_hash_tag(entity_id: str) -> None:
    key = EntityKey("ns:{odd}", "merchant", entity_id)
    assert len(key.state_key) == STATE_KEY_LENGTH == 21  # the length that keeps a state at 192 B (README)
    assert check_state_key(key.state_key) == key.state_key
    assert key.state_key.startswith("hs" + namespace_tag("ns:{odd}") + "{")
    assert key.state_key.count("{") == 1 and key.state_key.endswith("}")


@pytest.mark.parametrize(
    ("left", "right"),
    [
        (("ns", "card", "c1"), ("ns", "merchant", "c1")),
        (("ns", "card", "c1"), ("ns2", "card", "c1")),
        (("a\x00card\x00b", "card", "c"), ("a", "card", "b\x00card\x00c")),
        (("ns", "card", "a:b"), ("ns", "card", "a%3Ab")),
    ],
)
def test_distinct_identities_get_distinct_keys(left: tuple[str, str, str], right: tuple[str, str, str]) -> None:
    assert EntityKey(*left).state_key != EntityKey(*right).state_key


def test_many_ids_do_not_collide() -> None:
    keys = {EntityKey("ns", "card", f"card-{i:06d}-1").state_key for i in range(100_000)}
    assert len(keys) == 100_000


@pytest.mark.parametrize(
    "key", ["hs:{ns:card:c1}", "hsEUY{UMxhbx7XcssBND}d7", "hsEUY{short}", "xxEUY{UMxhbx7XcssBND}", 7]
)
def test_anything_but_a_state_key_is_refused(key: object) -> None:
    with pytest.raises(InvalidStateRequest, match="not a state key"):
        check_state_key(key)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("namespace", "entity_type", "entity_id"),
    [("", "card", "c1"), ("ns", "terminal", "c1"), ("ns", "card", ""), ("ns", "card", "x" * 129)],
)
def test_invalid_entity_keys_are_refused_with_a_clear_error(namespace: str, entity_type: str, entity_id: str) -> None:
    with pytest.raises(InvalidStateRequest):
        EntityKey(namespace, entity_type, entity_id)


def test_key_cache_gives_the_key_entity_key_builds_and_builds_it_once() -> None:
    cache = EntityKeys("fraud-gru@v3")
    key = cache.get("merchant", "m-1")
    assert key == EntityKey("fraud-gru@v3", "merchant", "m-1")
    assert key.state_key == EntityKey("fraud-gru@v3", "merchant", "m-1").state_key
    assert cache.get("merchant", "m-1") is key
    assert cache.get("card", "m-1") != key  # the same id of another type is another entity


def test_key_cache_stays_within_its_limit_and_keeps_answering() -> None:
    cache = EntityKeys("ns", limit=3)
    keys = [cache.get("card", f"c{i}") for i in range(10)]
    assert all(len(known) <= 3 for known in cache._by_type.values())
    assert [cache.get("card", f"c{i}") for i in range(10)] == keys


@pytest.mark.parametrize(("entity_type", "entity_id"), [("account", "a1"), ("card", ""), ("card", "x" * 129)])
def test_key_cache_refuses_what_entity_key_refuses(entity_type: str, entity_id: str) -> None:
    with pytest.raises(InvalidStateRequest):
        EntityKeys("ns").get(entity_type, entity_id)


def test_key_cache_refuses_a_bad_namespace_at_once() -> None:
    with pytest.raises(InvalidStateRequest):
        EntityKeys("")


def test_scan_pattern_matches_state_keys_of_its_namespace_only() -> None:
    from fnmatch import fnmatchcase  # Valkey's MATCH glob agrees with fnmatch on ?, * and literal braces

    key = EntityKey("m*[1]@v1", "card", "c1")
    assert fnmatchcase(key.state_key, state_key_pattern("m*[1]@v1"))
    assert fnmatchcase(key.state_key, state_key_pattern())
    assert not fnmatchcase(key.dedupe_key(3), state_key_pattern())
    assert not fnmatchcase(EntityKey("other@v1", "card", "c1").state_key, state_key_pattern("m*[1]@v1"))


def test_state_value_round_trips_with_millisecond_time_and_float16_state() -> None:
    hidden = np.linspace(-2, 2, 64, dtype=np.float32)
    raw = encode_state(41, 1_767_225_600.1234, hidden, b"\x01PT", 64)
    assert len(raw) == HEADER_SIZE + 128 + 3
    state = decode_state("k", raw, 64)
    assert state.version == 41
    assert state.last_event_time == pytest.approx(1_767_225_600.123, abs=1e-6)
    assert state.hidden.dtype == np.float16
    np.testing.assert_array_equal(state.hidden, hidden.astype(np.float16))
    assert state.context == b"\x01PT"


def test_largest_value_at_hidden_size_64_fits_in_148_bytes() -> None:
    assert len(encode_state(1, 1.0, np.zeros(64), b"12345678", 64)) == 148


def test_absent_value_decodes_to_the_unseen_default() -> None:
    state = decode_state("k", None, 8)
    assert (state.version, state.last_event_time, state.context) == (0, 0.0, b"")
    np.testing.assert_array_equal(state.hidden, np.zeros(8, dtype=np.float16))
    assert isinstance(state, EntityState)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [(b"", "shorter"), (b"\x07" + b"\x00" * 200, "layout version 7"), (b"\x01" + b"\x00" * 11 + b"\x00" * 10, "size")],
)
def test_undecodable_bytes_raise_state_corrupt_naming_the_key(raw: bytes, reason: str) -> None:
    with pytest.raises(StateCorrupt, match=reason) as caught:
        decode_state("hs:{ns:card:c9}", raw, 64)
    assert caught.value.key == "hs:{ns:card:c9}"
    assert "hs:{ns:card:c9}" in str(caught.value)


@pytest.mark.parametrize(
    "bad",
    [
        {"hidden": np.zeros(63)},
        {"hidden": np.full(64, np.nan)},
        {"hidden": np.full(64, 1e6)},  # beyond float16
        {"context": b"123456789"},
        {"last_event_time": -1.0},
        {"version": 0},
    ],
)
def test_values_the_layout_cannot_hold_are_refused(bad: dict) -> None:
    args = {"version": 1, "last_event_time": 1.0, "hidden": np.zeros(64), "context": b""} | bad
    with pytest.raises(InvalidStateRequest):
        encode_state(args["version"], args["last_event_time"], args["hidden"], args["context"], 64)


def test_a_batch_encodes_each_state_as_it_would_alone() -> None:
    rng = np.random.default_rng(3)
    hidden = [rng.normal(size=64).astype(np.float32), rng.normal(size=64).astype(np.float16), np.zeros(64)]
    args = ([1, 7, 2**40 - 1], [0.0, 1_767_225_600.001, 2.5], hidden, [b"", b"\x01PT", b"c" * 8])
    alone = [encode_state(v, t, h, c, 64) for v, t, h, c in zip(*args, strict=True)]
    assert encode_states(*args, 64) == alone
    for raw, h in zip(alone, hidden, strict=True):
        np.testing.assert_array_equal(decode_state("k", raw, 64).hidden, np.asarray(h).astype(np.float16))
    assert encode_states([], [], [], [], 64) == []


def _random_entries(rng: np.random.Generator, n: int) -> tuple[list, list, list, list]:
    versions = [int(v) for v in rng.integers(1, 2**40, n)]
    times = [float(t) for t in rng.uniform(0, 2e6, n).round(4)]  # half milliseconds too: both paths round alike
    hidden = [rng.normal(scale=4, size=64).astype(rng.choice([np.float32, np.float16, np.float64])) for _ in range(n)]
    contexts = [bytes(rng.integers(0, 256, rng.integers(0, 9)).astype(np.uint8)) for _ in range(n)]
    return versions, times, hidden, contexts


@pytest.mark.parametrize("n", [1, 2, 3, 4, 7, 8, 9, 16])
def test_small_batches_encode_row_by_row_to_the_same_bytes_as_the_matrix(n: int) -> None:
    rng = np.random.default_rng(n)
    for _ in range(50):
        entries = _random_entries(rng, n)
        assert _encode_rows(*entries, 64) == _encode_matrix(*entries, 64)
    assert _encode_rows([], [], [], [], 64) == _encode_matrix([], [], [], [], 64) == []


@pytest.mark.parametrize(("index", "bad"), [(2, {"hidden": np.full(64, np.inf)}), (1, {"hidden": np.zeros(8)}),
                                            (1, {"hidden": np.full(64, 1e6)}), (0, {"version": 0}),
                                            (2, {"version": 2.5}), (1, {"version": 2**70}),
                                            (2, {"last_event_time": float("nan")}), (0, {"last_event_time": "noon"}),
                                            (1, {"context": b"123456789"})])
def test_small_batches_refuse_what_the_matrix_refuses_with_the_same_index_and_detail(index: int, bad: dict) -> None:
    rows = [{"version": 1, "last_event_time": 1.0, "hidden": np.zeros(64), "context": b""} for _ in range(3)]
    rows[index] |= bad
    rows[(index + 1) % 3] |= {"hidden": np.full(64, np.nan)}  # a hidden problem is reported before a field's
    args = [[r[f] for r in rows] for f in ("version", "last_event_time", "hidden", "context")]
    errors = []
    for encode in (_encode_rows, _encode_matrix):
        with pytest.raises(InvalidEntry) as caught:
            encode(*args, 64)
        errors.append((caught.value.index, str(caught.value)))
    assert errors[0] == errors[1]


def test_a_batch_decodes_each_value_as_it_would_alone() -> None:
    rng = np.random.default_rng(5)
    raws = [encode_state(3, 12.5, rng.normal(size=64), b"\x01PT", 64), None,
            encode_state(2**40 - 1, 0.0, np.zeros(64), b"c" * 8, 64)]
    keys = ["a", "b", "c"]
    batch = decode_states(keys, raws, 64)
    for state, key, raw in zip(batch, keys, raws, strict=True):
        alone = decode_state(key, raw, 64)
        assert (state.version, state.last_event_time, state.context) == (alone.version, alone.last_event_time,
                                                                         alone.context)
        assert state.hidden.dtype == np.float16 and state.hidden.shape == (64,)
        np.testing.assert_array_equal(state.hidden, alone.hidden)
    assert batch[1].version == 0 and not batch[1].hidden.any()
    with pytest.raises(StateCorrupt) as caught:
        decode_states(keys, [raws[0], raws[0][:-140], raws[2]], 64)
    assert caught.value.key == "b"


@pytest.mark.parametrize(("index", "bad"), [(2, {"hidden": np.full(64, np.inf)}), (1, {"hidden": np.zeros(8)}),
                                            (2, {"version": 0}), (1, {"context": b"123456789"}),
                                            (1, {"version": 2.5}), (3, {"version": 2**40}), (3, {"version": 2**70}),
                                            (2, {"last_event_time": float("nan")}),
                                            (1, {"last_event_time": "noon"})])
def test_a_batch_names_the_first_entry_it_cannot_encode(index: int, bad: dict) -> None:
    rows = [{"version": 1, "last_event_time": 1.0, "hidden": np.zeros(64), "context": b""} for _ in range(4)]
    rows[index] |= bad
    with pytest.raises(InvalidEntry) as caught:
        encode_states(*([r[f] for r in rows] for f in ("version", "last_event_time", "hidden", "context")), 64)
    assert caught.value.index == index


def test_event_digest_is_16_bytes_and_distinguishes_source_from_id() -> None:
    assert len(event_digest("s\x00id")) == 16
    assert event_digest("a\x00bc") != event_digest("ab\x00c")


def test_applied_record_round_trips_and_limits_the_receipt() -> None:
    assert decode_applied("k", encode_applied(9, b"score")) == (9, b"score")
    with pytest.raises(InvalidStateRequest):
        encode_applied(1, b"x" * 17)


def test_state_key_command_prints_the_key_a_store_would_use(capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from functions.cli import main as hiddenstate

    assert hiddenstate(["state", "key", "fraud-gru@v3", "card", "c1"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["state_key"] == EntityKey("fraud-gru@v3", "card", "c1").state_key
    assert printed["namespace_pattern"] == state_key_pattern("fraud-gru@v3")
