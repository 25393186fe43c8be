"""Loading a package for serving: resolve the URI, fetch the files (S3 via a local cache), verify every checksum.

A file registry is read in place. An S3 package is downloaded into ``MODEL_CACHE_DIR`` (default
``<system temp>/hiddenstate-models``), keyed by registry, name and version, so that a scorer scaling from zero on
the same node does not download the weights again. The manifest is always read from the registry (it is small,
and it is the authority): cached files are verified against it on every load, and a cached file that no longer
matches is fetched again rather than trusted.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from functions.registry.errors import ChecksumMismatch, ModelNotFound
from functions.registry.manifest import MANIFEST_FILE, encode_json
from functions.registry.registry import open_registry
from functions.registry.storage import write_atomically
from functions.registry.uris import PackageRef, parse_model_uri

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadedPackage:
    """A verified package on local disk.

    ``timings`` holds seconds per phase: ``resolve`` (alias and manifest), ``fetch`` (downloads), ``checksum``
    (hashing every file) and ``total``. ``fetched`` names the files downloaded by this load: empty when every file
    came from the cache or from a file registry.
    """

    ref: PackageRef
    manifest: dict[str, Any]
    directory: Path
    timings: dict[str, float]
    fetched: tuple[str, ...] = field(default=())


def default_cache_dir() -> Path:
    configured = os.environ.get("MODEL_CACHE_DIR")
    return Path(configured) if configured else Path(tempfile.gettempdir()) / "hiddenstate-models"


def cache_directory(cache_root: Path, ref: PackageRef) -> Path:
    # The registry URI is hashed into the path: two registries may both hold a "gru/v3", and a URI's prefix could
    # hold characters that make poor directory names.
    registry_key = hashlib.sha256(ref.registry_uri.encode()).hexdigest()[:16]
    return cache_root / registry_key / ref.name / ref.version


def file_sha256(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def _matches(path: Path, expected: str) -> bool:
    return path.is_file() and file_sha256(path) == expected


def _missing_file(ref: PackageRef, file_name: str) -> ModelNotFound:
    return ModelNotFound(f"package {ref.uri()} is incomplete: file '{file_name}' listed in its manifest is missing")


def _verify_in_place(ref: PackageRef, files: dict[str, Any], directory: Path) -> None:
    for file_name, entry in files.items():
        path = directory / file_name
        if not path.is_file():
            raise _missing_file(ref, file_name)
        actual = file_sha256(path)
        if actual != entry["sha256"]:
            raise ChecksumMismatch(file_name, entry["sha256"], actual, str(directory))


def load_package(model_uri: str, *, cache_dir: Path | str | None = None) -> LoadedPackage:
    """Resolve ``model_uri``, make its files local, verify every sha256. Raises a ``RegistryError``."""
    started = time.perf_counter()
    parsed = parse_model_uri(model_uri)
    registry = open_registry(parsed.registry_uri)
    version = registry.resolve(parsed.name, parsed.reference)
    manifest = registry.manifest(parsed.name, version)
    ref = registry.ref(parsed.name, version)
    files: dict[str, Any] = manifest["files"]
    resolved = time.perf_counter()

    fetch_seconds = 0.0
    fetched: list[str] = []
    in_place = registry.storage.local_path(f"{ref.name}/{ref.version}")
    if in_place is not None:
        directory = in_place
        _verify_in_place(ref, files, directory)
        checksum_seconds = time.perf_counter() - resolved
    else:
        directory = cache_directory(Path(cache_dir) if cache_dir else default_cache_dir(), ref)
        stale = [name for name, entry in files.items() if not _matches(directory / name, entry["sha256"])]
        checksum_seconds = time.perf_counter() - resolved
        for file_name in stale:
            if (directory / file_name).exists():
                log.warning("cached package file fails its checksum; fetching it again",
                            extra={"model": ref.uri(), "file": file_name, "cache": str(directory)})
            fetch_started = time.perf_counter()
            key = f"{ref.name}/{ref.version}/{file_name}"
            if not registry.storage.fetch_to(key, directory / file_name):
                raise _missing_file(ref, file_name)
            fetch_seconds += time.perf_counter() - fetch_started
            fetched.append(file_name)
            check_started = time.perf_counter()
            actual = file_sha256(directory / file_name)
            if actual != files[file_name]["sha256"]:
                # Keep nothing that failed: the next load must fetch again, not find a poisoned cache.
                (directory / file_name).unlink(missing_ok=True)
                raise ChecksumMismatch(file_name, files[file_name]["sha256"], actual, registry.storage.describe(key))
            checksum_seconds += time.perf_counter() - check_started
        # A copy of the manifest makes the cache directory look like a file registry's version directory.
        write_atomically(directory / MANIFEST_FILE, encode_json(manifest, "manifest"))

    timings = {
        "resolve": resolved - started,
        "fetch": fetch_seconds,
        "checksum": checksum_seconds,
        "total": time.perf_counter() - started,
    }
    log.info("model package loaded", extra={"model": ref.uri(), "directory": str(directory), "fetched": fetched,
                                            **{f"{k}_seconds": round(v, 6) for k, v in timings.items()}})
    return LoadedPackage(ref, manifest, directory, timings, tuple(fetched))
