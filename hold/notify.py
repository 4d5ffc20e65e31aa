"""`io.atcr.hold.notifyManifest`: what a push and a pull change on the hold (ATCR-NOTES §4.4).

*Push* (the pushing user's service token): check the quota, write one
`io.atcr.hold.layer` record per layer new to this manifest, all in one commit, count them in
the user's usage, count one push. Pushes of one hold are serialized by a lock: the quota
check, the "which layers are recorded already" question and the commit must see each
other's results, and pushes are rare next to pulls (the hold is one process per repo).

Layer sizes come from the hold's own storage (a caller cannot make its usage smaller by
declaring small sizes), and a layer the hold does not store is refused (`LayerNotStored`):
layers that were never uploaded must not become records or usage. Layer records are
written for ``manifest.layers`` (ATCR's shape; the config blob is not a layer record, so its
few kilobytes are not counted in usage). A re-push of the
same manifest writes no second record for a layer already recorded for it.

*Pull*: count ``count`` pulls (see hold/stats.py); who may send them is decided by the
HTTP layer (hold/routes_stats.py).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from atcr.digest import Digest
from atcr.digest import InvalidDigest as DigestSyntaxError
from atcr.oci import NON_DISTRIBUTABLE_LAYERS
from atcr.readmodel.keys import digest_from_rkey, manifest_rkey
from atcr.readmodel.records import parse_at_uri
from atcr.syntax import is_record_key
from hold.crew import now_iso
from hold.errors import Forbidden, InvalidDigest, InvalidRequest, LayerNotStored, StorageUnavailable
from hold.gc.guard import GcGuard
from hold.quota import LAYER, QuotaExceeded, QuotaService
from hold.repo.repo import MAX_WRITES_PER_COMMIT, Create, Repo
from hold.stats import Stats

log = logging.getLogger("hold.notify")

DEFAULT_LAYER_MEDIA_TYPE = "application/vnd.oci.image.layer.v1.tar+gzip"
RepoProvider = Callable[[], Repo]
AfterPush = Callable[..., Awaitable[Any]]  # (user, repository, digest, summary, *, manifest_uri, tag)
SizeOf = Callable[[Digest], Any]  # async (digest) -> int | None


class UserMismatch(Forbidden):
    """A push notification for a user other than the token's issuer."""

    error, default_message = "UserMismatch", "userDid is not the caller of the service token"


class InvalidOperation(InvalidRequest):
    error, default_message = "InvalidOperation", "operation must be push or pull"


@dataclass(frozen=True)
class LayerRef:
    digest: str
    size: int
    media_type: str


@dataclass(frozen=True)
class PushResult:
    layers_created: int


def layers_of(summary: Any) -> list[LayerRef]:
    """The distinct layers of a manifest summary (already checked against the lexicon)."""
    if not isinstance(summary, dict):
        return []
    out: dict[str, LayerRef] = {}
    for d in summary.get("layers") or []:
        digest = d["digest"]
        try:
            Digest.parse(digest)
        except DigestSyntaxError as exc:
            raise InvalidDigest(f"layer {digest[:80]!r}: {exc}") from None
        out.setdefault(digest, LayerRef(digest, int(d["size"]), str(d.get("mediaType") or DEFAULT_LAYER_MEDIA_TYPE)))
    return list(out.values())


def _config_digests(summary: Any) -> list[str]:
    config = summary.get("config") if isinstance(summary, dict) else None
    digest = config.get("digest") if isinstance(config, dict) else None
    return [digest] if isinstance(digest, str) else []


def _manifest_record_key(user: str, manifest_digest: str, manifest_uri: object) -> str:
    """The rkey of the pushed manifest record: from ``manifestUri`` when given (it must be the
    user's own manifest record of that digest), else the digest hex (ATCR's AppViews)."""
    if manifest_uri is None:
        return manifest_rkey(manifest_digest)
    parsed = parse_at_uri(manifest_uri)
    if parsed is None or parsed[0] != user or parsed[1] != "io.atcr.manifest" or not is_record_key(parsed[2]):
        raise InvalidRequest("manifestUri must be an AT-URI of the user's own io.atcr.manifest record")
    named = digest_from_rkey(parsed[2])
    if named is not None and named != manifest_digest:
        raise InvalidRequest("manifestUri names another digest than manifestDigest")
    return parsed[2]


class Notifications:
    def __init__(
        self,
        repo: RepoProvider,
        quota: QuotaService,
        stats: Stats,
        size_of: SizeOf,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._repo = repo
        self._quota = quota
        self._stats = stats
        self._size_of = size_of
        self._clock = clock
        self._push_lock = asyncio.Lock()
        # Set by the app when garbage collection runs (hold/gc/guard.py): a push leases its blobs.
        self.guard: GcGuard | None = None
        self.forget_cached: Callable[[Digest], None] = lambda d: None
        # Set by the app when scanning is on (hold/scan/): queues a scan of a recorded push.
        self.after_push: AfterPush | None = None

    async def _stored_sizes(self, layers: Sequence[LayerRef]) -> list[LayerRef]:
        """The layers with their sizes as stored here. A layer this hold does not store is
        refused (LayerNotStored, 400), and one it cannot check fails the push (503): recording
        it would count usage and show a layer that was never uploaded. Non-distributable
        layers, which clients fetch from elsewhere and never push, are left out instead."""

        async def one(layer: LayerRef) -> LayerRef | None:
            try:
                size = await self._size_of(Digest.parse(layer.digest))
            except Exception as exc:  # storage trouble: nothing may be recorded unchecked
                log.warning("notifyManifest: cannot stat %s: %s", layer.digest, exc)
                raise StorageUnavailable("cannot check the manifest's layers in storage; retry") from None
            return None if size is None else LayerRef(layer.digest, int(size), layer.media_type)

        sem = asyncio.Semaphore(16)

        async def bounded(layer: LayerRef) -> LayerRef | None:
            async with sem:
                return await one(layer)

        found = await asyncio.gather(*(bounded(x) for x in layers))
        missing = [x for x, got in zip(layers, found, strict=True) if got is None]
        absent = [x for x in missing if x.media_type not in NON_DISTRIBUTABLE_LAYERS]
        if absent:
            raise LayerNotStored(
                f"{len(absent)} layer(s) are not in this hold's storage (first: {absent[0].digest}); upload them first"
            )
        return [got for got in found if got is not None]

    async def _config_stored(self, summary: Any) -> None:
        """The config blob must be stored too: a manifest naming a config that was never
        uploaded, or that the collector deleted, would be unpullable (LayerNotStored; the
        client uploads it again). With this check the hold alone proves every blob a manifest
        names, so an AppView may leave its own check to it (docs/direct-uploads.md)."""
        for digest in _config_digests(summary):
            try:
                size = await self._size_of(Digest.parse(digest))
            except DigestSyntaxError as exc:
                raise InvalidDigest(f"config {digest[:80]!r}: {exc}") from None
            except Exception as exc:
                log.warning("notifyManifest: cannot stat %s: %s", digest, exc)
                raise StorageUnavailable("cannot check the manifest's config in storage; retry") from None
            if size is None:
                raise LayerNotStored(f"the config blob {digest} is not in this hold's storage; upload it first")

    async def push(
        self, user: str, repository: str, manifest_digest: str, summary: Any, *, manifest_uri: str | None = None,
        tag: str | None = None,
    ) -> PushResult:
        result = await self._push_checked(user, repository, manifest_digest, summary, manifest_uri)
        if self.after_push is not None:
            await self.after_push(user, repository, manifest_digest, summary, manifest_uri=manifest_uri, tag=tag)
        return result

    async def _push_checked(
        self, user: str, repository: str, manifest_digest: str, summary: Any, manifest_uri: str | None
    ) -> PushResult:
        """Quota check, layer records, usage, one push counted; QuotaExceeded changes nothing.

        Layer records name the repository and the manifest record's AT-URI, so one digest
        pushed into two repositories has layer records for each (docs/records.md).
        """
        try:
            Digest.parse(manifest_digest)
        except DigestSyntaxError as exc:
            raise InvalidDigest(f"manifestDigest: {exc}") from None
        mrkey = _manifest_record_key(user, manifest_digest, manifest_uri)
        declared = layers_of(summary)
        if self.guard is None:
            return await self._push(user, repository, summary, mrkey, declared)
        # The lease comes before the storage check: a sweep either keeps these blobs, or has
        # finished deleting them and the check below refuses the push (hold/gc/guard.py).
        async with self.guard.lease([x.digest for x in declared] + _config_digests(summary)) as recent:
            for digest in recent:
                self.forget_cached(Digest.parse(digest))
            return await self._push(user, repository, summary, mrkey, declared)

    async def _push(
        self, user: str, repository: str, summary: Any, mrkey: str, declared: list[LayerRef]
    ) -> PushResult:
        layers = await self._stored_sizes(declared)
        await self._config_stored(summary)
        index = self._quota.index
        manifest_uri = f"at://{user}/io.atcr.manifest/{mrkey}"
        created = 0
        # Every blob the manifest names stops counting as reserved once the manifest is decided
        # (used, or refused): the config included, which has no layer record (docs/hold.md).
        named = [x.digest for x in layers] + _config_digests(summary)
        async with self._push_lock:
            try:
                await self._quota.check_manifest(user, [(x.digest, x.size) for x in layers])
            except QuotaExceeded:
                await self._quota.release(user, named)
                raise
            pairs = {f"{mrkey}|{x.digest}": x for x in layers}
            done = await index.recorded(user, list(pairs)) if index is not None else set()
            todo = [(p, x) for p, x in pairs.items() if p not in done]
            stamp = now_iso(self._clock())
            repo = self._repo()
            for start in range(0, len(todo), MAX_WRITES_PER_COMMIT):
                chunk = todo[start : start + MAX_WRITES_PER_COMMIT]
                writes = [
                    Create(
                        LAYER,
                        None,
                        {
                            "$type": LAYER,
                            "digest": x.digest,
                            "size": x.size,
                            "mediaType": x.media_type,
                            "manifest": manifest_uri,
                            "repository": repository,
                            "userDid": user,
                            "createdAt": stamp,
                        },
                    )
                    for _, x in chunk
                ]
                # Shielded: the commit runs to its end in the writer thread even if we are cancelled.
                await asyncio.shield(repo.apply_writes(writes))
                created += len(writes)
                if index is not None:
                    await index.commit(user, [(x.digest, x.size) for _, x in chunk], [p for p, _ in chunk])
            if index is not None and not todo and layers:
                await index.commit(user, [(x.digest, x.size) for x in layers], [])
            if index is not None:
                await index.referenced(named)  # the staged-blob sweep keeps these
            await self._quota.release(user, named)
        await self._stats.count("push", user, repository, 1)
        return PushResult(created)

    async def pull(self, owner: str, repository: str, count: int, key: str | None) -> bool:
        return await self._stats.count("pull", owner, repository, count, key=key)
