"""One garbage-collection run of the hold's storage (docs/hold.md, "Garbage collection").

A blob is deleted only when all of these hold:

1. no user's manifest references it: every layer record naming it belongs to a manifest its
   user's PDS no longer has (`references.ReferenceChecker`), and no manifest listed at a PDS
   names it (configs have no layer record); a user whose PDS cannot be asked keeps all their
   blobs, and while any PDS is unreachable blobs with no layer record at all are kept too;
2. no upload is in flight for it: not staged by an upload waiting for its manifest
   (`hold/quota.py`), no push holds a lease on it (`guard.GcGuard`);
3. it has been unreferenced for the grace period (first sighting by a run, the last push that
   used it, and the time its bytes were written all count);
4. the atomic condemnation succeeds (no push took a lease or used it since the run's snapshot).

Layer records whose manifest is gone from the user's PDS are deleted after the same grace,
and the user's usage (quota) loses what no remaining record names. A run holds a Valkey lock
(one sweeper per hold across processes), finishes what a crashed run had condemned, and saves
its position in the storage listing, so an interrupted run is continued by the next one.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from atcr.digest import Digest
from atcr.readmodel.records import parse_at_uri
from hold.gc.guard import GcGuard
from hold.gc.metrics import GcMetrics
from hold.gc.references import ReferenceChecker, UserReferences
from hold.quota import LAYER, UsageIndex
from hold.repo.repo import MAX_WRITES_PER_COMMIT, Delete, Repo
from hold.storage.base import BlobInfo, BlobStore, blob_list_key

log = logging.getLogger("hold.gc")

PAGE = 1000
LOCK_TTL = 600
KEEP_RUNS = 20
REPORT_DIGESTS = 1000  # digests kept in a stored report (the CLI prints all of its own run's)


@dataclass(frozen=True)
class LayerRef:
    rkey: str
    user: str
    digest: str
    size: int
    manifest: str  # the manifest record's rkey
    created_at: str


@dataclass
class GcReport:
    started_at: float
    dry_run: bool
    grace: int
    finished_at: float = 0.0
    skipped: str = ""  # why nothing ran (another sweeper holds the lock)
    blobs_seen: int = 0
    bytes_seen: int = 0
    blobs_deleted: int = 0
    bytes_reclaimed: int = 0
    deleted: list[tuple[str, int]] = field(default_factory=list)  # (digest, size): deleted, or would be
    kept_referenced: int = 0
    kept_in_flight: int = 0
    kept_grace: int = 0
    kept_unreachable: int = 0
    kept_raced: int = 0  # a push used the blob while the run decided
    records_removed: int = 0
    usage_freed: int = 0
    users_checked: int = 0
    users_unreachable: list[str] = field(default_factory=list)
    pds_calls: int = 0
    resumed: int = 0  # blobs a crashed run had condemned, deleted by this one
    errors: int = 0

    @property
    def duration(self) -> float:
        return max(0.0, self.finished_at - self.started_at)

    def to_json(self, *, digests: int | None = REPORT_DIGESTS) -> dict[str, Any]:
        out = asdict(self)
        out["duration"] = round(self.duration, 3)
        listed = self.deleted if digests is None else self.deleted[:digests]
        out["deleted"] = [{"digest": d, "size": s} for d, s in listed]
        return out


class GarbageCollector:
    def __init__(
        self,
        *,
        store: BlobStore,
        repo: Callable[[], Repo],
        index: UsageIndex,
        guard: GcGuard,
        checker: ReferenceChecker,
        grace: int,
        forget_cached: Callable[[Digest], None] = lambda d: None,
        metrics: GcMetrics | None = None,
    ) -> None:
        self.store = store
        self._repo = repo
        self.index = index
        self.guard = guard
        self.checker = checker
        self.grace = grace
        self._forget_cached = forget_cached
        self.metrics = metrics or GcMetrics()

    # --- reading the references ---------------------------------------------------------------

    async def _layer_records(self) -> list[LayerRef]:
        repo = self._repo()
        out: list[LayerRef] = []
        cursor: str | None = None
        while True:
            page = await repo.list_records(LAYER, limit=1000, cursor=cursor, reverse=True)
            for rec in page.records:
                v = rec.value
                user, digest, size, manifest = v.get("userDid"), v.get("digest"), v.get("size"), v.get("manifest")
                if not isinstance(user, str) or not isinstance(digest, str):
                    continue
                parsed = parse_at_uri(manifest) if isinstance(manifest, str) else None
                mrkey = parsed[2] if parsed is not None and parsed[0] == user else ""
                out.append(
                    LayerRef(rec.rkey, user, digest, size if isinstance(size, int) else 0, mrkey,
                             str(v.get("createdAt") or ""))
                )
            if page.cursor is None:
                return out
            cursor = page.cursor

    # --- one run ------------------------------------------------------------------------------

    async def run(self, *, dry_run: bool = False, grace: int | None = None) -> GcReport:
        grace = self.grace if grace is None else max(0, grace)
        report = GcReport(started_at=time.time(), dry_run=dry_run, grace=grace)
        token = await self.guard.lock(LOCK_TTL)
        if token is None:
            report.skipped = "another sweeper holds the lock"
            report.finished_at = time.time()
            self.metrics.observe(report, "skipped")
            return report
        outcome = "failed"
        try:
            await self._run(report, token, grace)
            outcome = "dry_run" if dry_run else "ok"
        finally:
            report.finished_at = time.time()
            await self.guard.unlock(token)
            self.metrics.observe(report, outcome)
            await self._save(report)
        return report

    async def _save(self, report: GcReport) -> None:
        try:
            valkey = self.guard.valkey
            await valkey.lpush(self.guard.k_runs, json.dumps(report.to_json(digests=20)))
            await valkey.ltrim(self.guard.k_runs, 0, KEEP_RUNS - 1)
        except Exception:
            log.exception("gc: could not store the run's report")

    async def runs(self) -> list[dict[str, Any]]:
        raw = await self.guard.valkey.lrange(self.guard.k_runs, 0, KEEP_RUNS - 1)
        return [json.loads(x) for x in raw]

    async def _delete(self, infos: list[BlobInfo], report: GcReport) -> list[BlobInfo]:
        """Delete condemned blobs from storage; the ones deleted. A failure pardons the blob."""
        if not infos:
            return []
        try:
            failed = set(await self.store.delete_many([b.digest for b in infos]))
        except Exception:
            log.exception("gc: deleting %d blob(s) failed; they stay", len(infos))
            failed = {b.digest for b in infos}
        if failed:
            report.errors += len(failed)
            await self.guard.pardon(*(str(d) for d in failed))
        done = [b for b in infos if b.digest not in failed]
        for b in done:
            self._forget_cached(b.digest)
        names = [str(b.digest) for b in done]
        await self.index.deleted(names)
        await self.guard.deleted(*names)
        return done

    async def _run(self, report: GcReport, token: str, grace: int) -> None:
        dry = report.dry_run
        if not dry:
            leftovers = [BlobInfo(Digest.parse(d), 0, 0.0) for d in await self.guard.condemned()]
            report.resumed = len(await self._delete(leftovers, report))  # a crashed run's decisions
        snapshot = self.guard.now()
        records = await self._layer_records()
        by_user: dict[str, list[LayerRef]] = defaultdict(list)
        for r in records:
            by_user[r.user].append(r)
        calls_before = self.checker.calls
        users = await self.checker.check_all(set(by_user))
        report.pds_calls = self.checker.calls - calls_before
        report.users_checked = len(users)
        report.users_unreachable = sorted(d for d, u in users.items() if u.status == "unknown")
        now = self.guard.now()

        referenced: set[str] = set()
        kept_unknown: set[str] = set()
        recorded: set[str] = set()
        stale: list[LayerRef] = []
        for did, refs in by_user.items():
            u: UserReferences = users[did]
            for r in refs:
                recorded.add(r.digest)
                if u.status == "unknown":
                    kept_unknown.add(r.digest)
                elif not r.manifest or (u.status == "ok" and r.manifest in u.manifests):
                    referenced.add(r.digest)  # (a record naming no manifest of its user cannot be checked: kept)
                else:
                    stale.append(r)
            if u.status == "ok":
                referenced |= u.digests
        any_unknown = bool(report.users_unreachable)
        in_flight = await self.index.staged_pending(now) | await self.guard.leased()
        still_pending: set[str] = set()

        # Stale layer records: the manifest is gone from its owner's PDS.
        stale_keys = [f"L:{r.rkey}" for r in stale]
        since = await self.guard.unreferenced_since(stale_keys, now, record=not dry)
        expired = [r for r in stale if now - since[f"L:{r.rkey}"] >= grace]
        still_pending |= {f"L:{r.rkey}" for r in stale if now - since[f"L:{r.rkey}"] < grace}
        report.records_removed = len(expired)
        if expired and not dry:
            await self._remove_records(expired, records, report)

        # Storage, page by page, from where an interrupted run stopped.
        cursor_key = self.guard.k_lock + ":cursor"
        start = "" if dry else (await self.guard.valkey.get(cursor_key) or b"")
        start = start.decode() if isinstance(start, bytes) else str(start)
        passes = [(start, None), ("", start)] if start else [("", None)]

        async def sweep(due: list[BlobInfo]) -> None:
            if dry:
                chosen = due
            else:
                condemned = set(await self.guard.condemn_many([str(b.digest) for b in due], snapshot))
                report.kept_raced += len(due) - len(condemned)
                chosen = await self._delete([b for b in due if str(b.digest) in condemned], report)
            for b in chosen:
                report.deleted.append((str(b.digest), b.size))
                report.bytes_reclaimed += b.size
                report.blobs_deleted += 1

        for first_key, until in passes:
            after = first_key
            while True:
                page = await self.store.list_blobs(after=after, limit=PAGE)
                if until is not None:
                    page = [b for b in page if blob_list_key(b.digest) <= until]
                if not page:
                    break
                candidates: list[BlobInfo] = []
                for info in page:
                    digest = str(info.digest)
                    report.blobs_seen += 1
                    report.bytes_seen += info.size
                    if digest in referenced:
                        report.kept_referenced += 1
                    elif digest in kept_unknown or (any_unknown and digest not in recorded):
                        report.kept_unreachable += 1
                    elif digest in in_flight:
                        report.kept_in_flight += 1
                    else:
                        candidates.append(info)
                names = [str(b.digest) for b in candidates]
                first = await self.guard.unreferenced_since(names, now, record=not dry)
                active = await self.guard.active_since(names)
                due: list[BlobInfo] = []
                for info in candidates:
                    d = str(info.digest)
                    eff = max(first[d], active.get(d, 0.0), min(info.modified, now))
                    if now - eff >= grace:
                        due.append(info)
                    else:
                        report.kept_grace += 1
                        still_pending.add(d)
                await sweep(due)
                after = blob_list_key(page[-1].digest)
                if not dry:
                    await self.guard.valkey.set(cursor_key, after, ex=7 * 24 * 3600)
                    await self.guard.extend(token, LOCK_TTL)
        if not dry:
            await self.guard.valkey.delete(cursor_key)
            await self.guard.forget_unreferenced(still_pending)
        log.info(
            "gc%s: %d blob(s) seen, %d deleted (%d bytes), %d layer record(s) removed, %d user(s) unreachable",
            " (dry run)" if dry else "", report.blobs_seen, report.blobs_deleted, report.bytes_reclaimed,
            report.records_removed, len(report.users_unreachable),
        )

    async def _remove_records(self, expired: list[LayerRef], records: list[LayerRef], report: GcReport) -> None:
        """Delete stale layer records and take what no remaining record names out of usage."""
        gone = {r.rkey for r in expired}
        repo = self._repo()
        for start in range(0, len(expired), MAX_WRITES_PER_COMMIT):
            chunk = expired[start : start + MAX_WRITES_PER_COMMIT]
            await asyncio.shield(repo.apply_writes([Delete(LAYER, r.rkey) for r in chunk]))
        remaining: dict[str, set[str]] = defaultdict(set)
        for r in records:
            if r.rkey not in gone:
                remaining[r.user].add(r.digest)
        by_user: dict[str, list[LayerRef]] = defaultdict(list)
        for r in expired:
            by_user[r.user].append(r)
        for user, refs in by_user.items():
            drop = {r.digest for r in refs} - remaining[user]
            pairs = [f"{r.manifest}|{r.digest}" for r in refs]
            report.usage_freed += await self.index.forget(user, sorted(drop), pairs)
