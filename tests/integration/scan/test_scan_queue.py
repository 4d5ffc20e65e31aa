"""The scan-job queue's leases on a real Valkey, with a clock the test moves."""

from __future__ import annotations

from typing import Any

import pytest

from hold.scan.queue import ScanQueue

# The queue scripts keep to the hold's hash slot: run on a single node and on a cluster.
pytestmark = [pytest.mark.integration, pytest.mark.valkey_cluster]


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def job(n: int) -> dict[str, Any]:
    return {"digest": f"sha256:{n:064x}", "repository": "r", "userDid": "did:plc:a", "layers": []}


async def test_expired_leases_come_back_first_then_fail_after_max_attempts(valkey: Any) -> None:
    clock = Clock()
    q = ScanQueue(valkey, "did:web:h", lease_seconds=10, max_attempts=2, clock=clock)
    assert await q.enqueue(job(1)) and await q.enqueue(job(2))
    assert not await q.enqueue(job(1))  # already pending: not twice
    assert await q.pending() == 2
    first = await q.lease()
    assert first is not None and first.digest == job(1)["digest"]
    assert (await q.state(first.digest) or {})["state"] == "scanning"

    clock.now += 11  # the scanner (and the hold that leased it) vanished
    again = await q.lease()
    assert again is not None and again.digest == first.digest and again.token != first.token
    assert not await q.complete(first.digest, first.token)  # the old lease finishes nothing
    assert await q.renew(again) and not await q.renew(first)

    clock.now += 11  # lost a second time: max_attempts reached
    other = await q.lease()
    assert other is not None and other.digest == job(2)["digest"]
    state = await q.state(first.digest) or {}
    assert state["state"] == "failed" and "scanner lost" in state["error"]
    assert await q.complete(other.digest, other.token)
    assert not await q.complete(other.digest, other.token)  # done once
    assert await q.lease() is None


async def test_pushes_go_before_rescans_and_a_job_being_scanned_is_not_queued_twice(valkey: Any) -> None:
    q = ScanQueue(valkey, "did:web:h2", clock=Clock())
    await q.enqueue(job(1), rescan=True)
    await q.enqueue(job(2))
    leased = await q.lease()
    assert leased is not None and leased.digest == job(2)["digest"]
    assert not await q.enqueue(job(2), rescan=True)  # scanning now
    nxt = await q.lease()
    assert nxt is not None and nxt.digest == job(1)["digest"]
    assert await q.release(nxt.digest, nxt.token)
    back = await q.lease()
    assert back is not None and back.digest == job(1)["digest"]


async def test_a_job_released_too_often_fails(valkey: Any) -> None:
    q = ScanQueue(valkey, "did:web:h3", max_attempts=2, clock=Clock())
    await q.enqueue(job(1))
    for _ in range(2):
        leased = await q.lease()
        assert leased is not None
        assert await q.release(leased.digest, leased.token)
    state = await q.state(job(1)["digest"]) or {}
    assert state["state"] == "failed" and await q.lease() is None
