"""``hiddenstate demo`` (what ``scripts/demo`` runs): the whole system on one machine, end to end.

1. ``hiddenstate up --detach`` (training a quick model first if the registry is empty), with the autoscaler's
   stable window and grace period shortened so a scale to zero happens within the demo;
2. wait for the scorer to scale to zero, send one transaction and time its score: the scale-from-zero time,
   cold start included;
3. send the rest of the generated transactions through the broker and wait for every score reply at the sink;
4. print a summary table, write ``<home>/demo-summary.json``, and ``hiddenstate down``.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

DEMO_AUTOSCALER = ("stable-window=10s", "scale-to-zero-grace-period=5s")
SUMMARY_FILE = "demo-summary.json"
SCORER = "scorer"


class DemoError(RuntimeError):
    """A demo step did not complete; the message names the step."""


def register(subparsers: argparse._SubParsersAction) -> None:
    from knative.local.cli import MODE_ENV, _home_argument

    parser = subparsers.add_parser(
        "demo", help="run everything locally, score a few thousand transactions, print a summary, stop",
        description="Start the runtime (up --detach), time a scale from zero, send COUNT generated transactions "
        "through the broker, wait for every score, print sent/scored/frauds/latency/instances, write "
        "HOME/demo-summary.json, then stop the runtime (down).",
    )
    _home_argument(parser)
    parser.add_argument("--count", type=int, default=3000, help="transactions to send (default: %(default)s)")
    parser.add_argument("--rate", type=float, default=150.0,
                        help="events/s, paced; 0 = as fast as the broker takes them (default: %(default)s)")
    parser.add_argument("--concurrency", type=int, default=32, help="requests in flight at most (default: 32)")
    parser.add_argument("--preset", default="quick", help="generator preset (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=7, help="generator seed (default: %(default)s)")
    parser.add_argument("--fraud-threshold", type=float, default=0.5,
                        help="a score at or above this counts as a fraud flag (default: %(default)s)")
    parser.add_argument("--instance-mode", choices=("fresh", "fork"), default="fresh",
                        help=f"instance mode for up (default: fresh; ${MODE_ENV} is not read here)")
    parser.add_argument("--config-autoscaler", action="append", default=None, metavar="KEY=VALUE",
                        help=f"autoscaler overrides for up (default: {' '.join(DEMO_AUTOSCALER)})")
    parser.add_argument("--timeout", type=float, default=240.0, help="seconds to wait for all scores (default: 240)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    try:
        summary = run_demo(args)
    except DemoError as exc:
        print(f"hiddenstate demo: {exc}", file=sys.stderr)
        return 1
    print(summary_table(summary))
    return 0 if summary["scored"] == summary["sent"] else 1


def run_demo(args: argparse.Namespace) -> dict[str, Any]:
    from functions.cli import main as hiddenstate

    home: Path = args.home
    up = ["up", "--detach", "--home", str(home), "--instance-mode", args.instance_mode]
    for pair in args.config_autoscaler or DEMO_AUTOSCALER:
        up += ["--config-autoscaler", pair]
    if hiddenstate(up) != 0:
        raise DemoError("`hiddenstate up` failed; see the message above")
    try:
        return asyncio.run(_scenario(args, home))
    finally:
        hiddenstate(["down", "--home", str(home)])


async def _scenario(args: argparse.Namespace, home: Path) -> dict[str, Any]:
    from functions.event_display import sink_events_path
    from knative.local.eventing.sender import generated_events, send_events

    endpoints = orjson.loads((home / "endpoints.json").read_bytes())
    sink = SinkReader(sink_events_path(home))
    sent_at: dict[str, float] = {}

    def stamped(events: Iterator[Any]) -> Iterator[Any]:
        for event in events:
            sent_at[event.get_id()] = time.time()
            yield event

    events = generated_events(args.preset, args.seed, args.count)
    print("==> waiting for the scorer to scale to zero", file=sys.stderr, flush=True)
    await _until(lambda: _scorer_status(home)["ready_instances"] == 0, args.timeout, "the scorer to scale to zero")
    first = next(events)
    print("==> one transaction to a scorer at zero: timing the scale from zero", file=sys.stderr, flush=True)
    report = await send_events(endpoints["broker"], stamped(iter([first])), total=1, rate=0, progress=False)
    await _until(lambda: first.get_id() in sink.scores(), args.timeout, "the first score")
    scale_from_zero_ms = (sink.scores()[first.get_id()]["received"] - sent_at[first.get_id()]) * 1000.0

    print(f"==> sending {args.count - 1} more transactions through the broker", file=sys.stderr, flush=True)
    started = time.time()
    bulk = await send_events(endpoints["broker"], stamped(events), total=args.count - 1, rate=args.rate,
                             concurrency=args.concurrency)
    await _until(lambda: len(sink.scores()) >= len(sent_at), args.timeout, "every score reply")
    scores = sink.scores()
    seconds = time.time() - started
    latencies = sorted((scores[i]["received"] - t) * 1000.0 for i, t in sent_at.items() if i in scores)
    flagged = sum(1 for i in sent_at if i in scores and scores[i]["score"] >= args.fraud_threshold)
    summary = {
        "sent": report.sent + bulk.sent,
        "accepted": report.accepted + bulk.accepted,
        "scored": sum(1 for i in sent_at if i in scores),
        "frauds_flagged": flagged,
        "fraud_threshold": args.fraud_threshold,
        "p50_ms": round(_percentile(latencies, 0.50), 1),
        "p99_ms": round(_percentile(latencies, 0.99), 1),
        "peak_instances": peak_instances(home, SCORER),
        "scale_from_zero_ms": round(scale_from_zero_ms, 1),
        "bulk_seconds": round(seconds, 2),
        "instance_mode": args.instance_mode,
    }
    (home / SUMMARY_FILE).write_bytes(orjson.dumps(summary, option=orjson.OPT_INDENT_2) + b"\n")
    return summary


class SinkReader:
    """The score records the sink appends after the demo started (earlier runs' records are skipped)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = path.stat().st_size if path.exists() else 0
        self._pending = b""
        self._scores: dict[str, dict[str, Any]] = {}

    def scores(self) -> dict[str, dict[str, Any]]:
        """transaction id -> {"received", "score"} for every score event seen so far."""
        if self.path.exists():
            with self.path.open("rb") as handle:
                handle.seek(self.offset)
                chunk = handle.read()
            self.offset += len(chunk)
            *lines, self._pending = (self._pending + chunk).split(b"\n")
            for line in lines:
                record = orjson.loads(line) if line.strip() else {}
                data = record.get("event", {}).get("data")
                if isinstance(data, dict) and "transaction_id" in data:
                    self._scores.setdefault(data["transaction_id"],
                                            {"received": record["received"], "score": float(data["score"])})
        return self._scores


def peak_instances(home: Path, service: str) -> int:
    from knative.local.serving.timeline import load_timeline

    return max((row["ready"] for row in load_timeline(home) if row["service"] == service), default=0)


def _scorer_status(home: Path) -> dict[str, Any]:
    from knative.local.cli import fetch_status

    return fetch_status(home)["services"][SCORER]


async def _until(predicate: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise DemoError(f"gave up waiting for {what} after {timeout_s:g} s")
        await asyncio.sleep(0.1)


def _percentile(ordered: list[float], q: float) -> float:
    if not ordered:
        return math.nan
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def summary_table(summary: dict[str, Any]) -> str:
    rows = [
        ("sent", summary["sent"]),
        ("scored", summary["scored"]),
        (f"frauds flagged (score >= {summary['fraud_threshold']:g})", summary["frauds_flagged"]),
        ("end-to-end p50 (ms)", summary["p50_ms"]),
        ("end-to-end p99 (ms)", summary["p99_ms"]),
        ("peak scorer instances", summary["peak_instances"]),
        ("scale from zero (ms)", summary["scale_from_zero_ms"]),
        ("instance mode", summary["instance_mode"]),
    ]
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)
