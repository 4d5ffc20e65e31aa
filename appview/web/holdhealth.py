"""Is a hold reachable? A cheap probe, remembered for half a minute.

A repository page names the hold its layers live on and warns when pulls would fail because
that hold is down (ATCR's "unreachable hold" badge). Probing on every page view would tie page
speed to the slowest hold, so each answer is kept ``ttl`` seconds per process and a probe
waits at most ``timeout`` seconds. Concurrent views of a page share one probe.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from atcr.errors import AtcrError
from atcr.http import SafeHttpClient

log = logging.getLogger("appview.web.holdhealth")

Endpoint = Callable[[str], Awaitable[str]]


@dataclass(frozen=True)
class HoldStatus:
    did: str
    reachable: bool
    endpoint: str | None
    checked_at: float

    @property
    def host(self) -> str:
        """What a page calls the hold: its endpoint's host (``hold.example.com``), not its DID."""
        if self.endpoint:
            host = urlsplit(self.endpoint).netloc
            if host:
                return host
        if self.did.startswith("did:web:"):
            return unquote(self.did.removeprefix("did:web:").split(":", 1)[0])
        return self.did


class HoldHealth:
    def __init__(
        self,
        http: SafeHttpClient,
        endpoint: Endpoint,
        *,
        ttl: float = 30.0,
        down_ttl: float = 5.0,
        timeout: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._http = http
        self._endpoint = endpoint
        self._ttl = ttl
        self._down_ttl = min(down_ttl, ttl)  # an unreachable hold is probed again sooner: recovery shows fast
        self._timeout = timeout
        self._clock = clock
        self._cache: dict[str, HoldStatus] = {}
        self._inflight: dict[str, asyncio.Future[HoldStatus]] = {}

    def cached(self, hold_did: str) -> HoldStatus | None:
        hit = self._cache.get(hold_did)
        if hit is None:
            return None
        ttl = self._ttl if hit.reachable else self._down_ttl
        return hit if self._clock() - hit.checked_at < ttl else None

    async def status(self, hold_did: str) -> HoldStatus:
        hit = self.cached(hold_did)
        if hit is not None:
            return hit
        running = self._inflight.get(hold_did)
        if running is not None:
            return await asyncio.shield(running)
        future: asyncio.Future[HoldStatus] = asyncio.get_running_loop().create_future()
        self._inflight[hold_did] = future
        try:
            result = await self._probe(hold_did)
            future.set_result(result)
            self._cache[hold_did] = result
            if len(self._cache) > 10_000:
                self._cache.clear()  # a bound, not an LRU: holds are few
            return result
        finally:
            self._inflight.pop(hold_did, None)
            if not future.done():
                future.cancel()

    async def _probe(self, hold_did: str) -> HoldStatus:
        endpoint: str | None = None
        try:
            async with asyncio.timeout(self._timeout):
                endpoint = await self._endpoint(hold_did)
                resp = await self._http.request(
                    "GET", f"{endpoint}/xrpc/_health", timeout=self._timeout, max_bytes=64 * 1024,
                    follow_redirects=False,
                )
            ok = resp.status_code == 200
        except (TimeoutError, AtcrError) as exc:
            log.info("hold %s unreachable: %s", hold_did, type(exc).__name__)
            ok = False
        return HoldStatus(hold_did, ok, endpoint, self._clock())


__all__ = ["HoldHealth", "HoldStatus"]
