"""Session fixtures that start real services on 127.0.0.1 and stop them at the end.

Expensive services are started once per session (one PDS + PLC, one Valkey, one moto);
each test gets isolation by a fresh key prefix, bucket or account instead.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest

from tests.support.services import S3Endpoint, running_moto, running_valkey

# The S3 client chain must never reach a real AWS endpoint or credentials file.
os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
os.environ.pop("AWS_PROFILE", None)

pytest_plugins = ["tests.support.fixtures_pds", "tests.support.fixtures_stack"]


@pytest.fixture(scope="session")
def valkey_url() -> Iterator[str]:
    """A real valkey-server for the whole session."""
    with running_valkey() as url:
        yield url


@pytest.fixture
async def valkey(valkey_url: str) -> AsyncIterator[object]:
    """A client on the session Valkey; the database is flushed after each test."""
    from atcr.valkey import connect

    client = connect(valkey_url)
    try:
        yield client
    finally:
        await client.flushdb()
        await client.aclose()


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[S3Endpoint]:
    """A real S3 API (moto server) over HTTP on loopback for the whole session."""
    with running_moto() as endpoint:
        yield endpoint


@pytest.fixture
def s3_bucket(s3_endpoint: S3Endpoint) -> str:
    """A fresh, empty bucket per test."""
    name = f"test-{uuid.uuid4().hex[:12]}"
    s3_endpoint.client().create_bucket(Bucket=name)
    return name
