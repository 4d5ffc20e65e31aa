"""Fixtures for the consumer against a real PDS, real Valkey and the Jetstream test double."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

from atcr.runtime import Runtime
from jetstream.consumer import Consumer
from jetstream.metrics import Metrics
from tests.integration.jetstream.helpers import Writer, consumer_settings
from tests.support.jetstream_server import JetstreamServer
from tests.support.pdsnet import TestNetwork, create_account


@pytest.fixture(scope="package")
def jetstream_server(pds_network: TestNetwork) -> Iterator[JetstreamServer]:
    """One Jetstream double following the session PDS's firehose, for this package's tests.

    Not session-wide: its thread's websocket keepalives draw from the global `random`, which
    Hypothesis watches during the unit tests that run later.
    """
    with JetstreamServer([pds_network.pds_url]) as server:
        yield server


@pytest.fixture
async def writer(pds_network: TestNetwork) -> AsyncIterator[Writer]:
    w = Writer(create_account(pds_network.pds_url, "js"))
    try:
        yield w
    finally:
        await w.aclose()


ConsumerFactory = Callable[..., Any]


@pytest.fixture
async def make_consumer(
    valkey: Any, valkey_url: str, pds_network: TestNetwork, jetstream_server: JetstreamServer
) -> AsyncIterator[ConsumerFactory]:
    """Build (and later stop) consumers in this test's event loop; env overrides as kwargs."""
    made: list[tuple[Consumer, Runtime]] = []

    async def make(start: bool = True, **env: str) -> Consumer:
        settings = consumer_settings(
            valkey_url=valkey_url,
            plc_url=pds_network.plc_url,
            pds_url=pds_network.pds_url,
            jetstream_url=env.pop("JETSTREAM_URL", jetstream_server.url),
            relay_url=env.pop("ATCR_RELAY_ENDPOINT", jetstream_server.relay_url),
            **env,
        )
        rt = Runtime.from_settings(settings)
        assert rt.valkey is not None
        consumer = Consumer(settings, rt.valkey, rt.http, rt.resolver, metrics=Metrics())
        made.append((consumer, rt))
        if start:
            await consumer.start()
        return consumer

    try:
        yield make
    finally:
        for consumer, rt in made:
            await consumer.stop()
            await rt.aclose()
