"""Service tokens for an upload's calls are minted before the calls, each still used once."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any, cast

from appview.holds import client as hc
from appview.holds.client import NSID_COMPLETE, NSID_INITIATE, NSID_UPLOAD_PART, HoldClient

USER, HOLD = "did:plc:user", "did:web:hold.example"


class Pds:
    def __init__(self) -> None:
        self.minted: list[str] = []
        self._n = itertools.count(1)
        self.answering = asyncio.Event()  # cleared: a mint waits (a PDS that does not answer)
        self.answering.set()

    async def mint(self, user: str, hold: str, lxm: str) -> str:
        await asyncio.sleep(0.01)  # a PDS round trip
        await self.answering.wait()
        self.minted.append(lxm)
        return f"{lxm}#{next(self._n)}"


def make(pds: Pds) -> HoldClient:
    return HoldClient(cast(Any, None), cast(Any, None), mint=pds.mint)


async def minted_ahead(holds: HoldClient) -> None:
    """Wait until every mint started ahead has finished (not: until some time has passed)."""
    async with asyncio.timeout(10):
        while not all(task.done() for _, task in holds._ahead.values()):
            await asyncio.sleep(0.001)


def test_an_upload_never_waits_for_a_mint_after_post() -> None:
    pds = Pds()

    async def run() -> list[str]:
        holds = make(pds)
        holds.mint_ahead(USER, HOLD, NSID_INITIATE)  # at POST /blobs/uploads/
        used = []
        for lxm in (NSID_INITIATE, NSID_UPLOAD_PART, NSID_UPLOAD_PART, NSID_COMPLETE):
            await minted_ahead(holds)  # the client's first bytes arrive / a part crosses to the hold
            # From here the PDS does not answer: a call that needed a mint now would never get
            # its token (no stopwatch: a busy machine can pause any step for milliseconds).
            pds.answering.clear()
            try:
                async with asyncio.timeout(10):
                    used.append((await holds._token(USER, HOLD, lxm))["Authorization"])
            except TimeoutError:
                raise AssertionError(f"{lxm} waited for its PDS") from None
            pds.answering.set()
        return used

    used = asyncio.run(run())
    assert len(set(used)) == 4  # single use: holds refuse a replayed jti
    assert [u.split("#")[0].removeprefix("Bearer ") for u in used] == [
        NSID_INITIATE, NSID_UPLOAD_PART, NSID_UPLOAD_PART, NSID_COMPLETE
    ]


def test_a_stale_token_minted_ahead_is_not_used(monkeypatch: Any) -> None:
    pds = Pds()
    monkeypatch.setattr(hc, "AHEAD_FRESH", 0.0)

    async def run() -> str:
        holds = make(pds)
        holds.mint_ahead(USER, HOLD, NSID_INITIATE)
        await minted_ahead(holds)
        return (await holds._token(USER, HOLD, NSID_INITIATE))["Authorization"]

    assert asyncio.run(run()) == f"Bearer {NSID_INITIATE}#2"


def test_tokens_minted_ahead_are_bounded(monkeypatch: Any) -> None:
    pds = Pds()
    monkeypatch.setattr(hc, "AHEAD_MAX", 3)

    async def run() -> int:
        holds = make(pds)
        for i in range(10):
            holds.mint_ahead(f"did:plc:u{i}", HOLD, NSID_INITIATE)
        await minted_ahead(holds)
        return len(holds._ahead)

    assert asyncio.run(run()) == 3


def test_a_hold_given_up_on_is_probed_once_a_second_and_back_on_the_first_success() -> None:
    now = [100.0]
    holds = HoldClient(cast(Any, None), cast(Any, None), down_for=10.0, clock=lambda: now[0])
    assert holds._admit(HOLD)
    holds._mark_down(HOLD, OSError("connection refused"))
    assert not holds.reachable(HOLD)
    assert not holds._admit(HOLD)  # fails fast right after the failure
    now[0] += 1.0
    assert holds._admit(HOLD)  # the probe goes through...
    assert not holds._admit(HOLD)  # ...one at a time
    holds._mark_up(HOLD)  # the probe succeeded: the restarted hold is used at once
    assert holds.reachable(HOLD) and holds._admit(HOLD) and holds._admit(HOLD)
    holds._mark_down(HOLD, OSError("timed out"))
    now[0] += 10.0
    assert holds.reachable(HOLD)  # given up on for down_for at most
