"""The model registry: publish, aliases, URIs, verified loading, on a directory and on a real (moto) S3."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import boto3
import numpy as np
import pytest
from safetensors.numpy import save

from functions.registry import (
    ChecksumMismatch,
    InvalidManifest,
    InvalidModelUri,
    ModelNotFound,
    ModelUri,
    RegistryError,
    RegistryUnavailable,
    load_package,
    open_registry,
    parse_model_uri,
)

# The moto S3 fixtures (moto_server, s3_env, s3_bucket); a plugin, so fixture arguments do not shadow imports.
pytest_plugins = ["s3_fixtures"]

WEIGHTS = "model.safetensors"


def weights(seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    return save({"gru.weight": rng.standard_normal((8, 4)).astype(np.float32)})


def fields(**overrides: Any) -> dict[str, Any]:
    base = {
        "hidden_size": 8,
        "state_dtype": "float16",
        "layout_version": 1,
        "libraries": {"scikit-learn": "1.5.0", "numpy": "0.0-stale"},
        "feature_spec": {"inputs": ["amount_log"], "hidden_size": 8},
        "training": {"seed": 7, "data_window": {"start": "2026-01-01", "end": "2026-02-01"}, "epochs": 2,
                     "learning_rate": 0.001},
        "metrics": {"recall_at_1pct_fpr": 0.6, "baseline_recall_at_1pct_fpr": 0.3, "auc_pr": 0.5,
                    "baseline_auc_pr": 0.2},
        "lifecycle": {"training_seconds": 12.5},
        "model": {"kind": "gru"},
    }
    base.update(overrides)
    return base


@pytest.fixture
def file_registry(tmp_path: Path):
    return open_registry((tmp_path / "registry").as_uri())


# ---------------------------------------------------------------------------------------------------------
# Round trips.


def test_package_published_to_a_directory_loads_back_verified(file_registry):
    ref = file_registry.publish("gru", {WEIGHTS: weights(), "notes.txt": b"hello"}, fields(), alias="champion")

    package = load_package(ref.uri("champion"))

    assert package.ref == ref
    assert ref.version == "v1"
    assert (package.directory / WEIGHTS).read_bytes() == weights()
    manifest = package.manifest
    assert manifest["name"] == "gru" and manifest["version"] == "v1"
    assert set(manifest["files"]) == {WEIGHTS, "notes.txt"}
    assert manifest["files"][WEIGHTS]["bytes"] == len(weights())
    assert {"python", "torch", "numpy", "hiddenstate"} <= set(manifest["libraries"])
    assert manifest["libraries"]["scikit-learn"] == "1.5.0", "a caller may record extra libraries"
    assert manifest["libraries"]["numpy"] == np.__version__, "the registry's own reading wins"
    assert manifest["lifecycle"]["package_bytes"] == len(weights()) + 5
    assert manifest["lifecycle"]["save_seconds"] >= 0
    assert manifest["lifecycle"]["training_seconds"] == 12.5
    assert manifest["feature_spec"] == fields()["feature_spec"]
    assert manifest["model"] == {"kind": "gru"}, "model-specific keys are kept as given"
    assert set(package.timings) == {"resolve", "fetch", "checksum", "total"}
    assert package.fetched == ()


def test_package_published_to_s3_loads_back_into_the_cache(s3_bucket, tmp_path):
    registry = open_registry(f"s3://{s3_bucket}/models/fraud")
    ref = registry.publish("gru", {WEIGHTS: weights()}, fields(), alias="champion")
    assert ref.uri("champion") == f"s3://{s3_bucket}/models/fraud/gru@champion"

    package = load_package(ref.uri("champion"), cache_dir=tmp_path / "cache")

    assert package.ref == ref
    assert package.fetched == (WEIGHTS,)
    assert package.directory.is_relative_to(tmp_path / "cache")
    assert (package.directory / WEIGHTS).read_bytes() == weights()
    assert json.loads((package.directory / "manifest.json").read_bytes())["version"] == "v1"
    assert registry.versions("gru") == ["v1"]
    assert registry.aliases("gru") == {"champion": "v1"}


def test_second_load_from_the_cache_skips_the_download(s3_bucket, tmp_path):
    ref = open_registry(f"s3://{s3_bucket}").publish("gru", {WEIGHTS: weights()}, fields())
    load_package(ref.uri(), cache_dir=tmp_path)

    again = load_package(ref.uri(), cache_dir=tmp_path)

    assert again.fetched == ()
    assert again.timings["fetch"] == 0.0
    assert (again.directory / WEIGHTS).read_bytes() == weights()


def test_cache_defaults_to_model_cache_dir(s3_bucket, tmp_path, monkeypatch):
    monkeypatch.setenv("MODEL_CACHE_DIR", str(tmp_path / "from-env"))
    ref = open_registry(f"s3://{s3_bucket}").publish("gru", {WEIGHTS: weights()}, fields())

    package = load_package(ref.uri())

    assert package.directory.is_relative_to(tmp_path / "from-env")


def test_tampered_cache_file_is_fetched_again_not_trusted(s3_bucket, tmp_path):
    ref = open_registry(f"s3://{s3_bucket}").publish("gru", {WEIGHTS: weights()}, fields())
    first = load_package(ref.uri(), cache_dir=tmp_path)
    (first.directory / WEIGHTS).write_bytes(weights(seed=99))

    again = load_package(ref.uri(), cache_dir=tmp_path)

    assert again.fetched == (WEIGHTS,)
    assert (again.directory / WEIGHTS).read_bytes() == weights()


# ---------------------------------------------------------------------------------------------------------
# Versions and aliases.


def test_versions_count_up_and_pinned_uris_load_their_own_version(file_registry):
    refs = [file_registry.publish("gru", {WEIGHTS: weights(seed)}, fields()) for seed in range(3)]

    assert [ref.version for ref in refs] == ["v1", "v2", "v3"]
    assert file_registry.versions("gru") == ["v1", "v2", "v3"]
    assert (load_package(refs[1].uri()).directory / WEIGHTS).read_bytes() == weights(1)


def test_versions_sort_numerically_past_nine(file_registry):
    for seed in range(11):
        file_registry.publish("gru", {WEIGHTS: weights(seed)}, fields())

    assert file_registry.versions("gru")[-3:] == ["v9", "v10", "v11"]


def test_alias_moves_to_a_new_version_and_loads_follow_it(file_registry):
    first = file_registry.publish("gru", {WEIGHTS: weights(1)}, fields(), alias="champion")
    second = file_registry.publish("gru", {WEIGHTS: weights(2)}, fields(), alias="challenger")
    assert load_package(first.uri("champion")).ref.version == "v1"

    file_registry.set_alias("gru", "champion", second.version)

    assert file_registry.aliases("gru") == {"champion": "v2", "challenger": "v2"}
    assert load_package(first.uri("champion")).ref.version == "v2"


def test_name_at_version_means_that_version(file_registry):
    file_registry.publish("gru", {WEIGHTS: weights(1)}, fields())
    file_registry.publish("gru", {WEIGHTS: weights(2)}, fields())

    package = load_package(f"{file_registry.uri}/gru@v1")

    assert package.ref.version == "v1"
    assert (package.directory / WEIGHTS).read_bytes() == weights(1)


def test_removed_alias_no_longer_resolves(file_registry):
    ref = file_registry.publish("gru", {WEIGHTS: weights()}, fields(), alias="challenger")

    file_registry.remove_alias("gru", "challenger")

    with pytest.raises(ModelNotFound, match="no alias 'challenger'"):
        load_package(ref.uri("challenger"))


def test_concurrent_alias_moves_on_file_lose_no_update(file_registry):
    file_registry.publish("gru", {WEIGHTS: weights()}, fields())
    names = [f"canary-{i}" for i in range(16)]
    threads = [threading.Thread(target=file_registry.set_alias, args=("gru", name, "v1")) for name in names]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert file_registry.aliases("gru") == dict.fromkeys(names, "v1")


def test_concurrent_publishers_never_share_a_version(file_registry):
    refs = []

    def publish(seed: int) -> None:
        refs.append(file_registry.publish("gru", {WEIGHTS: weights(seed)}, fields()))

    threads = [threading.Thread(target=publish, args=(seed,)) for seed in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(ref.version for ref in refs) == sorted(f"v{n}" for n in range(1, 9))
    assert len(file_registry.versions("gru")) == 8


def test_s3_alias_update_that_loses_a_race_retries_and_keeps_both_changes(s3_bucket):
    registry = open_registry(f"s3://{s3_bucket}/reg")
    registry.publish("gru", {WEIGHTS: weights()}, fields(), alias="champion")
    rival = open_registry(f"s3://{s3_bucket}/reg")
    calls = []

    def add_challenger(current: bytes | None) -> bytes:
        calls.append(current)
        if len(calls) == 1:
            rival.set_alias("gru", "shadow", "v1")  # lands between our read and our conditional put
        aliases = json.loads(current)
        aliases["challenger"] = "v1"
        return json.dumps(aliases).encode()

    registry.storage.update("gru/aliases.json", add_challenger)

    assert len(calls) == 2, "the stale conditional put must fail (IfMatch) and the update must re-read"
    assert registry.aliases("gru") == {"champion": "v1", "shadow": "v1", "challenger": "v1"}


def test_s3_version_claim_is_create_if_absent(s3_bucket):
    storage = open_registry(f"s3://{s3_bucket}").storage

    assert storage.create("gru/v1/.claim", b"first") is True
    assert storage.create("gru/v1/.claim", b"second") is False
    assert storage.read("gru/v1/.claim") == b"first"


def test_lifecycle_figures_can_be_added_until_an_alias_points_at_the_version(file_registry):
    ref = file_registry.publish("gru", {WEIGHTS: weights()}, fields())

    updated = file_registry.update_lifecycle("gru", ref.version, load_seconds=0.25)
    assert updated["lifecycle"]["load_seconds"] == 0.25
    assert file_registry.manifest("gru", ref.version)["lifecycle"]["load_seconds"] == 0.25

    file_registry.set_alias("gru", "champion", ref.version)
    with pytest.raises(RegistryError, match="frozen: alias 'champion'"):
        file_registry.update_lifecycle("gru", ref.version, load_seconds=0.5)
    assert file_registry.manifest("gru", ref.version)["lifecycle"]["load_seconds"] == 0.25


def test_lifecycle_figures_owned_by_the_registry_cannot_be_overwritten(file_registry):
    ref = file_registry.publish("gru", {WEIGHTS: weights()}, fields())

    with pytest.raises(InvalidManifest, match="package_bytes is measured by the registry"):
        file_registry.update_lifecycle("gru", ref.version, package_bytes=1)


# ---------------------------------------------------------------------------------------------------------
# Tampering.


def test_tampered_weight_file_in_a_directory_is_refused(file_registry, tmp_path):
    ref = file_registry.publish("gru", {WEIGHTS: weights()}, fields(), alias="champion")
    (tmp_path / "registry" / "gru" / "v1" / WEIGHTS).write_bytes(weights(seed=5))

    with pytest.raises(ChecksumMismatch, match=f"checksum mismatch for '{WEIGHTS}'") as caught:
        load_package(ref.uri("champion"))
    assert caught.value.file == WEIGHTS


def test_tampered_weight_object_in_s3_is_refused_and_not_cached(s3_bucket, tmp_path):
    ref = open_registry(f"s3://{s3_bucket}/reg").publish("gru", {WEIGHTS: weights()}, fields())
    boto3.client("s3").put_object(Bucket=s3_bucket, Key=f"reg/gru/v1/{WEIGHTS}", Body=weights(seed=5))

    with pytest.raises(ChecksumMismatch, match=f"'{WEIGHTS}' in s3://{s3_bucket}/reg/gru/v1/{WEIGHTS}"):
        load_package(ref.uri(), cache_dir=tmp_path)
    assert not list(tmp_path.rglob(WEIGHTS)), "a file that failed its checksum must not stay in the cache"


def test_missing_package_file_is_reported_by_name(file_registry, tmp_path):
    ref = file_registry.publish("gru", {WEIGHTS: weights(), "notes.txt": b"x"}, fields())
    (tmp_path / "registry" / "gru" / "v1" / "notes.txt").unlink()

    with pytest.raises(ModelNotFound, match="file 'notes.txt' listed in its manifest is missing"):
        load_package(ref.uri())


# ---------------------------------------------------------------------------------------------------------
# Bad URIs, unknown names, malformed manifests.


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("", "non-empty string"),
        ("http://example.com/models/gru@champion", "unsupported scheme 'http'"),
        ("/srv/models/gru@champion", "unsupported scheme ''"),
        ("file://host/srv/gru@champion", "names host 'host'"),
        ("file:///srv/../etc/gru@champion", "'..' segments"),
        ("s3:///prefix/gru@champion", "has no bucket"),
        ("s3://bucket/gru@champion?x=1", "query or fragment"),
        ("file:///srv/models/gru", "must end in <registry>/<name>@<alias> or <registry>/<name>/<version>"),
        ("file:///srv/models/gru/latest", "must end in"),
        ("file:///srv/models/gru@", "empty alias"),
        ("file:///srv/models/Gru@champion", "model name 'Gru' is invalid"),
        ("file:///srv/models/gru@Champion", "alias 'Champion' is invalid"),
        ("s3://bucket", "names no model"),
    ],
)
def test_bad_model_uri_is_refused_with_the_reason(uri, message):
    with pytest.raises(InvalidModelUri, match=message.replace("?", r"\?").replace("(", r"\(")):
        parse_model_uri(uri)


def test_model_uri_forms_parse_to_registry_name_and_reference():
    assert parse_model_uri("s3://b/p/q/gru@champion") == ModelUri("s3://b/p/q", "gru", alias="champion")
    assert parse_model_uri("s3://b/gru/v12") == ModelUri("s3://b", "gru", version="v12")
    assert parse_model_uri("file:///srv/m/gru@v3") == ModelUri("file:///srv/m", "gru", version="v3")
    assert parse_model_uri("file:///srv/m/gru/v3").registry_uri == "file:///srv/m"


def test_bad_registry_uri_is_refused():
    with pytest.raises(InvalidModelUri, match="needs an absolute path"):
        open_registry("file:relative/dir")


def test_unknown_model_name_is_reported(file_registry):
    with pytest.raises(ModelNotFound, match="no model named 'nope'"):
        load_package(f"{file_registry.uri}/nope@champion")


def test_unknown_alias_is_reported_with_the_known_ones(file_registry):
    file_registry.publish("gru", {WEIGHTS: weights()}, fields(), alias="champion")

    with pytest.raises(ModelNotFound, match="no alias 'challenger'.*aliases: champion"):
        load_package(f"{file_registry.uri}/gru@challenger")


def test_unknown_version_is_reported_with_the_known_ones(file_registry):
    file_registry.publish("gru", {WEIGHTS: weights()}, fields())

    with pytest.raises(ModelNotFound, match="no version v9.*versions: v1"):
        load_package(f"{file_registry.uri}/gru/v9")


def test_alias_cannot_point_at_an_unpublished_version(file_registry):
    file_registry.publish("gru", {WEIGHTS: weights()}, fields())

    with pytest.raises(ModelNotFound, match="no version v2"):
        file_registry.set_alias("gru", "champion", "v2")


def test_missing_bucket_is_reported_as_unavailable(s3_env):
    with pytest.raises(RegistryUnavailable, match="bucket 'no-such-bucket-here' does not exist"):
        load_package("s3://no-such-bucket-here/gru@champion")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"{not json", "is not valid JSON"),
        (b"[1, 2]", "must be a JSON object"),
        (None, "says version 'v7', expected 'v1'"),
        ("drop:metrics", "missing required field\\(s\\) metrics"),
        ("drop:files", "'files' must be a non-empty object"),
        ("path:../../etc/passwd", "file name '../../etc/passwd'"),
    ],
)
def test_malformed_manifest_is_refused_naming_the_problem(file_registry, tmp_path, content, message):
    ref = file_registry.publish("gru", {WEIGHTS: weights()}, fields())
    path = tmp_path / "registry" / "gru" / "v1" / "manifest.json"
    manifest = json.loads(path.read_bytes())
    if content is None:
        manifest["version"] = "v7"
        content = json.dumps(manifest).encode()
    elif isinstance(content, str) and content.startswith("drop:"):
        del manifest[content[5:]]
        content = json.dumps(manifest).encode()
    elif isinstance(content, str) and content.startswith("path:"):
        manifest["files"] = {content[5:]: manifest["files"][WEIGHTS]}
        content = json.dumps(manifest).encode()
    path.write_bytes(content)

    with pytest.raises(InvalidManifest, match=message) as caught:
        load_package(ref.uri())
    assert str(path) in str(caught.value), "the error names the manifest's location"


def test_malformed_aliases_file_is_refused(file_registry, tmp_path):
    file_registry.publish("gru", {WEIGHTS: weights()}, fields(), alias="champion")
    (tmp_path / "registry" / "gru" / "aliases.json").write_text('{"champion": 3}')

    with pytest.raises(InvalidManifest, match="must map alias names to versions"):
        load_package(f"{file_registry.uri}/gru@champion")


# ---------------------------------------------------------------------------------------------------------
# Publishing refuses bad input before writing anything.


@pytest.mark.parametrize(
    ("files", "manifest_fields", "alias", "error", "message"),
    [
        ({WEIGHTS: weights()}, {k: v for k, v in fields().items() if k != "metrics"}, None, InvalidManifest,
         "missing required field\\(s\\) metrics; metrics: object with numbers"),
        ({WEIGHTS: weights()}, fields(metrics={"auc_pr": 0.5}), None, InvalidManifest,
         "'metrics.recall_at_1pct_fpr' must be a number in \\[0, 1\\]"),
        ({WEIGHTS: weights()}, fields(training={"seed": 1}), None, InvalidManifest, "'training.data_window'"),
        ({WEIGHTS: weights()}, fields(version="v9"), None, InvalidManifest, "'version' is set by the registry"),
        ({WEIGHTS: weights()}, fields(libraries={"torch": 2}), None, InvalidManifest, "'libraries' must be an object"),
        ({WEIGHTS: weights()}, fields(lifecycle={"training_seconds": 1, "save_seconds": 2}), None, InvalidManifest,
         "'lifecycle.save_seconds' is measured by the registry"),
        ({WEIGHTS: weights()}, fields(lifecycle={"training_seconds": float("nan")}), None, InvalidManifest,
         "'lifecycle.training_seconds' must be a number >= 0"),
        ({WEIGHTS: weights()}, fields(extra=object()), None, InvalidManifest, "not JSON-serialisable"),
        ({"model.pt": b"\x80\x04pickle"}, fields(), None, InvalidManifest, "never pickle"),
        ({WEIGHTS: b"\x80\x04\x95pickled-bytes"}, fields(), None, InvalidManifest, "is not safetensors"),
        ({"../escape.safetensors": weights()}, fields(), None, InvalidManifest, "is invalid"),
        ({}, fields(), None, InvalidManifest, "at least one file"),
        ({WEIGHTS: weights()}, fields(), "v3", InvalidModelUri, "looks like a version"),
    ],
)
def test_publish_refuses_bad_input_and_writes_nothing(file_registry, files, manifest_fields, alias, error, message):
    with pytest.raises(error, match=message):
        file_registry.publish("gru", files, manifest_fields, alias=alias)

    assert file_registry.versions("gru") == []
    assert file_registry.aliases("gru") == {}


# ---------------------------------------------------------------------------------------------------------
# The `hiddenstate registry` command.


def run_cli(*argv: str) -> int:
    import argparse

    from functions.registry import cli

    parser = argparse.ArgumentParser(prog="hiddenstate")
    cli.register(parser.add_subparsers())
    args = parser.parse_args(["registry", *argv])
    return args.handler(args)


def test_cli_set_alias_promotes_a_version_and_prints_its_uri(file_registry, capsys):
    file_registry.publish("gru", {WEIGHTS: weights(1)}, fields(), alias="champion")
    file_registry.publish("gru", {WEIGHTS: weights(2)}, fields(), alias="challenger")

    assert run_cli("set-alias", file_registry.uri, "gru", "champion", "v2") == 0

    assert capsys.readouterr().out.strip() == f"{file_registry.uri}/gru@champion"
    assert file_registry.aliases("gru")["champion"] == "v2"
    assert run_cli("versions", file_registry.uri, "gru") == 0
    assert capsys.readouterr().out.splitlines() == ["v1\t", "v2\tchallenger,champion"]


def test_cli_verify_prints_the_resolved_version_and_phase_timings(file_registry, capsys):
    file_registry.publish("gru", {WEIGHTS: weights()}, fields(), alias="champion")

    assert run_cli("verify", f"{file_registry.uri}/gru@champion") == 0

    report = json.loads(capsys.readouterr().out)
    assert report["model"] == f"{file_registry.uri}/gru/v1"
    assert set(report["timings_seconds"]) == {"resolve", "fetch", "checksum", "total"}


def test_cli_reports_registry_errors_in_one_line_with_status_1(file_registry, capsys):
    file_registry.publish("gru", {WEIGHTS: weights()}, fields(), alias="champion")

    assert run_cli("show", f"{file_registry.uri}/gru@nope") == 1

    err = capsys.readouterr().err
    assert err.strip() == (
        f"hiddenstate registry: ModelNotFound: model 'gru' has no alias 'nope' in registry {file_registry.uri}; "
        "aliases: champion"
    )
