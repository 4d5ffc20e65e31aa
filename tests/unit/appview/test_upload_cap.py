"""Open upload sessions are capped per user (ATCR_MAX_OPEN_UPLOADS) with TOOMANYREQUESTS."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import fakeredis
import pytest

from appview.errors import TooManyRequests
from appview.oci.uploads import UploadStore

pytestmark = pytest.mark.unit

ALICE, BOB, HOLD = "did:plc:alice", "did:plc:bob", "did:web:hold.example.com"


@pytest.fixture
async def valkey() -> AsyncIterator[Any]:
    client = fakeredis.FakeAsyncValkey()
    yield client
    await client.aclose()


async def test_cap_per_user(valkey: Any) -> None:
    store = UploadStore(valkey, max_open=3)
    opened = [await store.create(ALICE, "app", HOLD) for _ in range(3)]
    with pytest.raises(TooManyRequests) as info:
        await store.create(ALICE, "other", HOLD)
    assert info.value.code == "TOOMANYREQUESTS" and info.value.status == 429
    assert "at most 3" in info.value.message and info.value.headers["Retry-After"]
    assert len([k async for k in valkey.scan_iter("av:upload:*")]) == 3  # the refused one left nothing
    await store.create(BOB, "app", HOLD)  # another user is not held back
    # Finishing (or cancelling) an upload frees its place.
    await store.delete(opened[0].id)
    await store.create(ALICE, "app", HOLD)
    with pytest.raises(TooManyRequests):
        await store.create(ALICE, "app", HOLD)


async def test_concurrent_creates_never_exceed_the_cap(valkey: Any) -> None:
    store = UploadStore(valkey, max_open=10)
    results = await asyncio.gather(*(store.create(ALICE, "app", HOLD) for _ in range(40)), return_exceptions=True)
    admitted = [r for r in results if not isinstance(r, BaseException)]
    assert 0 < len(admitted) <= 10
    assert all(isinstance(r, TooManyRequests) for r in results if isinstance(r, BaseException))
    for session in admitted:
        assert (await store.get(session.id, ALICE)).id == session.id


async def test_zero_means_no_cap(valkey: Any) -> None:
    store = UploadStore(valkey)
    for _ in range(200):
        await store.create(ALICE, "app", HOLD)
