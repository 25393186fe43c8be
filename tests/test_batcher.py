"""The micro-batcher: concurrent submissions are gathered, answered in order, and failures reach every waiter."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from functions.scorer.batcher import MicroBatcher


def test_every_request_gets_its_own_results_in_order_under_concurrency():
    batches: list[int] = []
    gate = threading.Event()

    def process(items: list[int]) -> list[int]:
        gate.wait(5)  # hold the first batch so that the others queue up behind it
        batches.append(len(items))
        return [x * 10 for x in items]

    batcher: MicroBatcher[int, int] = MicroBatcher(process, max_batch=64)
    with ThreadPoolExecutor(16) as pool:
        futures = [pool.submit(batcher.submit, [i, i + 1000]) for i in range(16)]
        gate.set()
        results = [f.result(10) for f in futures]
    assert results == [[i * 10, (i + 1000) * 10] for i in range(16)]
    assert sum(batches) == 32
    assert len(batches) < 16  # requests that queued while a batch ran were gathered into one


def test_a_batch_never_exceeds_max_batch_events():
    sizes: list[int] = []
    batcher: MicroBatcher[int, int] = MicroBatcher(lambda items: sizes.append(len(items)) or items, max_batch=8)
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: batcher.submit([i] * 3), range(40)))
    assert max(sizes) <= 8
    assert sum(sizes) == 120


def test_a_failed_batch_raises_in_every_request_of_it():
    def process(items: list[int]) -> list[int]:
        raise RuntimeError("state service down")

    batcher: MicroBatcher[int, int] = MicroBatcher(process)
    with pytest.raises(RuntimeError, match="state service down"):
        batcher.submit([1])
    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(batcher.submit, [i]) for i in range(4)]
        for future in futures:
            with pytest.raises(RuntimeError):
                future.result(10)
