"""The package manifest: what a caller must supply, what the registry adds, and how both are checked. Pure.

The registry owns the envelope (``name``, ``version``, ``created_at``, ``files`` with sha256 and size,
``libraries``, and the lifecycle figures ``package_bytes`` and ``save_seconds``). The caller owns the model part,
passed to ``Registry.publish`` as ``manifest_fields``; ``REQUIRED_FIELDS`` lists what it must hold. Any further
JSON-serialisable keys are kept as they are, so a model can record what it needs. A caller may add entries to
``libraries`` (say, scikit-learn); the versions the registry reads itself (python, torch, numpy, safetensors,
hiddenstate) win over the caller's.
"""

from __future__ import annotations

import hashlib
import json
import math
import platform
import re
import struct
from collections.abc import Mapping
from importlib import metadata
from typing import Any

from functions.registry.errors import InvalidManifest

MANIFEST_VERSION = 1
MANIFEST_FILE = "manifest.json"
ALIASES_FILE = "aliases.json"
# Written first, with create-if-absent, so that two publishers never get the same version number.
CLAIM_FILE = ".claim"

ENVELOPE_KEYS = frozenset({"manifest_version", "name", "version", "created_at", "files"})
REGISTRY_LIFECYCLE_KEYS = frozenset({"package_bytes", "save_seconds"})
METRIC_KEYS = ("recall_at_1pct_fpr", "baseline_recall_at_1pct_fpr", "auc_pr", "baseline_auc_pr")
TRAINING_KEYS = ("seed", "data_window", "epochs", "learning_rate")
REQUIRED_FIELDS = {
    "hidden_size": "positive integer: the GRU state width",
    "state_dtype": "string: how states are stored in Valkey, e.g. 'float16'",
    "layout_version": "positive integer: the state layout, bumped when the state encoding changes",
    "feature_spec": "non-empty object: the feature encoding the weights expect",
    "training": f"object with {', '.join(TRAINING_KEYS)}",
    "metrics": f"object with numbers in [0, 1]: {', '.join(METRIC_KEYS)}",
    "lifecycle": "object of figures, at least training_seconds; load_seconds may be added before an alias is set",
}

# The registry never unpickles, and it refuses to store formats that usually carry pickles, so that no consumer
# of a package is tempted to. Weights go in safetensors; metadata in JSON or text.
ALLOWED_EXTENSIONS = (".safetensors", ".json", ".txt", ".md")
FILE_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
LIBRARIES = ("torch", "numpy", "safetensors", "hiddenstate")


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def check_file_name(file_name: str, where: str = "package") -> str:
    """A package file name: a plain name (no directories), allowed extension, not a reserved name."""
    if not isinstance(file_name, str) or not FILE_NAME_PATTERN.match(file_name) or ".." in file_name:
        raise InvalidManifest(
            f"file name {file_name!r} in {where} is invalid: use a plain name of letters, digits, '.', '_' or '-'"
        )
    if file_name in (MANIFEST_FILE, ALIASES_FILE):
        raise InvalidManifest(f"file name {file_name!r} in {where} is reserved for the registry")
    if not file_name.endswith(ALLOWED_EXTENSIONS):
        raise InvalidManifest(
            f"file {file_name!r} in {where} has an extension the registry does not store; "
            f"allowed: {', '.join(ALLOWED_EXTENSIONS)} (weights go in safetensors, never pickle)"
        )
    return file_name


def check_safetensors(file_name: str, data: bytes) -> None:
    """Structural check of a safetensors file: an 8-byte little-endian header length, then a JSON object.

    Done by hand because the library's loaders deserialise every tensor (and numpy's cannot hold bfloat16);
    only the framing is needed to catch a pickle or a truncated file under a .safetensors name.
    """
    if len(data) < 8:
        raise InvalidManifest(f"file {file_name!r} is not safetensors: shorter than the 8-byte header length")
    (header_len,) = struct.unpack("<Q", data[:8])
    if header_len > len(data) - 8:
        raise InvalidManifest(f"file {file_name!r} is not safetensors: header length {header_len} exceeds the file")
    try:
        header = json.loads(data[8 : 8 + header_len])
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise InvalidManifest(f"file {file_name!r} is not safetensors: its header is not JSON") from None
    if not isinstance(header, dict):
        raise InvalidManifest(f"file {file_name!r} is not safetensors: its header is not a JSON object")


def check_files(files: Mapping[str, bytes]) -> None:
    if not isinstance(files, Mapping) or not files:
        raise InvalidManifest("a package needs at least one file")
    for file_name, data in files.items():
        check_file_name(file_name)
        if not isinstance(data, bytes | bytearray | memoryview):
            raise InvalidManifest(f"file {file_name!r} must be bytes, got {type(data).__name__}")
        if file_name.endswith(".safetensors"):
            check_safetensors(file_name, bytes(data))


# ---------------------------------------------------------------------------------------------------------
# The caller's part.


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _require(condition: bool, key: str, expected: str, where: str) -> None:
    if not condition:
        raise InvalidManifest(f"{where}: '{key}' must be {expected}")


def _check_model_fields(fields: Mapping[str, Any], where: str) -> None:
    missing = [key for key in REQUIRED_FIELDS if key not in fields]
    if missing:
        raise InvalidManifest(
            f"{where}: missing required field(s) {', '.join(missing)}; "
            + "; ".join(f"{key}: {REQUIRED_FIELDS[key]}" for key in missing)
        )
    _require(_is_int(fields["hidden_size"]) and fields["hidden_size"] > 0, "hidden_size", "a positive integer", where)
    _require(isinstance(fields["state_dtype"], str) and bool(fields["state_dtype"]), "state_dtype", "a string", where)
    layout = fields["layout_version"]
    _require(_is_int(layout) and layout > 0, "layout_version", "a positive integer", where)
    spec = fields["feature_spec"]
    _require(isinstance(spec, Mapping) and bool(spec), "feature_spec", "a non-empty object", where)

    training = fields["training"]
    _require(isinstance(training, Mapping), "training", "an object", where)
    for key in TRAINING_KEYS:
        _require(key in training, f"training.{key}", "present", where)
    _require(_is_int(training["seed"]), "training.seed", "an integer", where)
    _require(_is_int(training["epochs"]) and training["epochs"] >= 0, "training.epochs", "an integer >= 0", where)
    rate = training["learning_rate"]
    _require(_is_number(rate) and rate > 0, "training.learning_rate", "a positive number", where)

    metrics = fields["metrics"]
    _require(isinstance(metrics, Mapping), "metrics", "an object", where)
    for key in METRIC_KEYS:
        value = metrics.get(key)
        _require(_is_number(value) and 0.0 <= value <= 1.0, f"metrics.{key}", "a number in [0, 1]", where)

    lifecycle = fields["lifecycle"]
    _require(isinstance(lifecycle, Mapping), "lifecycle", "an object", where)
    _require("training_seconds" in lifecycle, "lifecycle.training_seconds", "present", where)
    for key, value in lifecycle.items():
        _require(_is_number(value) and value >= 0, f"lifecycle.{key}", "a number >= 0", where)

    libraries = fields.get("libraries", {})
    _require(
        isinstance(libraries, Mapping) and all(isinstance(v, str | None) for v in libraries.values()),
        "libraries", "an object of library name to version string", where,
    )


def validate_manifest_fields(fields: Mapping[str, Any]) -> dict[str, Any]:
    """Check the caller's part of a manifest and return a JSON-clean deep copy. Raises ``InvalidManifest``."""
    where = "manifest_fields"
    if not isinstance(fields, Mapping):
        raise InvalidManifest(f"{where} must be a mapping, got {type(fields).__name__}")
    reserved = sorted(ENVELOPE_KEYS & set(fields))
    if reserved:
        raise InvalidManifest(f"{where}: '{reserved[0]}' is set by the registry, not the caller")
    _check_model_fields(fields, where)
    owned = sorted(REGISTRY_LIFECYCLE_KEYS & set(fields["lifecycle"]))
    if owned:
        raise InvalidManifest(f"{where}: 'lifecycle.{owned[0]}' is measured by the registry, not the caller")
    return json.loads(encode_json(dict(fields), where))


def encode_json(document: Mapping[str, Any], where: str) -> bytes:
    try:
        return (json.dumps(document, indent=2, sort_keys=True, allow_nan=False) + "\n").encode()
    except (TypeError, ValueError) as exc:
        raise InvalidManifest(f"{where} is not JSON-serialisable: {exc}") from None


# ---------------------------------------------------------------------------------------------------------
# The whole manifest.


def library_versions() -> dict[str, str | None]:
    """Versions from package metadata, so recording them does not import torch."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def build_manifest(
    name: str,
    version: str,
    created_at: str,
    file_entries: Mapping[str, Mapping[str, Any]],
    fields: Mapping[str, Any],
    save_seconds: float,
) -> dict[str, Any]:
    """The full manifest. ``package_bytes`` counts the package files; the manifest itself is not included."""
    manifest = dict(fields)
    manifest.update(
        manifest_version=MANIFEST_VERSION,
        name=name,
        version=version,
        created_at=created_at,
        files={file: dict(entry) for file, entry in sorted(file_entries.items())},
        libraries={**fields.get("libraries", {}), **library_versions()},
    )
    manifest["lifecycle"] = {
        **fields["lifecycle"],
        "package_bytes": sum(entry["bytes"] for entry in file_entries.values()),
        "save_seconds": round(save_seconds, 6),
    }
    return manifest


def decode_manifest(data: bytes, name: str, version: str, where: str) -> dict[str, Any]:
    """Parse and check a stored manifest. Raises ``InvalidManifest`` naming ``where`` and the problem."""
    try:
        manifest = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidManifest(f"manifest {where} is not valid JSON: {exc}") from None
    if not isinstance(manifest, dict):
        raise InvalidManifest(f"manifest {where} must be a JSON object")
    if manifest.get("manifest_version") != MANIFEST_VERSION:
        raise InvalidManifest(
            f"manifest {where} has manifest_version {manifest.get('manifest_version')!r}; "
            f"this registry reads version {MANIFEST_VERSION}"
        )
    for key in ("name", "version"):
        expected = name if key == "name" else version
        if manifest.get(key) != expected:
            raise InvalidManifest(f"manifest {where} says {key} {manifest.get(key)!r}, expected {expected!r}")
    if not isinstance(manifest.get("created_at"), str):
        raise InvalidManifest(f"manifest {where}: 'created_at' must be a timestamp string")
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        raise InvalidManifest(f"manifest {where}: 'files' must be a non-empty object")
    for file_name, entry in files.items():
        check_file_name(file_name, f"manifest {where}")
        if not isinstance(entry, dict) or not isinstance(entry.get("sha256"), str) or not _SHA256.match(
            entry["sha256"]
        ):
            raise InvalidManifest(f"manifest {where}: files.{file_name}.sha256 must be 64 lowercase hex digits")
        if not _is_int(entry.get("bytes")) or entry["bytes"] < 0:
            raise InvalidManifest(f"manifest {where}: files.{file_name}.bytes must be an integer >= 0")
    _check_model_fields(manifest, f"manifest {where}")
    return manifest
