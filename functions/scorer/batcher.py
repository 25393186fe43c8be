"""Micro-batching across concurrent requests, with no fixed wait.

Request threads put their transactions on a queue. Whichever thread finds no leader becomes the leader: it takes
everything queued (up to ``max_batch`` events), scores it as one batch (one state read, one batched step, one FCALL)
and hands each request its slice. As soon as its own request is answered it passes the lead to a waiting thread.
While a batch is scored, new requests pile up and form the next batch. An idle scorer therefore scores a lone
request at once, at the cost of a single event; a busy one amortises the round trips over everything that arrived
meanwhile.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

In = TypeVar("In")
Out = TypeVar("Out")


def _held_lock() -> threading.Lock:
    lock = threading.Lock()
    lock.acquire()
    return lock


@dataclass
class _Request(Generic[In, Out]):
    items: Sequence[In]
    # Released once the result is in, or when this request's thread is appointed leader: each thread sleeps on its
    # own lock, so finishing a batch wakes exactly the threads it answered (no thundering herd of request threads).
    # A bare lock, not a threading.Event: an Event's condition variable cost a tenth of the scorer's GIL time.
    wake: threading.Lock = field(default_factory=_held_lock)
    lead: bool = False
    done: bool = False
    result: list[Out] | None = None
    error: BaseException | None = None


class MicroBatcher(Generic[In, Out]):
    def __init__(self, process: Callable[[list[In]], list[Out]], max_batch: int = 256) -> None:
        self._process = process
        self._max_batch = max_batch
        self._queue: deque[_Request[In, Out]] = deque()
        self._lock = threading.Lock()
        self._leading = False

    def submit(self, items: Sequence[In]) -> list[Out]:
        """Score ``items`` together with whatever else is queued; returns their results in order."""
        request: _Request[In, Out] = _Request(items)
        with self._lock:
            self._queue.append(request)
            if not self._leading:
                self._leading = request.lead = True
            # Read under the lock: had the lead been handed to this request between the lock and the check, the
            # check would skip the acquire, and the batch answering this request would release an unlocked lock.
            leading = request.lead
        if not leading:
            request.wake.acquire()
        if not request.done:
            self._lead_until_done(request)
        if request.error is not None:
            raise request.error
        assert request.result is not None
        return request.result

    def _lead_until_done(self, own: _Request[In, Out]) -> None:
        """Score batches until this thread's own request is answered, then hand the lead to the oldest queued
        request: a leader that kept draining for others would hold its own HTTP response back under load."""
        try:
            while not own.done:
                with self._lock:
                    taken = self._take()
                self._run(taken)
        finally:
            with self._lock:
                if self._queue:
                    successor = self._queue[0]
                    successor.lead = True
                    successor.wake.release()
                else:
                    self._leading = False

    def _take(self) -> list[_Request[In, Out]]:
        taken: list[_Request[In, Out]] = []
        size = 0
        while self._queue and (not taken or size + len(self._queue[0].items) <= self._max_batch):
            request = self._queue.popleft()
            taken.append(request)
            size += len(request.items)
        return taken

    def _run(self, taken: list[_Request[In, Out]]) -> None:
        items = [item for request in taken for item in request.items]
        try:
            results = self._process(items)
        except BaseException as exc:  # noqa: BLE001 - every waiting request must learn of the failure
            for request in taken:
                request.error = exc
                self._finish(request)
            return
        start = 0
        for request in taken:
            request.result = results[start : start + len(request.items)]
            start += len(request.items)
            self._finish(request)

    @staticmethod
    def _finish(request: _Request[In, Out]) -> None:
        request.done = True
        request.wake.release()
