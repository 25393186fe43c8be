"""Registry and model URIs: parsing, formatting and the naming rules. Pure, no I/O.

A registry lives at ``file:///abs/dir`` or ``s3://bucket/prefix`` (the prefix may be empty). A model URI appends
either ``/<name>/<version>`` (one immutable package) or ``/<name>@<alias>`` (whatever the alias points to now):

>>> parse_model_uri("s3://models/fraud/gru@champion")
ModelUri(registry_uri='s3://models/fraud', name='gru', version=None, alias='champion')
>>> parse_model_uri("file:///srv/registry/gru/v3").version
'v3'

``<name>@v3`` is accepted too and means version ``v3``: alias names may not look like versions, so the form is
never ambiguous.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import PurePosixPath
from urllib.parse import quote, unquote, urlsplit

from functions.registry.errors import InvalidModelUri

NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
ALIAS_PATTERN = re.compile(r"^[a-z][a-z0-9-]{0,63}$")
# Versions are v1, v2, ...: a counter per model name, so "newer" is a plain integer comparison.
VERSION_PATTERN = re.compile(r"^v[1-9][0-9]{0,17}$")


def is_version(text: str) -> bool:
    return bool(VERSION_PATTERN.match(text))


def version_number(version: str) -> int:
    """``v12`` -> 12, for numeric ordering (``v10`` sorts after ``v9``)."""
    return int(version[1:])


def check_name(name: str) -> str:
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise InvalidModelUri(
            f"model name {name!r} is invalid: use 1-64 characters of a-z, 0-9, '_' and '-', starting with a letter "
            "or digit"
        )
    return name


def check_alias(alias: str) -> str:
    if not isinstance(alias, str) or not ALIAS_PATTERN.match(alias):
        raise InvalidModelUri(
            f"alias {alias!r} is invalid: use 1-64 characters of a-z, 0-9 and '-', starting with a letter"
        )
    if is_version(alias):
        raise InvalidModelUri(f"alias {alias!r} is invalid: it looks like a version, which would make URIs ambiguous")
    return alias


def check_version(version: str) -> str:
    if not isinstance(version, str) or not is_version(version):
        raise InvalidModelUri(f"version {version!r} is invalid: versions are v1, v2, v3, ...")
    return version


@dataclass(frozen=True)
class RegistryLocation:
    """Where a registry lives: a local directory or an S3 bucket plus key prefix."""

    scheme: str  # "file" or "s3"
    path: str  # the absolute directory for file, the key prefix (no leading or trailing '/') for s3
    bucket: str = ""

    @property
    def uri(self) -> str:
        if self.scheme == "file":
            return "file://" + quote(self.path, safe="/")
        return f"s3://{self.bucket}/{self.path}" if self.path else f"s3://{self.bucket}"


_URI_FORMS = "file:///absolute/dir or s3://bucket/prefix"


def _split(uri: str, what: str) -> tuple[str, str, list[str]]:
    """(scheme, bucket, path segments) of a file or s3 URI."""
    if not isinstance(uri, str) or not uri:
        raise InvalidModelUri(f"{what} must be a non-empty string like {_URI_FORMS}")
    parts = urlsplit(uri)
    scheme = parts.scheme.lower()
    if parts.query or parts.fragment:
        raise InvalidModelUri(f"{what} {uri!r} must not have a query or fragment")
    if scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise InvalidModelUri(f"{what} {uri!r} names host {parts.netloc!r}; file URIs look like file:///abs/dir")
        if not parts.path.startswith("/"):
            raise InvalidModelUri(f"{what} {uri!r} needs an absolute path: file:///abs/dir")
        segments = [unquote(s) for s in parts.path.split("/") if s]
        if any(s in (".", "..") for s in segments):
            raise InvalidModelUri(f"{what} {uri!r} must not contain '.' or '..' segments")
        return "file", "", segments
    if scheme == "s3":
        if not parts.netloc:
            raise InvalidModelUri(f"{what} {uri!r} has no bucket: s3://bucket/prefix")
        return "s3", parts.netloc, [s for s in parts.path.split("/") if s]
    raise InvalidModelUri(f"{what} {uri!r} has an unsupported scheme {parts.scheme!r}; use {_URI_FORMS}")


def _location(scheme: str, bucket: str, segments: list[str]) -> RegistryLocation:
    if scheme == "file":
        return RegistryLocation("file", str(PurePosixPath("/", *segments)))
    return RegistryLocation("s3", "/".join(segments), bucket)


def parse_registry_uri(uri: str) -> RegistryLocation:
    """A registry URI (``file:///abs/dir`` or ``s3://bucket/prefix``). Raises ``InvalidModelUri``."""
    scheme, bucket, segments = _split(uri, "registry URI")
    return _location(scheme, bucket, segments)


@dataclass(frozen=True)
class ModelUri:
    """A parsed model URI: the registry, the model name, and exactly one of version or alias."""

    registry_uri: str
    name: str
    version: str | None = None
    alias: str | None = None

    @property
    def reference(self) -> str:
        """The version or alias, as written after the name."""
        return self.version or self.alias or ""

    @property
    def location(self) -> RegistryLocation:
        return parse_registry_uri(self.registry_uri)


_MODEL_FORMS = "<registry>/<name>@<alias> or <registry>/<name>/<version>"


def parse_model_uri(model_uri: str) -> ModelUri:
    """Split a model URI into registry, name and version-or-alias. Raises ``InvalidModelUri``."""
    scheme, bucket, segments = _split(model_uri, "model URI")
    if not segments:
        raise InvalidModelUri(f"model URI {model_uri!r} names no model; expected {_MODEL_FORMS}")
    last = segments[-1]
    if "@" in last:
        name, _, reference = last.partition("@")
        check_name(name)
        if not reference:
            raise InvalidModelUri(f"model URI {model_uri!r} has an empty alias after '@'")
        registry = _location(scheme, bucket, segments[:-1]).uri
        if is_version(reference):
            return ModelUri(registry, name, version=reference)
        return ModelUri(registry, name, alias=check_alias(reference))
    if is_version(last) and len(segments) >= 2:
        name = check_name(segments[-2])
        return ModelUri(_location(scheme, bucket, segments[:-2]).uri, name, version=last)
    raise InvalidModelUri(f"model URI {model_uri!r} must end in {_MODEL_FORMS} (versions are v1, v2, ...)")


@dataclass(frozen=True)
class PackageRef:
    """One published package: the registry it lives in, its name and its version."""

    registry_uri: str
    name: str
    version: str

    def uri(self, alias: str | None = None) -> str:
        """The model URI: pinned to this version, or following ``alias`` when given."""
        if alias is not None:
            return f"{self.registry_uri}/{self.name}@{check_alias(alias)}"
        return f"{self.registry_uri}/{self.name}/{self.version}"
