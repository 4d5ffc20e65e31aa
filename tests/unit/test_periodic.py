"""`Periodic.stop` lets a round in progress finish (a flush cut off midway would lose its batch)."""

from __future__ import annotations

import asyncio

import pytest

from atcr.periodic import Periodic

pytestmark = pytest.mark.unit


async def _in_a_round(release: asyncio.Event, finished: list[int]) -> Periodic:
    """A running loop whose round has started and lasts until `release` is set."""
    started = asyncio.Event()

    async def work() -> None:
        started.set()
        await release.wait()
        finished.append(1)

    loop = Periodic(0.001, work, name="t")
    loop.start()
    await asyncio.wait_for(started.wait(), 5)
    return loop


async def test_stop_waits_for_the_round_in_progress() -> None:
    release, finished = asyncio.Event(), []
    loop = await _in_a_round(release, finished)
    stopping = asyncio.create_task(loop.stop())
    await asyncio.sleep(0)
    assert not stopping.done()  # waiting for the round, not cancelling it
    release.set()
    await asyncio.wait_for(stopping, 5)
    assert finished == [1]


async def test_stop_between_rounds_is_immediate() -> None:
    calls: list[int] = []

    async def work() -> None:
        calls.append(1)

    loop = Periodic(3600, work, name="t")
    loop.start()
    await asyncio.sleep(0)
    await asyncio.wait_for(loop.stop(), 5)
    assert calls == []
    loop.start()  # can start again
    await asyncio.wait_for(loop.stop(), 5)


async def test_a_stop_that_is_itself_cancelled_says_so_and_leaves_the_round_alone() -> None:
    # A shutdown given up on (a timeout around it) must see its cancellation; and the round it
    # was waiting for is not cut off by it (the old stop swallowed one and did the other).
    release, finished = asyncio.Event(), []
    loop = await _in_a_round(release, finished)
    stopping = asyncio.create_task(loop.stop())
    await asyncio.sleep(0)
    stopping.cancel()
    with pytest.raises(asyncio.CancelledError):
        await stopping
    release.set()
    await asyncio.wait_for(loop.stop(), 5)
    assert finished == [1]
