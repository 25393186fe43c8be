"""``hiddenstate deploy``: put the ``knative/`` manifests on a Knative cluster, shift canary traffic, roll back.

Heavy imports (the kubernetes client, jsonschema) happen inside the handlers so ``hiddenstate --help`` stays instant.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

DEFAULT_OVERLAY = os.environ.get("HIDDENSTATE_OVERLAY", "dev")
DEFAULT_TIMEOUT_S = float(os.environ.get("HIDDENSTATE_DEPLOY_TIMEOUT_S", "600"))
# Apply order: what others refer to first (namespace, config, secrets, Valkey), Knative objects last.
APPLY_ORDER = ("Namespace", "ConfigMap", "Secret", "Service", "StatefulSet", "Deployment", "KnativeService", "Broker",
               "Trigger")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "deploy",
        help="deploy to a Knative cluster (kubernetes client), print kn commands, canary and rollback",
        description=(
            "Apply the kustomize output of knative/overlays/OVERLAY to the cluster in your kubeconfig: each object "
            "is created, or patched if it exists; then wait for the Ready conditions and print the URLs. "
            "Needs Knative Serving and Eventing installed. See the README section 'Deploy on Knative'."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--overlay", default=DEFAULT_OVERLAY,
                        help="dev, prod, kafka, base, or a kustomization directory ($HIDDENSTATE_OVERLAY)")
    parser.add_argument("--image", help="scorer image (also runs the event-display sink), e.g. ghcr.io/me/scorer:1.2")
    parser.add_argument("--admin-image", help="state-admin image")
    parser.add_argument("--model-uri", help="MODEL_URI for the scorer, e.g. s3://bucket/registry/fraud-gru@champion")
    parser.add_argument("--dry-run", action="store_true",
                        help="print the objects; when a cluster is reachable also run a server-side dry run")
    parser.add_argument("--print-kn", action="store_true",
                        help="print the equivalent kn (and kubectl patch) commands instead of deploying")
    parser.add_argument("--kn-verb", choices=("create", "update", "apply"), default="create",
                        help="kn service verb for --print-kn (apply = declarative create-or-update)")
    parser.add_argument("--validate", action="store_true",
                        help="validate the objects offline (Knative CRD schemas, webhook rules, Kubernetes 1.37) "
                             "and stop")
    parser.add_argument("--no-wait", action="store_true", help="do not wait for Ready")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S,
                        help="seconds to wait for Ready ($HIDDENSTATE_DEPLOY_TIMEOUT_S)")
    _connection_options(parser, suppress=False)
    parser.set_defaults(handler=run_deploy)

    actions = parser.add_subparsers(dest="deploy_action", metavar="ACTION")
    traffic = actions.add_parser(
        "traffic", help="canary: send PERCENT of the scorer's traffic to a revision (tags current/candidate)",
        description=(
            "Split the Knative Service's traffic between the revision users have now (tag 'current') and a "
            "candidate (tag 'candidate', default: the latest ready revision). --percent 0 pins traffic before you "
            "deploy a new image; --percent 100 promotes the candidate."
        ),
    )
    traffic.add_argument("--percent", type=int, required=True, help="share of traffic for the candidate, 0-100")
    traffic.add_argument("--revision", help="candidate revision name (default: the latest ready revision)")
    _connection_options(traffic, suppress=True)
    traffic.set_defaults(handler=run_traffic)
    rollback = actions.add_parser(
        "rollback", help="send all traffic back to the previous revision",
        description="End a canary (all traffic to 'current'), or undo a promotion (all traffic to the revision "
                    "before it).",
    )
    _connection_options(rollback, suppress=True)
    rollback.set_defaults(handler=run_rollback)


def _connection_options(parser: argparse.ArgumentParser, suppress: bool) -> None:
    # On the actions the defaults are suppressed, so an option given before the action is not overwritten.
    def default(value: Any) -> Any:
        return argparse.SUPPRESS if suppress else value

    parser.add_argument("--namespace", default=default(None), help="namespace (default: the manifests' hiddenstate)")
    parser.add_argument("--service", default=default("scorer"), help="Knative Service for traffic and rollback")
    parser.add_argument("--kubeconfig", default=default(None), help="kubeconfig file (default: $KUBECONFIG)")
    parser.add_argument("--context", default=default(None), help="kubeconfig context")


def run_deploy(args: argparse.Namespace) -> int:
    from knative.deploy.errors import DeployError
    from knative.manifests import ManifestError
    from knative.validation import ManifestInvalid

    try:
        return _deploy(args)
    except (DeployError, ManifestError, ManifestInvalid, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1


def _deploy(args: argparse.Namespace) -> int:
    import yaml

    from knative.deploy.customize import customize
    from knative.deploy.kn import kn_commands, render
    from knative.manifests import load_manifests
    from knative.validation import check_objects

    objs = customize(load_manifests(args.overlay), namespace=args.namespace, image=args.image,
                     model_uri=args.model_uri, admin_image=args.admin_image)
    objs.sort(key=_apply_rank)
    if args.validate:
        check_objects(objs)
        print(f"{len(objs)} objects valid (Knative CRD schemas + webhook rules, Kubernetes 1.37)")
        return 0
    if args.print_kn:
        print(render(kn_commands(objs, args.kn_verb)))
        return 0
    if args.dry_run:
        print(yaml.safe_dump_all(objs, sort_keys=False), end="")
        return _server_dry_run(args, objs)
    cluster = _connect(args)
    _preflight(cluster, objs)
    applied = [_apply_one(cluster, obj, dry_run=False) for obj in objs]
    if args.no_wait:
        return 0
    from knative.deploy.cluster import urls

    ready = cluster.wait_ready(applied, timeout_s=args.timeout, progress=sys.stderr.isatty())
    for name, url in sorted(urls(ready).items()):
        print(f"{name}: {url}")
    return 0


def _server_dry_run(args: argparse.Namespace, objs: list[dict[str, Any]]) -> int:
    from knative.deploy.errors import ClusterUnreachable, NoKubeconfig

    try:
        cluster = _connect(args)
        _preflight(cluster, objs)
    except (NoKubeconfig, ClusterUnreachable) as error:
        print(f"# no cluster reachable, printed only: {error}", file=sys.stderr)
        return 0
    for obj in objs:
        _apply_one(cluster, obj, dry_run=True)
    print(f"# server-side dry run accepted all {len(objs)} objects", file=sys.stderr)
    return 0


def _connect(args: argparse.Namespace) -> Any:
    from knative.deploy.cluster import Cluster

    return Cluster.connect(args.kubeconfig, args.context)


def _preflight(cluster: Any, objs: list[dict[str, Any]]) -> None:
    """Knative installed, and the Secrets the manifests need but do not carry (prod, kafka) already exist."""
    from knative.deploy.errors import DeployError

    cluster.require_groups(objs)
    missing = [ref for ref in referenced_secrets(objs) if cluster.get(ref) is None]
    if missing:
        names = ", ".join(f"{r['metadata']['namespace']}/{r['metadata']['name']}" for r in missing)
        raise DeployError(f"Secrets missing: {names}. Create them first (templates in knative/secrets/)")


def referenced_secrets(objs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Secrets the workloads require (non-optional references) that the manifests themselves do not define."""
    defined = {o["metadata"]["name"] for o in objs if o.get("kind") == "Secret"}
    wanted: dict[tuple[str, str], dict[str, Any]] = {}
    for obj in objs:
        pod = obj.get("spec", {}).get("template", {}).get("spec", {}) if obj.get("kind") in (
            "Service", "Deployment", "StatefulSet") else {}
        namespace = obj.get("metadata", {}).get("namespace")
        refs = [v.get("secret", {}) | {"name": v.get("secret", {}).get("secretName")}
                for v in pod.get("volumes", []) if "secret" in v]
        for container in pod.get("containers", []):
            refs += [s["secretRef"] for s in container.get("envFrom", []) if "secretRef" in s]
            refs += [e["valueFrom"]["secretKeyRef"] for e in container.get("env", [])
                     if "secretKeyRef" in e.get("valueFrom", {})]
        for ref in refs:
            if ref.get("name") and not ref.get("optional") and ref["name"] not in defined:
                wanted[(namespace, ref["name"])] = {"apiVersion": "v1", "kind": "Secret",
                                                    "metadata": {"name": ref["name"], "namespace": namespace}}
    return list(wanted.values())


def _apply_one(cluster: Any, obj: dict[str, Any], dry_run: bool) -> dict[str, Any]:
    from knative.validation import describe

    outcome, stored = cluster.apply(obj, dry_run=dry_run)
    print(f"{describe(obj)} {outcome}{' (dry run)' if dry_run else ''}", file=sys.stderr)
    return stored


def _apply_rank(obj: dict[str, Any]) -> int:
    kind = obj.get("kind", "")
    if kind == "Service" and obj.get("apiVersion", "").startswith("serving.knative.dev/"):
        kind = "KnativeService"
    return APPLY_ORDER.index(kind) if kind in APPLY_ORDER else len(APPLY_ORDER)


def run_traffic(args: argparse.Namespace) -> int:
    from knative.deploy.traffic import canary_traffic

    return _change_traffic(args, lambda cluster, ns, status: canary_traffic(status, args.percent, args.revision))


def run_rollback(args: argparse.Namespace) -> int:
    from knative.deploy.traffic import rollback_traffic

    return _change_traffic(
        args, lambda cluster, ns, status: rollback_traffic(status, cluster.list_revisions(ns, args.service)))


def _change_traffic(args: argparse.Namespace, compute: Any) -> int:
    from knative.deploy.errors import DeployError
    from knative.manifests import SERVING_API

    namespace = getattr(args, "namespace", None) or "hiddenstate"
    service = getattr(args, "service", None) or "scorer"
    try:
        cluster = _connect(args)
        current = cluster.get({"apiVersion": SERVING_API, "kind": "Service",
                               "metadata": {"name": service, "namespace": namespace}})
        if current is None:
            raise DeployError(f"Knative Service {namespace}/{service} not found; run `hiddenstate deploy` first")
        traffic = compute(cluster, namespace, current.get("status") or {})
        cluster.set_traffic(namespace, service, traffic)
    except DeployError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    for target in traffic:
        print(f"{target['percent']:>3}%  {target['revisionName']}  tag={target.get('tag', '')}")
    return 0
