"""``hiddenstate send``'s engine: generated transactions as CloudEvents, POSTed at a steady rate.

Requests start on a fixed schedule (request *i* at ``i / rate`` seconds) with at most ``concurrency`` in flight, so a
slow receiver lowers the achieved rate instead of piling up connections; the report says what was achieved.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson
from cloudevents.core.bindings import http as ce_http
from cloudevents.core.v1.event import CloudEvent
from tqdm import tqdm

from functions.contract import BATCH_CONTENT_TYPE, structured_json, transaction_event


class SendError(ValueError):
    """Settings that cannot work (a count beyond the generated stream, a bad rate)."""


def generated_events(preset: str, seed: int, count: int) -> Iterator[CloudEvent]:
    """The first ``count`` transactions of the generator's stream for ``preset`` and ``seed``, as CloudEvents keyed
    by card (``partitionkey``), so the same arguments always send the same events (and the scorer dedupes resends)."""
    from functions.generator import GeneratorConfig, GeneratorConfigError, generate_columns

    try:
        columns, _meta = generate_columns(GeneratorConfig.preset(preset, seed=seed))
    except GeneratorConfigError as exc:
        raise SendError(str(exc)) from None
    if count > len(columns):
        raise SendError(f"--count {count} is more than the {len(columns)} transactions of preset {preset!r}")
    for index in range(count):
        event_id, time_text, data = columns.transaction(index)
        yield transaction_event(event_id, data, time=time_text, partitionkey=data["card_id"])


@dataclass
class SendReport:
    sent: int = 0
    accepted: int = 0
    failed: int = 0
    # Responses by status ("202", "400", ...) or by error name for requests that got no response.
    outcomes: Counter[str] = field(default_factory=Counter)
    scored: int = 0
    seconds: float = 0.0

    @property
    def rate(self) -> float:
        return self.sent / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"sent": self.sent, "accepted": self.accepted, "failed": self.failed, "scored": self.scored,
                "outcomes": dict(self.outcomes), "seconds": round(self.seconds, 3), "events_per_s": round(self.rate, 1)}

    def summary(self) -> str:
        outcomes = ", ".join(f"{name}: {count}" for name, count in sorted(self.outcomes.items()))
        return (f"sent {self.sent} events in {self.seconds:.1f} s ({self.rate:.0f}/s): {self.accepted} accepted, "
                f"{self.failed} failed" + (f", {self.scored} scored" if self.scored else "") + f" [{outcomes}]")


def _chunks(events: Iterable[CloudEvent], size: int) -> Iterator[list[CloudEvent]]:
    chunk: list[CloudEvent] = []
    for event in events:
        chunk.append(event)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _request(chunk: list[CloudEvent], batch: bool) -> tuple[dict[str, str], bytes]:
    if batch:
        return {"content-type": BATCH_CONTENT_TYPE}, orjson.dumps([structured_json(event) for event in chunk])
    message = ce_http.to_binary_event(chunk[0])
    return message.headers, message.body


async def send_events(
    url: str, events: Iterable[CloudEvent], *, total: int, rate: float, concurrency: int = 16,
    batch_size: int | None = None, progress: bool = True, timeout_s: float = 30.0,
) -> SendReport:
    """POST ``events`` to ``url``: one binary-mode event per request, or batches of ``batch_size`` structured events
    (``application/cloudevents-batch+json``). ``rate`` is in events per second; 0 means as fast as allowed."""
    if rate < 0 or concurrency < 1 or (batch_size is not None and batch_size < 1):
        raise SendError("rate must be >= 0, concurrency >= 1 and batch size >= 1")
    size = batch_size or 1
    interval = size / rate if rate > 0 else 0.0
    report = SendReport()
    slots = asyncio.Semaphore(concurrency)
    bar = tqdm(total=total, unit="ev", desc="send", disable=not progress)

    async def post(session: aiohttp.ClientSession, chunk: list[CloudEvent]) -> None:
        headers, body = _request(chunk, batch_size is not None)
        try:
            async with session.post(url, data=body, headers=headers) as response:
                reply = await response.read()
                outcome, ok = str(response.status), 200 <= response.status < 300
                if ok and batch_size is not None and reply:
                    parsed = orjson.loads(reply)
                    report.scored += len(parsed) if isinstance(parsed, list) else 0
        except (aiohttp.ClientError, TimeoutError, orjson.JSONDecodeError) as exc:
            outcome, ok = type(exc).__name__, False
        finally:
            slots.release()
        report.outcomes[outcome] += len(chunk)
        report.accepted += len(chunk) if ok else 0
        report.failed += 0 if ok else len(chunk)
        bar.update(len(chunk))

    started = time.perf_counter()
    loop = asyncio.get_running_loop()
    tasks = []
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s)) as session:
        for index, chunk in enumerate(_chunks(events, size)):
            delay = started + index * interval - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            await slots.acquire()
            report.sent += len(chunk)
            tasks.append(loop.create_task(post(session, chunk)))
        await asyncio.gather(*tasks)
    bar.close()
    report.seconds = time.perf_counter() - started
    return report
