"""Where a benchmark's processes run: all on every core ("shared"), or the server under test on cores of its own
with the load generator and valkey-server on the rest ("isolated").

Why both: on this 2-core machine k6, valkey-server and the server under test share two cores, so the server's
threads are preempted by k6 and migrate between cores, and every switch costs it its warm caches. In a cluster
none of that happens to a scorer pod: k6 and Valkey run elsewhere, and a Guaranteed pod with an integer CPU request
gets exclusive cores from the kubelet's static CPU manager. "Isolated" reproduces that on one machine: each server
gets the same dedicated core(s), so rows stay comparable with each other.

Affinity is set per thread (``/proc/<pid>/task``) on a process and all its descendants; threads and processes
started later inherit it from whoever starts them.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import psutil

from functions.scorer.affinity import allowed_cpus, pin_threads

SHARED = "shared"
ISOLATED = "isolated"
PLACEMENTS = (SHARED, ISOLATED)


def all_cpus() -> set[int]:
    return set(allowed_cpus())


def split_cpus(cpus: set[int] | None = None) -> tuple[set[int], set[int]]:
    """(server cores, load-generator cores): the first half for the server, at least one each.
    Needs two cores or more."""
    ordered = sorted(cpus if cpus is not None else all_cpus())
    if len(ordered) < 2:
        raise ValueError("an isolated placement needs at least 2 cores")
    half = len(ordered) // 2
    return set(ordered[:half]), set(ordered[half:])


def pin_tree(pid: int, cpus: set[int]) -> int:
    """Set the affinity of every thread of ``pid`` and of its descendants; returns how many threads were pinned.
    Threads that exit meanwhile are skipped."""
    try:
        root = psutil.Process(pid)
        processes = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    return sum(pin_threads(process.pid, cpus) for process in processes)


@contextlib.contextmanager
def placed(placement: str, server_pids: list[int], load_pids: list[int]) -> Iterator[None]:
    """Within the block, ``placement`` holds: for "isolated", the servers on their cores and ``load_pids`` plus this
    thread (and so any k6 it starts) on the others. Everything gets every core back afterwards."""
    if placement not in PLACEMENTS:
        raise ValueError(f"placement must be one of {PLACEMENTS}, got {placement!r}")
    if placement == SHARED:
        yield
        return
    everything = all_cpus()
    server_cpus, load_cpus = split_cpus(everything)
    for pid in server_pids:
        pin_tree(pid, server_cpus)
    for pid in load_pids:
        pin_tree(pid, load_cpus)
    os.sched_setaffinity(0, load_cpus)  # this thread: the k6 process it starts inherits it
    try:
        yield
    finally:
        os.sched_setaffinity(0, everything)
        for pid in [*server_pids, *load_pids]:
            pin_tree(pid, everything)
