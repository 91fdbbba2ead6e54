"""Fixtures shared by the whole suite.

AWS: an autouse session guard gives every test dummy credentials, no config files, no instance
metadata and a dead local endpoint, so nothing can reach real AWS. Tests that need S3 ask for
``s3_server`` (moto's ThreadedMotoServer on 127.0.0.1, as s3fs's own tests use) or ``s3_bucket``.
Request ``s3_server`` before starting Ray if Ray workers must see its endpoint in their environment
(``jobs.common.storage.StorageOptions`` built in the test process carries the endpoint either way).
"""

from __future__ import annotations

import contextlib
import logging
import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

# Two xdist processes, each with its own local Ray, share the 2 cores: more busy threads than cores.
# torch's OpenMP threads (libgomp) spin at every barrier before they sleep, burning what the other
# process needs; with PASSIVE they sleep at once. The suite took 544 s instead of 618 s (2026-12-08,
# docs/design.md). Set before torch loads libgomp, and so inherited by this process's Ray workers and
# by every program a test starts; a value already set is kept.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

TEST_REGION = "us-east-1"
# The discard port: nothing listens there, so a stray S3 call fails fast, locally.
_DEAD_ENDPOINT = "http://127.0.0.1:9"
_DUMMY_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing-key-id", "AWS_SECRET_ACCESS_KEY": "testing-secret"}
_AWS_VARS_TO_DROP = (
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_REGION",
    "AWS_ENDPOINT_URL_S3",
    "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS",
    "AWS_ROLE_ARN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN",
)


def _set_aws_test_env(mp: pytest.MonkeyPatch, endpoint: str) -> None:
    for var in _AWS_VARS_TO_DROP:
        mp.delenv(var, raising=False)
    for var, value in _DUMMY_CREDENTIALS.items():
        mp.setenv(var, value)
    mp.setenv("AWS_DEFAULT_REGION", TEST_REGION)
    mp.setenv("AWS_ENDPOINT_URL", endpoint)
    mp.setenv("AWS_CONFIG_FILE", "/nonexistent/aws/config")
    mp.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/aws/credentials")
    mp.setenv("AWS_EC2_METADATA_DISABLED", "true")  # never probe 169.254.169.254 for a role
    for var in ("NO_PROXY", "no_proxy"):  # a configured proxy must not see local S3 traffic
        mp.setenv(var, ",".join(filter(None, [os.environ.get(var), "127.0.0.1", "localhost"])))


@pytest.fixture(scope="session", autouse=True)
def aws_env_guard() -> Iterator[None]:
    """Session-wide: dummy credentials, no AWS config files, and an endpoint nobody answers."""
    mp = pytest.MonkeyPatch()
    _set_aws_test_env(mp, _DEAD_ENDPOINT)
    yield
    mp.undo()


@pytest.fixture(scope="session")
def s3_server(aws_env_guard: None) -> Iterator[str]:
    """A moto S3 server on 127.0.0.1; AWS_ENDPOINT_URL points at it for the rest of the session.
    Yields the endpoint URL."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one access-log line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)  # port 0: no race for a port
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    mp = pytest.MonkeyPatch()
    _set_aws_test_env(mp, endpoint)
    try:
        yield endpoint
    finally:
        mp.undo()
        server.stop()


@pytest.fixture(scope="session")
def s3_client(s3_server: str) -> Any:
    """A boto3 S3 client for the moto server (for seeding and inspecting buckets)."""
    import boto3

    return boto3.client("s3", endpoint_url=s3_server, region_name=TEST_REGION)


@pytest.fixture
def s3_bucket(s3_client: Any) -> Iterator[str]:
    """A fresh, uniquely named, empty bucket; emptied and deleted afterwards."""
    name = f"test-{uuid.uuid4().hex[:20]}"
    s3_client.create_bucket(Bucket=name)
    yield name
    # Delete so the in-process server's memory stays flat over a long session.
    with contextlib.suppress(Exception):
        for page in s3_client.get_paginator("list_objects_v2").paginate(Bucket=name):
            keys = [{"Key": obj["Key"]} for obj in page.get("Contents", [])]
            if keys:
                s3_client.delete_objects(Bucket=name, Delete={"Objects": keys, "Quiet": True})
        s3_client.delete_bucket(Bucket=name)
    with contextlib.suppress(ImportError):
        import s3fs

        # Instances made outside jobs.storage may cache listings; drop them with the bucket.
        s3fs.S3FileSystem.clear_instance_cache()
