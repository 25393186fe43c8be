"""``hiddenstate bench SCENARIO``: the load harness of ``perf.run`` as a subcommand."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    bench = subparsers.add_parser(
        "bench", help="run a k6 load scenario (or every benchmark) against the one-machine runtime",
        description="Start the one-machine runtime in a temporary home, run a k6 scenario of scripts/k6/ against "
        "it and write perf/results/SCENARIO.{json,md,png}: the k6 summary, instances, requests/s and latency over "
        "time. 'coldstart' runs the cold-start experiments; 'all' regenerates every result (~45 min).",
    )
    # The choices come from perf.run, imported in the handler so `hiddenstate --help` stays instant.
    bench.add_argument("scenario", choices=("steady", "ramp", "spike", "idle_burst", "soak", "coldstart", "all"),
                       help="which scenario (see `python -m perf.run --help`)")
    bench.add_argument("--scale", type=float, default=1.0,
                       help="multiply every scenario duration (e.g. 0.1 for a smoke run; default 1)")
    bench.add_argument("--out", default=None, help="results folder (default: perf/results)")
    bench.set_defaults(handler=run_bench)


def run_bench(args: argparse.Namespace) -> int:
    from pathlib import Path

    from perf.run import RESULTS, run_command

    args.out = Path(args.out) if args.out else RESULTS
    return run_command(args)
