"""Key layout: one Valkey key per (namespace, entity type, entity id), hash-tagged per entity.

``hs:{<namespace>:<type>:<id>}`` holds the state value and ``hs:{<namespace>:<type>:<id>}:dd:<bucket>`` the
entity's dedupe memory for one time bucket. The braces are a Valkey Cluster hash tag: an entity's state and its
dedupe buckets always share a slot, so one entity's update is a single-slot operation. Different entities land in
different slots, which is why a batch (MGET, one FCALL over many entities) is single-node only on a standalone
server; on Cluster the client must group a batch per slot (or per node with cross-slot scripts disallowed).

Parts are percent-encoded so that no id can forge another key: ``{``, ``}``, ``:`` and ``%`` never appear raw.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import quote, unquote

from state_service.errors import InvalidStateRequest

KEY_PREFIX = "hs:"
ENTITY_TYPES = ("card", "merchant")
ENTITY_ID_MAX = 128
NAMESPACE_MAX = 128
_SAFE = "@.-_~!$&'()*+,;=/"  # readable in keys; everything else (incl. {}:% and non-ASCII) is %-escaped
_GLOB_SPECIAL = "*?[]\\"
_NEEDS_NO_ESCAPE = re.compile(r"[A-Za-z0-9" + re.escape(_SAFE) + r"]*")


@dataclass(frozen=True, slots=True)
class EntityKey:
    """Identity of one entity's state. The namespace carries the model name and version, e.g. ``fraud-gru@v3``,
    so a new model never reads an old model's states.

    >>> EntityKey("fraud-gru@v3", "card", "c1").state_key
    'hs:{fraud-gru@v3:card:c1}'
    """

    namespace: str
    entity_type: str
    entity_id: str
    # Built once: a batch derives three key names per entity, and escaping is the client's main Python cost.
    hash_tag: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.namespace, str) or not 1 <= len(self.namespace) <= NAMESPACE_MAX:
            raise InvalidStateRequest(f"namespace must be a string of 1-{NAMESPACE_MAX} characters")
        if self.entity_type not in ENTITY_TYPES:
            raise InvalidStateRequest(f"entity_type must be one of {ENTITY_TYPES}, got {self.entity_type!r}")
        if not isinstance(self.entity_id, str) or not 1 <= len(self.entity_id) <= ENTITY_ID_MAX:
            raise InvalidStateRequest(f"entity_id must be a string of 1-{ENTITY_ID_MAX} characters")
        object.__setattr__(self, "hash_tag", f"{_escape(self.namespace)}:{self.entity_type}:{_escape(self.entity_id)}")

    @property
    def state_key(self) -> str:
        return f"{KEY_PREFIX}{{{self.hash_tag}}}"

    def dedupe_key(self, bucket: int) -> str:
        """The entity's dedupe hash for one time bucket (same hash tag, so same slot as the state)."""
        return f"{self.state_key}:dd:{bucket}"

    def __str__(self) -> str:
        return f"{self.namespace}/{self.entity_type}/{self.entity_id}"


def _escape(part: str) -> str:
    return part if _NEEDS_NO_ESCAPE.fullmatch(part) else quote(part, safe=_SAFE)


def parse_state_key(key: str) -> EntityKey:
    """Inverse of ``EntityKey.state_key``; raises ``InvalidStateRequest`` for anything else."""
    if not (key.startswith(KEY_PREFIX + "{") and key.endswith("}")):
        raise InvalidStateRequest(f"not a state key: {key!r}")
    parts = key[len(KEY_PREFIX) + 1 : -1].split(":")
    if len(parts) != 3:
        raise InvalidStateRequest(f"not a state key: {key!r}")
    return EntityKey(unquote(parts[0]), parts[1], unquote(parts[2]))


def state_key_pattern(namespace: str | None = None) -> str:
    """SCAN MATCH pattern for state keys (not dedupe buckets), optionally of one namespace."""
    if namespace is None:
        return KEY_PREFIX + "{*}"
    escaped = "".join("\\" + c if c in _GLOB_SPECIAL else c for c in _escape(namespace))
    return f"{KEY_PREFIX}{{{escaped}:*}}"
