"""The hold's subscribeRepos, consumed by the atproto SDK's firehose client over a real socket."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from atproto_core.car import CAR
from atproto_firehose import AsyncFirehoseSubscribeReposClient, parse_subscribe_repos_message
from atproto_subscription.exceptions import SubscriptionError
from atproto_subscription.frames import MessageFrame

from hold.repo import Create, Delete, Repo
from tests.integration.hold_repo.conftest import Hold, serving
from tests.unit.hold_repo.support import HOLD_DID, LAYER, layer_record, make_signer

pytestmark = pytest.mark.integration


class Collector:
    """Runs one SDK client and records every message it parses."""

    def __init__(self, base_uri: str, cursor: int | None = None) -> None:
        params = {"cursor": cursor} if cursor is not None else None
        self.client = AsyncFirehoseSubscribeReposClient(params=params, base_uri=base_uri)
        self.messages: list[Any] = []
        self.kinds: list[str] = []
        self._changed = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    async def _on_message(self, frame: MessageFrame) -> None:
        self.kinds.append(frame.type)
        self.messages.append(parse_subscribe_repos_message(frame))
        self._changed.set()

    def start(self) -> Collector:
        self.task = asyncio.create_task(self.client.start(self._on_message))
        return self

    async def wait_for(self, predicate: Any, timeout: float = 10) -> None:
        async def loop() -> None:
            while not predicate(self):
                self._changed.clear()
                await self._changed.wait()

        await asyncio.wait_for(loop(), timeout)

    def commits(self) -> list[Any]:
        return [m for m, k in zip(self.messages, self.kinds, strict=True) if k == "#commit"]

    async def stop(self) -> None:
        await self.client.stop()
        if self.task is not None:
            await asyncio.wait_for(self.task, 10)


async def test_live_writes_reach_the_sdk_client(hold: Hold) -> None:
    live = Collector(hold.ws_base).start()
    try:
        # No cursor means "from now on": write until the client is surely subscribed.
        n = 0
        while not live.commits():
            await hold.repo.apply_writes([Create(LAYER, f"warm{n}", layer_record(n))])
            n += 1
            await asyncio.sleep(0.05)
        infos = [await hold.repo.apply_writes([Create(LAYER, f"live{i}", layer_record(100 + i))]) for i in range(5)]
        infos.append(await hold.repo.apply_writes([Delete(LAYER, "live0")]))
        await live.wait_for(lambda c: c.commits() and c.commits()[-1].seq == infos[-1].seq)
        by_seq = {m.seq: m for m in live.commits()}
        seqs = [m.seq for m in live.commits()]
        assert seqs == list(range(seqs[0], seqs[-1] + 1))  # no gaps, no repeats
        for info in infos:
            msg = by_seq[info.seq]
            assert msg.repo == HOLD_DID and msg.rev == info.rev and str(msg.commit) == info.cid
            assert [(o.action, o.path) for o in msg.ops] == [(o.action, o.path) for o in info.ops]
            car = CAR.from_bytes(msg.blocks)
            assert str(car.root) == info.cid
            for op in info.ops:
                if op.cid is not None:
                    assert car.blocks[op.cid] == layer_record(100 + int(op.rkey.removeprefix("live")))
    finally:
        await live.stop()


async def test_cursor_replays_the_persisted_log_then_continues_live(hold: Hold) -> None:
    infos = [await hold.repo.apply_writes([Create(LAYER, f"r{i}", layer_record(i))]) for i in range(8)]
    last = infos[-1].seq
    replay = Collector(hold.ws_base, cursor=0).start()
    try:
        await replay.wait_for(lambda c: c.messages and c.messages[-1].seq == last)
        assert replay.kinds[:3] == ["#identity", "#account", "#commit"]
        assert [m.seq for m in replay.messages] == list(range(1, last + 1))
        assert replay.messages[0].did == HOLD_DID and replay.messages[1].active is True
        assert [m.rev for m in replay.commits()[1:]] == [i.rev for i in infos]
        more = await hold.repo.apply_writes([Create(LAYER, "after", layer_record(99))])
        await replay.wait_for(lambda c: c.messages[-1].seq == more.seq)
    finally:
        await replay.stop()
    middle = Collector(hold.ws_base, cursor=infos[4].seq).start()
    try:
        await middle.wait_for(lambda c: c.messages and c.messages[-1].seq == more.seq)
        assert [m.seq for m in middle.messages] == list(range(infos[4].seq + 1, more.seq + 1))
    finally:
        await middle.stop()


async def test_replay_survives_a_restart(tmp_path: Path) -> None:
    signer = make_signer()
    path = tmp_path / "repo.sqlite"
    repo = await Repo.open(path, HOLD_DID, signer)
    async with serving(repo, signer):
        infos = [await repo.apply_writes([Create(LAYER, f"r{i}", layer_record(i))]) for i in range(3)]
    # serving() closed the repository; a new process would open the same file.
    reopened = await Repo.open(path, HOLD_DID, signer)
    async with serving(reopened, signer) as hold:
        replay = Collector(hold.ws_base, cursor=2).start()
        try:
            await replay.wait_for(lambda c: c.messages and c.messages[-1].seq == infos[-1].seq)
            assert [m.seq for m in replay.messages] == list(range(3, infos[-1].seq + 1))
            assert [str(m.commit) for m in replay.commits()[1:]] == [i.cid for i in infos]
        finally:
            await replay.stop()


async def test_outdated_and_future_cursors(tmp_path: Path) -> None:
    signer = make_signer()
    repo = await Repo.open(tmp_path / "repo.sqlite", HOLD_DID, signer, event_retention=3)
    async with serving(repo, signer) as hold:
        for i in range(5):
            await repo.apply_writes([Create(LAYER, f"r{i}", layer_record(i))])
        old = Collector(hold.ws_base, cursor=1).start()
        try:
            await old.wait_for(lambda c: c.messages and getattr(c.messages[-1], "seq", 0) == repo.last_seq)
            assert old.kinds[0] == "#info" and old.messages[0].name == "OutdatedCursor"
            assert [m.seq for m in old.messages[1:]] == [6, 7, 8]
        finally:
            await old.stop()
        future = AsyncFirehoseSubscribeReposClient(params={"cursor": 1000}, base_uri=hold.ws_base)

        async def ignore(_: MessageFrame) -> None:
            return

        with pytest.raises(SubscriptionError, match="FutureCursor"):
            await asyncio.wait_for(future.start(ignore), 10)
