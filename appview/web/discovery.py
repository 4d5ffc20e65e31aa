"""Re-seed the cross-user indexes (recent, popular, search) after the cache was emptied.

Per-user pages refill themselves: the loader knows whose PDS to ask. The home and search
pages read indexes that span every user, and no single upstream answers "which repositories
exist". When those indexes are gone (a new deployment, `FLUSHALL`, an eviction), this finds the
accounts again from the same sources ATCR's backfill uses, and loads each account's
collections through the loader, which rebuilds the indexes as a side effect:

* the holds this AppView knows (its default hold): owners named by their ``io.atcr.hold.stats``
  records and members of their crew;
* a relay, when one is configured: ``com.atproto.sync.listReposByCollection`` for manifests and
  stars (accounts that star but never push count for popularity), or ``listRepos`` where the
  relay lacks it (a lone PDS does).

Accounts whose listing carries a repo ``rev`` (``listRepos`` does) are loaded newest commit
first: a page that stops waiting before a large network is covered then shows the latest
pushes, which are what the home page ranks first, not whichever DIDs sort first.

The Jetstream consumer normally keeps these indexes warm; this is the fallback that makes a
cold AppView show the same home page. It runs once per cluster at a time (a Valkey lock), is
bounded in accounts, concurrency and time, and a page waits for it at most ``wait`` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Sequence
from typing import Final

import valkey.asyncio as avalkey

from appview.cache.loader import Loader
from atcr import errors
from atcr.http import SafeHttpClient
from atcr.readmodel import keys
from atcr.syntax import is_did
from atcr.xrpc import XrpcClient

log = logging.getLogger("appview.web.discovery")

SEEDED_KEY: Final = "av:ui:seeded"
LOCK_KEY: Final = "av:ui:seeding"
SEEDED_TTL: Final = 6 * 3600
LOCK_TTL: Final = 120
UNSUPPORTED: Final = frozenset({"MethodNotImplemented", "XRPCNotSupported", "NotFound", "AuthMissing"})


class Discovery:
    def __init__(
        self,
        valkey: avalkey.Valkey,
        http: SafeHttpClient,
        loader: Loader,
        *,
        holds: Sequence[str],
        relay: str | None = None,
        max_accounts: int = 2000,
        concurrency: int = 8,
        budget: float = 60.0,
        wait: float = 8.0,
    ) -> None:
        self._v = valkey
        self._http = http
        self._loader = loader
        self._holds = tuple(h for h in holds if h)
        self._relay = relay.rstrip("/") if relay else None
        self._max = max_accounts
        self._concurrency = concurrency
        self._budget = budget
        self._wait = wait
        self._task: asyncio.Task[int] | None = None

    async def ensure(self) -> None:
        """Return at once while the indexes are seeded; otherwise start (or join) a seeding and
        wait for it at most ``wait`` seconds, so the first page after a flush is complete."""
        if await self._v.exists(SEEDED_KEY):
            return
        if self._task is None or self._task.done():
            if not await self._v.set(LOCK_KEY, "1", nx=True, ex=LOCK_TTL):
                await self._await_other()
                return
            self._task = asyncio.get_running_loop().create_task(self._run(), name="ui-discovery")
        try:
            await asyncio.wait_for(asyncio.shield(self._task), self._wait)
        except TimeoutError:
            log.info("discovery still running after %.0fs; serving what is indexed so far", self._wait)
        except Exception as exc:  # a failed seeding must not fail the page; _run logged it
            log.debug("discovery failed: %s", type(exc).__name__)

    async def _await_other(self) -> None:
        """Another replica seeds: poll its marker for the same bounded time."""
        deadline = time.monotonic() + self._wait
        while time.monotonic() < deadline:
            if await self._v.exists(SEEDED_KEY) or not await self._v.exists(LOCK_KEY):
                return
            await asyncio.sleep(0.1)

    async def aclose(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> int:
        started = time.monotonic()
        try:
            async with asyncio.timeout(self._budget):
                dids = await self._accounts()
                sem = asyncio.Semaphore(self._concurrency)

                async def one(did: str) -> None:
                    async with sem:
                        await self._load(did)

                await asyncio.gather(*(one(d) for d in dids))
            await self._v.set(SEEDED_KEY, str(int(time.time())), ex=SEEDED_TTL)
            log.info("discovery indexed %d accounts in %.1fs", len(dids), time.monotonic() - started)
            return len(dids)
        except TimeoutError:
            log.warning("discovery hit its %.0fs budget; the rest fills in as pages are viewed", self._budget)
            await self._v.set(SEEDED_KEY, str(int(time.time())), ex=SEEDED_TTL)
            return 0
        except Exception:
            log.exception("discovery failed")
            # Try again in a minute, not on every page view in between.
            with contextlib.suppress(Exception):
                await self._v.set(SEEDED_KEY, "failed", ex=60)
            raise
        finally:
            await self._v.delete(LOCK_KEY)

    async def _accounts(self) -> list[str]:
        """Every account found, newest commit first where a listing said (then by DID)."""
        found: dict[str, str] = {}
        for hold in self._holds:
            async for did, rev in self._hold_accounts(hold):
                found[did] = max(found.get(did, ""), rev)
        if self._relay:
            async for did, rev in self._relay_accounts():
                found[did] = max(found.get(did, ""), rev)
                if len(found) >= self._max:
                    break
        by_did = sorted(found)
        by_did.sort(key=found.__getitem__, reverse=True)  # stable: equal revs stay in DID order
        return by_did[: self._max]

    async def _hold_accounts(self, hold: str) -> AsyncIterator[tuple[str, str]]:
        try:
            ident = await self._loader.identity(hold)
            client = XrpcClient(self._http, ident.pds_endpoint)
            async for rec in client.iter_records(hold, keys.STATS, max_pages=50):
                owner = (rec.get("value") or {}).get("ownerDid")
                if isinstance(owner, str) and is_did(owner):
                    yield owner, ""
            for member in await self._loader.crew(hold):
                yield member, ""
        except errors.AtcrError as exc:
            log.info("discovery: hold %s not listed: %s", hold, exc)

    async def _relay_accounts(self) -> AsyncIterator[tuple[str, str]]:
        assert self._relay is not None
        client = XrpcClient(self._http, self._relay)
        for collection in (keys.MANIFEST, keys.STAR):
            try:
                async for found in self._pages(client, "com.atproto.sync.listReposByCollection",
                                               {"collection": collection}):
                    yield found
            except errors.XrpcError as exc:
                if exc.error not in UNSUPPORTED and exc.status not in (401, 404, 501):
                    log.info("discovery: relay refused listReposByCollection: %s", exc)
                    return
                async for found in self._pages(client, "com.atproto.sync.listRepos", {}):
                    yield found
                return
            except errors.NetworkError as exc:
                log.info("discovery: relay unavailable: %s", exc)
                return

    async def _pages(
        self, client: XrpcClient, nsid: str, params: dict[str, str]
    ) -> AsyncIterator[tuple[str, str]]:
        """(DID, rev) of each active account listed; rev is "" where the listing has none."""
        cursor: str | None = None
        seen = 0
        for _ in range(100):
            out = await client.query(nsid, {**params, "limit": 500, "cursor": cursor})
            repos = out.get("repos") or [] if isinstance(out, dict) else []
            for r in repos:
                did = r.get("did") if isinstance(r, dict) else None
                if isinstance(did, str) and is_did(did) and r.get("active", True) is not False:
                    seen += 1
                    rev = r.get("rev")
                    yield did, rev if isinstance(rev, str) else ""
            cursor = out.get("cursor") if isinstance(out, dict) else None
            if not cursor or not repos or seen >= self._max:
                return

    async def _load(self, did: str) -> None:
        """Load what the indexes are built from; each load updates them as a side effect."""
        try:
            repos = await self._loader.repositories(did)
            await self._loader.starred(did)
            if not repos:
                await self._loader.identity(did)  # users are searchable by handle
                return
            await self._loader.tags(did, repos[0])  # tag times order "recent"
            await self._loader.repo_page(did, repos[0])  # descriptions are searchable
            for repo in repos[:100]:
                await self._loader.stats(did, repo)  # popularity by pulls
        except errors.AtcrError as exc:
            log.debug("discovery: %s skipped: %s", did, exc)


__all__ = ["Discovery"]
