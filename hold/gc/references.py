"""What the users' PDSes still reference: their `io.atcr.manifest` records, listed per user.

A hold's layer records say which user's manifest used a blob, but users can delete manifests
at their PDS without the hold hearing of it. So before anything is deleted, each user's
manifest records are listed at the user's PDS (one `listRecords` page per 100 manifests, not
one call per reference). The answer for a user is one of:

* ``ok``: the records were listed; a layer record whose manifest is not among them is stale,
  and every digest a listed manifest names (config, layers, subject) is referenced;
* ``gone``: the PDS says the repo does not exist (a deleted account): nothing is referenced;
* ``unknown``: the DID did not resolve, the PDS did not answer or answered an error: every
  blob of that user is kept.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from atcr.errors import XrpcError
from atcr.http import SafeHttpClient
from atcr.identity import IdentityResolver
from atcr.xrpc import XrpcClient

log = logging.getLogger("hold.gc")

MANIFEST = "io.atcr.manifest"
GONE_ERRORS = frozenset({"RepoNotFound"})
PAGE = 100
MAX_PAGES = 100_000

PdsEndpoint = Callable[[str], Awaitable[str]]


@dataclass
class UserReferences:
    did: str
    status: str  # ok | gone | unknown
    manifests: set[str] = field(default_factory=set)  # rkeys present at the PDS
    digests: set[str] = field(default_factory=set)  # every digest those manifests name
    reason: str = ""


def digests_of(value: Any) -> set[str]:
    """The blob digests one manifest record names (config, layers, subject)."""
    out: set[str] = set()
    if not isinstance(value, dict):
        return out
    for key in ("config", "subject"):
        ref = value.get(key)
        if isinstance(ref, dict) and isinstance(ref.get("digest"), str):
            out.add(ref["digest"])
    for ref in value.get("layers") or []:
        if isinstance(ref, dict) and isinstance(ref.get("digest"), str):
            out.add(ref["digest"])
    return out


class ReferenceChecker:
    """Lists users' manifest records at their PDSes; counts the calls it makes."""

    def __init__(
        self,
        http: SafeHttpClient,
        resolver: IdentityResolver,
        *,
        pds_endpoint: PdsEndpoint | None = None,
        concurrency: int = 8,
    ) -> None:
        self._http = http
        self._resolver = resolver
        self._endpoint = pds_endpoint or self._resolve_endpoint
        self._sem = asyncio.Semaphore(concurrency)
        self.calls = 0

    async def _resolve_endpoint(self, did: str) -> str:
        doc = await self._resolver.resolve_did(did)
        if not doc.pds_endpoint:
            raise LookupError(f"{did} names no PDS")
        return doc.pds_endpoint

    async def check(self, did: str) -> UserReferences:
        async with self._sem:
            try:
                endpoint = await self._endpoint(did)
            except Exception as exc:
                return UserReferences(did, "unknown", reason=f"DID did not resolve: {type(exc).__name__}")
            client = XrpcClient(self._http, endpoint)
            refs = UserReferences(did, "ok")
            cursor: str | None = None
            try:
                for _ in range(MAX_PAGES):
                    self.calls += 1
                    records, cursor = await client.list_records(did, MANIFEST, limit=PAGE, cursor=cursor)
                    for rec in records:
                        uri = str(rec.get("uri") or "")
                        refs.manifests.add(uri.rsplit("/", 1)[-1])
                        refs.digests |= digests_of(rec.get("value"))
                    if not cursor or len(records) < PAGE:  # a short page is the last
                        return refs
                return UserReferences(did, "unknown", reason="too many manifest pages")
            except XrpcError as exc:
                if exc.error in GONE_ERRORS:
                    return UserReferences(did, "gone", reason=exc.error)
                return UserReferences(did, "unknown", reason=f"PDS answered {exc.status} {exc.error}")
            except Exception as exc:
                log.info("gc: %s's PDS could not be asked: %s", did, exc)
                return UserReferences(did, "unknown", reason=f"PDS unreachable: {type(exc).__name__}")

    async def check_all(self, dids: set[str]) -> dict[str, UserReferences]:
        results = await asyncio.gather(*(self.check(d) for d in sorted(dids)))
        return {r.did: r for r in results}
