"""Snapshots of entity states to S3 and restores from them (boto3).

A snapshot is ``<prefix>/part-NNNNN.bin.gz`` files plus ``<prefix>/manifest.json``, written last: a prefix without
a manifest is an unfinished snapshot and restore refuses it. Each record is (state key, stored value); the value
carries its version, so:

- the export needs no global lock: SCAN visits every key that exists for the whole scan, and a key updated during
  the scan is exported at whichever version MGET saw;
- a restore never rolls an entity back: the library writes a record only if it is newer than what is stored,
  so restoring into a live store, or twice, is safe.

Dedupe memory is not exported: it lives for minutes, not across a disaster.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from tqdm import tqdm

from state_service.codec import LAYOUT_VERSION
from state_service.errors import InvalidStateRequest, StateCorrupt, StateUnavailable
from state_service.store import StateStore

FORMAT = "hiddenstate-state-snapshot"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
_RECORD_HEADER = struct.Struct("<HH")  # key length, value length


@dataclass(frozen=True, slots=True)
class S3Location:
    bucket: str
    prefix: str

    def object(self, name: str) -> str:
        return f"{self.prefix}/{name}" if self.prefix else name

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"


@dataclass(frozen=True, slots=True)
class RestoreReport:
    entities: int  # records in the snapshot
    written: int  # records newer than what was stored
    skipped: int  # records at or below the stored version


def parse_s3_url(url: str) -> S3Location:
    parts = urlsplit(url)
    if parts.scheme != "s3" or not parts.netloc:
        raise InvalidStateRequest(f"snapshot location must look like s3://bucket/prefix, got {url!r}")
    return S3Location(parts.netloc, parts.path.strip("/"))


def encode_records(items: list[tuple[str, bytes]]) -> bytes:
    out = io.BytesIO()
    for key, value in items:
        name = key.encode()
        out.write(_RECORD_HEADER.pack(len(name), len(value)))
        out.write(name)
        out.write(value)
    return out.getvalue()


def decode_records(data: bytes, where: str) -> Iterator[tuple[str, bytes]]:
    offset = 0
    while offset < len(data):
        if offset + _RECORD_HEADER.size > len(data):
            raise StateCorrupt(where, f"truncated record header at byte {offset}")
        key_size, value_size = _RECORD_HEADER.unpack_from(data, offset)
        offset += _RECORD_HEADER.size
        end = offset + key_size + value_size
        if end > len(data):
            raise StateCorrupt(where, f"truncated record at byte {offset}")
        yield data[offset : offset + key_size].decode(), data[offset + key_size : end]
        offset = end


def _s3_client(client: Any | None) -> Any:
    if client is not None:
        return client
    import boto3  # here, so that importing the state service does not pay for boto3

    return boto3.client("s3")


def _s3_call(what: str, fn: Any, **kwargs: Any) -> Any:
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        return fn(**kwargs)
    except ClientError as error:
        code = error.response.get("Error", {}).get("Code", "")
        if code in ("NoSuchKey", "404", "NoSuchBucket"):
            raise InvalidStateRequest(f"{what}: not found ({code})") from None
        raise StateUnavailable(f"{what}: S3 error {code}: {error}") from None
    except BotoCoreError as error:
        raise StateUnavailable(f"{what}: S3 unavailable: {error}") from None


def snapshot(
    store: StateStore,
    to: str,
    *,
    namespace: str | None = None,
    part_entities: int = 100_000,
    progress: bool = True,
    s3: Any | None = None,
) -> dict[str, Any]:
    """Export every state (of ``namespace``, or all) to ``to`` (s3://bucket/prefix). Returns the manifest."""
    location = parse_s3_url(to)
    client = _s3_client(s3)
    started = time.time()
    parts: list[dict[str, Any]] = []
    pending: list[tuple[str, bytes]] = []

    def flush(count: int) -> None:
        records, pending[:] = pending[:count], pending[count:]
        body = gzip.compress(encode_records(records), compresslevel=1)  # speed over ratio: float16 barely compresses
        name = f"part-{len(parts):05d}.bin.gz"
        _s3_call(f"upload {location}/{name}", client.put_object, Bucket=location.bucket, Key=location.object(name),
                 Body=body)
        parts.append({"name": name, "entities": len(records), "sha256": hashlib.sha256(body).hexdigest()})

    with tqdm(desc="snapshot", unit=" entities", disable=not progress) as bar:
        for batch in store.scan_raw(namespace):
            pending.extend(batch)
            bar.update(len(batch))
            while len(pending) >= part_entities:
                flush(part_entities)
        if pending or not parts:
            flush(len(pending))
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "layout_version": LAYOUT_VERSION,
        "hidden_size": store.hidden_size,
        "namespace": namespace,
        "started_at": started,
        "finished_at": time.time(),
        "entities": sum(p["entities"] for p in parts),
        "parts": parts,
    }
    _s3_call(f"upload {location}/{MANIFEST}", client.put_object, Bucket=location.bucket,
             Key=location.object(MANIFEST), Body=json.dumps(manifest, indent=2).encode(),
             ContentType="application/json")
    return manifest


def read_manifest(source: str, s3: Any | None = None) -> dict[str, Any]:
    location = parse_s3_url(source)
    client = _s3_client(s3)
    reply = _s3_call(f"no finished snapshot at {location} (manifest.json)", client.get_object,
                     Bucket=location.bucket, Key=location.object(MANIFEST))
    try:
        manifest = json.loads(reply["Body"].read())
    except ValueError as error:
        raise StateCorrupt(location.object(MANIFEST), f"not JSON: {error}") from None
    if manifest.get("format") != FORMAT or manifest.get("format_version") != FORMAT_VERSION:
        raise InvalidStateRequest(f"{location}: not a {FORMAT} v{FORMAT_VERSION} manifest")
    return manifest


def restore(
    store: StateStore, source: str, *, batch: int = 500, progress: bool = True, s3: Any | None = None
) -> RestoreReport:
    """Load a snapshot; each entity is written only if the snapshot's version is newer than the stored one."""
    location = parse_s3_url(source)
    client = _s3_client(s3)
    manifest = read_manifest(source, client)
    if manifest["hidden_size"] != store.hidden_size:
        raise InvalidStateRequest(
            f"snapshot holds hidden_size {manifest['hidden_size']}, the store expects {store.hidden_size}"
        )
    written = 0
    with tqdm(total=manifest["entities"], desc="restore", unit=" entities", disable=not progress) as bar:
        for part in manifest["parts"]:
            name = location.object(part["name"])
            body = _s3_call(f"download {name}", client.get_object, Bucket=location.bucket, Key=name)["Body"].read()
            if hashlib.sha256(body).hexdigest() != part["sha256"]:
                raise StateCorrupt(name, "checksum does not match the manifest")
            records = list(decode_records(gzip.decompress(body), name))
            for start in range(0, len(records), batch):
                chunk = records[start : start + batch]
                written += store.restore_raw(chunk)
                bar.update(len(chunk))
    return RestoreReport(manifest["entities"], written, manifest["entities"] - written)
