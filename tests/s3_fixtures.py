"""A real S3 for tests: moto's ``ThreadedMotoServer`` on a free port, reached through ``AWS_ENDPOINT_URL_S3``.

Use it from a test module with ``pytest_plugins = ["s3_fixtures"]`` (tests/ is on sys.path under pytest).

- ``moto_server`` (session): the server's endpoint URL; one server for the whole run.
- ``s3_env`` (per test): sets the endpoint and dummy credentials in the environment, so boto3 (and any code under
  test that builds its own client) talks to moto and never to AWS; yields the endpoint.
- ``s3_bucket`` (per test): a fresh, empty bucket's name, so tests never see each other's objects.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest

READY_TIMEOUT_S = 10.0


def _wait_until_serving(endpoint: str) -> None:
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    client = boto3.client(
        "s3", endpoint_url=endpoint, region_name="us-east-1",
        aws_access_key_id="testing", aws_secret_access_key="testing",
    )
    deadline = time.monotonic() + READY_TIMEOUT_S
    while True:
        try:
            client.list_buckets()
            return
        except (BotoCoreError, ClientError):
            if time.monotonic() > deadline:
                raise RuntimeError(f"moto S3 at {endpoint} did not answer within {READY_TIMEOUT_S} s") from None
            time.sleep(0.05)


@pytest.fixture(scope="session")
def moto_server() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    try:
        _wait_until_serving(endpoint)
        yield endpoint
    finally:
        server.stop()


@pytest.fixture
def s3_env(moto_server: str, monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> str:
    empty = tmp_path_factory.mktemp("aws") / "none"
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_SECURITY_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", moto_server)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    # A developer's ~/.aws must not leak in (profiles, other endpoints).
    monkeypatch.setenv("AWS_CONFIG_FILE", str(empty))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(empty))
    return moto_server


@pytest.fixture
def s3_bucket(s3_env: str) -> str:
    import boto3

    name = f"test-{uuid.uuid4().hex[:16]}"
    boto3.client("s3").create_bucket(Bucket=name)
    return name
