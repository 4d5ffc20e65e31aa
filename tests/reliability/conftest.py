"""One production-shaped stack (tests/reliability/stack.py) shared by every reliability test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.reliability.stack import RelStack, User, reliability_stack
from tests.support.pdsnet import TestNetwork
from tests.support.services import S3Endpoint


@pytest.fixture(scope="session")
def rel(tmp_path_factory: pytest.TempPathFactory, pds_network: TestNetwork, s3_endpoint: S3Endpoint) -> Iterator[RelStack]:
    with reliability_stack(tmp_path_factory.mktemp("reliability"), pds_network, s3_endpoint) as stack:
        yield stack


@pytest.fixture
def rel_user(rel: RelStack) -> User:
    return rel.user()


@pytest.fixture(autouse=True)
def _clean_faults(request: pytest.FixtureRequest) -> Iterator[None]:
    """A test that switched a proxy into a fault mode never leaks it into the next test."""
    yield
    if "rel" in request.fixturenames:
        stack: RelStack = request.getfixturevalue("rel")
        for proxy in (stack.lb, stack.hold_front, stack.s3, stack.pds, stack.plc):
            proxy.clear()
