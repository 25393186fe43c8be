"""Key layout: one fixed-length Valkey key per (namespace, entity type, entity id), hash-tagged per entity.

``hs<ns>{<entity>}`` holds the state value and ``hs<ns>{<entity>}d<bucket>`` the entity's dedupe memory for one
time bucket, where ``<ns>`` is a 3-character digest of the namespace and ``<entity>`` a 14-character digest of
(namespace, type, id), both URL-safe base64 of BLAKE2b.

Why digests instead of readable names: the key name is part of each entity's memory, and Valkey rounds every
allocation up to a 16-byte class. A 21-character key keeps a state at 192 bytes (``MEMORY USAGE``, H=64) whatever
the id looks like; readable names (``hs:{fraud-gru@v3:card:card-000123-1}``) cost 208-224 bytes. Fixed-length
keys also keep raw card numbers out of the keyspace (an unkeyed digest is not a protection of them, only a way
not to display them).

Collisions: 84 bits per entity give a chance of about 10^-8 that any two of 10^9 entities in one namespace share a
key. The 18-bit namespace tag only narrows SCAN to one namespace; two namespaces sharing a tag (about 2 % over 100
model versions) make a per-namespace snapshot carry the other's states too, which a restore writes back to their
own keys. Entity digests include the namespace, so states never mix.

The braces are a Valkey Cluster hash tag: an entity's state and its dedupe buckets share a slot, so one entity's
update is single-slot. Different entities land in different slots, which is why a batch (MGET, one FCALL over many
entities) is single-node only on a standalone server; on Cluster the client must group a batch per slot.
"""

from __future__ import annotations

import re
from base64 import urlsafe_b64encode
from dataclasses import dataclass, field
from functools import lru_cache
from hashlib import blake2b

from state_service.errors import InvalidStateRequest

KEY_PREFIX = "hs"
ENTITY_TYPES = ("card", "merchant")
ENTITY_ID_MAX = 128
NAMESPACE_MAX = 128
NAMESPACE_TAG_CHARS = 3
ENTITY_DIGEST_CHARS = 14
STATE_KEY_LENGTH = len(KEY_PREFIX) + NAMESPACE_TAG_CHARS + ENTITY_DIGEST_CHARS + 2
# Personalised hashes: a digest of a namespace can never equal a digest of an entity by construction.
_NAMESPACE_PERSON = b"hs-namespace"
_ENTITY_PERSON = b"hs-entity"
_B64 = r"[A-Za-z0-9_-]"
_STATE_KEY = re.compile(rf"{KEY_PREFIX}{_B64}{{{NAMESPACE_TAG_CHARS}}}\{{{_B64}{{{ENTITY_DIGEST_CHARS}}}\}}")


@dataclass(frozen=True, slots=True)
class EntityKey:
    """Identity of one entity's state. The namespace carries the model name and version, e.g. ``fraud-gru@v3``,
    so a new model never reads an old model's states.

    >>> EntityKey("fraud-gru@v3", "card", "c1").state_key
    'hsEUY{UMxhbx7XcssBND}'
    """

    namespace: str
    entity_type: str
    entity_id: str
    # Built once: a batch derives three key names per entity.
    state_key: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.namespace, str) or not 1 <= len(self.namespace) <= NAMESPACE_MAX:
            raise InvalidStateRequest(f"namespace must be a string of 1-{NAMESPACE_MAX} characters")
        if self.entity_type not in ENTITY_TYPES:
            raise InvalidStateRequest(f"entity_type must be one of {ENTITY_TYPES}, got {self.entity_type!r}")
        if not isinstance(self.entity_id, str) or not 1 <= len(self.entity_id) <= ENTITY_ID_MAX:
            raise InvalidStateRequest(f"entity_id must be a string of 1-{ENTITY_ID_MAX} characters")
        digest = _b64(_entity_hash(self.namespace, self.entity_type, self.entity_id))[:ENTITY_DIGEST_CHARS]
        object.__setattr__(self, "state_key", f"{KEY_PREFIX}{namespace_tag(self.namespace)}{{{digest}}}")

    def dedupe_key(self, bucket: int) -> str:
        """The entity's dedupe hash for one time bucket (same hash tag, so same slot as the state)."""
        return f"{self.state_key}d{bucket}"

    def __str__(self) -> str:
        return f"{self.namespace}/{self.entity_type}/{self.entity_id}"


class EntityKeys:
    """``EntityKey``s of one namespace, each built once: the scorer sees the same cards and merchants again and
    again, and building a key (checks, a BLAKE2b digest, base64) was a tenth of its CPU per event in batch mode.

    At most ``limit`` keys per entity type are kept; past that the cache starts over, so memory stays bounded
    whatever the number of entities. Safe to share between threads: a lost race builds one key twice."""

    def __init__(self, namespace: str, limit: int = 1 << 17) -> None:
        EntityKey(namespace, ENTITY_TYPES[0], "-")  # the namespace is checked once, here
        self.namespace = namespace
        self.limit = limit
        self._by_type: dict[str, dict[str, EntityKey]] = {t: {} for t in ENTITY_TYPES}

    def get(self, entity_type: str, entity_id: str) -> EntityKey:
        known = self._by_type.get(entity_type)
        key = known.get(entity_id) if known is not None else None
        if key is None:
            key = EntityKey(self.namespace, entity_type, entity_id)  # raises for an unknown type or a bad id
            if len(known) >= self.limit:
                known.clear()
            known[entity_id] = key
        return key


@lru_cache(maxsize=64)  # a scorer serves one namespace; every key it builds starts with its tag
def namespace_tag(namespace: str) -> str:
    """The 3-character tag every state key of ``namespace`` starts with (after the prefix)."""
    raw = namespace.encode("utf-8", "surrogatepass")
    return _b64(blake2b(raw, digest_size=3, person=_NAMESPACE_PERSON).digest())[:NAMESPACE_TAG_CHARS]


def _entity_hash(namespace: str, entity_type: str, entity_id: str) -> bytes:
    hasher = _identity_prefix(namespace, entity_type).copy()
    hasher.update(_length_prefixed(entity_id))
    return hasher.digest()


@lru_cache(maxsize=128)  # hashing the namespace once per scorer, not once per key, halves the key's cost
def _identity_prefix(namespace: str, entity_type: str) -> blake2b:
    # Length-prefixed parts, so that no choice of namespace or id can make two identities hash the same input.
    return blake2b(_length_prefixed(namespace) + _length_prefixed(entity_type), digest_size=12, person=_ENTITY_PERSON)


def _length_prefixed(part: str) -> bytes:
    raw = part.encode("utf-8", "surrogatepass")
    return len(raw).to_bytes(4, "little") + raw


def _b64(raw: bytes) -> str:
    return urlsafe_b64encode(raw).decode().rstrip("=")


def check_state_key(key: str) -> str:
    """``key`` if it is a state key (not a dedupe bucket, not another application's key); else
    ``InvalidStateRequest``. Keys are digests, so this checks the form, not which entity it names."""
    if not isinstance(key, str) or not _STATE_KEY.fullmatch(key):
        raise InvalidStateRequest(f"not a state key: {key!r}")
    return key


def state_key_pattern(namespace: str | None = None) -> str:
    """SCAN MATCH pattern for state keys (not dedupe buckets), optionally of one namespace.
    Base64url has no glob-special characters, so tags need no escaping."""
    tag = namespace_tag(namespace) if namespace is not None else "?" * NAMESPACE_TAG_CHARS
    return f"{KEY_PREFIX}{tag}{{{'?' * ENTITY_DIGEST_CHARS}}}"
