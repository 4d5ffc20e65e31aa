"""The consumer follows a real PDS through the Jetstream double into real Valkey."""

from __future__ import annotations

from typing import Any

import pytest

from atcr.readmodel import keys, read
from jetstream.cursor import CursorStore
from tests.integration.jetstream.conftest import ConsumerFactory
from tests.integration.jetstream.helpers import Writer, eventually
from tests.support.jetstream_server import JetstreamServer

pytestmark = pytest.mark.integration


async def _connected(consumer: Any, server: JetstreamServer | None = None, hellos: int = 0) -> None:
    """Connected, and (given the server and its hello count before) greeted: with requireHello the
    server starts a cursorless connection's live stream when it reads the hello, in its own thread."""

    async def up() -> bool:
        return all(s.status.connected for s in consumer.sources) and (server is None or len(server.hellos) > hellos)

    await eventually(up, timeout=30)


async def test_push_appears_in_the_model_through_the_live_stream(
    make_consumer: ConsumerFactory, writer: Writer, valkey: Any, jetstream_server: JetstreamServer
) -> None:
    # Backfill is off, so the live stream is the only way in. How fast it arrives is a figure
    # for a benchmark, not for a shared CI machine: the deadlines here only bound a hang.
    hellos = len(jetstream_server.hellos)
    consumer = await make_consumer(ATCR_BACKFILL_ENABLED="false")
    await _connected(consumer, jetstream_server, hellos)
    digest = await writer.push("app", "v1")

    async def tagged() -> bool:
        tags, _ = await read.read_tags(valkey, writer.did, "app")
        return "v1" in tags and tags["v1"].digest == digest

    await eventually(tagged, timeout=30)
    manifests, _ = await read.read_manifests(valkey, writer.did, "app")
    assert [m.digest for m in manifests] == [digest]

    # A deleted tag disappears the same way.
    await writer.delete(keys.TAG, keys.tag_rkey("app", "v1"))

    async def untagged() -> bool:
        tags, _ = await read.read_tags(valkey, writer.did, "app")
        return "v1" not in tags

    await eventually(untagged, timeout=30)

    async def counted() -> bool:  # the batch is counted just after it is applied to Valkey
        return bool(consumer.status()["events_total"] >= 3)

    await eventually(counted)
    assert consumer.status()["sources"][0]["connected"] is True


async def test_cursor_is_saved_and_resumed_with_rewind(
    make_consumer: ConsumerFactory, writer: Writer, valkey: Any, jetstream_server: JetstreamServer
) -> None:
    hellos = len(jetstream_server.hellos)
    consumer = await make_consumer(ATCR_BACKFILL_ENABLED="false", ATCR_JETSTREAM_REWIND="30")
    await _connected(consumer, jetstream_server, hellos)
    await writer.push("svc", "a")

    async def saved() -> bool:
        return await CursorStore(valkey, "jetstream").load() is not None

    await eventually(saved, timeout=30)
    await consumer.stop()
    cursor = await CursorStore(valkey, "jetstream").load()
    assert cursor is not None

    before = jetstream_server.connections_total
    await writer.push("svc", "b")  # written while the consumer is down
    again = await make_consumer(ATCR_BACKFILL_ENABLED="false", ATCR_JETSTREAM_REWIND="30")

    async def caught_up() -> bool:
        tags, _ = await read.read_tags(valkey, writer.did, "svc")
        return set(tags) == {"a", "b"}

    await eventually(caught_up, timeout=30)
    assert jetstream_server.connections_total > before
    # The reconnect asked for the saved cursor minus the rewind, and said hello first.
    assert any(f"cursor={cursor - 30_000_000}" in r for r in jetstream_server.requests)
    assert jetstream_server.hellos and jetstream_server.hellos[-1]["wantedCollections"] == ["io.atcr.*"]

    async def counted() -> bool:  # the batch is counted just after it is applied to Valkey
        return bool(again.status()["events_total"] >= 2)

    await eventually(counted)


async def test_reconnects_after_the_server_drops_the_connection(
    make_consumer: ConsumerFactory, writer: Writer, valkey: Any, jetstream_server: JetstreamServer
) -> None:
    consumer = await make_consumer(ATCR_BACKFILL_ENABLED="false")
    await _connected(consumer)
    jetstream_server.drop_connections()
    await writer.push("web", "1")

    async def arrived() -> bool:
        tags, _ = await read.read_tags(valkey, writer.did, "web")
        return "1" in tags

    await eventually(arrived, timeout=30)
    assert consumer.sources[0].status.reconnects >= 1
