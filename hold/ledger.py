"""The hold's bookkeeping, wired once: crew, quotas, stats, push/pull notifications.

Built in `create_app` after the blob services and the repo service exist (the crew view reads
the repo, and the blob services' `HoldAuth` is pointed at it here). The lifespan, entered
after the repo has opened, loads the crew view, rebuilds the usage index in the background,
runs the stats flusher, and flushes once more at shutdown before the repo closes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

from atcr.digest import Digest
from atcr.tasks import cancel_and_wait
from hold.auth import Captain
from hold.crew import CrewService, RepoCrew
from hold.notify import Notifications
from hold.posts import PushPoster
from hold.quota import QuotaPolicy, QuotaService, UsageIndex
from hold.repo.service import RepoService
from hold.service import HoldServices
from hold.settings import HoldSettings
from hold.stats import Stats, instance_id

log = logging.getLogger("hold.ledger")

SHUTDOWN_FLUSH_TIMEOUT = 20.0


@dataclass
class Ledger:
    settings: HoldSettings
    repo: RepoService
    directory: RepoCrew
    crew: CrewService
    policy: QuotaPolicy
    quota: QuotaService
    stats: Stats | None
    notifications: Notifications | None
    delete_blob: Callable[[str], Awaitable[bool]] | None = None
    sweep_lock: Callable[[int], Awaitable[bool]] | None = None
    poster: PushPoster | None = None  # set by the app: posts about pushes (hold/posts.py)

    @classmethod
    def build(cls, settings: HoldSettings, services: HoldServices, repo: RepoService) -> Ledger:
        """Everything but I/O; raises ConfigError for a bad quotas file (so the hold does not start)."""
        policy = QuotaPolicy.load(settings.quotas_path)
        fallback = Captain(settings.owner or None, settings.public, settings.allow_all_crew)
        directory = RepoCrew(repo.get, fallback)
        crew = CrewService(repo.get, directory, default_tier=lambda: policy.default_tier)
        services.auth.captain_source = directory
        services.auth.crew = directory
        services.auth.enroller = crew
        did = services.identity.did
        valkey = services.valkey
        index = UsageIndex(valkey, did) if valkey is not None else None
        quota = QuotaService(
            policy, index, directory.captain, directory.member,
            max_age=settings.reservation_ttl, staged_grace=settings.staged_grace,
        )
        stats = notifications = None
        if valkey is not None:
            stats = Stats(valkey, did, repo.get, instance=instance_id(settings.data_dir))
            notifications = Notifications(repo.get, quota, stats, services.catalog.size)
        else:
            log.warning("hold: no VALKEY_URL: pull/push counting and quota accounting are disabled")
        async def delete_blob(digest: str) -> bool:
            gone = await services.store.delete(Digest.parse(digest))
            services.catalog.forget(Digest.parse(digest))
            return gone

        async def sweep_lock(seconds: int) -> bool:
            """One staged-blob sweep per interval across the hold's processes."""
            if valkey is None:
                return True
            return bool(await valkey.set(f"hold:staged-sweep:{{{did}}}", b"1", nx=True, ex=max(1, seconds)))

        return cls(
            settings, repo, directory, crew, policy, quota, stats, notifications,
            delete_blob=delete_blob, sweep_lock=sweep_lock,
        )

    async def sweep_staged_once(self) -> tuple[int, int]:
        """Delete uploaded blobs no manifest used within the grace (see QuotaService.sweep_staged)."""
        interval = self.settings.upload_sweep_interval
        if self.delete_blob is None or (self.sweep_lock is not None and not await self.sweep_lock(interval)):
            return 0, 0
        deleted, kept = await self.quota.sweep_staged(self.delete_blob)
        if deleted:
            log.info("hold: deleted %d uploaded blob(s) no manifest used (%d kept: referenced)", deleted, kept)
        return deleted, kept

    async def _staged_sweeper(self) -> None:
        while True:
            try:
                await self.sweep_staged_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("hold: sweeping unused uploaded blobs failed; will try again")
            await asyncio.sleep(self.settings.upload_sweep_interval)

    async def _rebuild_usage(self) -> None:
        index = self.quota.index
        if index is None:
            return
        try:
            seen = await index.rebuild(self.repo.get())
            log.info("hold: usage index checked against %d layer record(s)", seen)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("hold: rebuilding the usage index failed; quotas use what the index has")

    async def _check_captain(self) -> None:
        record = await self.directory.captain_record()
        if record is None:
            return
        s = self.settings
        if record.get("public") != s.public or record.get("allowAllCrew") != s.allow_all_crew:
            log.warning(
                "hold: the captain record says public=%s allowAllCrew=%s but settings say HOLD_PUBLIC=%s "
                "HOLD_ALLOW_ALL_CREW=%s; the record (the hold's published state) wins",
                record.get("public"), record.get("allowAllCrew"), s.public, s.allow_all_crew,
            )

    @asynccontextmanager
    async def lifespan(self) -> AsyncIterator[None]:
        await self._check_captain()
        tasks = [asyncio.create_task(self._rebuild_usage(), name="hold-usage-rebuild")]
        if self.settings.upload_sweep_interval > 0:
            tasks.append(asyncio.create_task(self._staged_sweeper(), name="hold-staged-sweeper"))
        if self.stats is not None:
            tasks.append(asyncio.create_task(self.stats.run(self.settings.stats_flush_interval), name="hold-stats"))
        try:
            yield
        finally:
            await cancel_and_wait(*tasks)
            if self.stats is not None:
                try:
                    report = await asyncio.wait_for(self.stats.flush(), SHUTDOWN_FLUSH_TIMEOUT)
                    log.info("hold: flushed %d stats record(s) at shutdown", report.records)
                except Exception:
                    log.exception("hold: the shutdown flush failed; the counts stay in Valkey for the next start")
