"""The flush of pending counts into stats records, interrupted at every step it has: no count
is lost and none is applied twice (hold/stats.py explains the algorithm). Real Valkey, a
real repo on disk; a "crash" is an exception thrown at that step, after which a fresh `Stats`
(a restarted hold) flushes again."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from hold.repo import EcKeySigner, Repo
from hold.stats import STATS, Stats

pytestmark = pytest.mark.integration

HOLD = "did:web:hold.test"
OWNER = "did:plc:ownerownerownerowner0000"


class Crash(Exception):
    pass


@pytest.fixture
async def repo(tmp_path: Path) -> AsyncIterator[Repo]:
    r = await Repo.open(tmp_path / "repo.sqlite", HOLD, EcKeySigner(ec.generate_private_key(ec.SECP256K1())))
    try:
        yield r
    finally:
        await r.close()


def fresh(valkey: Any, repo: Repo) -> Stats:
    """A new `Stats`, as a restarted hold on the same data directory builds it."""
    return Stats(valkey, HOLD, lambda: repo, instance="data-dir-1")


async def counts(repo: Repo) -> dict[str, tuple[int, int]]:
    out = {}
    cursor = None
    while True:
        page = await repo.list_records(STATS, limit=1000, cursor=cursor)
        for rec in page.records:
            out[rec.value["repository"]] = (rec.value["pullCount"], rec.value["pushCount"])
        if page.cursor is None:
            return out
        cursor = page.cursor


async def pull_everywhere(stats: Stats, repos: int, times: int = 1) -> None:
    for _ in range(times):
        await asyncio.gather(*(stats.count("pull", OWNER, f"r{i:03}", 1) for i in range(repos)))


async def test_crash_after_begin_resumes_the_same_flush(valkey: Any, repo: Repo) -> None:
    stats = fresh(valkey, repo)
    await pull_everywhere(stats, 3, times=2)
    # Step 1 happened (pending -> inflight), then the process died.
    flush_id = await stats._begin(keys=[stats.pending_key, stats.inflight_key], args=["crashed-flush"])
    assert flush_id == b"crashed-flush"
    await pull_everywhere(stats, 3)  # counts keep arriving into a new pending hash
    report = await fresh(valkey, repo).flush()
    assert report.flushes == 2  # the resumed one, then the new pending counts
    assert await counts(repo) == {"r000": (3, 0), "r001": (3, 0), "r002": (3, 0)}
    assert not await valkey.exists(stats.pending_key, stats.inflight_key)


@pytest.mark.parametrize("crash_on_commit", [1, 2])
async def test_crash_between_commits_applies_each_record_once(
    valkey: Any, repo: Repo, monkeypatch: pytest.MonkeyPatch, crash_on_commit: int
) -> None:
    """250 repositories need two commits (200 writes each at most); die before or after the first."""
    stats = fresh(valkey, repo)
    await pull_everywhere(stats, 250, times=2)
    original = repo.apply_writes
    calls = 0

    async def dying(writes: Any, **kw: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == crash_on_commit:
            raise Crash()
        return await original(writes, **kw)

    monkeypatch.setattr(repo, "apply_writes", dying)
    with pytest.raises(Crash):
        await stats.flush()
    monkeypatch.setattr(repo, "apply_writes", original)
    applied_before = len(await counts(repo))
    assert applied_before == (0 if crash_on_commit == 1 else 200)

    await pull_everywhere(stats, 250)  # more counts while "down"
    report = await fresh(valkey, repo).flush()
    assert report.skipped == applied_before  # records that already had the crashed flush
    assert await counts(repo) == {f"r{i:03}": (3, 0) for i in range(250)}


async def test_crash_after_the_commits_before_finish(valkey: Any, repo: Repo, monkeypatch: pytest.MonkeyPatch) -> None:
    stats = fresh(valkey, repo)
    await pull_everywhere(stats, 5, times=4)
    await stats.count("push", OWNER, "r000")

    async def dying_finish(**kw: Any) -> Any:
        raise Crash()

    monkeypatch.setattr(stats, "_finish", dying_finish)
    with pytest.raises(Crash):
        await stats.flush()
    assert await counts(repo) == {"r000": (4, 1), **{f"r{i:03}": (4, 0) for i in range(1, 5)}}
    assert await valkey.exists(stats.inflight_key)  # still there: the flush did not finish

    report = await fresh(valkey, repo).flush()
    assert (report.records, report.skipped) == (0, 5)
    assert await counts(repo) == {"r000": (4, 1), **{f"r{i:03}": (4, 0) for i in range(1, 5)}}
    assert not await valkey.exists(stats.inflight_key)


async def test_counts_during_a_flush_go_to_the_next_one(valkey: Any, repo: Repo) -> None:
    stats = fresh(valkey, repo)
    total = 0

    async def pull(n: int) -> None:
        nonlocal total
        for _ in range(n):
            await stats.count("pull", OWNER, "busy", 2)
            total += 2

    async def flusher() -> None:
        for _ in range(10):
            await stats.flush()
            await asyncio.sleep(0)

    await asyncio.gather(pull(300), pull(300), pull(300), flusher())
    await stats.flush()
    assert await counts(repo) == {"busy": (total, 0)} and total == 1800


async def test_only_one_data_directory_flushes(valkey: Any, repo: Repo) -> None:
    mine = fresh(valkey, repo)
    await mine.count("pull", OWNER, "app", 3)
    await valkey.set(mine.lock_key, b"another-data-dir", px=60_000)
    assert (await mine.flush()).flushes == 0  # another replica is flushing: leave its inflight alone
    await valkey.delete(mine.lock_key)
    assert (await mine.flush()).records == 1
    assert await counts(repo) == {"app": (3, 0)}


async def test_a_cancelled_flush_still_finishes_its_commit(valkey: Any, repo: Repo) -> None:
    """Cancelling the flusher mid-commit must not leave the repo's head behind its database."""
    stats = fresh(valkey, repo)
    await pull_everywhere(stats, 250)
    # Cancel once a commit is under way (not after 10 ms, when a busy machine may not have
    # begun the flush yet, or may have finished it).
    committing = asyncio.Event()
    apply_writes = repo.apply_writes

    async def observed(*args: Any, **kwargs: Any) -> Any:
        committing.set()
        return await apply_writes(*args, **kwargs)

    repo.apply_writes = observed  # type: ignore[method-assign]
    task = asyncio.create_task(stats.run(3600))
    await asyncio.wait_for(committing.wait(), 30)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await stats.flush()  # waits for the shielded flush, then finds nothing or resumes
    assert await counts(repo) == {f"r{i:03}": (1, 0) for i in range(250)}
    await stats.count("pull", OWNER, "after", 1)
    await stats.flush()  # the repo still accepts commits
    assert (await counts(repo))["after"] == (1, 0)


async def test_valkey_down_is_a_retryable_503(repo: Repo) -> None:
    from atcr.valkey import connect
    from hold.stats import StatsUnavailable
    from tests.support.services import free_port

    client = connect(f"redis://127.0.0.1:{free_port()}/0", timeout=0.5)
    try:
        with pytest.raises(StatsUnavailable) as info:
            await fresh(client, repo).count("pull", OWNER, "app", 1)
        assert info.value.status == 503
    finally:
        await client.aclose()
