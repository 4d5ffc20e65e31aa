"""subscribeRepos cursor semantics over the repository's event log (no sockets)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

from atproto_subscription.frames import ErrorFrame, Frame, MessageFrame

from hold.repo import Create, EcKeySigner, Repo
from hold.repo.firehose import subscribe_frames
from tests.unit.hold_repo.support import HOLD_DID, LAYER, layer_record


async def _take(frames: AsyncIterator[bytes], n: int) -> list[Frame]:
    out = []
    for _ in range(n):
        out.append(Frame.from_bytes(await asyncio.wait_for(anext(frames), 5)))
    return out


def _seqs(frames: list[Frame]) -> list[int]:
    return [f.body["seq"] for f in frames if isinstance(f, MessageFrame) and f.type != "#info"]


async def test_no_cursor_means_live_only(repo: Repo) -> None:
    frames = subscribe_frames(repo, None)
    pending = asyncio.ensure_future(_take(frames, 1))
    await asyncio.sleep(0.05)
    assert not pending.done()
    info = await repo.apply_writes([Create(LAYER, "a", layer_record(1))])
    (frame,) = await pending
    assert isinstance(frame, MessageFrame) and frame.type == "#commit" and frame.body["seq"] == info.seq


async def test_cursor_replays_then_goes_live(repo: Repo) -> None:
    for i in range(3):
        await repo.apply_writes([Create(LAYER, f"r{i}", layer_record(i))])
    frames = subscribe_frames(repo, 0)
    assert _seqs(await _take(frames, 6)) == [1, 2, 3, 4, 5, 6]
    live = asyncio.ensure_future(_take(frames, 2))
    await repo.apply_writes([Create(LAYER, "x", layer_record(9))])
    await repo.apply_writes([Create(LAYER, "y", layer_record(10))])
    assert _seqs(await live) == [7, 8]
    # A cursor in the middle resumes right after it.
    assert _seqs(await _take(subscribe_frames(repo, 5), 3)) == [6, 7, 8]


async def test_future_cursor_is_an_error_frame_and_the_end(repo: Repo) -> None:
    frames = [Frame.from_bytes(f) async for f in subscribe_frames(repo, 99)]
    assert len(frames) == 1 and isinstance(frames[0], ErrorFrame)
    assert frames[0].body.error == "FutureCursor"


async def test_outdated_cursor_gets_info_then_what_is_left(tmp_path: Path, signer: EcKeySigner) -> None:
    repo = await Repo.open(tmp_path / "r.db", HOLD_DID, signer, event_retention=3)
    try:
        for i in range(5):
            await repo.apply_writes([Create(LAYER, f"r{i}", layer_record(i))])
        got = await _take(subscribe_frames(repo, 1), 4)
        assert isinstance(got[0], MessageFrame) and got[0].type == "#info"
        assert got[0].body["name"] == "OutdatedCursor"
        assert _seqs(got[1:]) == [6, 7, 8]
    finally:
        await repo.close()


async def test_closing_the_repo_ends_live_streams(tmp_path: Path, signer: EcKeySigner) -> None:
    repo = await Repo.open(tmp_path / "r.db", HOLD_DID, signer)
    frames = subscribe_frames(repo, 3)
    waiter = asyncio.ensure_future(anext(frames))
    await asyncio.sleep(0.05)
    await repo.close()
    try:
        await asyncio.wait_for(waiter, 5)
        raise AssertionError("expected the stream to end")
    except StopAsyncIteration:
        pass
