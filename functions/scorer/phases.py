"""Cold-start marks: one JSON log line per phase, which the local runtime and the perf harness read.

Kept free of heavy imports so the first mark is taken before torch is imported.
"""

from __future__ import annotations

import logging
import time

log = logging.getLogger("functions.scorer")


def mark_phase(phase: str, **fields: object) -> None:
    log.info("coldstart", extra={"phase": phase, "t": time.time(), **fields})
