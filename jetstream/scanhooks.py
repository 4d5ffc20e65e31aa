"""Turning a hold's new `io.atcr.hold.scan` records into the owner's ``scan:*`` webhooks.

A hold writes a scan record into its own repo when a scanner returns a result; the record
reaches the AppView the way every hold record does, through this consumer (Jetstream or a
hold firehose). The consumer is therefore where a finished scan is noticed, and it queues the
events on the AppView's Valkey, whose delivery workers send them (docs/webhooks.md).

Rules, each for a reason:

* Only the hold the manifest lives on may fire: the owner's manifest record must name the
  record's hold. Any hold can write any record into its own repo, so without this a
  stranger's hold could spam (or fake "clean") scan webhooks for images it never stored. The
  manifest is read from the read model, and on a miss (the model is a cache: rescans after a
  vulnerability database update mostly concern manifests nobody asked about for a while) from
  the owner's PDS, through the SSRF-guarded client, bounded by `FETCH_TIMEOUT`.
* The previous scan of each manifest (its ``scannedAt`` and counts) is kept in Valkey under
  `last_key`. A record whose ``scannedAt`` is not newer than the kept one fires nothing: a
  Jetstream rewind, a second consumer or a firehose replay delivers the same scan again.
  The compare-and-set is one script, so two consumers never both fire for one scan.
* ``scan:first`` when nothing was kept for that manifest, ``scan:changed`` when the counts
  differ from the kept ones, ``scan:all`` always (`emit_scan_event`).

Deletes of scan records fire nothing. A scan the consumer never saw (written while it was
down for longer than the stream's replay window) fires nothing either: backfill lists
records, and a listing cannot tell a new scan from one already announced.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import Counter
from collections.abc import Sequence
from typing import Any, Final
from urllib.parse import urlsplit

import valkey.asyncio as avalkey
from valkey.exceptions import ValkeyError

from appview.auth.sessions import SessionCipher
from appview.webhooks.events import WebhookEvents, emit_scan_event
from appview.webhooks.store import WebhookStore
from atcr.errors import AtcrError
from atcr.http import SafeHttpClient
from atcr.identity import IdentityResolver
from atcr.readmodel import keys
from atcr.readmodel._compat import done
from atcr.readmodel.read import read_manifest
from atcr.readmodel.records import hold_did_of
from atcr.syntax import is_did
from atcr.xrpc import XrpcClient
from jetstream.events import CommitEvent, iso_to_us

log = logging.getLogger("jetstream.scanhooks")

SCAN: Final = "io.atcr.hold.scan"
COUNTS: Final = ("critical", "high", "medium", "low", "total")
LAST_TTL: Final = 400 * 24 * 3600
"""Seconds a manifest's last scan is kept without a rescan. Holds rescan every scanned
manifest when their vulnerability database changes, so live manifests refresh it long before."""
FETCH_TIMEOUT: Final = 10.0
"""Seconds for resolving the owner and reading one manifest record from their PDS."""

_CLAIM_LUA: Final = r"""
local us = redis.call('HGET', KEYS[1], 'us')
if us and tonumber(ARGV[1]) <= tonumber(us) then return {0, ''} end
local prev = redis.call('HGET', KEYS[1], 'counts') or ''
redis.call('HSET', KEYS[1], 'us', ARGV[1], 'at', ARGV[2], 'counts', ARGV[3], 'hold', ARGV[4])
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[5]))
return {1, prev}
"""

def last_key(owner_did: str, repository: str, digest: str) -> str:
    """The previous scan of one manifest: hash ``us`` (scannedAt in unix microseconds, what is
    compared: holds may write RFC 3339 with or without fractions), ``at`` (scannedAt as written),
    ``counts`` (JSON), ``hold``."""
    return f"wh:scanlast:{owner_did}:{repository}@{digest}"


def _count(record: dict[str, Any], name: str) -> int | None:
    value = record.get(name)
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


class ScanHooks:
    """Queues ``scan:*`` events for the scan records of applied commits."""

    def __init__(self, valkey: avalkey.Valkey, *, base_url: str, http: SafeHttpClient | None = None,
                 resolver: IdentityResolver | None = None, ttl: int = LAST_TTL) -> None:
        self.valkey = valkey
        self.http = http
        self.resolver = resolver
        # Queuing reads no webhook secret, so the store needs no real cipher key.
        store = WebhookStore(valkey, SessionCipher(b"\0" * 32))
        self.events = WebhookEvents(store, registry_host=urlsplit(base_url).netloc, base_url=base_url)
        self.ttl = ttl
        self._claim = valkey.register_script(_CLAIM_LUA)

    async def handle(self, commits: Sequence[CommitEvent]) -> Counter[str]:
        """One outcome per scan upsert: queued, replayed, foreign (another hold), unknown
        (manifest not found), invalid or error. Valkey errors propagate (the consumer retries
        the batch, and the claim makes the retry fire each scan at most once)."""
        outcomes: Counter[str] = Counter()
        for commit in commits:
            if commit.collection != SCAN or commit.record is None:
                continue
            try:
                outcome = await self._one(commit.did, commit.rkey, commit.record)
            except (ValkeyError, OSError):
                raise
            except Exception:  # a bug must not stop the stream: the read model matters more
                log.exception("scan record %s/%s: no webhooks", commit.did, commit.rkey)
                outcome = "error"
            outcomes[outcome] += 1
        return outcomes

    async def _one(self, hold_did: str, rkey: str, record: dict[str, Any]) -> str:
        owner, repository, scanned_at = record.get("userDid"), record.get("repository"), record.get("scannedAt")
        digest = keys.digest_from_rkey(rkey)
        scanned_us = iso_to_us(scanned_at)
        counts = {name: _count(record, name) for name in COUNTS}
        if not (isinstance(owner, str) and is_did(owner) and isinstance(repository, str) and repository
                and isinstance(scanned_at, str) and scanned_us is not None and digest
                and None not in counts.values()):
            return "invalid"
        entry, _, _ = await read_manifest(self.valkey, owner, repository, digest)
        if entry is not None:
            manifest_hold, media_type = entry.hold_did, entry.media_type
        else:
            found = await self._from_pds(owner, repository, digest, record.get("manifest"))
            if found is None:
                log.info("scan of %s/%s %s by %s: manifest not found, no webhooks", owner, repository, digest,
                         hold_did)
                return "unknown"
            manifest_hold, media_type = found
        if manifest_hold != hold_did:
            log.warning("scan of %s/%s %s by %s ignored: the manifest lives on %s", owner, repository, digest,
                        hold_did, manifest_hold)
            return "foreign"
        fresh, prev = await self._claim(
            keys=[last_key(owner, repository, digest)],
            args=[scanned_us, scanned_at, json.dumps(counts, sort_keys=True), hold_did, self.ttl],
        )
        if not int(fresh):
            return "replayed"
        prev_s = prev.decode() if isinstance(prev, bytes) else str(prev)
        first = not prev_s
        changed = not first and json.loads(prev_s) != counts
        summary: dict[str, Any] = {**counts, "scannedAt": scanned_at}
        version = record.get("scannerVersion")
        if isinstance(version, str):
            summary["scannerVersion"] = version
        await emit_scan_event(
            self.events, owner_did=owner, repository=repository, digest=digest, summary=summary,
            first=first, changed=changed, owner_handle=await self._handle(owner), media_type=media_type,
        )
        return "queued"

    async def _from_pds(self, owner: str, repository: str, digest: str, uri: Any) -> tuple[str | None, str] | None:
        """(hold DID, media type) of the owner's manifest record, read from their PDS; None when
        it is not there or cannot be read (no webhooks then: the hold rule cannot be checked)."""
        if self.http is None or self.resolver is None:
            return None
        rkey = keys.manifest_rkey(digest)
        prefix = f"at://{owner}/{keys.MANIFEST}/"
        if isinstance(uri, str) and uri.startswith(prefix) and keys.digest_from_rkey(uri[len(prefix):]) == digest:
            rkey = uri[len(prefix):]  # the repo-suffixed rkey of a digest pushed to two repositories
        try:
            async with asyncio.timeout(FETCH_TIMEOUT):
                doc = await self.resolver.resolve_did(owner)
                if not doc.pds_endpoint:
                    return None
                got = await XrpcClient(self.http, doc.pds_endpoint).get_record(owner, keys.MANIFEST, rkey)
        except (AtcrError, TimeoutError, ValueError) as exc:
            log.info("manifest %s of %s not read from its PDS: %s", digest, owner, type(exc).__name__)
            return None
        value = got.get("value")
        if not (isinstance(value, dict) and value.get("digest") == digest and value.get("repository") == repository):
            return None
        media_type = value.get("mediaType")
        return hold_did_of(value), media_type if isinstance(media_type, str) else ""

    async def _handle(self, did: str) -> str | None:
        """The owner's handle if the AppView has it cached (push events carry it too); else the
        payload names the DID, which is never wrong."""
        raw = await done(self.valkey.get(keys.identity(did)))
        if not raw:
            return None
        try:
            handle = json.loads(raw).get("handle")
        except (ValueError, AttributeError):
            return None
        return handle if isinstance(handle, str) and handle else None


__all__ = ["SCAN", "ScanHooks", "last_key"]
