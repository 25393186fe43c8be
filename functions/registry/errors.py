"""The registry's errors: one small hierarchy, each message names what is wrong and where."""

from __future__ import annotations


class RegistryError(Exception):
    """Base class of every error the registry raises."""


class InvalidModelUri(RegistryError):
    """A registry or model URI that does not follow the documented forms."""


class ModelNotFound(RegistryError):
    """An unknown model name, version or alias, or a package whose files are missing."""


class ChecksumMismatch(RegistryError):
    """A package file whose sha256 differs from the one its manifest records."""

    def __init__(self, file: str, expected: str, actual: str, where: str) -> None:
        super().__init__(
            f"checksum mismatch for '{file}' in {where}: manifest says sha256 {expected}, file has {actual}; "
            "refusing to load a package that changed after it was published"
        )
        self.file = file
        self.expected = expected
        self.actual = actual


class InvalidManifest(RegistryError):
    """A manifest (or aliases file) that is missing, not JSON, or lacks required fields."""


class RegistryUnavailable(RegistryError):
    """The storage behind the registry cannot be reached or refuses access (no bucket, no credentials)."""


class ConcurrentUpdate(RegistryError):
    """An atomic update kept losing the race against other writers and gave up."""
