"""``hiddenstate generate``: write a synthetic transaction stream as JSON lines of CloudEvents."""

from __future__ import annotations

import argparse
import logging
import time
from dataclasses import replace
from pathlib import Path

from functions.generator.config import PRESET_SIZES, GeneratorConfig, GeneratorConfigError

log = logging.getLogger("hiddenstate.generator")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", default="quick", choices=tuple(PRESET_SIZES),
                        help="size: tiny (~5k transactions, 40 days), quick (~210k, 90 days), "
                        "default (~1M, 150 days) (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=7,
                        help="master seed; the same seed and preset give byte-identical files (default: %(default)s)")
    parser.add_argument("--days", type=int, help="override the preset's number of days")
    parser.add_argument("--customers", type=int, help="override the preset's number of customers")
    parser.add_argument("--out", type=Path, required=True,
                        help="output file: one structured-mode CloudEvent JSON object per line")
    parser.add_argument("--truth", type=Path,
                        help="also write the ground truth here (is_fraud, scenario, label time, customer, location "
                        "per transaction, after a first line with the drift timeline and counts); "
                        "read_transactions_jsonl finds it by default as OUT with .truth.jsonl")
    parser.add_argument("--labels", action="store_true",
                        help="interleave dev.hiddenstate.label events at their availability time: fraud when "
                        "reported (chargeback), genuine after the maturity period")
    parser.add_argument("--fraud-labels-only", action="store_true",
                        help="with --labels, leave out the genuine (is_fraud=false) maturity labels")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from functions.generator.events import write_jsonl
    from functions.logs import configure_logging

    configure_logging()
    try:
        config = GeneratorConfig.preset(args.preset, seed=args.seed)
        overrides = {k: v for k, v in (("days", args.days), ("customers", args.customers)) if v is not None}
        config = replace(config, **overrides) if overrides else config
    except GeneratorConfigError as exc:
        log.error("invalid generator settings", extra={"detail": str(exc)})
        print(f"error: {exc}")
        return 2
    started = time.perf_counter()
    events = write_jsonl(config, args.out, truth_path=args.truth, progress=not args.no_progress,
                         labels=args.labels, genuine_labels=not args.fraud_labels_only)
    seconds = time.perf_counter() - started
    log.info("stream written", extra={"events": events, "path": str(args.out), "seconds": round(seconds, 2),
                                      "preset": args.preset, "seed": args.seed, "truth": str(args.truth or "")})
    print(f"wrote {events} events to {args.out} in {seconds:.1f} s")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "generate", help="write a synthetic transaction stream (JSON lines of CloudEvents)",
        description="Generate a seeded, offline stream of card transactions: the handbook's base layer with fraud "
        "scenarios S1-S3, plus card testing, compromised-card bursts, geography/category jumps (with genuine "
        "travel) and point-of-compromise fraud; scheduled drift; delayed labels; blocked and replaced cards. "
        "Events follow the hiddenstate contract (dev.hiddenstate.transaction, dev.hiddenstate.label).",
        epilog="example: hiddenstate generate --preset quick --seed 7 --out quick.jsonl "
        "--truth quick.truth.jsonl --labels",
    )
    add_arguments(parser)
    parser.set_defaults(handler=run)
