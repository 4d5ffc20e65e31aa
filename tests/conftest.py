"""Session fixtures that start real services on 127.0.0.1 and stop them at the end.

Expensive services are started once per session (one PDS + PLC, one Valkey, one moto);
each test gets isolation by a fresh key prefix, bucket or account instead.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
from hypothesis import HealthCheck, settings

from tests.support.randomness import bind_global_random_to_main_thread, isolate_modules
from tests.support.services import S3Endpoint, running_moto, running_valkey
from tests.support.valkey_cluster import LocalCluster, running_valkey_cluster

# The S3 client chain must never reach a real AWS endpoint or credentials file.
os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
os.environ.pop("AWS_PROFILE", None)

pytest_plugins = ["tests.support.fixtures_pds", "tests.support.fixtures_stack"]


# --- one global `random`, touched only by the test that is running ---------------------------
#
# See tests/support/randomness.py: a background thread or a library's ping landing while
# Hypothesis draws made a property test fail about once in a thousand runs.
bind_global_random_to_main_thread()
isolate_modules((
    "websockets.asyncio.connection",
    "websockets.client",
    "websockets.sync.connection",
    "websockets.legacy.protocol",
    "websockets.legacy.client",
    "valkey.backoff",
    "valkey.commands.helpers",
    "valkey._cache",
    "uvicorn.server",
))  # fmt: skip


# --- Hypothesis: the same examples on every run, no wall-clock deadlines ----------------------
#
# CI runs the "ci" profile: derandomized (a failure reproduces on the next run and on any
# machine), no per-example deadline (a busy 2-core runner is not a bug) and no example
# database (a fresh clone and a dev machine behave the same). Explore new examples locally with
# HYPOTHESIS_PROFILE=explore.
settings.register_profile(
    "ci", derandomize=True, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("explore", deadline=None, max_examples=1000)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if metafunc.definition.get_closest_marker("valkey_cluster") and "valkey_url" in metafunc.fixturenames:
        metafunc.parametrize("valkey_url", ["single", "cluster"], indirect=True, scope="session")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Unit tests first: they run before any session service or background thread exists."""
    items.sort(key=lambda item: 0 if item.nodeid.startswith("tests/unit/") else 1)


@pytest.fixture(scope="session")
def valkey_single_url() -> Iterator[str]:
    """A real valkey-server for the whole session."""
    with running_valkey() as url:
        yield url


@pytest.fixture(scope="session")
def valkey_cluster() -> Iterator[LocalCluster]:
    """A real Valkey Cluster (3 primaries + 3 replicas), started once, only by tests that ask."""
    with running_valkey_cluster() as cluster:
        yield cluster


@pytest.fixture(scope="session")
def valkey_url(request: pytest.FixtureRequest) -> str:
    """The session Valkey's URL: the single node, or the cluster for tests marked `ON_SINGLE_AND_CLUSTER`
    (tests/support/valkey_cluster.py), which parametrizes this fixture indirectly."""
    if getattr(request, "param", "single") == "cluster":
        return str(request.getfixturevalue("valkey_cluster").url)
    return str(request.getfixturevalue("valkey_single_url"))


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
