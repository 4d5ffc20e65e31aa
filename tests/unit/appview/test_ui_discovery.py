"""The UI's discovery after a flush: which accounts it finds and in what order it loads them."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import fakeredis
import httpx
import pytest

from appview.web.discovery import SEEDED_KEY, Discovery
from atcr.http import SafeHttpClient, SsrfPolicy

pytestmark = pytest.mark.unit

RELAY = "http://relay.example"


def did(n: int) -> str:
    return f"did:plc:{chr(ord('a') + n) * 24}"


class Loader:
    """Records which accounts were loaded, in order (the real one rebuilds indexes as it goes)."""

    def __init__(self) -> None:
        self.loaded: list[str] = []

    async def repositories(self, d: str) -> list[str]:
        self.loaded.append(d)
        return []

    async def starred(self, d: str) -> list[Any]:
        return []

    async def identity(self, d: str) -> None:
        return None


def relay(repos: list[dict[str, Any]]) -> httpx.MockTransport:
    """A lone PDS as relay: no listReposByCollection, one page of listRepos."""

    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("listReposByCollection"):
            return httpx.Response(501, json={"error": "MethodNotImplemented", "message": "no"})
        assert request.url.path == "/xrpc/com.atproto.sync.listRepos"
        return httpx.Response(200, content=json.dumps({"repos": repos}), headers={"content-type": "application/json"})

    return httpx.MockTransport(handle)


@pytest.fixture
async def fv() -> AsyncIterator[Any]:
    client = fakeredis.FakeAsyncValkey()
    yield client
    await client.aclose()


async def test_accounts_are_loaded_newest_commit_first(fv: Any) -> None:
    # A page waits for discovery only so long; on a network larger than that wait covers, the
    # accounts loaded first are the ones the page shows. They must be the latest pushers (the
    # home page ranks by recency), not whichever DIDs happen to sort first.
    repos: list[dict[str, Any]] = [
        {"did": did(0), "rev": "3kaaaaaaaaa22", "active": True},
        {"did": did(1), "rev": "3kzzzzzzzzz22", "active": True},
        {"did": did(2), "rev": "3kmmmmmmmmm22", "active": True},
        {"did": did(3), "rev": "3kzzzzzzzzz23", "active": False},  # deactivated: not shown at all
        {"did": did(4)},  # a listing without a rev: after every dated one
    ]
    http = SafeHttpClient(policy=SsrfPolicy(allowed_hosts=frozenset({"relay.example"})), transport=relay(repos))
    loader = Loader()
    try:
        discovery = Discovery(fv, http, loader, holds=[], relay=RELAY, concurrency=1)  # type: ignore[arg-type]
        await discovery.ensure()
    finally:
        await http.aclose()
    assert loader.loaded == [did(1), did(2), did(0), did(4)]
    assert await fv.exists(SEEDED_KEY)

