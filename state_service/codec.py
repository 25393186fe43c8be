"""The state value's binary layout: pure functions, no I/O.

    offset  size  field
    0       1     layout version (1)
    1       5     version counter, unsigned little-endian (10^12 events per entity)
    6       6     last event time, unsigned milliseconds since the Unix epoch, little-endian
    12      2*H   hidden state, float16 little-endian
    12+2H   0..8  model context (opaque bytes; its length is what remains)

40- and 48-bit integers instead of 64-bit ones keep a value with an 8-byte context at 148 bytes for H=64, the
largest size in its allocator class (149 bytes costs 16 more per entity). float16 halves Valkey memory; the GRU
step is computed in float32. The Lua library reads only bytes 0-5 (layout and version).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from state_service.errors import InvalidStateRequest, StateCorrupt

LAYOUT_VERSION = 1
HEADER_SIZE = 12
VERSION_BYTES = 5
TIME_BYTES = 6
MAX_VERSION = (1 << (8 * VERSION_BYTES)) - 1
MAX_TIME_MS = (1 << (8 * TIME_BYTES)) - 1
MAX_CONTEXT = 8
MAX_RECEIPT = 16
EVENT_DIGEST_SIZE = 16
_F16 = np.dtype("<f2")


@dataclass(frozen=True, slots=True)
class EntityState:
    """One entity's stored state; the default state (version 0, zeros) for an unseen entity."""

    version: int
    last_event_time: float  # Unix seconds, millisecond resolution; 0.0 when unseen
    hidden: np.ndarray  # float16 [hidden_size]
    context: bytes  # opaque, at most 8 bytes; b"" when unseen
    # The stored bytes this state was decoded from (None when unseen): an update computed from it expects exactly
    # these bytes, which catches what a version cannot (an entity erased and rebuilt to the same version).
    raw: bytes | None = field(default=None, compare=False, repr=False)

    @classmethod
    def unseen(cls, hidden_size: int) -> EntityState:
        return cls(0, 0.0, np.zeros(hidden_size, dtype=np.float16), b"")


class InvalidEntry(InvalidStateRequest):
    """A value ``encode_states`` cannot encode; ``index`` says which of the batch."""

    def __init__(self, index: int, detail: str) -> None:
        super().__init__(detail)
        self.index = index


def encode_state(version: int, last_event_time: float, hidden: np.ndarray, context: bytes, hidden_size: int) -> bytes:
    return encode_states([version], [last_event_time], [hidden], [context], hidden_size)[0]


# Up to this many entities, encoding goes row by row. In a warm loop rows cost ~3 us each and the byte matrix ~20 us
# plus ~0.8 per entity, even at 8. On the request path, where the matrix's twenty-odd numpy calls run cold, it cost
# a lone event's two entities ~50 us against ~25 row by row (7 % of the event's CPU, in-process).
ROW_BY_ROW_MAX = 8


def encode_states(versions: Sequence[int], last_event_times: Sequence[float], hidden: Sequence[np.ndarray],
                  contexts: Sequence[bytes], hidden_size: int) -> list[bytes]:
    """Values for a batch of entities, in order; ``InvalidEntry`` names the first one the layout cannot hold."""
    if len(contexts) <= ROW_BY_ROW_MAX:
        return _encode_rows(versions, last_event_times, hidden, contexts, hidden_size)
    return _encode_matrix(versions, last_event_times, hidden, contexts, hidden_size)


def _encode_rows(versions: Sequence[int], last_event_times: Sequence[float], hidden: Sequence[np.ndarray],
                 contexts: Sequence[bytes], hidden_size: int) -> list[bytes]:
    """``encode_states`` one entity at a time, for small batches; the same bytes and errors as the matrix."""
    if not len(versions) == len(last_event_times) == len(hidden) == len(contexts):
        raise ValueError("encode_states needs one version, time, state and context per entity")
    # As in the matrix: every shape is checked before any value, then the fields.
    rows = [_float16_row(i, row) for i, row in enumerate(_shaped_rows(hidden, hidden_size))]
    out = []
    for i, (version, last_event_time, row, context) in enumerate(
            zip(versions, last_event_times, rows, contexts, strict=True)):
        problem = _problem(version, last_event_time, context)
        if problem:
            raise InvalidEntry(i, problem)
        header = bytes((LAYOUT_VERSION,)) + int(version).to_bytes(VERSION_BYTES, "little") \
            + int(np.rint(float(last_event_time) * 1000)).to_bytes(TIME_BYTES, "little")
        out.append(header + row.tobytes() + context)
    return out


def _shaped_rows(hidden: Sequence[np.ndarray], hidden_size: int) -> list[np.ndarray]:
    rows = [np.asarray(h) for h in hidden]
    for i, row in enumerate(rows):
        if row.shape != (hidden_size,):
            raise InvalidEntry(i, f"hidden state must have shape ({hidden_size},), got {row.shape}")
    return rows


def _float16_row(index: int, row: np.ndarray) -> np.ndarray:
    if row.dtype != _F16:
        with np.errstate(over="ignore"):  # overflow to inf is reported just below, as a clear error
            row = row.astype(_F16)
    if not np.isfinite(row).all():
        raise InvalidEntry(index, "hidden state has NaN or values outside float16 range")
    return row


def _encode_matrix(versions: Sequence[int], last_event_times: Sequence[float], hidden: Sequence[np.ndarray],
                   contexts: Sequence[bytes], hidden_size: int) -> list[bytes]:
    """``encode_states`` with headers and hidden states built as one byte matrix, a row per entity: numpy's fixed
    cost per call, or Python's per field, paid per entity, was most of what encoding cost a 256-event batch."""
    matrix = _hidden_matrix(hidden, hidden_size)
    n = len(matrix)
    if not len(versions) == len(last_event_times) == len(contexts) == n:
        raise ValueError("encode_states needs one version, time, state and context per entity")
    version_array = np.array(versions)
    try:
        times_ms = np.array(last_event_times, dtype=np.float64) * 1000
    except (TypeError, ValueError):  # not all numbers: the loop below names the first
        times_ms = np.full(n, np.nan)
    with np.errstate(invalid="ignore"):
        bad = ~np.isfinite(times_ms) | (times_ms < 0) | (times_ms > MAX_TIME_MS)
        if version_array.dtype.kind not in "iu":
            bad |= True  # not all ints (or one too large for int64): the loop below names the first
        else:
            bad |= (version_array <= 0) | (version_array > MAX_VERSION)
    for i, context in enumerate(contexts):
        if bad[i] or not isinstance(context, bytes) or len(context) > MAX_CONTEXT:
            problem = _problem(versions[i], last_event_times[i], context)
            if problem:
                raise InvalidEntry(i, problem)
    rows = np.empty((n, HEADER_SIZE + 2 * hidden_size), np.uint8)
    rows[:, 0] = LAYOUT_VERSION
    rows[:, 1:6] = version_array.astype("<u8").view(np.uint8).reshape(n, 8)[:, :VERSION_BYTES]
    rows[:, 6:12] = np.rint(times_ms).astype("<u8").view(np.uint8).reshape(n, 8)[:, :TIME_BYTES]
    rows[:, HEADER_SIZE:] = matrix.view(np.uint8).reshape(n, 2 * hidden_size)
    data = rows.tobytes()
    width = rows.shape[1]
    return [data[i * width : (i + 1) * width] + context for i, context in enumerate(contexts)]


def _problem(version: object, last_event_time: object, context: object) -> str | None:
    """What is wrong with one entity's fields, if anything (a batch-wide check only says where to look)."""
    if not isinstance(version, int | np.integer) or not 0 < version <= MAX_VERSION:
        return f"version must be in 1..{MAX_VERSION}, got {version}"
    if isinstance(last_event_time, bool) or not isinstance(last_event_time, int | float | np.number) \
            or not math.isfinite(last_event_time) or not 0 <= last_event_time * 1000 <= MAX_TIME_MS:
        return f"last_event_time must be Unix seconds >= 0, got {last_event_time}"
    if not isinstance(context, bytes) or len(context) > MAX_CONTEXT:
        return f"context must be bytes of at most {MAX_CONTEXT}"
    return None


def _hidden_matrix(hidden: Sequence[np.ndarray], hidden_size: int) -> np.ndarray:
    """The states as one contiguous little-endian float16 matrix, or ``InvalidEntry`` for the first bad one."""
    rows = _shaped_rows(hidden, hidden_size)
    if not rows:
        return np.zeros((0, hidden_size), _F16)
    matrix = np.stack(rows)
    if matrix.dtype != _F16:
        with np.errstate(over="ignore"):  # overflow to inf is reported just below, as a clear error
            matrix = matrix.astype(_F16)
    finite = np.isfinite(matrix).all(axis=1)
    if not finite.all():
        raise InvalidEntry(int(np.flatnonzero(~finite)[0]), "hidden state has NaN or values outside float16 range")
    return matrix


def decode_state(key: str, raw: bytes | None, hidden_size: int) -> EntityState:
    """Decode a stored value; ``None`` (no key) is the unseen default. Raises ``StateCorrupt`` naming ``key``."""
    return decode_states([key], [raw], hidden_size)[0]


def decode_states(keys: Sequence[str], raws: Sequence[bytes | None], hidden_size: int) -> list[EntityState]:
    """``decode_state`` for a batch: the hidden states are converted in one float16 matrix (each state a row of
    it) instead of one small array each, which was most of what decoding cost a 256-event batch."""
    width = 2 * hidden_size
    unseen_hidden = bytes(width)
    hidden_parts = []
    heads = []
    for key, raw in zip(keys, raws, strict=True):
        if raw is None:
            hidden_parts.append(unseen_hidden)
            heads.append(None)
            continue
        if len(raw) < HEADER_SIZE:
            raise StateCorrupt(key, f"{len(raw)} bytes is shorter than the {HEADER_SIZE}-byte header")
        if raw[0] != LAYOUT_VERSION:
            raise StateCorrupt(key, f"unknown layout version {raw[0]} (this client reads {LAYOUT_VERSION})")
        if not 0 <= len(raw) - HEADER_SIZE - width <= MAX_CONTEXT:
            raise StateCorrupt(key, f"{len(raw)} bytes does not hold a float16 state of size {hidden_size}")
        hidden_parts.append(raw[HEADER_SIZE : HEADER_SIZE + width])
        heads.append(raw)
    # A native-order, writable copy: every state's row is a view of it.
    matrix = np.frombuffer(b"".join(hidden_parts), dtype=_F16).astype(np.float16).reshape(len(heads), hidden_size)
    return [
        EntityState(0, 0.0, row, b"") if raw is None else EntityState(
            version=int.from_bytes(raw[1 : 1 + VERSION_BYTES], "little"),
            last_event_time=int.from_bytes(raw[6 : 6 + TIME_BYTES], "little") / 1000.0,
            hidden=row,
            context=bytes(raw[HEADER_SIZE + width :]),
            raw=raw,
        )
        for raw, row in zip(heads, matrix, strict=True)
    ]


def event_digest(event_key: str) -> bytes:
    """The dedupe field for an event: 16 bytes of BLAKE2b, so memory per event does not grow with id length.
    At 2^64 birthday bound, a false duplicate among one entity's recent events is not a practical risk."""
    return hashlib.blake2b(event_key.encode(), digest_size=EVENT_DIGEST_SIZE).digest()


def encode_applied(version: int, receipt: bytes) -> bytes:
    """The dedupe value: the version the event was applied at, then its receipt."""
    if not isinstance(receipt, bytes) or len(receipt) > MAX_RECEIPT:
        raise InvalidStateRequest(f"receipt must be bytes of at most {MAX_RECEIPT}")
    return version.to_bytes(VERSION_BYTES, "little") + receipt


def decode_applied(key: str, raw: bytes) -> tuple[int, bytes]:
    if len(raw) < VERSION_BYTES:
        raise StateCorrupt(key, "dedupe record shorter than its version")
    return int.from_bytes(raw[:VERSION_BYTES], "little"), bytes(raw[VERSION_BYTES:])
