"""Pinning each worker process of the scorer to one core (``SCORER_PIN_WORKERS``).

Why: a worker is one Python process whose request threads take turns at the GIL, dozens of times per micro-batch.
Left to the scheduler, the thread that gets the GIL next often wakes on the other core, and the interpreter's and
torch's working set follows it from cache to cache. Confined to one core, every hand-off finds a warm cache. On
the 2-core benchmark machine, with k6 and valkey-server still free to run anywhere, one pinned worker scored 3,999
events/s against 2,591 unpinned (0.22 against 0.34 ms of CPU per event; medians of two alternated runs). The naive
baseline's single-threaded gunicorn workers gain nothing from the same pinning (1,032 against 1,047).

Why not always: several scorer instances on one machine, each pinning its first worker to the first core of the
same mask, would stack up on that core. So the default, ``auto``, pins only when the process may run on no more
cores than it has workers, i.e. when the cores are the instance's own anyway (a Guaranteed pod with whole CPUs
under the kubelet's static CPU manager gets exactly those). ``on`` pins regardless (one scorer on a machine),
``off`` never.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence

PIN_MODES = ("auto", "on", "off")


def allowed_cpus() -> list[int]:
    """The cores this process may run on, in order."""
    return sorted(os.sched_getaffinity(0))


def should_pin(mode: str, workers: int, cpus: Sequence[int]) -> bool:
    if mode not in PIN_MODES:
        raise ValueError(f"SCORER_PIN_WORKERS must be one of {', '.join(PIN_MODES)}, got {mode!r}")
    if mode == "off" or len(cpus) < 2:  # one core: already pinned
        return False
    return mode == "on" or len(cpus) <= workers


def worker_cpu(index: int, cpus: Sequence[int]) -> int:
    """The core of the ``index``-th worker started (respawned workers continue the count): round robin."""
    return cpus[index % len(cpus)]


def pin_threads(pid: int, cpus: set[int]) -> int:
    """Set the affinity of every thread of ``pid``; returns how many. Threads started later inherit it from the
    thread that starts them; threads that exit meanwhile are skipped."""
    try:
        tids = [int(tid) for tid in os.listdir(f"/proc/{pid}/task")]
    except (FileNotFoundError, ProcessLookupError):
        return 0
    pinned = 0
    for tid in tids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.sched_setaffinity(tid, cpus)
            pinned += 1
    return pinned
