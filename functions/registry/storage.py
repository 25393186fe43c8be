"""Where package bytes live: a local directory or an S3 prefix, behind one small interface.

Keys are '/'-joined paths relative to the registry root (``gru/v3/model.safetensors``). The registry above this
layer never knows which backend it talks to. Each backend gives three kinds of write:

- ``write``: replace an object whole; readers see the old or the new bytes, never a mix.
- ``create``: write only if absent (claims a version number).
- ``update``: read-modify-write without losing a concurrent writer's change (moves aliases). On file, an
  exclusive ``flock`` serialises writers; on S3, a conditional put (``IfMatch`` on the ETag read, or
  ``IfNoneMatch: *`` when the object did not exist) fails with 412 if someone wrote in between, and we retry.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import random
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

from functions.registry.errors import ConcurrentUpdate, RegistryUnavailable
from functions.registry.uris import RegistryLocation

Updater = Callable[[bytes | None], bytes]
UPDATE_ATTEMPTS = 20


class Storage(Protocol):
    def describe(self, key: str) -> str: ...
    def read(self, key: str) -> bytes | None: ...
    def write(self, key: str, data: bytes) -> None: ...
    def create(self, key: str, data: bytes) -> bool: ...
    def update(self, key: str, updater: Updater) -> bytes: ...
    def list_keys(self, prefix: str) -> list[str]: ...
    def local_path(self, key: str) -> Path | None: ...
    def fetch_to(self, key: str, destination: Path) -> bool: ...


def open_storage(location: RegistryLocation) -> Storage:
    if location.scheme == "file":
        return FileStorage(Path(location.path))
    return S3Storage(location.bucket, location.path)


def write_atomically(path: Path, data: bytes) -> None:
    """Temp file in the same directory, fsync, then ``os.replace``: readers never see a partial file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise


class FileStorage:
    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, key: str) -> Path:
        return self.root.joinpath(*key.split("/"))

    def describe(self, key: str) -> str:
        return str(self._path(key))

    @contextlib.contextmanager
    def _os_errors(self, key: str) -> Iterator[None]:
        try:
            yield
        except (PermissionError, IsADirectoryError, NotADirectoryError) as exc:
            raise RegistryUnavailable(f"cannot access {self.describe(key)}: {exc.strerror}") from None

    def read(self, key: str) -> bytes | None:
        with self._os_errors(key):
            try:
                return self._path(key).read_bytes()
            except FileNotFoundError:
                return None

    def write(self, key: str, data: bytes) -> None:
        with self._os_errors(key):
            write_atomically(self._path(key), data)

    def create(self, key: str, data: bytes) -> bool:
        path = self._path(key)
        with self._os_errors(key):
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                with open(path, "xb") as handle:
                    handle.write(data)
            except FileExistsError:
                return False
        return True

    def update(self, key: str, updater: Updater) -> bytes:
        path = self._path(key)
        with self._os_errors(key):
            path.parent.mkdir(parents=True, exist_ok=True)
            # The lock file is never replaced, unlike the data file, so every writer locks the same inode.
            with open(path.parent / f".{path.name}.lock", "a+b") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                try:
                    current = path.read_bytes() if path.exists() else None
                    new = updater(current)
                    write_atomically(path, new)
                    return new
                finally:
                    fcntl.flock(lock, fcntl.LOCK_UN)

    def list_keys(self, prefix: str) -> list[str]:
        base = self._path(prefix)
        with self._os_errors(prefix):
            if not base.is_dir():
                return []
            return sorted(
                f"{prefix}/{path.relative_to(base).as_posix()}" for path in base.rglob("*") if path.is_file()
            )

    def local_path(self, key: str) -> Path | None:
        return self._path(key)

    def fetch_to(self, key: str, destination: Path) -> bool:
        with self._os_errors(key):
            try:
                source = self._path(key).open("rb")
            except FileNotFoundError:
                return False
            with source:
                _copy_atomically(source, destination)
        return True


def _copy_atomically(source: Any, destination: Path) -> None:
    destination.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=destination.parent, prefix=f".{destination.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as handle:
            shutil.copyfileobj(source, handle, 1024 * 1024)
        os.replace(temp, destination)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise


# S3 error codes that mean "a conditional write lost": 412 when the ETag moved, 409 when S3 saw two conditional
# writes to one key at once.
_LOST_RACE = frozenset({"PreconditionFailed", "ConditionalRequestConflict", "412", "409"})
_MISSING = frozenset({"NoSuchKey", "404", "NotFound"})


class S3Storage:
    """S3 through boto3, which reads ``AWS_ENDPOINT_URL_S3``, credentials and region from the environment."""

    def __init__(self, bucket: str, prefix: str) -> None:
        self.bucket = bucket
        self.prefix = prefix
        self._client: Any = None

    @property
    def client(self) -> Any:
        if self._client is None:
            import boto3  # imported here: a file registry (and --help) should not pay for boto3

            self._client = boto3.client("s3")
        return self._client

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def describe(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._key(key)}"

    @contextlib.contextmanager
    def _s3_errors(self, key: str) -> Iterator[None]:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            yield
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code == "NoSuchBucket":
                raise RegistryUnavailable(f"S3 bucket '{self.bucket}' does not exist ({self.describe(key)})") from None
            message = exc.response.get("Error", {}).get("Message", str(exc))
            raise RegistryUnavailable(f"S3 refused access to {self.describe(key)}: {code} {message}") from None
        except BotoCoreError as exc:
            raise RegistryUnavailable(f"cannot reach S3 for {self.describe(key)}: {exc}") from None

    def _get(self, key: str) -> tuple[bytes, str] | None:
        from botocore.exceptions import ClientError

        with self._s3_errors(key):
            try:
                response = self.client.get_object(Bucket=self.bucket, Key=self._key(key))
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") in _MISSING:
                    return None
                raise
            return response["Body"].read(), response["ETag"]

    def _conditional_put(self, key: str, data: bytes, **condition: str) -> bool:
        from botocore.exceptions import ClientError

        with self._s3_errors(key):
            try:
                self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data, **condition)
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") in _LOST_RACE:
                    return False
                raise
        return True

    def read(self, key: str) -> bytes | None:
        found = self._get(key)
        return None if found is None else found[0]

    def write(self, key: str, data: bytes) -> None:
        self._conditional_put(key, data)

    def create(self, key: str, data: bytes) -> bool:
        return self._conditional_put(key, data, IfNoneMatch="*")

    def update(self, key: str, updater: Updater) -> bytes:
        for attempt in range(UPDATE_ATTEMPTS):
            found = self._get(key)
            current, etag = (None, None) if found is None else found
            new = updater(current)
            condition = {"IfMatch": etag} if etag is not None else {"IfNoneMatch": "*"}
            if self._conditional_put(key, new, **condition):
                return new
            # Another writer won; back off a little (with jitter, so racers spread out) and re-read.
            time.sleep(random.uniform(0, 0.01 * 2 ** min(attempt, 6)))
        raise ConcurrentUpdate(f"gave up updating {self.describe(key)} after {UPDATE_ATTEMPTS} conflicting writes")

    def list_keys(self, prefix: str) -> list[str]:
        full = self._key(prefix) + "/"
        strip = len(self._key(""))
        keys: list[str] = []
        with self._s3_errors(prefix):
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=full):
                keys.extend(item["Key"][strip:] for item in page.get("Contents", []))
        return sorted(keys)

    def local_path(self, key: str) -> Path | None:
        return None

    def fetch_to(self, key: str, destination: Path) -> bool:
        from botocore.exceptions import ClientError

        with self._s3_errors(key):
            try:
                response = self.client.get_object(Bucket=self.bucket, Key=self._key(key))
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") in _MISSING:
                    return False
                raise
            with response["Body"] as body:
                _copy_atomically(body, destination)
        return True
