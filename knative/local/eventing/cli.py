"""``hiddenstate send`` and ``hiddenstate tail``: put generated transactions into the local broker, and watch the
score replies and dead letters that reach the event-display sink."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path
from typing import Any

import orjson

HOME_ENV = "HIDDENSTATE_HOME"
DEFAULT_HOME = ".hiddenstate"


def default_home() -> Path:
    """``$HIDDENSTATE_HOME``, else ``.hiddenstate`` in the current folder (where ``hiddenstate up`` puts it)."""
    return Path(os.environ.get(HOME_ENV) or DEFAULT_HOME)


def read_endpoints(home: Path) -> dict[str, Any]:
    """``<home>/endpoints.json`` as written by ``hiddenstate up``. Raises ``FileNotFoundError`` with advice."""
    path = home / "endpoints.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: start the runtime with `hiddenstate up --home {home}`")
    return orjson.loads(path.read_bytes())


def _target_url(args: argparse.Namespace) -> str:
    if args.url:
        return args.url
    endpoints = read_endpoints(args.home)
    if args.batch:
        services = endpoints.get("services") or {}
        if args.service not in services:
            raise FileNotFoundError(f"no service {args.service!r} in {args.home / 'endpoints.json'}")
        return services[args.service]
    if not endpoints.get("broker"):
        raise FileNotFoundError(f"no 'broker' in {args.home / 'endpoints.json'}")
    return endpoints["broker"]


def run_send(args: argparse.Namespace) -> int:
    from knative.local.eventing.sender import SendError, generated_events, send_events

    try:
        url = _target_url(args)
        events = generated_events(args.preset, args.seed, args.count)
        report = asyncio.run(send_events(
            url, events, total=args.count, rate=args.rate, concurrency=args.concurrency,
            batch_size=args.batch_size if args.batch else None, progress=not args.no_progress,
        ))
    except (FileNotFoundError, SendError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(orjson.dumps(report.to_dict()).decode() if args.json else report.summary())
    return 0 if report.failed == 0 else 1


def run_tail(args: argparse.Namespace) -> int:
    from functions.contract import SCORE_TYPE
    from functions.event_display.records import describe, is_dead_letter, read_records, sink_events_path

    path = sink_events_path(args.home)
    if not args.follow and not path.exists():
        print(f"error: {path} does not exist yet: no event has reached the sink (is `hiddenstate up` running?)",
              file=sys.stderr)
        return 2

    def wanted(record: dict[str, Any]) -> bool:
        if args.type:
            return record.get("event", {}).get("type") == args.type
        return args.all or is_dead_letter(record) or record.get("event", {}).get("type") == SCORE_TYPE

    try:
        for record in read_records(path, follow=args.follow):
            if wanted(record):
                print(orjson.dumps(record).decode() if args.json else describe(record), flush=True)
    except KeyboardInterrupt:
        pass
    except BrokenPipeError:  # `hiddenstate tail | head` closes the pipe early; that is not an error
        sys.stderr.close()
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    send = subparsers.add_parser(
        "send", help="stream generated transactions to the local broker at a rate",
        description="Generate the synthetic transaction stream (the same preset and seed give the same events) and "
        "POST its first COUNT transactions as binary-mode CloudEvents to the broker ingress in <home>/endpoints.json, "
        "at RATE events/s with at most CONCURRENCY requests in flight. Exit status 1 if any event was refused.",
        epilog="example: hiddenstate send --rate 200 --count 2000   (then: hiddenstate tail --follow)",
    )
    send.add_argument("--home", type=Path, default=default_home(),
                      help=f"runtime home folder (default: ${HOME_ENV} or {DEFAULT_HOME})")
    send.add_argument("--url", help="send here instead of the URL from endpoints.json")
    send.add_argument("--rate", type=float, default=100.0, help="events per second; 0 = unpaced (default: 100)")
    send.add_argument("--count", type=int, default=1000, help="transactions to send (default: 1000)")
    send.add_argument("--preset", default="quick", help="generator preset: tiny, quick, default (default: quick)")
    send.add_argument("--seed", type=int, default=7, help="generator seed (default: 7)")
    send.add_argument("--concurrency", type=int, default=16, help="requests in flight at most (default: 16)")
    send.add_argument("--batch", action="store_true",
                      help="send CloudEvents batches (application/cloudevents-batch+json) straight to a service "
                      "instead of the broker, which like Knative's takes one event per request; replies are counted")
    send.add_argument("--batch-size", type=int, default=100, help="events per batch with --batch (default: 100)")
    send.add_argument("--service", default="scorer", help="service in endpoints.json for --batch (default: scorer)")
    send.add_argument("--json", action="store_true", help="print the report as one JSON object")
    send.add_argument("--no-progress", action="store_true", help="no progress bar")
    send.set_defaults(handler=run_send)

    tail = subparsers.add_parser(
        "tail", help="print score and dead-letter events as they reach the sink",
        description="Print the events the event-display sink received (<home>/sink/events.jsonl): by default score "
        "replies and dead letters (events carrying knativeerrorcode), one line each.",
        epilog="example: hiddenstate tail --follow --type dev.hiddenstate.score",
    )
    tail.add_argument("--home", type=Path, default=default_home(),
                      help=f"runtime home folder (default: ${HOME_ENV} or {DEFAULT_HOME})")
    tail.add_argument("-f", "--follow", action="store_true", help="keep printing new events until interrupted")
    tail.add_argument("--type", help="only events of this CloudEvents type")
    tail.add_argument("--all", action="store_true", help="every event, not only scores and dead letters")
    tail.add_argument("--json", action="store_true", help="print the raw records (one JSON object per line)")
    tail.set_defaults(handler=run_tail)
