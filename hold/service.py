"""The hold's blob services, built once from settings: identity, storage, uploads, auth.

`HoldServices.build` is synchronous (it runs in `create_app`, before any event loop); the
lifespan then runs the sweeper that removes abandoned uploads. With several replicas, a
Valkey lock lets one of them sweep per interval.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from atcr.digest import Digest
from atcr.keys import load_or_create_secret
from atcr.runtime import Runtime
from atcr.serviceauth import MemoryReplayCache, ReplayCache, ResolverSigningKeys, ServiceAuthVerifier, ValkeyReplayCache
from atcr.tasks import cancel_and_wait
from hold.auth import Captain, CaptainSource, CrewDirectory, HoldAuth, NoCrew, StaticCaptain
from hold.identity import HOLD_SERVICE_ID, HoldIdentity
from hold.settings import HoldSettings
from hold.signed_urls import UrlSigner
from hold.storage.base import BlobStore
from hold.storage.filesystem import FilesystemBlobStore
from hold.storage.s3 import S3BlobStore, S3Options
from hold.uploads import UploadLimits, UploadManager

log = logging.getLogger("hold")

SWEEP_LOCK = "hold:sweep-lock"


class BlobCatalog:
    """Blob existence and size, with a short in-process memory.

    Blobs are immutable and content addressed, so a digest seen recently is almost surely
    still there; remembering it spares storage a HEAD on every pull (and lets the hold issue
    presigned URLs at the rate the benchmark shows). Deletions through this process forget at
    once; other replicas forget within `ttl`.
    """

    def __init__(self, store: BlobStore, *, ttl: float = 60.0, max_entries: int = 100_000) -> None:
        self._store = store
        self._ttl = ttl
        self._max = max_entries
        self._known: OrderedDict[Digest, tuple[float, int]] = OrderedDict()

    async def size(self, digest: Digest) -> int | None:
        hit = self._known.get(digest)
        now = time.monotonic()
        if hit is not None and hit[0] > now:
            return hit[1]
        size = await self._store.stat(digest)
        if size is not None:
            self._known[digest] = (now + self._ttl, size)
            self._known.move_to_end(digest)
            if len(self._known) > self._max:
                self._known.popitem(last=False)
        else:
            self._known.pop(digest, None)
        return size

    def forget(self, digest: Digest) -> None:
        self._known.pop(digest, None)


@dataclass
class HoldServices:
    settings: HoldSettings
    identity: HoldIdentity
    store: BlobStore
    signer: UrlSigner
    auth: HoldAuth
    uploads: UploadManager | None
    catalog: BlobCatalog
    valkey: Any

    @classmethod
    def build(
        cls,
        settings: HoldSettings,
        runtime: Runtime,
        *,
        captain: CaptainSource | None = None,
        crew: CrewDirectory | None = None,
        s3_client: Any = None,
    ) -> HoldServices:
        identity = HoldIdentity.load(
            settings.public_url,
            settings.signing_key_path,
            direct_uploads=settings.direct_uploads and runtime.valkey is not None,
        )
        signer = UrlSigner(load_or_create_secret(settings.url_secret_path), settings.public_url)
        store: BlobStore
        if settings.storage_driver == "s3":
            spool = settings.data_dir / "spool"
            spool.mkdir(parents=True, exist_ok=True)
            store = S3BlobStore(
                S3Options(
                    bucket=settings.s3_bucket,
                    endpoint_url=settings.s3_endpoint or None,
                    region=settings.s3_region,
                    path_style=settings.s3_path_style,
                    prefix=settings.s3_prefix,
                    max_attempts=settings.s3_max_attempts,
                    retry_base_delay=settings.s3_retry_base_delay,
                    retry_max_delay=settings.s3_retry_max_delay,
                    read_timeout=settings.s3_read_timeout,
                    threads=settings.storage_threads,
                    spool_dir=spool,
                ),
                client=s3_client,
            )
        else:
            store = FilesystemBlobStore(settings.storage_root_dir, signer, threads=settings.storage_threads)

        replay: ReplayCache | None = None
        if not settings.allow_token_reuse:
            replay = ValkeyReplayCache(runtime.valkey) if runtime.valkey is not None else MemoryReplayCache()
        verifier = ServiceAuthVerifier(
            service_did=identity.did,
            keys=ResolverSigningKeys(runtime.resolver),
            replay=replay,
            service_fragment=HOLD_SERVICE_ID,
        )
        auth = HoldAuth(
            verifier,
            captain or StaticCaptain(Captain(settings.owner or None, settings.public, settings.allow_all_crew)),
            crew or NoCrew(),
        )
        uploads = None
        if runtime.valkey is not None:
            uploads = UploadManager(
                store,
                runtime.valkey,
                UploadLimits(
                    max_blob_size=settings.upload_max_size,
                    part_max_size=settings.upload_part_max_size,
                    part_min_size=settings.upload_part_min_size,
                    max_age=settings.upload_max_age,
                    url_expiry=settings.url_expiry,
                ),
            )
        else:
            log.warning("hold: no VALKEY_URL: uploads are disabled (upload sessions live in Valkey)")
        return cls(
            settings=settings,
            identity=identity,
            store=store,
            signer=signer,
            auth=auth,
            uploads=uploads,
            catalog=BlobCatalog(store),
            valkey=runtime.valkey,
        )

    async def storage_ready(self) -> None:
        """Readiness: storage answers (a HEAD of a blob that need not exist)."""
        await self.store.stat(Digest.of(b""))

    async def sweep_once(self) -> int:
        """Sweep abandoned uploads now, unless another replica did within the interval."""
        if self.uploads is None:
            return 0
        interval = max(1, self.settings.upload_sweep_interval)
        if self.valkey is not None and not await self.valkey.set(SWEEP_LOCK, b"1", nx=True, ex=interval):
            return 0
        removed = await self.uploads.sweep()
        if removed:
            log.info("hold: removed %d abandoned upload(s)", removed)
        return removed

    async def _sweeper(self) -> None:
        interval = self.settings.upload_sweep_interval
        while True:
            try:
                await self.sweep_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("hold: sweeping abandoned uploads failed; will try again")
            await asyncio.sleep(interval)

    @asynccontextmanager
    async def lifespan(self) -> AsyncIterator[None]:
        task = None
        if self.settings.upload_sweep_interval > 0 and self.uploads is not None:
            task = asyncio.create_task(self._sweeper(), name="hold-upload-sweeper")
        try:
            yield
        finally:
            if task is not None:
                await cancel_and_wait(task)
            await self.store.aclose()
