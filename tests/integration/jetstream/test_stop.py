"""The consumer stops, even when a worker's cancellation is lost (atcr/tasks.py)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest

from jetstream.backfill import RepoResult
from tests.integration.jetstream.conftest import ConsumerFactory

pytestmark = pytest.mark.integration


async def test_stop_ends_a_resync_worker_whose_cancel_was_lost(make_consumer: ConsumerFactory) -> None:
    # What CI hit 1 time in ~4 runs (a 300 s hang at teardown): a resync was listing an account
    # when the consumer stopped; the cancel landed in a valkey-py command's asyncio.wait_for just
    # as it finished, Python 3.11 handed back the result instead, the worker logged "listed ...
    # again" and went back to waiting on its queue, and stop() waited for it forever.
    consumer = await make_consumer()
    listing = asyncio.Event()

    async def sync_repo(did: str, **_: Any) -> RepoResult:
        listing.set()
        with contextlib.suppress(asyncio.CancelledError):  # the lost cancel, as 3.11's wait_for loses it
            await asyncio.sleep(60)
        return RepoResult()

    consumer.backfill.sync_repo = sync_repo
    consumer.request_resync("did:plc:" + "q" * 24)
    async with asyncio.timeout(30):
        await listing.wait()
    async with asyncio.timeout(30):  # was: forever
        await consumer.stop()
    assert _running() == []


async def test_a_backfill_asked_for_while_stopping_does_not_start(make_consumer: ConsumerFactory) -> None:
    # Found by the first test on a loaded machine: the start-up check (is a backfill needed?)
    # lost its cancel the same way, went on to ask for a backfill, and that backfill began
    # after stop() had taken its list of tasks, so it ran on after the consumer "stopped".
    consumer = await make_consumer(start=False)
    deciding = asyncio.Event()

    async def backfill_reason() -> str | None:
        deciding.set()
        with contextlib.suppress(asyncio.CancelledError):  # the lost cancel
            await asyncio.sleep(60)
        return "first start"

    consumer._backfill_reason = backfill_reason
    await consumer.start()
    async with asyncio.timeout(30):
        await deciding.wait()
    async with asyncio.timeout(30):
        await consumer.stop()
    assert consumer._backfill_task is None
    assert _running() == []


def _running() -> list[str]:
    """The consumer's tasks still running (each is named jetstream-...)."""
    return sorted(t.get_name() for t in asyncio.all_tasks() if t.get_name().startswith("jetstream-") and not t.done())
