"""``hiddenstate train`` / ``python -m functions.trainer``. The last line of stdout is the model URI."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

DEFAULT_REGISTRY = "file://" + str(Path(".hiddenstate/registry").resolve())


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--registry", default=DEFAULT_REGISTRY,
                        help="where to publish: file:///abs/dir or s3://bucket/prefix (default: %(default)s)")
    parser.add_argument("--name", default="fraud-gru", help="model name in the registry (default: %(default)s)")
    parser.add_argument("--alias", default="champion", help="alias to point at the new version (default: %(default)s)")
    parser.add_argument("--quick", action="store_true",
                        help="small data and few epochs: under a minute on 2 cores, for tests and the demo")
    parser.add_argument("--data", type=Path, help="train on this JSONL of transaction events (with its truth file) "
                        "instead of generated ones")
    parser.add_argument("--seed", type=int, default=7, help="seed for data generation and training")
    parser.add_argument("--epochs", type=int, help="override the number of epochs")


def run(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from functions.trainer.run import TrainConfig, publish, train

    config = TrainConfig.quick(args.seed) if args.quick else TrainConfig(seed=args.seed)
    if args.epochs:
        config = replace(config, epochs=args.epochs)
    try:
        model, report = train(config, args.data)
    except (ValueError, OSError) as exc:  # bad data or a stream too short to split: say so, no traceback
        print(f"hiddenstate train: {exc}", file=sys.stderr)
        return 2
    print(report.table())
    print(f"\ntrained on {report.events} events in {report.training_seconds:.1f} s")
    uri = publish(model, config, report, args.registry, args.name, args.alias)
    print(uri)
    sys.stdout.flush()
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train", help="train a GRU fraud model and publish it as a package",
        description="Train the GRU (one state per card and per merchant) with truncated BPTT, evaluate it against a "
        "stateless per-event baseline on a later held-out period, print the quality table, and publish the package. "
        "The last line of stdout is the model URI for the scorer's MODEL_URI.",
    )
    add_arguments(parser)
    parser.set_defaults(handler=run)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m functions.trainer", description="Train and publish a model.")
    add_arguments(parser)
    return run(parser.parse_args(argv))
