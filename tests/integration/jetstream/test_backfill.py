"""Backfill restores what the stream cannot replay: first start, old cursors, detected gaps."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from atcr.readmodel import keys, read
from jetstream.backfill import DONE_KEY, STATE_KEY
from jetstream.cursor import CursorStore
from tests.integration.jetstream.conftest import ConsumerFactory
from tests.integration.jetstream.helpers import Writer, eventually
from tests.support.jetstream_server import JetstreamServer
from tests.support.pdsnet import TestNetwork, create_account

pytestmark = pytest.mark.integration


async def _tags(valkey: Any, did: str, repo: str) -> set[str]:
    tags, _ = await read.read_tags(valkey, did, repo)
    return set(tags)


async def test_first_start_backfills_existing_records(
    make_consumer: ConsumerFactory, writer: Writer, valkey: Any
) -> None:
    await writer.push("before", "v1")
    await writer.push("before", "v2")
    consumer = await make_consumer()  # no saved cursor: first start

    async def backfilled() -> bool:
        return await _tags(valkey, writer.did, "before") == {"v1", "v2"}

    await eventually(backfilled)
    status = consumer.status()["backfill"]

    async def finished() -> bool:
        return consumer.backfill.status.runs == 1 and not consumer.backfill.status.running

    await eventually(finished)
    status = consumer.status()["backfill"]
    assert status["reason"] == "first start"
    assert status["repos_done"] >= 1 and status["records"] >= 4
    # Complete listings mark the collections loaded, which is what the AppView's loader reads.
    assert await valkey.hget(keys.sync(writer.did), f"{keys.TAG}|at") is not None
    assert await valkey.hget(STATE_KEY, "state") == b"done"


async def _run_then_stop(make_consumer: ConsumerFactory, writer: Writer, valkey: Any) -> int:
    """A consumer that saw `gap/a` and stopped; returns its saved cursor."""
    consumer = await make_consumer(ATCR_BACKFILL_ENABLED="false")

    async def up() -> bool:
        return consumer.sources[0].status.connected

    await eventually(up)
    await writer.push("gap", "a")

    async def seen() -> bool:
        return await _tags(valkey, writer.did, "gap") == {"a"}

    await eventually(seen)
    await consumer.stop()
    cursor = await CursorStore(valkey, "jetstream").load()
    assert cursor is not None
    return cursor


async def _miss_events(writer: Writer, server: JetstreamServer) -> None:
    """Changes made while the consumer is down, then pushed out of the stream's lookback."""
    await writer.push("gap", "b")
    await writer.delete(keys.TAG, keys.tag_rkey("gap", "a"))
    server.wait_for(
        lambda s: any(e["commit"]["operation"] == "delete" for e in s.events(did=writer.did, collection=keys.TAG))
    )
    server.forget_before(server.now_us())


async def test_cursor_older_than_lookback_triggers_backfill(
    make_consumer: ConsumerFactory, writer: Writer, valkey: Any, jetstream_server: JetstreamServer
) -> None:
    await _run_then_stop(make_consumer, writer, valkey)
    await _miss_events(writer, jetstream_server)
    await asyncio.sleep(1.1)
    consumer = await make_consumer(ATCR_JETSTREAM_LOOKBACK="1")

    async def restored() -> bool:
        return await _tags(valkey, writer.did, "gap") == {"b"}

    await eventually(restored)
    assert consumer.backfill.status.reason == "saved cursor is older than the stream's lookback"


async def test_gap_detected_on_reconnect_triggers_backfill(
    make_consumer: ConsumerFactory, writer: Writer, valkey: Any, jetstream_server: JetstreamServer
) -> None:
    await _run_then_stop(make_consumer, writer, valkey)
    await _miss_events(writer, jetstream_server)
    await asyncio.sleep(1.2)
    consumer = await make_consumer(ATCR_JETSTREAM_GAP_SECONDS="1")

    async def up() -> bool:
        return consumer.sources[0].status.connected

    await eventually(up)
    assert consumer.backfill.status.runs == 0  # the cursor alone looked fine
    await writer.push("gap", "c")  # the first event after reconnect is much newer than the cursor

    async def restored() -> bool:
        return await _tags(valkey, writer.did, "gap") == {"b", "c"}

    await eventually(restored)
    assert consumer.backfill.status.reason == "gap detected on jetstream"
    assert consumer.metrics.gaps.labels(source="jetstream")._value.get() == 1


async def test_interrupted_backfill_resumes_without_redoing_finished_repos(
    make_consumer: ConsumerFactory, pds_network: TestNetwork, valkey: Any, jetstream_server: JetstreamServer
) -> None:
    done_writer = Writer(create_account(pds_network.pds_url, "bfdone"))
    todo_writer = Writer(create_account(pds_network.pds_url, "bftodo"))
    try:
        await done_writer.push("resume", "x")
        await todo_writer.push("resume", "y")
        # As a crashed run leaves it: running, with one repository already finished.
        await valkey.hset(STATE_KEY, mapping={"state": "running", "reason": "first start", "started": str(time.time())})
        await valkey.sadd(DONE_KEY, done_writer.did)
        # A cursor past the pushes, so that only the backfill (not a replay) can bring them.
        jetstream_server.wait_for(lambda s: len(s.events(did=todo_writer.did, collection=keys.TAG)) == 1)
        await CursorStore(valkey, "jetstream").save(jetstream_server.now_us())
        consumer = await make_consumer(ATCR_JETSTREAM_REWIND="0")

        async def finished() -> bool:
            return consumer.backfill.status.runs == 1 and not consumer.backfill.status.running

        await eventually(finished)
        assert consumer.backfill.status.resumed
        assert await _tags(valkey, todo_writer.did, "resume") == {"y"}
        assert await _tags(valkey, done_writer.did, "resume") == set()  # skipped: already done
        assert await valkey.hget(STATE_KEY, "state") == b"done"
    finally:
        await done_writer.aclose()
        await todo_writer.aclose()
