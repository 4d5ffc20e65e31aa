"""Backfill: rebuild what the stream cannot replay, from the source of truth.

Runs at first start, when the saved cursor is older than the stream's lookback, and after a
detected gap. It asks a relay which repositories have our collections
(`com.atproto.sync.listReposByCollection`; a PDS without it is enumerated with `listRepos`),
then lists each repository's records at its own PDS (`listRecords`), plus every hold we know
of at the hold's own endpoint. Each collection is applied as a *complete* listing, so records
deleted while we were away disappear too, and the listing's rev keeps replayed stream events
from regressing it.

Repositories are listed with bounded concurrency. Progress lives in Valkey, so a run that
is interrupted (restart, crash) resumes where it stopped instead of starting over.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import valkey.asyncio as avalkey

from atcr import errors
from atcr.http import SafeHttpClient
from atcr.identity import IdentityResolver
from atcr.readmodel import keys
from atcr.readmodel._compat import done
from atcr.syntax import is_did
from atcr.xrpc import XrpcClient
from jetstream.errors import BackfillError
from jetstream.events import wants_collection
from jetstream.metrics import Metrics
from jetstream.processor import Processor

log = logging.getLogger("jetstream.backfill")

STATE_KEY: Final = "js:backfill"
DONE_KEY: Final = "js:backfill:done"
HOLDS_KEY: Final = "js:holds"
MAX_PAGES: Final = 1000
PAGE_SIZE: Final = 100
Listed = tuple[str, dict[str, Any], str | None]
"""(rkey, record, cid) as listRecords returned it."""

UNSUPPORTED: Final = frozenset(("MethodNotImplemented", "XRPCNotSupported", "NotFound", "AuthMissing"))


def _unsupported(status: int, error: str) -> bool:
    """Whether an XRPC error means "this server does not offer that method"."""
    return error in UNSUPPORTED or status in (404, 501)


class _Unsupported(BackfillError):
    """The relay does not offer a listing method (internal: selects the fallback)."""


class HoldRegistry:
    """Hold DIDs named by records we applied; every backfill lists each of them."""

    def __init__(self, v: avalkey.Valkey, configured: Iterable[str] = ()) -> None:
        self._v = v
        self._configured = tuple(configured)
        self._seen: set[str] = set()

    async def add(self, dids: Iterable[str]) -> list[str]:
        """Remember hold DIDs; returns those no one had recorded before (to be listed now)."""
        candidates = sorted({d for d in dids if d not in self._seen and is_did(d)})
        if not candidates:
            return []
        pipe = self._v.pipeline(transaction=False)
        for did in candidates:
            pipe.sadd(HOLDS_KEY, did)
        added = await pipe.execute()
        self._seen.update(candidates)
        return [d for d, n in zip(candidates, added, strict=True) if int(n)]

    async def all(self) -> list[str]:
        stored = await done(self._v.smembers(HOLDS_KEY))
        found = {s.decode() if isinstance(s, bytes) else str(s) for s in stored}
        return sorted(found | set(self._configured))


@dataclass
class BackfillStatus:
    """What `/status` shows of backfills."""

    running: bool = False
    reason: str | None = None
    started_at: float | None = None
    finished_at: float | None = None
    repos_total: int = 0
    repos_done: int = 0
    repos_failed: int = 0
    records: int = 0
    resumed: bool = False
    last_error: str | None = None
    runs: int = 0

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class _Target:
    did: str
    hold: bool = False
    only_if_present: bool = False  # enumerated without a collection filter: skip empty repos


@dataclass
class RepoResult:
    records: int = 0
    collections: dict[str, int] = field(default_factory=dict)


class Backfill:
    """Lists repositories and applies them through the processor."""

    def __init__(
        self,
        processor: Processor,
        v: avalkey.Valkey,
        http: SafeHttpClient,
        resolver: IdentityResolver,
        *,
        relay: str,
        collections: Sequence[str],
        holds: HoldRegistry,
        concurrency: int = 8,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.processor = processor
        self._v = v
        self._http = http
        self._resolver = resolver
        self.relay = relay.rstrip("/")
        self.user_collections = [c for c in keys.USER_COLLECTIONS if wants_collection(c, tuple(collections))]
        self.hold_collections = [c for c in keys.HOLD_COLLECTIONS if wants_collection(c, tuple(collections))]
        self.holds = holds
        self.concurrency = concurrency
        self.metrics = metrics or Metrics()
        self.status = BackfillStatus()
        self._clock = clock
        self._lock = asyncio.Lock()

    # -- state in Valkey ------------------------------------------------------------------------

    async def interrupted(self) -> bool:
        """Whether a previous run stopped before it finished (the consumer resumes it)."""
        state: Any = await done(self._v.hget(STATE_KEY, "state"))
        return state in (b"running", "running")

    async def last_finished(self) -> float | None:
        raw = await done(self._v.hget(STATE_KEY, "finished"))
        return float(raw) if raw else None

    # -- a whole run -----------------------------------------------------------------------------

    async def run(self, reason: str) -> BackfillStatus:
        """One full backfill; resumes an interrupted one. Raises BackfillError when the relay
        cannot be enumerated (the caller retries later); single repositories that fail are
        counted and retried by the next run."""
        async with self._lock:
            resumed = await self.interrupted()
            if not resumed:
                await done(self._v.delete(DONE_KEY))
                state = {"state": "running", "reason": reason, "started": str(self._clock())}
                await done(self._v.hset(STATE_KEY, mapping=state))
            st = self.status = BackfillStatus(
                running=True, reason=reason, started_at=self._clock(), resumed=resumed, runs=self.status.runs
            )
            self.metrics.backfill_running.set(1)
            self.metrics.backfill_repos_total.set(0)
            self.metrics.backfill_repos_done.set(0)
            log.info("backfill %s (%s)", "resumed" if resumed else "started", reason)
            try:
                targets = await self._targets()
                finished = {
                    m.decode() if isinstance(m, bytes) else str(m) for m in await done(self._v.smembers(DONE_KEY))
                }
                st.repos_total = len(targets)
                st.repos_done = sum(1 for t in targets if t.did in finished)
                self.metrics.backfill_repos_total.set(st.repos_total)
                self.metrics.backfill_repos_done.set(st.repos_done)
                await self._run_targets([t for t in targets if t.did not in finished], st)
                await done(self._v.hset(STATE_KEY, mapping={"state": "done", "finished": str(self._clock())}))
                self.metrics.backfill_runs.labels(outcome="complete" if not st.repos_failed else "partial").inc()
                log.info(
                    "backfill finished: %d repositories, %d records, %d failed",
                    st.repos_done,
                    st.records,
                    st.repos_failed,
                )
                return st
            except BackfillError as exc:
                st.last_error = str(exc)
                self.metrics.backfill_runs.labels(outcome="failed").inc()
                raise
            finally:
                st.running = False
                st.finished_at = self._clock()
                st.runs += 1
                self.metrics.backfill_running.set(0)

    async def _run_targets(self, targets: list[_Target], st: BackfillStatus) -> None:
        queue: asyncio.Queue[_Target] = asyncio.Queue()
        for target in targets:
            queue.put_nowait(target)

        async def worker() -> None:
            while True:
                try:
                    target = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                try:
                    result = await self.sync_repo(target.did, hold=target.hold, only_if_present=target.only_if_present)
                except BackfillError as exc:
                    st.repos_failed += 1
                    st.last_error = str(exc)
                    self.metrics.backfill_failures.inc()
                    log.info("backfill: %s skipped: %s", target.did, exc)
                    continue
                st.records += result.records
                st.repos_done += 1
                self.metrics.backfill_repos_done.set(st.repos_done)
                await done(self._v.sadd(DONE_KEY, target.did))

        await asyncio.gather(*(worker() for _ in range(max(1, min(self.concurrency, len(targets))))))

    async def _targets(self) -> list[_Target]:
        users: dict[str, _Target] = {}
        unfiltered = False
        for collection in self.user_collections:
            try:
                async for did in self._repos_with(collection):
                    users.setdefault(did, _Target(did))
            except _Unsupported:
                unfiltered = True
                break
        if unfiltered:
            log.info("backfill: %s has no listReposByCollection; enumerating every repository", self.relay)
            async for did in self._all_repos():
                users.setdefault(did, _Target(did, only_if_present=True))
        holds = set(await self.holds.all())
        if self.hold_collections and not unfiltered:
            # A relay without listReposByCollection cannot name holds; the known ones still count.
            with contextlib.suppress(_Unsupported):
                async for did in self._repos_with(keys.CAPTAIN):
                    holds.add(did)
        out = [t for d, t in sorted(users.items()) if d not in holds]
        out += [_Target(d, hold=True) for d in sorted(holds)]
        return out

    async def _relay_pages(self, nsid: str, params: dict[str, Any]) -> AsyncIterator[list[dict[str, Any]]]:
        client = XrpcClient(self._http, self.relay)
        cursor: str | None = None
        for _ in range(100_000):
            try:
                body = await client.query(nsid, {**params, "cursor": cursor})
            except errors.XrpcError as exc:
                if _unsupported(exc.status, exc.error):
                    raise _Unsupported(nsid) from None
                raise BackfillError(f"{self.relay}: {nsid}: {exc}") from None
            except errors.NetworkError as exc:
                raise BackfillError(f"{self.relay}: {nsid}: {exc}") from None
            repos = body.get("repos") if isinstance(body, dict) else None
            if not isinstance(repos, list):
                raise BackfillError(f"{self.relay}: {nsid}: answer without 'repos'")
            yield [r for r in repos if isinstance(r, dict)]
            cursor = body.get("cursor")
            if not repos or not isinstance(cursor, str) or not cursor:
                return

    async def _repos_with(self, collection: str) -> AsyncIterator[str]:
        async for page in self._relay_pages(
            "com.atproto.sync.listReposByCollection", {"collection": collection, "limit": 1000}
        ):
            for repo in page:
                did = repo.get("did")
                if isinstance(did, str) and is_did(did):
                    yield did

    async def _all_repos(self) -> AsyncIterator[str]:
        async for page in self._relay_pages("com.atproto.sync.listRepos", {"limit": 1000}):
            for repo in page:
                did = repo.get("did")
                if isinstance(did, str) and is_did(did) and repo.get("active", True) is not False:
                    yield did

    # -- one repository --------------------------------------------------------------------------

    async def _endpoint(self, did: str, hold: bool) -> str:
        try:
            doc = await self._resolver.resolve_did(did)
        except errors.AtcrError as exc:
            raise BackfillError(f"{did}: cannot resolve: {exc}") from None
        endpoint = doc.pds_endpoint or (doc.service("#atcr_hold") if hold else None)
        if not endpoint:
            raise BackfillError(f"{did}: DID document names no PDS")
        return endpoint

    async def sync_repo(self, did: str, *, hold: bool = False, only_if_present: bool = False) -> RepoResult:
        """List one repository's collections and apply each as a complete listing."""
        endpoint = await self._endpoint(did, hold)
        client = XrpcClient(self._http, endpoint)
        collections = self.hold_collections if hold else self.user_collections
        started_ms = await self.processor.model.now_ms()
        rev: str | None = None
        try:
            head = await client.query("com.atproto.sync.getLatestCommit", {"did": did})
            rev = head.get("rev") if isinstance(head, dict) and isinstance(head.get("rev"), str) else None
        except errors.XrpcError as exc:
            if exc.error in ("RepoDeactivated", "RepoTakendown", "RepoSuspended", "RepoNotFound"):
                raise BackfillError(f"{did}: {exc.error}") from None
        except errors.NetworkError as exc:
            raise BackfillError(f"{did}: {endpoint}: {exc}") from None
        listings: list[tuple[str, list[Listed]]] = []
        for collection in collections:
            listings.append((collection, await self._list(client, did, collection)))
        result = RepoResult()
        if only_if_present and not any(records for _, records in listings):
            return result
        holds: set[str] = set()
        for collection, records in listings:
            _, named = await self.processor.apply_listing(did, collection, records, rev=rev, started_ms=started_ms)
            holds |= named
            result.collections[collection] = len(records)
            result.records += len(records)
        self.metrics.backfill_records.inc(result.records)
        if holds:
            await self.holds.add(holds)
        return result

    async def _list(self, client: XrpcClient, did: str, collection: str) -> list[Listed]:
        out: list[Listed] = []
        cursor: str | None = None
        for _ in range(MAX_PAGES):
            try:
                page, cursor = await client.list_records(did, collection, limit=PAGE_SIZE, cursor=cursor)
            except errors.XrpcError as exc:
                raise BackfillError(f"{did}: listRecords {collection}: {exc}") from None
            except errors.NetworkError as exc:
                raise BackfillError(f"{did}: listRecords {collection}: {exc}") from None
            for rec in page:
                uri, value = rec.get("uri"), rec.get("value")
                if not isinstance(uri, str) or not isinstance(value, dict):
                    continue
                cid = rec.get("cid")
                out.append((uri.rsplit("/", 1)[-1], value, cid if isinstance(cid, str) else None))
            if not cursor:
                return out
        raise BackfillError(f"{did}: {collection} has more than {MAX_PAGES * PAGE_SIZE} records")
