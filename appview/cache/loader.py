"""The one read path of the AppView: Valkey first, the PDS or hold on a miss.

Every reader (OCI routes, UI, token endpoint) asks the `Loader`. Each answer is read from the
model in one pipelined round trip together with the load marker of the collection it depends
on; the marker's age decides what happens next:

* fresh (younger than ``fresh_ttl``): answer from Valkey, no upstream call;
* stale (younger than ``max_stale``): answer from Valkey and start one background refresh;
  when the upstream is slow or down, the stale answer keeps being served;
* missing or older than ``max_stale``: load from the source of truth now (single-flight per
  key, across replicas), store, answer. If that fails, UpstreamUnavailable: data older than
  ``max_stale`` is never served, so staleness stays bounded.

Loads are whole collections (``listRecords`` with pagination) because tags may use any rkey and
must be found by their ``repository`` field; single manifests are fetched by rkey
(``getRecord``, rkey = digest hex) so a pull by digest does not list a large repository.
Names that do not resolve are cached negatively for ``negative_ttl``. Jetstream only warms
this model: nothing here waits for it or trusts it more than a stale entry.

**When Valkey is unreachable** the read path does not fail: identities, tags, manifests (with
their exact, digest-verified bytes) and profiles are read straight from PLC and the PDSes,
kept a few seconds in process memory and shared by concurrent callers (``direct_ttl``), and
nothing is written. After a Valkey error the loader stops asking Valkey for
``valkey_retry`` seconds, so requests do not each pay a failing connection; then it tries
again, and serves from the model as soon as Valkey answers. Index-only views (catalog,
search, stars) have no upstream and still fail.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Hashable, Sequence
from dataclasses import dataclass, replace
from enum import Enum
from typing import Any, Concatenate, ParamSpec, TypeVar
from urllib.parse import urlsplit

import valkey.asyncio as avalkey
from valkey.exceptions import ValkeyError

from atcr import errors
from atcr.http import SafeHttpClient
from atcr.identity import DidDocument, Identity, IdentityResolver
from atcr.readmodel import apply as rm_apply
from atcr.readmodel import keys, read
from atcr.readmodel import search as rm_search
from atcr.readmodel._compat import done
from atcr.readmodel.models import (
    CrewEntry,
    ManifestEntry,
    RepoStats,
    RepoSummary,
    SearchResults,
    TagEntry,
    UserEntry,
)
from atcr.readmodel.records import normalize, parse_at_uri
from atcr.syntax import is_did, is_handle
from atcr.ttlcache import TtlCache
from atcr.valkey import is_cluster, mget
from atcr.xrpc import XrpcClient

from .near import MISS, NearCache
from .singleflight import SingleFlight

log = logging.getLogger("appview.cache")

T = TypeVar("T")
P = ParamSpec("P")

EMPTY_CONFIG = "application/vnd.oci.empty.v1+json"

MAX_MANIFEST_BYTES = 4 * 1024 * 1024 + 64 * 1024
"""The lexicon's manifestBlob maxSize (4 MiB) plus slack; anything larger is refused."""


@dataclass(frozen=True)
class LoaderConfig:
    """Freshness and failure knobs; docs/cache.md gives the reason for each default."""

    fresh_ttl: float = 60.0
    identity_fresh_ttl: float = 300.0
    max_stale: float = 3600.0
    identity_max_stale: float = 86400.0
    negative_ttl: float = 30.0
    upstream_timeout: float = 5.0
    failure_backoff: float = 5.0
    lock_ttl: float = 15.0
    retention: int = rm_apply.DEFAULT_RETENTION
    bytes_ttl: int = rm_apply.DEFAULT_BYTES_TTL
    page_size: int = 100
    max_pages: int = 100
    direct_ttl: float = 5.0
    valkey_retry: float = 2.0
    near_ttl: float = 2.0
    blob_hint_ttl: float = 3600.0

    @classmethod
    def from_settings(cls, settings: object) -> LoaderConfig:
        """Pick ``cache_*`` attributes a settings object has (e.g. ``cache_fresh_ttl``); defaults otherwise."""
        values = {
            name: getattr(settings, f"cache_{name}")
            for name in cls.__dataclass_fields__
            if hasattr(settings, f"cache_{name}")
        }
        return cls(**values)


class _State(Enum):
    FRESH = "fresh"
    STALE = "stale"
    MISSING = "missing"  # never loaded, or older than max_stale


def _now_ms() -> int:
    return int(time.time() * 1000)


def _rkey_of(uri: str) -> str:
    return uri.rsplit("/", 1)[-1]


Method = Callable[Concatenate["Loader", P], Coroutine[Any, Any, T]]


def _or_direct(direct: str) -> Callable[[Method[P, T]], Method[P, T]]:
    """Serve the method from the model, or through `Loader.<direct>` (PDS/PLC only) while
    Valkey is unreachable."""

    def wrap(method: Method[P, T]) -> Method[P, T]:
        async def run(self: Loader, /, *args: P.args, **kwargs: P.kwargs) -> T:
            fallback: Callable[..., Awaitable[T]] = getattr(self, direct)
            if self.valkey_down():
                return await fallback(*args, **kwargs)
            try:
                return await method(self, *args, **kwargs)
            except ValkeyError as exc:
                self._valkey_failed(exc)
                return await fallback(*args, **kwargs)

        run.__name__, run.__qualname__, run.__doc__ = method.__name__, method.__qualname__, method.__doc__
        return run

    return wrap


def _near(
    where: Callable[..., tuple[str, Hashable]], size: Callable[[Any], int] = lambda _: 256
) -> Callable[[Method[P, T]], Method[P, T]]:
    """Answer from the process's near cache (appview/cache/near.py) when it has the answer.

    `where` maps the call's arguments to (scope, key); found answers (never None, never an
    error) are kept, stamped before the read so that a write landing during it wins.
    """

    def wrap(method: Method[P, T]) -> Method[P, T]:
        async def run(self: Loader, /, *args: P.args, **kwargs: P.kwargs) -> T:
            near = self.near
            if near is None or not near.ready:
                return await method(self, *args, **kwargs)
            try:
                scope, key = where(*args, **kwargs)
            except errors.AtcrError:
                return await method(self, *args, **kwargs)
            hit = near.get(scope, key)
            if hit is not MISS:
                return hit  # type: ignore[no-any-return]
            stamp = near.stamp(scope)
            value = await method(self, *args, **kwargs)
            if value is not None:
                near.put(scope, key, value, stamp, size(value))
            return value

        run.__name__, run.__qualname__, run.__doc__ = method.__name__, method.__qualname__, method.__doc__
        return run

    return wrap


class Loader:
    """Read-model reads with cache-miss loading, single-flight, negative caching and SWR."""

    def __init__(
        self,
        valkey: avalkey.Valkey,
        http: SafeHttpClient,
        resolver: IdentityResolver,
        *,
        config: LoaderConfig | None = None,
        **overrides: Any,
    ) -> None:
        cfg = config or LoaderConfig()
        self.config = replace(cfg, **overrides) if overrides else cfg
        self._v = valkey
        self._http = http
        self._resolver = resolver
        self._flight = SingleFlight(
            valkey,
            lock_ttl=self.config.lock_ttl,
            wait_timeout=max(self.config.lock_ttl, self.config.upstream_timeout * 3),
            failure_ttl=self.config.failure_backoff,
        )
        self._tasks: set[asyncio.Task[None]] = set()
        self._down: dict[str, float] = {}
        self._valkey_down_until = 0.0
        self._direct_cache: TtlCache[tuple[str, ...], tuple[Any]] = TtlCache(self.config.direct_ttl, 10_000)
        self._direct_flights: dict[tuple[str, ...], asyncio.Future[Any]] = {}
        # Never longer than fresh_ttl: a stale entry's background refresh starts on a read that
        # reaches the loader, and the near cache must not hold those reads off.
        near_ttl = min(self.config.near_ttl, self.config.fresh_ttl)
        if near_ttl > 0 and is_cluster(valkey):
            # Broadcast tracking is per node: coherence would need a connection per primary,
            # re-subscribed on every slot-map change, and a lost one is silent staleness. A
            # cluster has the throughput to serve these reads itself (docs/cache.md).
            log.info("near cache off: Valkey Cluster (each read goes to the slot's primary)")
            near_ttl = 0
        self.near: NearCache | None = NearCache(valkey, ttl=near_ttl) if near_ttl > 0 else None

    def start(self) -> None:
        """Start following Valkey's invalidations; until then the near cache stays off."""
        if self.near is not None:
            self.near.start()

    async def aclose(self) -> None:
        """Cancel background refreshes (at shutdown)."""
        if self.near is not None:
            await self.near.stop()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # -- freshness ---------------------------------------------------------------------------

    def _state(self, at_ms: int | None, fresh: float | None = None, max_stale: float | None = None) -> _State:
        if at_ms is None:
            return _State.MISSING
        age = (_now_ms() - at_ms) / 1000
        if age < (self.config.fresh_ttl if fresh is None else fresh):
            return _State.FRESH
        if age < (self.config.max_stale if max_stale is None else max_stale):
            return _State.STALE
        return _State.MISSING

    def _background(self, flight: str, load: Callable[[], Awaitable[None]]) -> None:
        """One refresh per key at a time; its failure is logged (once per upstream), never raised."""
        if self._flight.busy(flight):
            return

        async def run() -> None:
            try:
                await self._flight.do(flight, load, wait=False)
            except errors.AtcrError as exc:
                log.debug("background refresh of %s failed: %s", flight, exc)
            except Exception:
                log.exception("background refresh of %s crashed", flight)

        task = asyncio.get_running_loop().create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _server_ms(self) -> int:
        """Valkey's clock: listings are ordered against entries written with the same clock."""
        sec, usec = await self._v.time()
        return int(sec) * 1000 + int(usec) // 1000

    # -- upstream calls ----------------------------------------------------------------------

    async def _call(self, endpoint: str, call: Coroutine[Any, Any, T]) -> T:
        """One upstream request, bounded by ``upstream_timeout``; failures logged once per host."""
        host = urlsplit(endpoint).netloc or endpoint
        try:
            async with asyncio.timeout(self.config.upstream_timeout):
                result = await call
        except TimeoutError:
            exc: errors.AtcrError = errors.UpstreamUnavailable(
                f"{host} did not answer within {self.config.upstream_timeout:g}s"
            )
            self._failed(host, exc)
            raise exc from None
        except errors.NetworkError as err:
            exc = err if isinstance(err, errors.UpstreamUnavailable) else errors.UpstreamUnavailable(str(err))
            self._failed(host, exc)
            raise exc from err
        except errors.XrpcError as err:
            if err.status >= 500:
                exc = errors.UpstreamUnavailable(f"{host}: {err}")
                self._failed(host, exc)
                raise exc from err
            raise
        if host in self._down:
            del self._down[host]
            log.warning("upstream %s answers again", host)
        return result

    def _failed(self, host: str, exc: Exception) -> None:
        if host not in self._down:
            self._down[host] = time.monotonic()
            log.warning("upstream %s unavailable (%s); serving cached data while it lasts", host, exc)

    async def _repo_rev(self, client: XrpcClient, did: str) -> str | None:
        """The repo rev before a fetch: what the fetched records are at least as new as."""
        try:
            out = await self._call(client.base_url, client.query("com.atproto.sync.getRepoStatus", {"did": did}))
        except errors.XrpcError:
            return None  # not implemented, or repo unknown: order by time only
        rev = out.get("rev") if isinstance(out, dict) else None
        return rev if isinstance(rev, str) and rev else None

    # -- identity ----------------------------------------------------------------------------

    @staticmethod
    def _normalize_identifier(identifier: str) -> str:
        ident = identifier.strip()
        if ident.startswith("at://"):
            ident = ident[5:]
        if ident.startswith("did:"):
            if not is_did(ident):
                raise errors.InvalidIdentifier(f"{identifier!r} is not a valid DID")
            return ident
        ident = ident.lower()
        if not is_handle(ident, allow_reserved_tlds=True):
            raise errors.InvalidIdentifier(f"{identifier!r} is neither a handle nor a DID")
        return ident

    @staticmethod
    def _negative(ident: str, kind: str) -> errors.IdentityError:
        if kind == "handle":
            return errors.HandleNotFound(f"handle {ident} does not resolve")
        if kind == "did":
            return errors.DidNotFound(f"{ident} not found")
        return errors.InvalidDidDocument(f"{ident}: no usable DID document")

    async def _read_identity(self, ident: str) -> tuple[dict[str, Any] | None, str | None]:
        pipe = self._v.pipeline(transaction=False)
        pipe.get(keys.identity(ident))
        pipe.get(keys.negative_identity(ident))
        raw, neg = await pipe.execute()
        return (json.loads(raw) if raw else None), (neg.decode() if neg else None)

    @_or_direct("_direct_identity")
    @_near(lambda identifier: ("id:" + Loader._normalize_identifier(identifier), "identity"))
    async def identity(self, identifier: str) -> Identity:
        """Handle or DID -> verified identity. Unknown names are remembered for ``negative_ttl``."""
        ident = self._normalize_identifier(identifier)
        entry, neg = await self._read_identity(ident)
        if neg is not None:
            raise self._negative(ident, neg)
        state = self._state(
            entry["at"] if entry else None, self.config.identity_fresh_ttl, self.config.identity_max_stale
        )
        flight = f"id:{ident}"
        if entry is not None and state is not _State.MISSING:
            if state is _State.STALE:
                self._background(flight, lambda: self._load_identity(ident))
            return self._identity_of(entry)
        await self._flight.do(flight, lambda: self._load_identity(ident))
        entry, neg = await self._read_identity(ident)
        if neg is not None:
            raise self._negative(ident, neg)
        if entry is None:
            raise errors.UpstreamUnavailable(f"identity {ident} could not be loaded")
        return self._identity_of(entry)

    @staticmethod
    def _identity_of(entry: dict[str, Any]) -> Identity:
        return Identity(
            did=entry["did"], handle=entry.get("handle"), pds_endpoint=entry["pds"], signing_key=entry.get("key")
        )

    @_or_direct("_direct_did_document")
    async def did_document(self, did: str) -> dict[str, Any]:
        """The cached raw DID document (loaded with the identity)."""
        await self.identity(did)
        entry, _ = await self._read_identity(did)
        return dict(entry.get("doc") or {}) if entry else {}

    async def _load_identity(self, ident: str) -> None:
        r = self._resolver
        endpoint = "identity"
        try:
            if ident.startswith("did:"):
                r.invalidate(ident)
                doc: DidDocument = await self._call(endpoint, r.resolve_did(ident))
                handle = None
                if doc.handle:
                    r.invalidate(ident, doc.handle)
                    try:
                        if await self._call(endpoint, r.resolve_handle(doc.handle)) == doc.did:
                            handle = doc.handle
                    except (errors.IdentityError, errors.UpstreamUnavailable):
                        handle = None
            else:
                r.invalidate("", ident)
                did = await self._call(endpoint, r.resolve_handle(ident))
                r.invalidate(did)
                doc = await self._call(endpoint, r.resolve_did(did))
                handle = ident if doc.handle == ident else None
        except errors.HandleNotFound:
            await self._v.set(keys.negative_identity(ident), "handle", px=int(self.config.negative_ttl * 1000))
            return
        except errors.DidNotFound:
            await self._v.set(keys.negative_identity(ident), "did", px=int(self.config.negative_ttl * 1000))
            return
        except (errors.InvalidDidDocument, errors.InvalidIdentifier):
            await self._v.set(keys.negative_identity(ident), "invalid", px=int(self.config.negative_ttl * 1000))
            return
        pds = doc.pds_endpoint or doc.service("atcr_hold")
        if not pds:
            await self._v.set(keys.negative_identity(ident), "invalid", px=int(self.config.negative_ttl * 1000))
            return
        entry = {
            "did": doc.did,
            "handle": handle,
            "pds": pds,
            "key": doc.signing_key,
            "doc": dict(doc.raw),
            "at": _now_ms(),
        }
        raw = json.dumps(entry, separators=(",", ":"))
        ttl = int(self.config.identity_max_stale) + 60
        pipe = self._v.pipeline(transaction=False)
        pipe.set(keys.identity(doc.did), raw, ex=ttl)
        pipe.delete(keys.negative_identity(doc.did))
        if handle:
            pipe.set(keys.identity(handle), raw, ex=ttl)
            pipe.delete(keys.negative_identity(handle))
        if ident not in (doc.did, handle):
            pipe.set(keys.identity(ident), raw, ex=ttl)
        await pipe.execute()
        await rm_search.index_user(self._v, doc.did, handle)

    async def _client(self, did: str) -> XrpcClient:
        ident = await self.identity(did)
        return XrpcClient(self._http, ident.pds_endpoint)

    # -- loads -------------------------------------------------------------------------------

    async def _fetch_collection(self, did: str, collection: str) -> None:
        client = await self._client(did)
        started = await self._server_ms()
        rev = await self._repo_rev(client, did)
        batch: list[tuple[str, dict[str, Any], str | None]] = []
        cursor: str | None = None
        complete = False
        for _ in range(self.config.max_pages):
            try:
                records, cursor = await self._call(
                    client.base_url,
                    client.list_records(did, collection, limit=self.config.page_size, cursor=cursor),
                )
            except errors.XrpcError as err:  # RepoNotFound, RepoDeactivated...: nothing to show
                log.info("listRecords %s %s: %s; treating as empty", did, collection, err)
                records, cursor = [], None
            for rec in records:
                value = rec.get("value")
                uri = rec.get("uri")
                if isinstance(value, dict) and isinstance(uri, str):
                    batch.append((_rkey_of(uri), value, rec.get("cid")))
            # A short page is the last one: saves the empty round trip the PDS would answer next
            # (it returns a cursor with every non-empty page).
            if not cursor or len(records) < self.config.page_size:
                complete = True
                break
        if not complete:
            log.warning(
                "%s %s has more than %d pages; the model holds the first ones", did, collection, self.config.max_pages
            )
        await rm_apply.apply_snapshot(
            self._v,
            did,
            collection,
            batch,
            rev=rev,
            started_ms=started,
            complete=complete,
            mark=True,
            retention=self.config.retention,
        )

    async def _fetch_record(self, did: str, collection: str, rkey: str, *, complete: bool = False) -> None:
        """getRecord one rkey; `complete` for one-record collections (``self``): it then marks them loaded."""
        await self._fetch_records(did, collection, (rkey,), complete=complete)

    async def _fetch_records(
        self,
        did: str,
        collection: str,
        rkeys: tuple[str, ...],
        *,
        complete: bool = False,
        enough: Callable[[dict[str, Any]], bool] = lambda _: True,
    ) -> None:
        """getRecord the rkeys in turn until one holds a record that is `enough`; apply what
        was found, and which are gone."""
        client = await self._client(did)
        started = await self._server_ms()
        rev = await self._repo_rev(client, did)
        found: list[tuple[str, dict[str, Any], str | None]] = []
        absent: list[str] = []
        for rkey in rkeys:
            try:
                out = await self._call(client.base_url, client.get_record(did, collection, rkey))
            except errors.XrpcError as err:
                if err.status >= 500:
                    raise
                out = {}
            value = out.get("value")
            if not isinstance(value, dict):
                absent.append(rkey)
                continue
            found.append((rkey, value, out.get("cid")))
            if enough(value):
                break
        await rm_apply.apply_snapshot(
            self._v,
            did,
            collection,
            found,
            rev=rev,
            started_ms=started,
            complete=complete,
            absent=absent,
            retention=self.config.retention,
        )

    async def _ensure_collection(self, did: str, collection: str, at: int | None) -> bool:
        """Make the collection usable: returns True when a synchronous load ran."""
        state = self._state(at)
        flight = f"c:{did}:{collection}"
        if state is _State.FRESH:
            return False
        if state is _State.STALE:
            self._background(flight, lambda: self._fetch_collection(did, collection))
            return False
        await self._flight.do(flight, lambda: self._list_unless_listed_since(did, collection, at))
        return True

    async def _list_unless_listed_since(self, did: str, collection: str, seen: int | None) -> None:
        """List the collection, unless a listing started after the caller read marker `seen`:
        a caller that looked just before another replica's listing ended, and reached the
        flight once it had, reads that listing instead of making a second one."""
        marker = await done(self._v.hget(keys.sync(did), read.marker_field(collection)))
        now = int(marker) if marker is not None else None
        if now is not None and (seen is None or now > seen):
            return
        await self._fetch_collection(did, collection)

    async def _reload_collection(self, did: str, collection: str, at: int | None) -> bool:
        """Synchronous reload after a miss on a not-fresh collection. False when the upstream
        failed but the stale answer may still be served."""
        try:
            await self._flight.do(
                f"c:{did}:{collection}", lambda: self._list_unless_listed_since(did, collection, at)
            )
        except errors.UpstreamUnavailable:
            if self._state(at) is _State.STALE:
                return False
            raise
        return True

    # -- tags --------------------------------------------------------------------------------

    @_or_direct("_direct_tag_entries")
    async def tag_entries(self, did: str, repository: str) -> dict[str, TagEntry]:
        """All tags of a repository with their records (dates, rkeys), for the UI."""
        entries, at = await read.read_tags(self._v, did, repository)
        if await self._ensure_collection(did, keys.TAG, at):
            entries, at = await read.read_tags(self._v, did, repository)
        return entries

    async def tags(self, did: str, repository: str) -> dict[str, str]:
        """tag -> digest for every tag of the repository (empty when it has none)."""
        return {t: e.digest for t, e in (await self.tag_entries(did, repository)).items()}

    @_or_direct("_direct_tag")
    @_near(lambda did, repository, tag: (did, ("tag", repository, tag)))
    async def tag(self, did: str, repository: str, tag: str) -> TagEntry | None:
        entries, at = await read.read_tags(self._v, did, repository)
        state = self._state(at)
        found = entries.get(tag)
        if found is not None and state is not _State.MISSING:
            if state is _State.STALE:
                self._background(f"c:{did}:{keys.TAG}", lambda: self._fetch_collection(did, keys.TAG))
            return found
        if found is not None and at is None and await self._entry_recent(did, keys.TAG, found.rkey):
            # Written by Jetstream or write-through, collection never listed: serve, list behind.
            self._background(f"c:{did}:{keys.TAG}", lambda: self._fetch_collection(did, keys.TAG))
            return found
        if found is None and state is _State.FRESH:
            return None
        if not await self._reload_collection(did, keys.TAG, at):
            return found
        entries, _ = await read.read_tags(self._v, did, repository)
        return entries.get(tag)

    async def _entry_recent(self, did: str, collection: str, rkey: str) -> bool:
        raw = await done(self._v.hget(keys.records(did, collection), rkey))
        if not raw:
            return False
        applied = json.loads(raw).get("t")
        return self._state(int(applied) if applied else None) is not _State.MISSING

    # -- manifests ---------------------------------------------------------------------------

    @_or_direct("_direct_manifest")
    @_near(lambda did, repository, digest: (did, ("manifest", repository, digest)), lambda e: len(e.raw) + 512)
    async def manifest(self, did: str, repository: str, digest: str) -> ManifestEntry | None:
        """The manifest with its exact bytes, or None when the repository has no such manifest.

        Raises DigestMismatch when the PDS serves bytes that do not hash to `digest`,
        ManifestBytesUnavailable when the record has no ``manifestBlob``.
        """
        entry, at, applied = await read.read_manifest(self._v, did, repository, digest)
        # The two rkeys this AppView may write for (repository, digest) (docs/records.md);
        # other writers' rkeys are found by the listing below.
        rkeys = (keys.manifest_rkey(digest), keys.repo_manifest_rkey(repository, digest))
        record_flight = f"r:{did}:{keys.MANIFEST}:{rkeys[1]}"

        def fetch() -> Awaitable[None]:
            # The suffix key only when the hex key does not hold the digest for this repository.
            return self._fetch_records(
                did, keys.MANIFEST, rkeys,
                enough=lambda v: v.get("repository") == repository and v.get("digest") == digest,
            )

        if entry is not None:
            state = self._state(max(at or 0, applied or 0) or None)
            if state is _State.MISSING:
                await self._flight.do(record_flight, fetch)
                entry, at, applied = await read.read_manifest(self._v, did, repository, digest)
                if entry is None:
                    return await self._manifest_from_listing(did, repository, digest, at)
            elif state is _State.STALE:
                self._background(record_flight, fetch)
            return await self._with_bytes(entry)
        if self._state(at) is _State.FRESH:
            return None
        try:
            await self._flight.do(record_flight, fetch)
        except errors.UpstreamUnavailable:
            if self._state(at) is _State.STALE:
                return None
            raise
        entry, at, _ = await read.read_manifest(self._v, did, repository, digest)
        if entry is not None:
            return await self._with_bytes(entry)
        return await self._manifest_from_listing(did, repository, digest, at)

    async def _manifest_from_listing(
        self, did: str, repository: str, digest: str, at: int | None
    ) -> ManifestEntry | None:
        """Records of other implementations may use any rkey: a listing settles it."""
        if self._state(at) is _State.FRESH or not await self._reload_collection(did, keys.MANIFEST, at):
            return None
        entry, _, _ = await read.read_manifest(self._v, did, repository, digest)
        return await self._with_bytes(entry) if entry is not None else None

    @_or_direct("_direct_manifest_record")
    async def manifest_record(self, did: str, rkey: str, digest: str) -> ManifestEntry | None:
        """The manifest record at `rkey` of `did`, with bytes, if it holds `digest`, whatever
        repository it names (a tag's ``manifest`` AT-URI points at it; see docs/records.md)."""
        ptr, known, applied, at = await read.read_manifest_pointer(self._v, did, rkey)
        if not known or self._state(max(at or 0, applied or 0) or None) is not _State.FRESH:
            with contextlib.suppress(errors.UpstreamUnavailable):
                await self._flight.do(
                    f"r:{did}:{keys.MANIFEST}:{rkey}", lambda: self._fetch_record(did, keys.MANIFEST, rkey)
                )
                ptr, _, _, _ = await read.read_manifest_pointer(self._v, did, rkey)
        if ptr is None or ptr[1] != digest:
            return None
        return await self.manifest(did, ptr[0], digest)

    async def manifest_in(
        self, did: str, repository: str, digest: str, tag: TagEntry | None = None
    ) -> ManifestEntry | None:
        """The manifest `repository` holds under `digest`, with bytes, or None.

        A repository holds a digest when a manifest record names both, or, to heal records an
        older scheme overwrote (docs/records.md), when one of its tags (`tag`, else any) points
        at a manifest record of the same account that holds the digest for another repository:
        same owner, same bytes, so no isolation is crossed. Such an entry is returned under
        `repository`.
        """
        entry = await self.manifest(did, repository, digest)
        if entry is not None:
            return entry
        if tag is None or tag.digest != digest:
            tag = next(
                (t for _, t in sorted((await self.tag_entries(did, repository)).items()) if t.digest == digest), None
            )
        if tag is None:
            return None
        hex_rkey = keys.manifest_rkey(digest)
        parsed = parse_at_uri(tag.manifest_uri)
        rkey = parsed[2] if parsed and parsed[0] == did and parsed[1] == keys.MANIFEST else hex_rkey
        shared = await self.manifest_record(did, rkey, digest)
        if shared is None and rkey != hex_rkey:
            shared = await self.manifest_record(did, hex_rkey, digest)
        return replace(shared, repository=repository) if shared is not None else None

    async def peek(
        self, did: str, repository: str, digest: str, tag: str | None
    ) -> tuple[ManifestEntry | None, TagEntry | None]:
        """What the model holds now for (repository, digest) and the tag, without loading or
        refreshing anything: a push's hint of what it may not need to write (it checks at the
        PDS before relying on it). (None, None) when Valkey cannot say."""
        try:
            if tag is None:
                entry, _, _ = await read.read_manifest(self._v, did, repository, digest)
                return entry, None
            (entry, _, _), (tags, _) = await asyncio.gather(
                read.read_manifest(self._v, did, repository, digest), read.read_tags(self._v, did, repository)
            )
        except ValkeyError:
            return None, None
        return entry, tags.get(tag)

    async def manifest_rkeys(self, did: str, repository: str, digest: str) -> list[str]:
        """Every rkey known to hold `digest` in `repository` (for deletes; empty when unknown)."""
        try:
            return await read.read_manifest_rkeys(self._v, did, repository, digest)
        except ValkeyError:
            return []

    async def manifest_slots(self, did: str, rkeys: list[str]) -> dict[str, tuple[str, str] | None] | None:
        """(repository, digest) of the record the model shows at each manifest rkey, None where
        it shows none; None overall when it cannot say (Valkey down, or the account's manifests
        were never listed: they are then listed in the background, so the account's next push
        can rely on them). A push's guess, which create-only writes keep honest."""
        try:
            found, listed = await read.read_manifest_slots(self._v, did, rkeys)
        except ValkeyError:
            return None
        if not listed:
            flight = f"c:{did}:{keys.MANIFEST}"
            self._background(flight, functools.partial(self._fetch_collection, did, keys.MANIFEST))
            return None
        return found

    async def blob_hint(self, did: str, digest: str) -> tuple[str, int] | None:
        """(hold DID, size) of a blob a manifest of the account named when it was last applied
        from the PDS or written, no longer than `blob_hint_ttl` ago (`keys.blob_hints`); None
        when none did, or Valkey cannot say."""
        if self.config.blob_hint_ttl <= 0:
            return None
        try:
            raw: Any = await done(self._v.hget(keys.blob_hints(did), digest))  # bytes: no decoding client
        except ValkeyError:
            return None
        hint = rm_apply.parse_blob_hint(raw)
        if hint is None or _now_ms() - hint[2] > self.config.blob_hint_ttl * 1000:
            return None
        return hint[0], hint[1]

    async def forget_blob_hints(self, did: str, digests: Sequence[str]) -> None:
        """Drop hints the hold contradicted (a blob it no longer stores)."""
        if digests:
            with contextlib.suppress(ValkeyError):
                await done(self._v.hdel(keys.blob_hints(did), *digests))

    async def _with_bytes(self, entry: ManifestEntry) -> ManifestEntry:
        if entry.raw:
            return entry
        flight = f"mb:{entry.did}:{entry.digest}"
        await self._flight.do(flight, lambda: self._fetch_bytes(entry))
        raw = await read.read_manifest_bytes(self._v, entry.did, entry.digest)
        if raw is None:
            raise errors.UpstreamUnavailable(f"manifest bytes of {entry.digest} could not be loaded")
        return replace(entry, raw=raw, size=len(raw))

    async def _fetch_bytes(self, entry: ManifestEntry) -> None:
        # Looked at again inside the flight: a caller that read the entry before another
        # flight stored the bytes, and reached the flight after it ended, must not fetch again.
        if await read.read_manifest_bytes(self._v, entry.did, entry.digest) is not None:
            return
        if not entry.blob_cid:
            raise errors.ManifestBytesUnavailable(f"{entry.did} {entry.digest}: record has no manifestBlob")
        client = await self._client(entry.did)
        try:
            raw = await self._call(
                client.base_url, client.get_blob(entry.did, entry.blob_cid, max_bytes=MAX_MANIFEST_BYTES)
            )
        except errors.ResponseTooLarge as err:
            raise errors.ManifestBytesUnavailable(f"{entry.digest}: manifest blob too large") from err
        except errors.XrpcError as err:
            raise errors.ManifestBytesUnavailable(f"{entry.digest}: blob not served ({err})") from err
        await rm_apply.store_manifest_bytes(self._v, entry.did, entry.digest, raw, ttl=self.config.bytes_ttl)

    @_or_direct("_direct_manifests")
    async def manifests(self, did: str, repository: str) -> list[ManifestEntry]:
        """Every manifest of the repository, newest first, without bytes (``raw == b""``;
        `size` is exact). Ask `manifest` for the bytes of one."""
        entries, at = await read.read_manifests(self._v, did, repository)
        if await self._ensure_collection(did, keys.MANIFEST, at):
            entries, at = await read.read_manifests(self._v, did, repository)
        return entries

    @_or_direct("_direct_referrers")
    async def referrers(self, did: str, repository: str, digest: str) -> list[ManifestEntry]:
        """Manifests whose ``subject`` is `digest` (without bytes, like `manifests`).

        `artifact_type` is the record's ``artifactType`` if any, else the one in the manifest
        bytes (fetched and cached here when the config is the OCI empty descriptor, as for
        artifacts pushed with ``oras attach``), else the config media type.
        """
        at = await self._marker(did, keys.MANIFEST)
        await self._ensure_collection(did, keys.MANIFEST, at)
        found = await read.read_referrers(self._v, did, repository, digest)
        out = []
        for entry in found:
            item = entry
            if entry.artifact_type in (None, EMPTY_CONFIG) and "artifactType" not in entry.record:
                # Records from older writers lack artifactType; the manifest bytes may say it.
                # Without them the referrer is still listed, with its config media type.
                with contextlib.suppress(errors.AtcrError, ValueError):
                    full = await self._with_bytes(entry)
                    declared = json.loads(full.raw).get("artifactType")
                    if isinstance(declared, str) and declared:
                        item = replace(entry, artifact_type=declared)
            out.append(item)
        return out

    async def _marker(self, did: str, collection: str) -> int | None:
        raw = await done(self._v.hget(keys.sync(did), read.marker_field(collection)))
        return int(raw) if raw else None

    @_or_direct("_direct_repositories")
    async def repositories(self, did: str) -> list[str]:
        """Repository names of a user, sorted."""
        names, at = await read.read_repositories(self._v, did)
        if await self._ensure_collection(did, keys.MANIFEST, at):
            names, at = await read.read_repositories(self._v, did)
        return names

    @_or_direct("_direct_emptied")
    async def emptied(self, did: str, repository: str) -> bool:
        """Whether a repository existed and had its last manifest and tag deleted (docs/cache.md)."""
        return await read.read_emptied(self._v, did, repository)

    async def _direct_emptied(self, did: str, repository: str) -> bool:
        return False  # only the model remembers deletions; without it the repository is unknown

    # -- profiles, pages, stars --------------------------------------------------------------

    async def _single(self, did: str, name: str, collection: str) -> dict[str, Any] | None:
        payload, at = await read.read_single(self._v, did, name, collection)
        state = self._state(at)
        flight = f"c:{did}:{collection}"
        if state is _State.FRESH:
            return payload
        if state is _State.STALE:
            self._background(flight, lambda: self._fetch_record(did, collection, "self", complete=True))
            return payload
        if payload is not None and await self._entry_recent(did, collection, "self"):
            self._background(flight, lambda: self._fetch_record(did, collection, "self", complete=True))
            return payload
        await self._flight.do(flight, lambda: self._fetch_record(did, collection, "self", complete=True))
        payload, _ = await read.read_single(self._v, did, name, collection)
        return payload

    @_or_direct("_direct_profile")
    async def profile(self, did: str) -> dict[str, Any] | None:
        """The ``io.atcr.sailor.profile`` record value, or None when the user has none."""
        payload = await self._single(did, "profile", keys.PROFILE)
        return dict(payload["record"]) if payload else None

    async def user(self, did: str) -> UserEntry:
        """Identity plus display name and avatar from the user's Bluesky profile record.

        The profile is decoration: when it cannot be loaded the user is still returned."""
        ident = await self.identity(did)
        try:
            bsky = await self._single(ident.did, "bsky", keys.BSKY_PROFILE)
        except errors.UpstreamUnavailable:
            bsky = None
        return UserEntry(
            did=ident.did,
            handle=ident.handle,
            pds_endpoint=ident.pds_endpoint,
            display_name=(bsky or {}).get("display_name"),
            avatar_cid=(bsky or {}).get("avatar_cid"),
            avatar_mime=(bsky or {}).get("avatar_mime"),
        )

    async def repo_page(self, did: str, repository: str) -> dict[str, Any] | None:
        """The ``io.atcr.repo.page`` record value (description, avatar) of a repository."""
        payload, at = await read.read_page(self._v, did, repository)
        if await self._ensure_collection(did, keys.REPO_PAGE, at):
            payload, at = await read.read_page(self._v, did, repository)
        return dict(payload["record"]) if payload else None

    async def starred(self, did: str) -> list[str]:
        """``<did>/<repository>`` of every repository the user starred."""
        subjects, at = await read.read_starred(self._v, did)
        if await self._ensure_collection(did, keys.STAR, at):
            subjects, at = await read.read_starred(self._v, did)
        return subjects

    async def star_count(self, did: str, repository: str) -> int:
        """Stars live in every starrer's PDS: counted from what the model has seen (Jetstream,
        write-through, loaded star lists); no upstream can answer it on demand."""
        return int(await done(self._v.scard(keys.stars(did, repository))))

    # -- holds -------------------------------------------------------------------------------

    async def captain(self, hold_did: str) -> dict[str, Any] | None:
        """The hold's ``io.atcr.hold.captain`` record value (owner, public, allowAllCrew ...)."""
        payload = await self._single(hold_did, "captain", keys.CAPTAIN)
        return dict(payload["record"]) if payload else None

    async def crew(self, hold_did: str) -> dict[str, CrewEntry]:
        members, at = await read.read_crew(self._v, hold_did)
        if await self._ensure_collection(hold_did, keys.CREW, at):
            members, at = await read.read_crew(self._v, hold_did)
        return members

    async def crew_member(self, hold_did: str, member: str, *, refresh: bool = False) -> CrewEntry | None:
        """One member's crew record. `refresh` re-lists the crew now (after requestCrew)."""
        entry, at = await read.read_crew_member(self._v, hold_did, member)
        state = self._state(at)
        if not refresh and (state is _State.FRESH or (entry is not None and state is _State.STALE)):
            if state is _State.STALE:
                self._background(f"c:{hold_did}:{keys.CREW}", lambda: self._fetch_collection(hold_did, keys.CREW))
            return entry
        if not await self._reload_collection(hold_did, keys.CREW, None if refresh else at):
            return entry
        entry, _ = await read.read_crew_member(self._v, hold_did, member)
        return entry

    async def stats(self, did: str, repository: str) -> RepoStats:
        """Pull/push counts summed over the holds that store the repository's manifests.

        Best effort: a hold that does not answer is left out (and retried after ``fresh_ttl``)."""
        stats, at = await read.read_stats(self._v, did, repository)
        state = self._state(at)
        flight = f"s:{did}:{repository}"
        if state is _State.FRESH:
            return stats
        if state is _State.STALE:
            self._background(flight, lambda: self._fetch_stats(did, repository))
            return stats
        try:
            await self._flight.do(flight, lambda: self._fetch_stats(did, repository))
        except errors.UpstreamUnavailable:
            return stats
        stats, _ = await read.read_stats(self._v, did, repository)
        return stats

    async def _fetch_stats(self, did: str, repository: str) -> None:
        holds = sorted({m.hold_did for m in await self.manifests(did, repository) if m.hold_did})
        started = await self._server_ms()
        rkey = keys.stats_rkey(did, repository)

        async def one(hold: str) -> None:
            try:
                await self._fetch_record(hold, keys.STATS, rkey)
            except errors.AtcrError as exc:
                log.debug("stats of %s/%s from %s: %s", did, repository, hold, exc)

        await asyncio.gather(*(one(h) for h in holds))
        await done(self._v.hset(keys.sync(did), f"stats:{repository}|at", str(started)))

    # -- index-only views (Valkey, no upstream) ----------------------------------------------

    async def catalog(self, last: str | None, n: int) -> list[str]:
        """Repositories known to the model, as ``<handle>/<repo>`` (``<did>/<repo>`` when the
        handle is unknown), ordered by DID then name. `last` may be either form.

        From Valkey only: the network has no list of every repository; the model knows what
        Jetstream, backfill and loads have shown it."""
        if n <= 0:
            return []
        start = b"-"
        if last:
            owner, _, repo = last.partition("/")
            if not owner.startswith("did:"):
                entry, _ = await self._read_identity(owner.lower())
                owner = entry["did"] if entry else owner
            start = b"(" + f"{owner}/{repo}".encode()
        members = await read.read_catalog(self._v, start, n)
        dids = sorted({m.split("/", 1)[0] for m in members})
        handles: dict[str, str] = {}
        if dids:
            rows = await mget(self._v, [keys.identity(d) for d in dids])
            for did, raw in zip(dids, rows, strict=True):
                handle = json.loads(raw).get("handle") if raw else None
                if handle:
                    handles[did] = handle
        out = []
        for m in members:
            did, _, repo = m.partition("/")
            out.append(f"{handles.get(did, did)}/{repo}")
        return out

    async def recent(self, n: int = 20) -> list[str]:
        """``<did>/<repo>`` most recently pushed or tagged, newest first."""
        return await read.read_top(self._v, keys.RECENT, n)

    async def popular(self, n: int = 20, *, by: str = "stars") -> list[str]:
        """``<did>/<repo>`` by star count (``by="stars"``) or pulls summed over holds (``"pulls"``)."""
        return await read.read_top(self._v, keys.POPULAR_PULLS if by == "pulls" else keys.POPULAR_STARS, n)

    async def search(self, query: str, n: int = 25) -> SearchResults:
        return await rm_search.search(self._v, query, n)

    async def summaries(self, refs: list[str]) -> list[RepoSummary]:
        """Cards for ``<did>/<repo>`` refs in one round trip (home, search and user pages)."""
        pairs = []
        for ref in refs:
            did, _, repo = ref.partition("/")
            if did and repo:
                pairs.append((did, repo))
        return await read.read_summaries(self._v, pairs)

    # -- while Valkey is unreachable: straight from PLC and the PDSes -------------------------

    def valkey_down(self) -> bool:
        """True while reads skip Valkey after a recent failure (``valkey_retry`` seconds)."""
        return time.monotonic() < self._valkey_down_until

    def _valkey_failed(self, exc: Exception) -> None:
        if not self.valkey_down():
            log.warning(
                "valkey unavailable (%s); serving reads from PDSes for %gs before trying again",
                type(exc).__name__, self.config.valkey_retry,
            )
        self._valkey_down_until = time.monotonic() + self.config.valkey_retry

    async def _memo(self, key: tuple[str, ...], load: Callable[[], Awaitable[T]]) -> T:
        """A few seconds of process memory, and one upstream load however many callers ask."""
        hit = self._direct_cache.get(key)
        if hit is not None:
            value: T = hit[0]
            return value
        running = self._direct_flights.get(key)
        if running is not None:
            shared: T = await asyncio.shield(running)
            return shared
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._direct_flights[key] = future
        try:
            result = await load()
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: waiters re-raise it, nobody else must
            raise
        finally:
            self._direct_flights.pop(key, None)
        future.set_result(result)
        self._direct_cache.put(key, (result,))
        return result

    async def _resolve_entry(self, ident: str) -> dict[str, Any]:
        """Resolve a handle or DID like `_load_identity`, without storing anything."""
        r = self._resolver
        endpoint = "identity"
        if ident.startswith("did:"):
            doc: DidDocument = await self._call(endpoint, r.resolve_did(ident))
            handle = None
            if doc.handle:
                try:
                    if await self._call(endpoint, r.resolve_handle(doc.handle)) == doc.did:
                        handle = doc.handle
                except (errors.IdentityError, errors.UpstreamUnavailable):
                    handle = None
        else:
            did = await self._call(endpoint, r.resolve_handle(ident))
            doc = await self._call(endpoint, r.resolve_did(did))
            handle = ident if doc.handle == ident else None
        pds = doc.pds_endpoint or doc.service("atcr_hold")
        if not pds:
            raise errors.InvalidDidDocument(f"{ident}: no PDS endpoint")
        return {"did": doc.did, "handle": handle, "pds": pds, "key": doc.signing_key, "doc": dict(doc.raw)}

    async def _direct_identity(self, identifier: str) -> Identity:
        ident = self._normalize_identifier(identifier)
        entry = await self._memo(("id", ident), lambda: self._resolve_entry(ident))
        return self._identity_of(entry)

    async def _direct_did_document(self, did: str) -> dict[str, Any]:
        ident = self._normalize_identifier(did)
        entry = await self._memo(("id", ident), lambda: self._resolve_entry(ident))
        return dict(entry.get("doc") or {})

    async def _direct_records(self, did: str, collection: str) -> list[tuple[str, dict[str, Any], str | None]]:
        async def load() -> list[tuple[str, dict[str, Any], str | None]]:
            client = XrpcClient(self._http, (await self._direct_identity(did)).pds_endpoint)
            out: list[tuple[str, dict[str, Any], str | None]] = []
            cursor: str | None = None
            for _ in range(self.config.max_pages):
                records, cursor = await self._call(
                    client.base_url, client.list_records(did, collection, limit=self.config.page_size, cursor=cursor)
                )
                for rec in records:
                    value, uri = rec.get("value"), rec.get("uri")
                    if isinstance(value, dict) and isinstance(uri, str):
                        out.append((_rkey_of(uri), value, rec.get("cid")))
                if not cursor or len(records) < self.config.page_size:
                    break
            return out

        return await self._memo(("list", did, collection), load)

    @staticmethod
    def _manifest_of(did: str, rkey: str, record: dict[str, Any], cid: str | None) -> ManifestEntry | None:
        found = normalize(did, keys.MANIFEST, rkey, record, cid)
        return read.manifest_from_json(found.payload) if found is not None else None

    async def _direct_all_manifests(self, did: str) -> list[ManifestEntry]:
        listed = await self._direct_records(did, keys.MANIFEST)
        return [e for e in (self._manifest_of(did, rkey, rec, cid) for rkey, rec, cid in listed) if e is not None]

    async def _direct_manifests(self, did: str, repository: str) -> list[ManifestEntry]:
        out = [e for e in await self._direct_all_manifests(did) if e.repository == repository]
        return sorted(out, key=lambda e: e.created_at, reverse=True)

    async def _direct_referrers(self, did: str, repository: str, digest: str) -> list[ManifestEntry]:
        return [e for e in await self._direct_manifests(did, repository) if e.subject_digest == digest]

    async def _direct_repositories(self, did: str) -> list[str]:
        return sorted({e.repository for e in await self._direct_all_manifests(did)})

    async def _direct_tag_entries(self, did: str, repository: str) -> dict[str, TagEntry]:
        tags: list[TagEntry] = []
        by_rkey: dict[str, str] | None = None
        for rkey, rec, cid in await self._direct_records(did, keys.TAG):
            found = normalize(did, keys.TAG, rkey, rec, cid)
            if found is None or found.ptr.get("repo") != repository:
                continue
            p = json.loads(found.payload)
            digest = p.get("digest") or ""
            if not digest and p.get("manifest_rkey"):
                if by_rkey is None:  # a tag naming its manifest by a non-digest rkey
                    by_rkey = {}
                    for mrkey, mrec, mcid in await self._direct_records(did, keys.MANIFEST):
                        entry = self._manifest_of(did, mrkey, mrec, mcid)
                        if entry is not None:
                            by_rkey[mrkey] = entry.digest
                digest = by_rkey.get(p["manifest_rkey"], "")
            tags.append(TagEntry(
                did=did, repository=repository, tag=p["tag"], digest=digest, rkey=p.get("rkey") or rkey,
                cid=p.get("cid"), updated_at=p.get("updated_at") or "", manifest_uri=p.get("manifest_uri"),
            ))
        return read.pick_tags(tags)

    async def _direct_tag(self, did: str, repository: str, tag: str) -> TagEntry | None:
        return (await self._direct_tag_entries(did, repository)).get(tag)

    async def _direct_record(self, did: str, rkey: str) -> ManifestEntry | None:
        async def record() -> ManifestEntry | None:
            client = XrpcClient(self._http, (await self._direct_identity(did)).pds_endpoint)
            try:
                out = await self._call(client.base_url, client.get_record(did, keys.MANIFEST, rkey))
            except errors.RecordNotFound:
                return None
            value = out.get("value")
            return self._manifest_of(did, rkey, value, out.get("cid")) if isinstance(value, dict) else None

        return await self._memo(("rec", did, rkey), record)

    async def _direct_manifest_record(self, did: str, rkey: str, digest: str) -> ManifestEntry | None:
        entry = await self._direct_record(did, rkey)
        if entry is None or entry.digest != digest:
            return None
        return await self._direct_manifest(did, entry.repository, digest)

    async def _direct_manifest(self, did: str, repository: str, digest: str) -> ManifestEntry | None:
        candidates = await asyncio.gather(
            self._direct_record(did, keys.manifest_rkey(digest)),
            self._direct_record(did, keys.repo_manifest_rkey(repository, digest)),
        )
        entry = next((e for e in candidates if e and e.repository == repository and e.digest == digest), None)
        if entry is None:  # another AppView's rkey: the listing settles it
            entry = next((e for e in await self._direct_manifests(did, repository) if e.digest == digest), None)
        if entry is None or entry.repository != repository:
            return None
        if not entry.blob_cid:
            raise errors.ManifestBytesUnavailable(f"{did} {digest}: record has no manifestBlob")
        blob_cid = entry.blob_cid

        async def raw_bytes() -> bytes:
            client = XrpcClient(self._http, (await self._direct_identity(did)).pds_endpoint)
            try:
                raw = await self._call(client.base_url, client.get_blob(did, blob_cid, max_bytes=MAX_MANIFEST_BYTES))
            except errors.ResponseTooLarge as err:
                raise errors.ManifestBytesUnavailable(f"{digest}: manifest blob too large") from err
            except errors.XrpcError as err:
                raise errors.ManifestBytesUnavailable(f"{digest}: blob not served ({err})") from err
            rm_apply.verify_digest(digest, raw)
            return raw

        raw = await self._memo(("mb", did, digest), raw_bytes)
        return replace(entry, raw=raw, size=len(raw))

    async def _direct_profile(self, did: str) -> dict[str, Any] | None:
        async def load() -> dict[str, Any] | None:
            client = XrpcClient(self._http, (await self._direct_identity(did)).pds_endpoint)
            try:
                out = await self._call(client.base_url, client.get_record(did, keys.PROFILE, "self"))
            except errors.RecordNotFound:
                return None
            value = out.get("value")
            return dict(value) if isinstance(value, dict) else None

        return await self._memo(("profile", did), load)

    # -- write-through -----------------------------------------------------------------------

    async def wrote_record(
        self,
        did: str,
        collection: str,
        rkey: str,
        record: dict[str, Any],
        *,
        cid: str | None,
        raw_manifest: bytes | None = None,
        rev: str | None = None,
    ) -> None:
        """Apply a record this AppView just wrote, so its author sees it on the next request.

        Pass the ``commit.rev`` of the putRecord answer as `rev` when there is one: it orders
        this write against Jetstream replays and concurrent listings exactly.
        """
        await rm_apply.apply_record(
            self._v,
            did,
            collection,
            rkey,
            record,
            cid=cid,
            rev=rev,
            raw_manifest=raw_manifest,
            retention=self.config.retention,
            bytes_ttl=self.config.bytes_ttl,
        )
        if self.near is not None:
            self.near.invalidate(did)

    async def deleted_record(self, did: str, collection: str, rkey: str, *, rev: str | None = None) -> None:
        await rm_apply.apply_record(
            self._v, did, collection, rkey, None, cid=None, rev=rev, retention=self.config.retention
        )
        if self.near is not None:
            self.near.invalidate(did)
