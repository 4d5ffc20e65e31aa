"""The consumer's apply loop: retries while Valkey is away, skips only what cannot apply,
and never lets a cursor pass an unapplied event (fake model, fakeredis for cursors)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import fakeredis
import pytest
from valkey.exceptions import ConnectionError as ValkeyConnectionError

from atcr.http import SafeHttpClient
from atcr.identity import IdentityResolver
from atcr.readmodel.events import RecordChange
from atcr.settings import load
from jetstream.consumer import Consumer
from jetstream.events import CommitEvent
from jetstream.settings import JetstreamSettings
from jetstream.sources import Delivery
from tests.unit.jetstream.test_processor import FakeModel

pytestmark = pytest.mark.unit

DID = "did:plc:" + "f" * 24


class FlakyModel(FakeModel):
    """Valkey "goes away" for the first `failures` calls; one record is poison."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures
        self.applied: list[str] = []

    async def apply_records(self, changes: Sequence[RecordChange]) -> list[bool]:
        if self.failures:
            self.failures -= 1
            raise ValkeyConnectionError("connection refused")
        if any(c.rkey == "poison" for c in changes):
            raise ValueError("a record the model chokes on")
        self.applied += [c.rkey for c in changes]
        return [True] * len(changes)


def commit(rkey: str, t: int) -> CommitEvent:
    return CommitEvent(DID, t, "io.atcr.tag", rkey, "create", f"3{t:012d}", "bafy", {"repository": "a", "tag": rkey})


async def make(model: Any) -> tuple[Consumer, Any, SafeHttpClient]:
    v = fakeredis.FakeAsyncRedis()
    settings = load(
        JetstreamSettings,
        {"VALKEY_URL": "redis://unused", "ATCR_JETSTREAM_CURSOR_EVERY": "1", "ATCR_JETSTREAM_BATCH": "2"},
    )
    http = SafeHttpClient()
    return Consumer(settings, v, http, IdentityResolver(http), model=model), v, http  # type: ignore[arg-type]


async def test_valkey_outage_retries_the_batch_and_keeps_the_cursor_behind() -> None:
    model = FlakyModel(failures=2)
    consumer, v, http = await make(model)
    task = asyncio.create_task(consumer._process_loop())
    try:
        for i, rkey in enumerate(["a", "b", "c", "d", "e"], start=1):
            await consumer.queue.put(Delivery("jetstream", [commit(rkey, i)], i))
        await asyncio.wait_for(consumer.queue.join(), 10)
        # Batches in flight may land in any order (each change is rev-judged); all land once.
        assert sorted(model.applied) == ["a", "b", "c", "d", "e"]
        assert consumer.apply_errors == 2
        assert consumer.checkpoints["jetstream"].applied == 5
        assert await v.get("js:cursor:jetstream") == b"5"
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await http.aclose()


async def test_a_poison_event_is_skipped_alone() -> None:
    model = FlakyModel(failures=0)
    consumer, _, http = await make(model)
    task = asyncio.create_task(consumer._process_loop())
    try:
        batch = [commit("ok1", 1), commit("poison", 2), commit("ok2", 3)]
        for ev in batch:
            await consumer.queue.put(Delivery("jetstream", [ev], ev.time_us))
        await asyncio.wait_for(consumer.queue.join(), 10)
        assert model.applied == ["ok1", "ok2"]
        assert consumer.checkpoints["jetstream"].applied == 3
        text = consumer.metrics.render().decode()
        assert 'outcome="failed"' in text
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await http.aclose()
