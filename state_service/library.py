"""The Valkey Functions library text and the version this client speaks."""

from __future__ import annotations

import re
from functools import cache
from importlib import resources

LIBRARY_NAME = "hiddenstate"
CAS_FUNCTION = "hs_cas_many"
RESTORE_FUNCTION = "hs_restore_many"
VERSION_FUNCTION = "hs_library_version"


@cache
def library_source() -> str:
    return resources.files("state_service").joinpath("library.lua").read_text()


@cache
def library_version() -> str:
    """The ``LIBRARY_VERSION`` declared in library.lua: one source of truth for both sides."""
    match = re.search(r"^local LIBRARY_VERSION = '([^']+)'", library_source(), re.MULTILINE)
    if match is None:  # a packaging bug, not a runtime condition
        raise RuntimeError("library.lua declares no LIBRARY_VERSION")
    return match.group(1)
