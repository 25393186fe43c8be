"""Contract tests of ``hiddenstate deploy`` against a local HTTP server that answers the Kubernetes API paths it uses.

This is not a cluster test. ``RecordingApiServer`` checks the *requests* the deploy tool makes through the real
kubernetes client (paths, verbs, content types, dry-run and field-validation parameters) and answers them the way
the API server does: 404 Status for a missing object, 201 for a create, 200 for a patch, ``Ready`` conditions on
Knative objects, 404 on an API group that is not installed. Whether Knative then reconciles is a cluster's business.
"""

from __future__ import annotations

import argparse
import copy
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml

from knative.deploy import cli
from knative.manifests import load_manifests

NAMESPACE = "hiddenstate"
KSVC_PATH = f"/apis/serving.knative.dev/v1/namespaces/{NAMESPACE}/services"


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    content_type: str | None
    body: Any


@dataclass
class ApiState:
    served_groups: set[str] = field(default_factory=lambda: {"serving.knative.dev/v1", "eventing.knative.dev/v1"})
    objects: dict[str, dict] = field(default_factory=dict)
    revisions: list[dict] = field(default_factory=list)
    # Knative Services whose Ready condition is False (reason RevisionFailed) once stored.
    failing: set[str] = field(default_factory=set)
    requests: list[Request] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _status(obj: dict, failing: set[str]) -> dict:
    """What the controllers would have written once the object converged."""
    kind, name = obj["kind"], obj["metadata"]["name"]
    if kind in ("Deployment", "StatefulSet"):
        replicas = obj["spec"].get("replicas", 1)
        return {"replicas": replicas, "readyReplicas": replicas, "availableReplicas": replicas,
                "observedGeneration": obj["metadata"]["generation"]}
    if not obj["apiVersion"].endswith("knative.dev/v1"):
        return {}
    ready = {"type": "Ready", "status": "True"}
    if name in failing:
        ready = {"type": "Ready", "status": "False", "reason": "RevisionFailed",
                 "message": 'Revision "scorer-00001" failed with message: Back-off pulling image "nope".'}
    status = {"observedGeneration": obj["metadata"]["generation"], "conditions": [ready]}
    if kind == "Service":
        status["url"] = f"http://{name}.{NAMESPACE}.svc.cluster.local"
    if kind == "Broker":
        status["address"] = {"url": f"http://broker-ingress.knative-eventing.svc.cluster.local/{NAMESPACE}/{name}"}
    return status


def _merge(target: dict, patch: dict) -> dict:
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict) and isinstance(target.get(key), dict):
            _merge(target[key], value)
        else:
            target[key] = copy.deepcopy(value)
    return target


def _not_found(path: str) -> dict:
    return {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404,
            "message": f"the server could not find the requested resource ({path})"}


class _Handler(BaseHTTPRequestHandler):
    state: ApiState

    def log_message(self, *_: Any) -> None:
        pass

    def _reply(self, code: int, body: dict) -> None:
        raw = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def _handle(self) -> None:
        url = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length)) if length else None
        query = parse_qs(url.query)
        state = self.state
        with state.lock:
            state.requests.append(Request(self.command, url.path, query, self.headers.get("Content-Type"), body))
            code, answer = self._answer(url.path, query, body)
        self._reply(code, answer)

    def _answer(self, path: str, query: dict, body: Any) -> tuple[int, dict]:
        state = self.state
        parts = path.strip("/").split("/")
        if parts[0] == "apis" and len(parts) == 3:  # API group discovery
            group_version = f"{parts[1]}/{parts[2]}"
            if group_version not in state.served_groups:
                return 404, _not_found(path)
            return 200, {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version,
                         "resources": []}
        if path.endswith("/revisions") and self.command == "GET":
            return 200, {"apiVersion": "serving.knative.dev/v1", "kind": "RevisionList", "items": state.revisions}
        dry_run = query.get("dryRun") == ["All"]
        if self.command == "GET":
            found = state.objects.get(path)
            return (200, found) if found else (404, _not_found(path))
        if self.command == "POST":
            key = f"{path}/{body['metadata']['name']}"
            if key in state.objects:
                return 409, {"kind": "Status", "code": 409, "reason": "AlreadyExists", "message": "exists"}
            stored = copy.deepcopy(body)
            stored["metadata"]["generation"] = 1
            stored["status"] = _status(stored, state.failing)
            if not dry_run:
                state.objects[key] = stored
            return 201, stored
        if self.command == "PATCH":
            if path not in state.objects:
                return 404, _not_found(path)
            patched = _merge(copy.deepcopy(state.objects[path]), body)
            patched["metadata"]["generation"] += 1
            patched["status"] = {**patched.get("status", {}), **_status(patched, state.failing)}
            if not dry_run:
                state.objects[path] = patched
            return 200, patched
        return 405, {"kind": "Status", "code": 405, "message": "method not allowed"}

    do_GET = do_POST = do_PATCH = _handle


class RecordingApiServer:
    """A threaded http.server on a free port, answering like the Kubernetes API server for the paths we use."""

    def __init__(self) -> None:
        self.state = ApiState()
        handler = type("Handler", (_Handler,), {"state": self.state})
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_port}"

    def kubeconfig(self, directory: Path) -> Path:
        path = directory / "kubeconfig"
        path.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "contract",
            "clusters": [{"name": "contract", "cluster": {"server": self.url}}],
            "users": [{"name": "tester", "user": {"token": "contract-test-token"}}],
            "contexts": [{"name": "contract", "context": {"cluster": "contract", "user": "tester"}}],
        }))
        return path

    def requests(self, method: str | None = None) -> list[Request]:
        with self.state.lock:
            return [r for r in self.state.requests if method is None or r.method == method]


@pytest.fixture
def api(tmp_path: Path) -> Iterator[RecordingApiServer]:
    server = RecordingApiServer()
    server.thread.start()
    yield server
    server.httpd.shutdown()
    server.httpd.server_close()


def run(api: RecordingApiServer, tmp_path: Path, *argv: str) -> int:
    parser = argparse.ArgumentParser(prog="hiddenstate")
    cli.register(parser.add_subparsers())
    args = parser.parse_args(["deploy", *argv, "--kubeconfig", str(api.kubeconfig(tmp_path))])
    return args.handler(args)


def _object_path(obj: dict) -> str:
    api_version, kind, meta = obj["apiVersion"], obj["kind"], obj["metadata"]
    plural = {"Namespace": "namespaces", "ConfigMap": "configmaps", "Secret": "secrets", "Service": "services",
              "Deployment": "deployments", "StatefulSet": "statefulsets", "Broker": "brokers",
              "Trigger": "triggers"}[kind]
    prefix = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    if kind == "Namespace":
        return f"{prefix}/namespaces/{meta['name']}"
    return f"{prefix}/namespaces/{meta['namespace']}/{plural}/{meta['name']}"


def _seed_scorer(api: RecordingApiServer, status: dict) -> None:
    api.state.objects[f"{KSVC_PATH}/scorer"] = {
        "apiVersion": "serving.knative.dev/v1", "kind": "Service",
        "metadata": {"name": "scorer", "namespace": NAMESPACE, "generation": 3}, "spec": {}, "status": status}


def _revision(name: str, generation: int, ready: bool = True) -> dict:
    return {"metadata": {"name": name, "labels": {"serving.knative.dev/configurationGeneration": str(generation)}},
            "status": {"conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}}


def test_first_deploy_creates_each_object_after_a_404_on_its_own_api_path(api, tmp_path, capsys):
    assert run(api, tmp_path, "--overlay", "dev") == 0
    expected = load_manifests("dev")
    created = {r.path + "/" + r.body["metadata"]["name"]: r for r in api.requests("POST")}
    gets = [r.path for r in api.requests("GET")]
    for obj in expected:
        path = _object_path(obj)
        assert path in gets, f"{path} was not looked up before creating"
        request = created[path] if obj["kind"] != "Namespace" else created[f"/api/v1/namespaces/{NAMESPACE}"]
        assert request.body == obj
        assert request.query["fieldManager"] == ["hiddenstate"]
        assert request.query["fieldValidation"] == ["Strict"]
        assert "dryRun" not in request.query
    assert len(created) == len(expected)
    out = capsys.readouterr().out
    assert f"Service/scorer: http://scorer.{NAMESPACE}.svc.cluster.local" in out
    assert "Broker/default: http://broker-ingress" in out


def test_knative_objects_go_through_the_custom_objects_api_and_core_kinds_through_the_typed_apis(api, tmp_path):
    run(api, tmp_path, "--overlay", "dev")
    paths = {r.path for r in api.requests("POST")}
    assert KSVC_PATH in paths
    assert f"/apis/eventing.knative.dev/v1/namespaces/{NAMESPACE}/brokers" in paths
    assert f"/apis/eventing.knative.dev/v1/namespaces/{NAMESPACE}/triggers" in paths
    assert f"/apis/apps/v1/namespaces/{NAMESPACE}/statefulsets" in paths
    assert f"/api/v1/namespaces/{NAMESPACE}/configmaps" in paths
    order = [r.body["kind"] for r in api.requests("POST")]
    assert order.index("Namespace") == 0
    assert order.index("ConfigMap") < order.index("Broker") < order.index("Trigger")


def test_second_deploy_patches_existing_objects_knative_with_merge_patch_core_with_strategic(api, tmp_path):
    run(api, tmp_path, "--overlay", "dev")
    posts_before = len(api.requests("POST"))
    assert run(api, tmp_path, "--overlay", "dev", "--image", "ghcr.io/me/scorer:2") == 0
    assert len(api.requests("POST")) == posts_before
    patches = {r.path: r for r in api.requests("PATCH")}
    scorer = patches[f"{KSVC_PATH}/scorer"]
    assert scorer.content_type == "application/merge-patch+json"
    assert scorer.body["spec"]["template"]["spec"]["containers"][0]["image"] == "ghcr.io/me/scorer:2"
    config = patches[f"/api/v1/namespaces/{NAMESPACE}/configmaps/scorer-config"]
    assert config.content_type == "application/strategic-merge-patch+json"
    stored = api.state.objects[f"{KSVC_PATH}/event-display"]
    assert stored["spec"]["template"]["spec"]["containers"][0]["image"] == "ghcr.io/me/scorer:2"


def test_model_uri_and_namespace_options_reach_the_objects_sent(api, tmp_path):
    run(api, tmp_path, "--overlay", "dev", "--namespace", "fraud", "--model-uri", "s3://m/registry/fraud-gru@v7")
    config = api.state.objects["/api/v1/namespaces/fraud/configmaps/scorer-config"]
    assert config["data"]["MODEL_URI"] == "s3://m/registry/fraud-gru@v7"
    assert "/api/v1/namespaces/fraud" in api.state.objects


def test_dry_run_prints_the_objects_and_asks_the_server_for_a_dry_run_only(api, tmp_path, capsys):
    assert run(api, tmp_path, "--overlay", "dev", "--dry-run") == 0
    printed = [doc for doc in yaml.safe_load_all(capsys.readouterr().out) if doc]
    assert len(printed) == len(load_manifests("dev"))
    posts = api.requests("POST")
    assert posts and all(r.query.get("dryRun") == ["All"] for r in posts)
    assert api.state.objects == {}


def test_missing_knative_crds_are_reported_before_anything_is_written(api, tmp_path, capsys):
    api.state.served_groups.discard("serving.knative.dev/v1")
    assert run(api, tmp_path, "--overlay", "dev") == 1
    assert "install Knative Serving" in capsys.readouterr().err
    assert api.requests("POST") == []


def test_ready_false_is_reported_with_its_reason_and_message(api, tmp_path, capsys):
    api.state.failing.add("scorer")
    assert run(api, tmp_path, "--overlay", "dev", "--timeout", "5") == 1
    err = capsys.readouterr().err
    assert "Service/scorer is not Ready: RevisionFailed" in err
    assert "Back-off pulling image" in err


def test_prod_deploy_refuses_to_start_while_its_secrets_are_missing(api, tmp_path, capsys):
    assert run(api, tmp_path, "--overlay", "prod") == 1
    err = capsys.readouterr().err
    assert "hiddenstate/valkey-scorer" in err and "hiddenstate/valkey-acl" in err and "hiddenstate/state-admin" in err
    assert "s3-credentials" not in err  # optional reference
    assert api.requests("POST") == []


def test_no_kubeconfig_is_a_clear_error(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "absent"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    parser = argparse.ArgumentParser(prog="hiddenstate")
    cli.register(parser.add_subparsers())
    args = parser.parse_args(["deploy", "--overlay", "dev"])
    assert args.handler(args) == 1
    assert "no usable kubeconfig" in capsys.readouterr().err


def test_traffic_splits_between_current_and_candidate_tags(api, tmp_path):
    _seed_scorer(api, {"latestReadyRevisionName": "scorer-00002",
                       "traffic": [{"revisionName": "scorer-00001", "percent": 100, "tag": "current"}]})
    assert run(api, tmp_path, "traffic", "--percent", "10") == 0
    (patch,) = api.requests("PATCH")
    assert patch.path == f"{KSVC_PATH}/scorer"
    assert patch.content_type == "application/merge-patch+json"
    assert patch.body == {"spec": {"traffic": [
        {"revisionName": "scorer-00001", "percent": 90, "tag": "current"},
        {"revisionName": "scorer-00002", "percent": 10, "tag": "candidate"}]}}


def test_rollback_during_a_canary_sends_everything_back_to_current(api, tmp_path):
    _seed_scorer(api, {"latestReadyRevisionName": "scorer-00002", "traffic": [
        {"revisionName": "scorer-00001", "percent": 90, "tag": "current"},
        {"revisionName": "scorer-00002", "percent": 10, "tag": "candidate"}]})
    assert run(api, tmp_path, "rollback") == 0
    assert api.requests("PATCH")[0].body["spec"]["traffic"] == [
        {"revisionName": "scorer-00001", "percent": 100, "tag": "current"},
        {"revisionName": "scorer-00002", "percent": 0, "tag": "candidate"}]


def test_rollback_without_tags_goes_to_the_newest_older_ready_revision(api, tmp_path):
    _seed_scorer(api, {"latestReadyRevisionName": "scorer-00003",
                       "traffic": [{"revisionName": "scorer-00003", "percent": 100, "latestRevision": True}]})
    api.state.revisions = [_revision("scorer-00001", 1), _revision("scorer-00002", 2, ready=False),
                           _revision("scorer-00003", 3)]
    assert run(api, tmp_path, "rollback") == 0
    listing = [r for r in api.requests("GET") if r.path.endswith("/revisions")]
    assert listing[0].query["labelSelector"] == ["serving.knative.dev/service=scorer"]
    assert api.requests("PATCH")[0].body["spec"]["traffic"][0] == {
        "revisionName": "scorer-00001", "percent": 100, "tag": "current"}


def test_traffic_on_a_service_that_does_not_exist_says_to_deploy_first(api, tmp_path, capsys):
    assert run(api, tmp_path, "traffic", "--percent", "10") == 1
    assert "run `hiddenstate deploy` first" in capsys.readouterr().err
