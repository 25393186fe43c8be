"""The ``hiddenstate`` command. Each subsystem registers its own subcommands; heavy imports (torch, boto3)
happen inside the handlers so that ``hiddenstate --help`` stays instant."""

from __future__ import annotations

import argparse
import importlib
import sys

# One entry per module that exposes ``register(subparsers) -> None``. Each handler is set with
# ``parser.set_defaults(handler=fn)`` and returns an exit status.
COMMAND_MODULES: tuple[str, ...] = (
    "functions.generator.cli",
    "functions.trainer.cli",
    "functions.registry.cli",
    "knative.deploy.cli",
    "state_service.cli",
    "knative.local.eventing.cli",
    "knative.local.cli",
    "knative.local.demo",
    "perf.cli",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hiddenstate",
        description=(
            "Serve stateful GRU fraud scorers as stateless Knative functions. "
            "Train and package models, run the state service, deploy to Knative or run everything on one machine."
        ),
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 2
    return int(handler(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
