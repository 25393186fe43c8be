"""Model-as-a-package registry: versioned, checksummed model packages on a local directory or S3.

Publishing (the trainer) and loading (the scorer)::

    ref = open_registry("s3://models/fraud").publish("gru", {"model.safetensors": data}, fields, alias="champion")
    print(ref.uri("champion"))                       # s3://models/fraud/gru@champion
    package = load_package("s3://models/fraud/gru@champion")
    package.directory / "model.safetensors"          # local, every sha256 verified
"""

from functions.registry.errors import (
    ChecksumMismatch,
    ConcurrentUpdate,
    InvalidManifest,
    InvalidModelUri,
    ModelNotFound,
    RegistryError,
    RegistryUnavailable,
)
from functions.registry.loader import LoadedPackage, default_cache_dir, load_package
from functions.registry.manifest import METRIC_KEYS, REQUIRED_FIELDS, TRAINING_KEYS
from functions.registry.registry import Registry, open_registry
from functions.registry.uris import ModelUri, PackageRef, parse_model_uri, parse_registry_uri

__all__ = [
    "METRIC_KEYS",
    "REQUIRED_FIELDS",
    "TRAINING_KEYS",
    "ChecksumMismatch",
    "ConcurrentUpdate",
    "InvalidManifest",
    "InvalidModelUri",
    "LoadedPackage",
    "ModelNotFound",
    "ModelUri",
    "PackageRef",
    "Registry",
    "RegistryError",
    "RegistryUnavailable",
    "default_cache_dir",
    "load_package",
    "open_registry",
    "parse_model_uri",
    "parse_registry_uri",
]
