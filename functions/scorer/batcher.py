"""Micro-batching across concurrent requests, with no fixed wait.

Request threads put their transactions on a queue. Whichever thread finds the scorer idle becomes the leader: it
takes everything queued (up to ``max_batch`` events), scores it as one batch (one state read, one batched step, one
FCALL) and hands each request its slice. While it works, new requests pile up and form the next batch. An idle
scorer therefore scores a lone request at once, at the cost of a single event; a busy one amortises the round trips
over everything that arrived meanwhile.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

In = TypeVar("In")
Out = TypeVar("Out")


@dataclass
class _Request(Generic[In, Out]):
    items: Sequence[In]
    done: threading.Event = field(default_factory=threading.Event)
    result: list[Out] | None = None
    error: BaseException | None = None


class MicroBatcher(Generic[In, Out]):
    def __init__(self, process: Callable[[list[In]], list[Out]], max_batch: int = 256) -> None:
        self._process = process
        self._max_batch = max_batch
        self._queue: deque[_Request[In, Out]] = deque()
        self._queue_lock = threading.Lock()
        self._leader = threading.Lock()

    def submit(self, items: Sequence[In]) -> list[Out]:
        """Score ``items`` together with whatever else is queued; returns their results in order."""
        request: _Request[In, Out] = _Request(items)
        with self._queue_lock:
            self._queue.append(request)
        while True:
            if self._leader.acquire(blocking=False):
                try:
                    self._drain()
                finally:
                    self._leader.release()
                # A request queued between the last drain and the release found the lock taken and is waiting:
                # lead again for it. One queued after this check finds the lock free and leads itself.
                if not self._queue and request.done.is_set():
                    break
                continue
            if request.done.wait(0.05):
                break
        if request.error is not None:
            raise request.error
        assert request.result is not None
        return request.result

    def _take(self) -> list[_Request[In, Out]]:
        taken: list[_Request[In, Out]] = []
        size = 0
        with self._queue_lock:
            while self._queue and (not taken or size + len(self._queue[0].items) <= self._max_batch):
                request = self._queue.popleft()
                taken.append(request)
                size += len(request.items)
        return taken

    def _drain(self) -> None:
        while taken := self._take():
            items = [item for request in taken for item in request.items]
            try:
                results = self._process(items)
            except BaseException as exc:  # noqa: BLE001 - every waiting request must learn of the failure
                for request in taken:
                    request.error = exc
                    request.done.set()
                continue
            start = 0
            for request in taken:
                request.result = results[start : start + len(request.items)]
                start += len(request.items)
                request.done.set()
