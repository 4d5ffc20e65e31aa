"""What the hold does about scans: queue on push, hand out jobs, record results.

A `scan_result` (ATCR's shape: `{digest, summary{critical,high,medium,low,total}, sbom,
vulnReport, scannerVersion, error}`) is accepted from whoever holds the job's lease, ours or
a foreign ATCR scanner: the SBOM and report become blobs of the hold's repo, then the
`io.atcr.hold.scan` record (rkey = digest hex) is written, then the job is marked done. A
crash between those steps leaves the lease to expire and the job to run again; the record
is a `Put`, so a second run overwrites rather than duplicates.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from atcr.digest import Digest
from atcr.digest import InvalidDigest as DigestSyntaxError
from atcr.readmodel.keys import manifest_rkey
from hold.crew import now_iso
from hold.errors import HoldError, InvalidDigest, InvalidRequest
from hold.notify import layers_of
from hold.quota import QuotaService
from hold.repo.repo import Put, Repo
from hold.scan.blobs import RepoBlobs
from hold.scan.queue import DONE, FAILED, Lease, ScanQueue
from hold.service import HoldServices
from hold.settings import HoldSettings

log = logging.getLogger("hold.scan")

SCAN = "io.atcr.hold.scan"
SBOM_TYPE = "application/spdx+json"
REPORT_TYPE = "application/vnd.atcr.vulnerabilities+json"
SEVERITIES = ("critical", "high", "medium", "low")


class ScanNotFound(HoldError):
    error, status, default_message = "ScanNotFound", 404, "this hold has no scan of that manifest"


class ScanningDisabled(HoldError):
    error, status, default_message = "ScanningDisabled", 503, "scanning needs Valkey and HOLD_SCANNER_SECRET"


class InvalidScanResult(InvalidRequest):
    error, default_message = "InvalidScanResult", "malformed scan_result"


def _document(value: Any, what: str) -> bytes:
    """A JSON document sent inline (ATCR sends objects; a JSON string of one is accepted too)."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise InvalidScanResult(f"{what} is not JSON") from None
    if not isinstance(value, dict):
        raise InvalidScanResult(f"{what} must be a JSON object")
    return json.dumps(value, separators=(",", ":"), sort_keys=True).encode()


def _count(summary: dict[str, Any], name: str) -> int:
    value = summary.get(name, 0)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise InvalidScanResult(f"summary.{name} must be a non-negative integer")
    return value


class Waker:
    """Wakes every task waiting right now (an Event that re-arms itself)."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def set(self) -> None:
        self._event.set()
        self._event = asyncio.Event()

    async def wait(self, timeout: float) -> None:
        event = self._event
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), timeout)


class ScanService:
    def __init__(
        self,
        queue: ScanQueue,
        blobs: RepoBlobs,
        repo: Callable[[], Repo],
        *,
        hold_did: str,
        hold_endpoint: str,
        scan_on_push: Callable[[str], Awaitable[bool]],
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.queue = queue
        self.blobs = blobs
        self._repo = repo
        self.hold_did = hold_did
        self.hold_endpoint = hold_endpoint
        self._scan_on_push = scan_on_push
        self._clock = clock
        self.wake = Waker()  # set when this process queues a job; subscribers also poll

    @classmethod
    def build(
        cls, settings: HoldSettings, services: HoldServices, repo: Callable[[], Repo], quota: QuotaService
    ) -> ScanService | None:
        """None when scanning is off: no Valkey (the queue lives there) or no scanner secret."""
        if services.valkey is None or not settings.scanner_secret:
            return None

        async def scan_on_push(user: str) -> bool:
            if settings.scan_all_pushes:
                return True
            tier = (await quota.allowance(user)).tier
            return tier is not None and tier.scan_on_push

        did = services.identity.did
        queue = ScanQueue(
            services.valkey, did, lease_seconds=settings.scan_lease, max_attempts=settings.scan_max_attempts
        )
        blobs = RepoBlobs(settings.data_dir / "repo-blobs")
        return cls(queue, blobs, repo, hold_did=did, hold_endpoint=settings.public_url, scan_on_push=scan_on_push)

    def job(
        self, user: str, repository: str, digest: str, summary: Any, *, manifest_uri: str | None, tag: str | None
    ) -> dict[str, Any]:
        layers = [{"digest": x.digest, "size": x.size, "mediaType": x.media_type} for x in layers_of(summary)]
        config = summary.get("config") if isinstance(summary, dict) else None
        job: dict[str, Any] = {
            "digest": digest,
            "repository": repository,
            "userDid": user,
            "manifest": manifest_uri or f"at://{user}/io.atcr.manifest/{manifest_rkey(digest)}",
            "layers": layers,
        }
        if isinstance(config, dict) and isinstance(config.get("digest"), str):
            job["config"] = config["digest"]
        if tag:
            job["tag"] = tag
        return job

    async def on_push(
        self, user: str, repository: str, digest: str, summary: Any, *, manifest_uri: str | None, tag: str | None
    ) -> bool:
        """Queue a scan when the pusher's tier has scanOnPush; never fails the push."""
        try:
            if not await self._scan_on_push(user) or not layers_of(summary):
                return False
            queued = await self.queue.enqueue(self.job(user, repository, digest, summary, manifest_uri=manifest_uri,
                                                       tag=tag))
            self.wake.set()
            return queued
        except Exception:
            log.exception("scan: could not queue a scan of %s (the push itself succeeded)", digest)
            return False

    async def rescan(self, digest: str, user: str) -> dict[str, Any]:
        try:
            Digest.parse(digest)
        except DigestSyntaxError as exc:
            raise InvalidDigest(str(exc)) from None
        job = await self.queue.last_job(digest)
        if job is None:
            raise ScanNotFound(f"{digest} was never scanned on this hold")
        if job.get("userDid") != user:
            raise ScanNotFound(f"{digest} was never scanned on this hold for {user}")
        await self.queue.enqueue(job, rescan=True)
        self.wake.set()
        return await self.status(digest)

    async def db_version(self, version: str) -> int:
        """A scanner reports its database version: the first report of a new one re-queues
        every scanned manifest (the very first version ever seen re-queues nothing new)."""
        if not version or not await self.queue.new_db_version(version[:200]):
            return 0
        jobs = await self.queue.done_jobs()
        for job in jobs:
            await self.queue.enqueue(job, rescan=True)
        if jobs:
            log.info("scan: vulnerability database %s is new: %d manifest(s) queued again", version[:40], len(jobs))
            self.wake.set()
        return len(jobs)

    def message(self, lease: Lease) -> dict[str, Any]:
        """The `scan_job` message (ATCR's fields, plus the layers so no manifest fetch is needed)."""
        job = lease.job
        out = {
            "type": "scan_job",
            "seq": lease.token,
            "digest": lease.digest,
            "repository": job["repository"],
            "userDid": job["userDid"],
            "holdDid": self.hold_did,
            "holdEndpoint": self.hold_endpoint,
            "layers": job["layers"],
        }
        for key in ("tag", "config", "priority"):
            if key in job:
                out[key] = job[key]
        return out

    async def result(self, lease: Lease, msg: dict[str, Any]) -> bool:
        """Record a scanner's answer to `lease`; False when the lease is no longer ours."""
        if not await self.queue.holds(lease.digest, lease.token):
            log.info("scan: a result for %s came after its lease ran out; ignored", lease.digest)
            return False
        error = msg.get("error")
        if error:
            await self.queue.fail(lease.digest, lease.token, str(error))
            await self.queue.remember(lease.job)
            log.warning("scan: %s failed in the scanner: %.200s", lease.digest, error)
            return True
        summary = msg.get("summary")
        if not isinstance(summary, dict):
            raise InvalidScanResult("summary must be an object")
        counts = {name: _count(summary, name) for name in (*SEVERITIES, "total")}
        # Large documents (tens of thousands of findings) take a while to re-encode: off the loop.
        sbom = await asyncio.to_thread(_document, msg.get("sbom"), "sbom")
        report = await asyncio.to_thread(_document, msg.get("vulnReport"), "vulnReport")
        version = msg.get("scannerVersion")
        job = lease.job
        record: dict[str, Any] = {
            "$type": SCAN,
            "manifest": job["manifest"],
            "repository": job["repository"],
            "userDid": job["userDid"],
            **counts,
            "scannedAt": now_iso(self._clock()),
            "sbomBlob": await self.blobs.put(sbom, SBOM_TYPE),
            "vulnReportBlob": await self.blobs.put(report, REPORT_TYPE),
        }
        if isinstance(version, str) and version:
            record["scannerVersion"] = version[:200]
        await asyncio.shield(self._repo().apply_writes([Put(SCAN, manifest_rkey(lease.digest), record)]))
        await self.queue.complete(lease.digest, lease.token)
        await self.queue.remember(job)
        log.info("scan: %s/%s %s: %d finding(s)", job["userDid"], job["repository"], lease.digest, counts["total"])
        return True

    async def status(self, digest: str) -> dict[str, Any]:
        """`{digest, state: queued|scanning|done|failed|none, updatedAt?, error?, scan?}`."""
        try:
            Digest.parse(digest)
        except DigestSyntaxError as exc:
            raise InvalidDigest(str(exc)) from None
        state = await self.queue.state(digest) or {}
        out: dict[str, Any] = {"digest": digest, "state": state.get("state", "none")}
        if "updatedAt" in state:
            out["updatedAt"] = datetime.fromtimestamp(state["updatedAt"], UTC).isoformat().replace("+00:00", "Z")
        if state.get("state") == FAILED and state.get("error"):
            out["error"] = state["error"]
        found = await self._repo().get_record(SCAN, manifest_rkey(digest))
        if found is not None:
            out["scan"] = found[1]
            if out["state"] == "none":
                out["state"] = DONE
        return out
