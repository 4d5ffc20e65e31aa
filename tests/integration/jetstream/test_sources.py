"""The Jetstream source on the wire: failover, hello and filter updates, size caps, the app."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from litestar.testing import AsyncTestClient

from atcr.settings import load
from atcr.tasks import cancel_and_wait
from jetstream.app import create_app
from jetstream.events import CommitEvent
from jetstream.settings import JetstreamSettings
from jetstream.sources import Delivery, JetstreamSource
from tests.integration.jetstream.helpers import eventually
from tests.support.jetstream_server import JetstreamServer
from tests.support.services import free_port

pytestmark = pytest.mark.integration

DID = "did:plc:" + "s" * 24
OTHER = "did:plc:" + "t" * 24


def tag(did: str, rkey: str, size: int = 0) -> dict[str, Any]:
    return {
        "did": did,
        "kind": "commit",
        "commit": {
            "rev": "3l3qo2vutsw2b",
            "operation": "create",
            "collection": "io.atcr.tag",
            "rkey": rkey,
            "cid": "bafyrei",
            "record": {"repository": "app", "tag": rkey, "pad": "x" * size},
        },
    }


@pytest.fixture
def server() -> Any:
    with JetstreamServer() as s:
        yield s


def source(urls: list[str], **over: Any) -> JetstreamSource:
    async def load_position() -> int | None:
        return None

    args: dict[str, Any] = {
        "load_position": load_position,
        "collections": ("io.atcr.*",),
        "max_message_bytes": 4096,
        "rewind_us": 1_000_000,
        "gap_us": 60_000_000,
        "backoff_min": 0.05,
        "backoff_max": 0.2,
    }
    args.update(over)
    return JetstreamSource(urls, **args)


async def test_failover_to_the_next_url_and_filter_updates(server: JetstreamServer) -> None:
    dead = f"ws://127.0.0.1:{free_port()}/subscribe"
    src = source([dead, server.url])
    queue: asyncio.Queue[Delivery] = asyncio.Queue()
    task = asyncio.create_task(src.run(queue))
    try:

        async def up() -> bool:
            return src.status.connected

        await eventually(up)
        assert src.status.url == server.url and src.status.reconnects >= 1

        async def greeted() -> bool:  # the server reads the hello in its own thread, a moment later
            return bool(server.hellos)

        await eventually(greeted)
        assert server.hellos[-1] == {
            "wantedCollections": ["io.atcr.*"],
            "wantedDids": [],
            "maxMessageSizeBytes": 4096,
        }
        server.inject(tag(DID, "a"))
        server.inject(tag(OTHER, "b"))
        server.inject({"did": DID, "kind": "commit", "commit": {**tag(DID, "c")["commit"], "collection": "app.bsky.x"}})
        server.inject(tag(DID, "big", size=8000))  # above maxMessageSizeBytes: the server drops it
        got = [await asyncio.wait_for(queue.get(), 30) for _ in range(2)]
        assert [(d.events[0].did, getattr(d.events[0], "rkey", None)) for d in got] == [(DID, "a"), (OTHER, "b")]

        # options_update on the open connection: from now on only DID.
        await src.set_filter(dids=[DID])

        async def filtered() -> bool:  # the server has the new filter (not: 0.2 s have passed)
            return server.hellos[-1].get("wantedDids") == [DID]

        await eventually(filtered)
        server.inject(tag(OTHER, "d"))
        server.inject(tag(DID, "e"))
        d = await asyncio.wait_for(queue.get(), 30)
        assert isinstance(d.events[0], CommitEvent) and d.events[0].rkey == "e"
        assert server.hellos[-1]["wantedDids"] == [DID]
        assert queue.empty()
    finally:
        await cancel_and_wait(task)


async def test_gap_flag_when_the_server_clamps_an_old_cursor(server: JetstreamServer) -> None:
    old = server.now_us()
    server.inject(tag(DID, "lost"))
    server.forget_before(server.now_us() + 2_000_000)

    async def load_position() -> int | None:
        return old

    src = source([server.url], load_position=load_position, gap_us=1_000_000)
    queue: asyncio.Queue[Delivery] = asyncio.Queue()
    task = asyncio.create_task(src.run(queue))
    try:

        async def up() -> bool:
            return src.status.connected

        await eventually(up)
        server.inject(tag(DID, "later"), time_us=old + 3_000_000)
        d = await asyncio.wait_for(queue.get(), 30)
        assert d.gap and isinstance(d.events[0], CommitEvent) and d.events[0].rkey == "later"
        assert f"cursor={old - 1_000_000}" in server.requests[-1]
    finally:
        await cancel_and_wait(task)


async def test_status_and_metrics_endpoints(server: JetstreamServer, valkey_url: str, valkey: Any) -> None:
    settings = load(
        JetstreamSettings,
        {
            "VALKEY_URL": valkey_url,
            "JETSTREAM_URL": server.url,
            "ATCR_BACKFILL_ENABLED": "false",
            "ATCR_ALLOW_PRIVATE_NETWORKS": "true",
        },
    )
    app = create_app(settings)
    async with AsyncTestClient(app) as client:
        consumer = app.state.consumer

        async def up() -> bool:
            return consumer.sources[0].status.connected

        await eventually(up)

        async def greeted() -> bool:  # live events flow from the server's reading of the hello on
            return bool(server.hellos)

        await eventually(greeted)
        server.inject(tag(DID, "m"))

        async def applied() -> bool:
            return consumer.events_total >= 1

        await eventually(applied)
        ready = await client.get("/readyz")
        assert ready.status_code == 200
        status = (await client.get("/status")).json()
        assert status["state"] == "running" and status["sources"][0]["connected"] is True
        assert status["events_total"] == 1 and status["lag_seconds"] is not None
        metrics = await client.get("/metrics")
        assert metrics.status_code == 200
        text = metrics.text
        assert 'atcr_jetstream_events_total{kind="commit",outcome="applied",source="jetstream"} 1.0' in text
        assert 'atcr_jetstream_connected{source="jetstream"} 1.0' in text
        assert "atcr_jetstream_lag_seconds" in text and "atcr_jetstream_backfill_running 0.0" in text
    assert consumer.status()["state"] == "stopped"


async def test_unreachable_stream_backs_off_quietly_and_stays_ready(valkey_url: str, valkey: Any) -> None:
    settings = load(
        JetstreamSettings,
        {
            "VALKEY_URL": valkey_url,
            "JETSTREAM_URL": f"ws://127.0.0.1:{free_port()}/subscribe",
            "ATCR_RELAY_ENDPOINT": f"http://127.0.0.1:{free_port()}",
            "ATCR_ALLOW_PRIVATE_NETWORKS": "true",
            "ATCR_JETSTREAM_BACKOFF_MIN": "0.05",
        },
    )
    app = create_app(settings)
    async with AsyncTestClient(app) as client:
        consumer = app.state.consumer

        async def failing() -> bool:
            return consumer.sources[0].status.reconnects >= 2

        await eventually(failing)
        assert (await client.get("/readyz")).status_code == 200
        status = (await client.get("/status")).json()
        assert status["sources"][0]["connected"] is False
        assert "ConnectionRefusedError" in status["sources"][0]["last_error"]
        assert json.dumps(status)  # serializable as is
