"""The filesystem store syncs a part's bytes while they arrive, and still before it commits.

What a user would notice: a part written in several MiB steps is on disk intact when it is
acknowledged; the bytes were flushed along the way (so the client did not stall on one long
fsync at the end); and an abort while a background sync runs neither fails nor leaks the fd.
"""

from __future__ import annotations

import asyncio
import functools
import os
import threading
import time
from pathlib import Path

import pytest

from hold.signed_urls import UrlSigner
from hold.storage.base import staging_name
from hold.storage.filesystem import EARLY_SYNC_BYTES, EARLY_SYNC_THREADS, FilesystemBlobStore

STEP = 1024 * 1024


def _store(tmp_path: Path) -> FilesystemBlobStore:
    return FilesystemBlobStore(tmp_path / "store", UrlSigner(b"k" * 32, "http://127.0.0.1:1"))


@pytest.fixture
def syncs(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Every background fdatasync, by fd (the real call still runs)."""
    calls: list[int] = []
    real = os.fdatasync

    def spy(fd: int) -> None:
        calls.append(fd)
        real(fd)

    monkeypatch.setattr(os, "fdatasync", spy)
    return calls


@pytest.mark.parametrize("in_place", [True, False], ids=["in-place", "own-file"])
def test_a_part_is_synced_while_it_is_written_and_commits_intact(
    tmp_path: Path, syncs: list[int], in_place: bool
) -> None:
    async def main() -> None:
        store = _store(tmp_path)
        upload = await store.start_upload(staging_name(int(time.time()), "early-sync-test"))
        writer = store.part_writer(upload, 1, offset=0 if in_place else None)
        steps = [os.urandom(STEP) for _ in range(3 * EARLY_SYNC_BYTES // STEP)]
        for data in steps:
            await store.run(functools.partial(writer.write, data))
        # The writes queued a sync; its thread may not have run yet on a busy machine, and a
        # commit drops a sync still queued. Give it the time it needs (a hang is bounded).
        deadline = time.monotonic() + 30
        while not syncs and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        seen_before_commit = len(syncs)
        info = await store.run(writer.commit)
        assert info.size == len(steps) * STEP
        assert seen_before_commit >= 1, "no byte was synced before the commit"
        size = await store.assemble(upload, [info])
        assert size == info.size
        staged = bytearray()

        class Sink:
            def reset(self) -> None:
                staged.clear()

            def update(self, data: bytes) -> None:
                staged.extend(data)

        await store.read_staged(upload, Sink())
        assert bytes(staged) == b"".join(steps)
        await store.abort(upload)
        await store.aclose()

    asyncio.run(main())


def test_an_abort_waits_for_the_background_sync(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    started, release = threading.Event(), threading.Event()
    finished: list[int] = []
    real = os.fdatasync

    def slow(fd: int) -> None:
        started.set()
        release.wait(5)
        real(fd)  # fails with EBADF if the writer closed the fd under it
        finished.append(fd)

    monkeypatch.setattr(os, "fdatasync", slow)

    async def main() -> None:
        store = _store(tmp_path)
        upload = await store.start_upload(staging_name(int(time.time()), "abort-sync-test"))
        writer = store.part_writer(upload, 1, offset=0)
        for _ in range(EARLY_SYNC_BYTES // STEP):
            await store.run(lambda: writer.write(b"x" * STEP))
        assert await asyncio.to_thread(started.wait, 5)
        aborting = asyncio.ensure_future(store.run(writer.abort))
        await asyncio.sleep(0)
        assert not aborting.done()  # the abort is waiting for the sync
        release.set()
        await aborting
        assert finished, "the background sync did not complete"
        await store.aclose()

    asyncio.run(main())


def test_a_commit_does_not_wait_for_its_sync_queued_behind_other_uploads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under many concurrent uploads the background syncs queue up; a part's commit drops its
    own queued one (its fsync covers the bytes) instead of waiting behind the others."""
    running, release = threading.Semaphore(0), threading.Event()
    real = os.fdatasync

    def blocked(fd: int) -> None:
        running.release()
        release.wait(30)
        real(fd)

    monkeypatch.setattr(os, "fdatasync", blocked)

    async def main() -> None:
        store = _store(tmp_path)
        writers = []
        for i in range(EARLY_SYNC_THREADS + 1):
            upload = await store.start_upload(staging_name(int(time.time()), f"queued-sync-{i:02d}"))
            writer = store.part_writer(upload, 1, offset=0)
            writers.append(writer)
            for _ in range(EARLY_SYNC_BYTES // STEP):
                await store.run(functools.partial(writer.write, b"y" * STEP))
            if i < EARLY_SYNC_THREADS:  # every sync thread is now busy
                assert await asyncio.to_thread(running.acquire, True, 10)
        try:
            last = writers[-1]
            info = await asyncio.wait_for(store.run(last.commit), 10)  # not behind the blocked syncs
            assert info.size == EARLY_SYNC_BYTES
        finally:
            release.set()
            for writer in writers[:-1]:
                await store.run(writer.abort)
            await store.aclose()

    asyncio.run(main())
