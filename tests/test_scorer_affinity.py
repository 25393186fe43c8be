"""When and where the scorer pins its workers (functions/scorer/affinity.py); the pinning itself is tested on a
running scorer in test_scorer_lifecycle.py."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from functions.scorer.affinity import pin_threads, should_pin, worker_cpu


@pytest.mark.parametrize(("mode", "workers", "cpus", "expected"), [
    ("auto", 1, [0, 1], False),  # other instances may share these cores: leave it to the scheduler
    ("auto", 2, [0, 1], True),  # as many workers as cores: the cores are this instance's
    ("auto", 4, [2, 3], True),
    ("auto", 1, [5], False),  # one core: already pinned
    ("on", 1, [0, 1], True),
    ("on", 1, [0], False),
    ("off", 2, [0, 1], False),
])
def test_when_workers_are_pinned(mode: str, workers: int, cpus: list[int], expected: bool) -> None:
    assert should_pin(mode, workers, cpus) is expected


def test_an_unknown_mode_is_refused_with_the_choices() -> None:
    with pytest.raises(ValueError, match="one of auto, on, off, got 'always'"):
        should_pin("always", 1, [0, 1])


def test_workers_take_the_cores_round_robin() -> None:
    assert [worker_cpu(i, [2, 5]) for i in range(5)] == [2, 5, 2, 5, 2]


def test_pin_threads_reaches_every_thread_of_a_process() -> None:
    script = "import threading, time\nfor _ in range(3): threading.Thread(target=time.sleep, args=(30,)).start()\n" \
             "print('up', flush=True)\ntime.sleep(30)"
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout.readline().strip() == "up"
        core = min(os.sched_getaffinity(0))
        assert pin_threads(process.pid, {core}) == 4
        assert {frozenset(os.sched_getaffinity(int(t))) for t in os.listdir(f"/proc/{process.pid}/task")} == \
            {frozenset({core})}
    finally:
        process.kill()
        process.wait()
    assert pin_threads(process.pid, {core}) == 0  # gone: nothing to pin, no error
