"""The registry: publish versioned model packages, move aliases, read manifests.

Layout under the registry root (a directory or an S3 prefix)::

    <name>/aliases.json              {"champion": "v3", "challenger": "v4"}
    <name>/v<N>/.claim               written first, create-if-absent: reserves version N
    <name>/v<N>/<files>              weights (safetensors) and other package files
    <name>/v<N>/manifest.json        written last: a version exists once its manifest does

Versions count up per name (v1, v2, ...). A publisher reserves the next number with a create-if-absent write, so
two publishers racing never share a number; a crashed publish leaves a claimed number without a manifest, which
is skipped, never reused. Manifests are immutable once an alias points at them: ``update_lifecycle`` (for figures
measured after publishing, such as ``load_seconds``) refuses a version that any alias names.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from functions.registry.errors import InvalidManifest, ModelNotFound, RegistryError
from functions.registry.manifest import (
    ALIASES_FILE,
    CLAIM_FILE,
    MANIFEST_FILE,
    REGISTRY_LIFECYCLE_KEYS,
    build_manifest,
    check_files,
    decode_manifest,
    encode_json,
    sha256_hex,
    validate_manifest_fields,
)
from functions.registry.storage import Storage, open_storage
from functions.registry.uris import (
    PackageRef,
    RegistryLocation,
    check_alias,
    check_name,
    check_version,
    is_version,
    parse_registry_uri,
    version_number,
)

log = logging.getLogger(__name__)
_MAX_CLAIM_ATTEMPTS = 100


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Registry:
    """Versioned model packages in one registry (a ``file://`` directory or an ``s3://`` prefix)."""

    def __init__(self, location: RegistryLocation, storage: Storage | None = None) -> None:
        self.location = location
        self.storage = storage or open_storage(location)

    @property
    def uri(self) -> str:
        return self.location.uri

    def __repr__(self) -> str:
        return f"Registry({self.uri!r})"

    def ref(self, name: str, version: str) -> PackageRef:
        return PackageRef(self.uri, check_name(name), check_version(version))

    # -----------------------------------------------------------------------------------------------------
    # Reading.

    def _version_keys(self, name: str) -> tuple[set[int], set[int]]:
        """(claimed, published) version numbers of ``name``."""
        claimed: set[int] = set()
        published: set[int] = set()
        for key in self.storage.list_keys(name):
            parts = key.split("/")
            if len(parts) == 3 and is_version(parts[1]):
                claimed.add(version_number(parts[1]))
                if parts[2] == MANIFEST_FILE:
                    published.add(version_number(parts[1]))
        return claimed, published

    def versions(self, name: str) -> list[str]:
        """Published versions of ``name``, oldest first (empty for an unknown name)."""
        _, published = self._version_keys(check_name(name))
        return [f"v{n}" for n in sorted(published)]

    def aliases(self, name: str) -> dict[str, str]:
        """Alias -> version for ``name`` (empty when none is set)."""
        data = self.storage.read(f"{check_name(name)}/{ALIASES_FILE}")
        return {} if data is None else self._decode_aliases(name, data)

    def _decode_aliases(self, name: str, data: bytes) -> dict[str, str]:
        where = self.storage.describe(f"{name}/{ALIASES_FILE}")
        try:
            aliases = json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise InvalidManifest(f"aliases file {where} is not valid JSON: {exc}") from None
        if not isinstance(aliases, dict) or not all(
            isinstance(k, str) and isinstance(v, str) and is_version(v) for k, v in aliases.items()
        ):
            raise InvalidManifest(f"aliases file {where} must map alias names to versions like 'v3'")
        return aliases

    def manifest(self, name: str, version: str) -> dict[str, Any]:
        """The checked manifest of one version. Raises ``ModelNotFound`` or ``InvalidManifest``."""
        key = f"{check_name(name)}/{check_version(version)}/{MANIFEST_FILE}"
        data = self.storage.read(key)
        if data is None:
            known = self.versions(name)
            if not known:
                raise ModelNotFound(f"no model named '{name}' in registry {self.uri}")
            raise ModelNotFound(
                f"model '{name}' has no version {version} in registry {self.uri}; versions: {', '.join(known)}"
            )
        return decode_manifest(data, name, version, self.storage.describe(key))

    def resolve(self, name: str, reference: str) -> str:
        """The version that ``reference`` (a version or an alias) names now."""
        if is_version(reference):
            return reference
        aliases = self.aliases(name)
        if reference not in aliases:
            if not self.versions(name):
                raise ModelNotFound(f"no model named '{name}' in registry {self.uri}")
            known = ", ".join(sorted(aliases)) or "none"
            raise ModelNotFound(f"model '{name}' has no alias '{reference}' in registry {self.uri}; aliases: {known}")
        return aliases[reference]

    # -----------------------------------------------------------------------------------------------------
    # Writing.

    def _claim_version(self, name: str) -> str:
        claimed, _ = self._version_keys(name)
        number = max(claimed, default=0) + 1
        owner = encode_json({"claimed_at": utc_now(), "host": socket.gethostname(), "pid": os.getpid()}, "claim")
        for _ in range(_MAX_CLAIM_ATTEMPTS):
            if self.storage.create(f"{name}/v{number}/{CLAIM_FILE}", owner):
                return f"v{number}"
            number += 1  # another publisher took it; the next one up is still "newer than everything seen"
        raise RegistryError(f"could not claim a version for '{name}' after {_MAX_CLAIM_ATTEMPTS} attempts")

    def publish(
        self,
        name: str,
        files: Mapping[str, bytes],
        manifest_fields: Mapping[str, Any],
        *,
        alias: str | None = None,
    ) -> PackageRef:
        """Write ``files`` and their manifest as the next version of ``name``, then point ``alias`` at it.

        Validates everything before writing anything. The manifest goes last, so a reader never sees a version
        whose files are incomplete.
        """
        check_name(name)
        if alias is not None:
            check_alias(alias)
        check_files(files)
        fields = validate_manifest_fields(manifest_fields)

        version = self._claim_version(name)
        started = time.perf_counter()
        entries: dict[str, dict[str, Any]] = {}
        for file_name, data in files.items():
            data = bytes(data)
            self.storage.write(f"{name}/{version}/{file_name}", data)
            entries[file_name] = {"sha256": sha256_hex(data), "bytes": len(data)}
        save_seconds = time.perf_counter() - started

        manifest = build_manifest(name, version, utc_now(), entries, fields, save_seconds)
        self.storage.write(f"{name}/{version}/{MANIFEST_FILE}", encode_json(manifest, "manifest"))
        ref = PackageRef(self.uri, name, version)
        log.info(
            "model package published",
            extra={"model": ref.uri(), "package_bytes": manifest["lifecycle"]["package_bytes"],
                   "save_seconds": manifest["lifecycle"]["save_seconds"]},
        )
        if alias is not None:
            self.set_alias(name, alias, version)
        return ref

    def set_alias(self, name: str, alias: str, version: str) -> None:
        """Point ``alias`` at a published ``version``, atomically with respect to other alias moves."""
        check_name(name)
        check_alias(alias)
        check_version(version)
        self.manifest(name, version)  # only published versions can be named

        def move(current: bytes | None) -> bytes:
            aliases = {} if current is None else self._decode_aliases(name, current)
            aliases[alias] = version
            return encode_json(aliases, "aliases")

        self.storage.update(f"{name}/{ALIASES_FILE}", move)
        log.info("model alias moved", extra={"model": f"{self.uri}/{name}@{alias}", "version": version})

    def remove_alias(self, name: str, alias: str) -> None:
        """Delete ``alias``. Raises ``ModelNotFound`` if it is not set."""
        check_name(name)
        check_alias(alias)

        def drop(current: bytes | None) -> bytes:
            aliases = {} if current is None else self._decode_aliases(name, current)
            if alias not in aliases:
                raise ModelNotFound(f"model '{name}' has no alias '{alias}' in registry {self.uri}")
            del aliases[alias]
            return encode_json(aliases, "aliases")

        self.storage.update(f"{name}/{ALIASES_FILE}", drop)

    def update_lifecycle(self, name: str, version: str, **figures: float) -> dict[str, Any]:
        """Add figures measured after publishing (``load_seconds``) to a manifest no alias points at yet.

        Once an alias names a version, its manifest is frozen: consumers following the alias must be able to
        trust that what they verified does not change. Returns the updated manifest.
        """
        self.manifest(name, version)
        owned = sorted(REGISTRY_LIFECYCLE_KEYS & set(figures))
        if owned:
            raise InvalidManifest(f"lifecycle.{owned[0]} is measured by the registry, not the caller")
        for key, value in figures.items():
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < float("inf"):
                raise InvalidManifest(f"lifecycle.{key} must be a number >= 0, got {value!r}")
        pointing = sorted(alias for alias, target in self.aliases(name).items() if target == version)
        if pointing:
            raise RegistryError(
                f"manifest of {name}/{version} is frozen: alias '{pointing[0]}' points at it; "
                "record lifecycle figures before setting an alias"
            )
        key = f"{name}/{version}/{MANIFEST_FILE}"
        where = self.storage.describe(key)

        def add(current: bytes | None) -> bytes:
            if current is None:
                raise ModelNotFound(f"manifest {where} disappeared during the update")
            manifest = decode_manifest(current, name, version, where)
            manifest["lifecycle"] = {**manifest["lifecycle"], **figures}
            return encode_json(manifest, "manifest")

        return json.loads(self.storage.update(key, add))


def open_registry(uri: str) -> Registry:
    """The registry at ``file:///abs/dir`` or ``s3://bucket/prefix``. Raises ``InvalidModelUri``."""
    return Registry(parse_registry_uri(uri))
