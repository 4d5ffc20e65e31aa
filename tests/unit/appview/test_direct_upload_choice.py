"""Which uploads go straight to the hold: discovery from the hold's DID document, and the
fallback to the proxied path (appview/holds/client.py, appview/oci/registry.py)."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest

from appview.errors import TooManyRequests, Unavailable
from appview.holds.client import HoldClient, HoldError, HoldUnavailable
from appview.oci.registry import Registry, RepoRef
from atcr.errors import NetworkError
from atcr.identity import DidDocument

pytestmark = pytest.mark.unit

HOLD = "did:web:hold.example"


class Resolver:
    def __init__(self, services: dict[str, str] | None) -> None:
        self.services = services
        self.calls = 0

    async def resolve_did(self, did: str) -> DidDocument:
        self.calls += 1
        if self.services is None:
            raise NetworkError("unreachable")
        return DidDocument(did, None, None, None, self.services, {})


def test_discovery_reads_the_did_document_and_remembers_the_answer() -> None:
    async def run() -> None:
        with_it = Resolver({"#atcr_hold": "https://hold.example", "#atcr_direct_upload": "https://hold.example"})
        holds = HoldClient(cast(Any, None), cast(Any, with_it))
        assert await holds.takes_direct_uploads(HOLD) and await holds.takes_direct_uploads(HOLD)
        assert with_it.calls == 1

        atcr_hold = Resolver({"#atcr_hold": "https://hold.example"})  # ATCR's Go hold
        assert not await HoldClient(cast(Any, None), cast(Any, atcr_hold)).takes_direct_uploads(HOLD)

        down = Resolver(None)
        holds = HoldClient(cast(Any, None), cast(Any, down))
        assert not await holds.takes_direct_uploads(HOLD)
        assert not await holds.takes_direct_uploads(HOLD)
        assert down.calls == 2  # a failure is not remembered

    asyncio.run(run())


class Holds:
    def __init__(self, takes: bool, answer: Exception | tuple[str, str]) -> None:
        self.takes = takes
        self.answer = answer
        self.ahead: list[str] = []

    async def takes_direct_uploads(self, hold: str) -> bool:
        return self.takes

    def mint_ahead(self, user: str, hold: str, lxm: str) -> None:
        self.ahead.append(lxm)

    async def initiate_direct_upload(self, *args: Any) -> tuple[str, str]:
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


def registry(holds: Holds) -> Registry:
    reg = Registry.__new__(Registry)
    reg.holds = cast(Any, holds)

    async def push_hold(user: str) -> str:
        return HOLD

    reg.push_hold = push_hold  # type: ignore[method-assign]
    return reg


REF = RepoRef(name="u.test/r", did="did:plc:u", handle="u.test", repository="r", pds="https://pds")


def start(holds: Holds) -> tuple[str, str] | None:
    return asyncio.run(registry(holds).start_direct_upload(REF, "did:plc:u", "https://av/v2/u/r/blobs/", 10))


def test_direct_when_advertised_else_proxied() -> None:
    assert start(Holds(True, ("id1", "https://hold.example/_hold/oci/uploads/id1/cap"))) == (
        "id1", "https://hold.example/_hold/oci/uploads/id1/cap"
    )
    assert start(Holds(False, ("id1", "x"))) is None
    # Advertised but refused (an older or misconfigured hold): the proxied path still works.
    assert start(Holds(True, HoldError(400, "InvalidRequest", "this hold does not take direct uploads"))) is None
    with pytest.raises(Unavailable):
        start(Holds(True, HoldUnavailable(503, "HoldUnavailable", "down")))
    with pytest.raises(TooManyRequests):  # the hold's cap on open uploads is the user's answer
        start(Holds(True, HoldError(429, "TooManyUploads", "at most 100 open uploads")))


def test_a_direct_start_mints_the_manifest_puts_notify_token_ahead() -> None:
    direct, proxied = Holds(True, ("id1", "https://hold.example/_hold/oci/uploads/id1/cap")), Holds(False, ("", ""))
    start(direct)
    start(proxied)
    assert direct.ahead == ["io.atcr.hold.notifyManifest"] and proxied.ahead == []


def test_a_direct_start_mints_no_tokens_for_parts_it_will_never_send() -> None:
    minted: list[str] = []

    async def mint(user: str, hold: str, lxm: str) -> str:
        minted.append(lxm)
        return f"token-{len(minted)}"

    async def run() -> None:
        holds = HoldClient(cast(Any, None), cast(Any, None), mint=mint)
        await holds._token("did:plc:u", HOLD, "io.atcr.hold.initiateUpload", mint_next=False)
        assert holds._ahead == {}
        await holds._token("did:plc:u", HOLD, "io.atcr.hold.initiateUpload")  # the proxied path's
        assert {lxm for _, _, lxm in holds._ahead} == {"io.atcr.hold.uploadPart", "io.atcr.hold.completeUpload"}
        for _, task in holds._ahead.values():
            await task

    asyncio.run(run())
