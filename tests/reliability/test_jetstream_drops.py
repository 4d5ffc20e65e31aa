"""Jetstream connections dropped mid-stream, repeatedly, while records are being written.

The other Jetstream faults have their tests already (docs/reliability.md lists them): one
drop then a write (tests/integration/jetstream/test_live.py), restart with cursor rewind,
gaps and clamped cursors that trigger a backfill (test_backfill.py, test_sources.py), a
consumer killed while writing (test_crash.py). What this adds: the stream is cut three times
*while* 60 tags are written, so some are written during the reconnects; every one arrives.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from atcr.readmodel import read
from tests.integration.jetstream.conftest import ConsumerFactory, jetstream_server, make_consumer, writer
from tests.integration.jetstream.helpers import Writer, eventually
from tests.support.jetstream_server import JetstreamServer

pytestmark = [pytest.mark.integration]

__all__ = ["jetstream_server", "make_consumer", "writer"]  # fixtures, re-used from the consumer's tests


async def test_drops_mid_stream_lose_nothing(
    make_consumer: ConsumerFactory, writer: Writer, valkey: Any, jetstream_server: JetstreamServer
) -> None:
    consumer = await make_consumer(ATCR_BACKFILL_ENABLED="false")

    async def up() -> bool:
        return all(s.status.connected for s in consumer.sources)

    await eventually(up)
    started = time.monotonic()
    drops = 0
    for i in range(60):
        await writer.push("stream", f"t{i}")
        if i in (15, 30, 45):
            # Each drop hits a live connection: the one before it was noticed and replaced
            # (on a busy machine a reconnect can outlast the pushes between two drops).
            async def reconnected(n: int = drops) -> bool:
                return consumer.sources[0].status.reconnects >= n and await up()

            await eventually(reconnected)
            jetstream_server.drop_connections()
            drops += 1
        await asyncio.sleep(0.01)

    async def all_there() -> bool:
        tags, _ = await read.read_tags(valkey, writer.did, "stream")
        return len(tags) == 60 and consumer.sources[0].status.reconnects >= 3

    await eventually(all_there, timeout=60)
    took = time.monotonic() - started
    tags, _ = await read.read_tags(valkey, writer.did, "stream")
    assert sorted(tags) == sorted(f"t{i}" for i in range(60))
    assert consumer.sources[0].status.reconnects >= 3
    print(f"\n[figure] 3 jetstream drops during 60 pushes: 60/60 tags in the model {took:.1f}s after the first "
          f"write, {consumer.sources[0].status.reconnects} reconnects")
