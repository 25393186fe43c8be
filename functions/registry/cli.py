"""``hiddenstate registry``: inspect packages and move aliases (promote a challenger, roll back a champion)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

_EPILOG = """\
registries: file:///abs/dir or s3://bucket/prefix (S3 honours AWS_ENDPOINT_URL_S3 and the usual AWS variables)
model URIs: <registry>/<name>@<alias>, <registry>/<name>/<version>, or <registry>/<name>@<version>

examples:
  hiddenstate registry versions s3://models/fraud fraud-gru
  hiddenstate registry set-alias s3://models/fraud fraud-gru champion v4
  hiddenstate registry verify s3://models/fraud/fraud-gru@champion
"""


def _print(document: Any) -> None:
    print(json.dumps(document, indent=2, sort_keys=True))


def _versions(args: argparse.Namespace) -> int:
    from functions.registry import open_registry

    registry = open_registry(args.registry)
    aliases = registry.aliases(args.name)
    for version in registry.versions(args.name):
        pointing = sorted(alias for alias, target in aliases.items() if target == version)
        print(f"{version}\t{','.join(pointing)}")
    return 0


def _aliases(args: argparse.Namespace) -> int:
    from functions.registry import open_registry

    _print(open_registry(args.registry).aliases(args.name))
    return 0


def _show(args: argparse.Namespace) -> int:
    from functions.registry import open_registry, parse_model_uri

    parsed = parse_model_uri(args.model_uri)
    registry = open_registry(parsed.registry_uri)
    _print(registry.manifest(parsed.name, registry.resolve(parsed.name, parsed.reference)))
    return 0


def _set_alias(args: argparse.Namespace) -> int:
    from functions.registry import open_registry

    registry = open_registry(args.registry)
    registry.set_alias(args.name, args.alias, args.version)
    print(registry.ref(args.name, args.version).uri(args.alias))
    return 0


def _verify(args: argparse.Namespace) -> int:
    from functions.registry import load_package

    package = load_package(args.model_uri, cache_dir=args.cache_dir)
    _print({"model": package.ref.uri(), "directory": str(package.directory), "fetched": list(package.fetched),
            "timings_seconds": {k: round(v, 6) for k, v in package.timings.items()}})
    return 0


def _guarded(handler: Any) -> Any:
    """Registry errors become one clear line on stderr and exit status 1, not a traceback."""

    def run(args: argparse.Namespace) -> int:
        from functions.registry import RegistryError

        try:
            return handler(args)
        except RegistryError as exc:
            print(f"hiddenstate registry: {type(exc).__name__}: {exc}", file=sys.stderr)
            return 1

    return run


def register(subparsers: Any) -> None:
    from pathlib import Path

    parser = subparsers.add_parser(
        "registry", help="inspect model packages and move aliases",
        description="Inspect versioned model packages and move aliases.", epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="registry_command", metavar="ACTION", required=True)

    versions = commands.add_parser("versions", help="list published versions and the aliases on each")
    versions.add_argument("registry", help="file:///abs/dir or s3://bucket/prefix")
    versions.add_argument("name", help="model name")
    versions.set_defaults(handler=_guarded(_versions))

    aliases = commands.add_parser("aliases", help="print alias -> version as JSON")
    aliases.add_argument("registry")
    aliases.add_argument("name")
    aliases.set_defaults(handler=_guarded(_aliases))

    show = commands.add_parser("show", help="print the manifest a model URI resolves to")
    show.add_argument("model_uri")
    show.set_defaults(handler=_guarded(_show))

    set_alias = commands.add_parser("set-alias", help="point an alias at a published version (atomic)")
    set_alias.add_argument("registry")
    set_alias.add_argument("name")
    set_alias.add_argument("alias", help="e.g. champion, challenger")
    set_alias.add_argument("version", help="e.g. v3")
    set_alias.set_defaults(handler=_guarded(_set_alias))

    verify = commands.add_parser("verify", help="fetch a package, check every sha256, print phase timings")
    verify.add_argument("model_uri")
    verify.add_argument("--cache-dir", type=Path, default=None,
                        help="download cache for S3 packages (default: $MODEL_CACHE_DIR or <tmp>/hiddenstate-models)")
    verify.set_defaults(handler=_guarded(_verify))
