"""The hold probe: cached for its TTL, shared by concurrent views, bounded by its timeout."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from appview.web.holdhealth import HoldHealth
from atcr.errors import UpstreamUnavailable

pytestmark = pytest.mark.unit


class FakeHttp:
    def __init__(self, status: int = 200, delay: float = 0.0, fail: bool = False) -> None:
        self.calls = 0
        self.status, self.delay, self.fail = status, delay, fail

    async def request(self, method: str, url: str, **kw: object) -> httpx.Response:
        self.calls += 1
        await asyncio.sleep(self.delay)
        if self.fail:
            raise UpstreamUnavailable("refused")
        return httpx.Response(self.status)


async def endpoint(did: str) -> str:
    return "https://hold.test"


async def test_answers_are_cached_and_shared() -> None:
    now = [0.0]
    http = FakeHttp(delay=0.01)
    health = HoldHealth(http, endpoint, ttl=30, clock=lambda: now[0])  # type: ignore[arg-type]
    results = await asyncio.gather(*(health.status("did:web:hold.test") for _ in range(10)))
    assert all(r.reachable for r in results) and http.calls == 1
    now[0] = 29
    await health.status("did:web:hold.test")
    assert http.calls == 1
    now[0] = 31
    await health.status("did:web:hold.test")
    assert http.calls == 2


@pytest.mark.parametrize("http", [FakeHttp(status=503), FakeHttp(fail=True), FakeHttp(delay=1.0)])
async def test_down_slow_or_failing_holds_are_unreachable(http: FakeHttp) -> None:
    health = HoldHealth(http, endpoint, timeout=0.05)  # type: ignore[arg-type]
    status = await health.status("did:web:hold.test")
    assert status.reachable is False


async def test_a_page_does_not_wait_for_a_hold_status_that_does_not_come() -> None:
    """A hung hold's status is given up on after HOLD_WAIT and finishes behind the page (the
    e2e hung-hold test checks the page with a generous stopwatch only)."""
    from appview.web import ui

    answer = asyncio.Event()

    async def status() -> str:
        await answer.wait()  # a hold that does not answer (until the test lets it)
        return "reachable"

    assert ui.HOLD_WAIT < 2.0  # below HoldHealth's own probe timeout
    earlier = set(ui._behind)  # calls other tests left behind their pages are not this one's
    assert await ui._within(status(), "unknown", ui.HOLD_WAIT) == "unknown"
    behind = set(ui._behind) - earlier
    assert behind, "the status call goes on behind the page"
    answer.set()
    await asyncio.wait_for(asyncio.gather(*behind), 10)
    assert [t.result() for t in behind] == ["reachable"]
