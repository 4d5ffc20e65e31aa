"""Scan XRPC: the scanners' job stream, the owners' rescan, the scan state for the UI.

* ``WS io.atcr.hold.subscribeScanJobs?cursor=`` (ATCR-NOTES §4): the shared secret in
  ``X-Scanner-Secret`` (or ``?secret=``); a wrong or missing one is refused before the upgrade
  (403). The hold sends ``scan_job`` messages, at most ``concurrency`` (query, default 1, at
  most 8) unanswered at a time, and reads ``scan_result`` answers. Jobs are leased: while the
  connection is open the hold renews them; when it closes, unanswered jobs go back to the
  queue at once, and if the hold itself dies the lease runs out (HOLD_SCAN_LEASE). ``cursor``
  is accepted for ATCR compatibility and ignored: the queue, not a replay log, decides what
  is sent. A scanner may send ``{type: "hello", scannerVersion, dbVersion}``; a database
  version new to this hold queues every scanned manifest again.
* ``POST io.atcr.hold.requestScan {digest}``: the owner's service token (``lxm`` =
  requestScan) re-queues a manifest it pushed here. -> the scan status.
* ``GET io.atcr.hold.getScanStatus?digest=`` -> ``{digest, state, updatedAt?, error?, scan?}``
  (public like the scan records themselves).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import time
from typing import Any

from litestar import Request, Router, WebSocket, get, post, websocket

from atcr.tasks import cancel_and_wait
from hold.errors import HoldError, InvalidRequest
from hold.scan.queue import Lease
from hold.scan.service import ScanningDisabled, ScanService
from hold.service import HoldServices
from hold.xrpc import bearer_token, json_body

log = logging.getLogger("hold.scan")

NSID_SUBSCRIBE = "io.atcr.hold.subscribeScanJobs"
NSID_REQUEST = "io.atcr.hold.requestScan"
NSID_STATUS = "io.atcr.hold.getScanStatus"
POLL_SECONDS = 0.5
MAX_CONCURRENCY = 8


async def _parse(raw: str | bytes) -> Any:
    """A message as JSON; a large one (a result with its documents) is parsed off the loop."""
    try:
        return json.loads(raw) if len(raw) < 65536 else await asyncio.to_thread(json.loads, raw)
    except ValueError:
        return None


def _concurrency(raw: str | None) -> int:
    try:
        return max(1, min(MAX_CONCURRENCY, int(raw or "1")))
    except ValueError:
        return 1


class ScannerSession:
    """One subscribed scanner: its leases, the sender and the reader."""

    def __init__(self, socket: WebSocket[Any, Any, Any], scans: ScanService, concurrency: int, lease: float) -> None:
        self.socket = socket
        self.scans = scans
        self.concurrency = concurrency
        self.renew_every = max(1.0, lease / 3)
        self.inflight: dict[str, Lease] = {}
        self.freed = asyncio.Event()

    async def send_jobs(self) -> None:
        renewed = time.monotonic()
        while True:
            if time.monotonic() - renewed >= self.renew_every:
                renewed = time.monotonic()
                for digest, held in list(self.inflight.items()):
                    if not await self.scans.queue.renew(held):
                        self.inflight.pop(digest, None)
            if len(self.inflight) < self.concurrency:
                lease = await self.scans.queue.lease()
                if lease is not None:
                    self.inflight[lease.digest] = lease
                    await self.socket.send_text(json.dumps(self.scans.message(lease)))
                    continue
                await self.scans.wake.wait(POLL_SECONDS)
            else:
                self.freed.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.freed.wait(), POLL_SECONDS)

    async def read_results(self) -> None:
        while True:
            message = await self.socket.receive()
            if message["type"] == "websocket.disconnect":
                return
            raw = message.get("text") or message.get("bytes")
            msg = await _parse(raw) if isinstance(raw, str | bytes) and raw else None
            if not isinstance(msg, dict):
                await self.send_error("InvalidRequest", "messages are JSON objects")
                continue
            kind = msg.get("type")
            if kind == "hello":
                version = msg.get("dbVersion")
                if isinstance(version, str):
                    await self.scans.db_version(version)
            elif kind == "scan_result":
                await self.result(msg)
            else:
                await self.send_error("InvalidRequest", f"unknown message type {str(kind)[:40]!r}")

    async def result(self, msg: dict[str, Any]) -> None:
        digest = msg.get("digest")
        lease = self.inflight.get(digest) if isinstance(digest, str) else None
        if lease is None:
            await self.send_error("UnknownJob", f"no job {str(digest)[:80]} is leased to this connection")
            return
        try:
            await self.scans.result(lease, msg)
        except HoldError as exc:
            log.warning("scan: refused a result for %s: %s", lease.digest, exc.message)
            await self.scans.queue.fail(lease.digest, lease.token, f"{exc.error_name}: {exc.message}")
            await self.scans.queue.remember(lease.job)
            await self.send_error(exc.error_name, exc.message)
        self.inflight.pop(lease.digest, None)
        self.freed.set()

    async def send_error(self, error: str, message: str) -> None:
        with contextlib.suppress(Exception):
            await self.socket.send_text(json.dumps({"type": "error", "error": error, "message": message[:500]}))

    async def run(self) -> None:
        sender = asyncio.create_task(self.send_jobs(), name="scan-jobs-sender")
        reader = asyncio.create_task(self.read_results(), name="scan-jobs-reader")
        try:
            done, _ = await asyncio.wait({sender, reader}, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                exc = task.exception()
                if exc is not None and not isinstance(exc, asyncio.CancelledError):
                    log.info("scan: a scanner connection ended: %s", type(exc).__name__)
        finally:
            await cancel_and_wait(sender, reader)
            for lease in list(self.inflight.values()):
                with contextlib.suppress(Exception):
                    await asyncio.shield(self.scans.queue.release(lease.digest, lease.token))
            if self.inflight:
                log.info("scan: a scanner left with %d job(s) unfinished; queued again", len(self.inflight))
                self.scans.wake.set()
            with contextlib.suppress(Exception):
                await self.socket.close(code=1000)


def scan_routes(services: HoldServices, scans: ScanService | None, secret: str, lease_seconds: float) -> Router:
    def require() -> ScanService:
        if scans is None:
            raise ScanningDisabled()
        return scans

    def authorized(socket: WebSocket[Any, Any, Any]) -> bool:
        given = socket.headers.get("x-scanner-secret") or socket.query_params.get("secret") or ""
        return bool(secret) and hmac.compare_digest(given.encode(), secret.encode())

    @websocket(f"/xrpc/{NSID_SUBSCRIBE}")
    async def subscribe(socket: WebSocket[Any, Any, Any]) -> None:
        if scans is None or not authorized(socket):
            await socket.close(code=1008)  # before the upgrade: the client sees 403
            return
        await socket.accept()
        await ScannerSession(socket, scans, _concurrency(socket.query_params.get("concurrency")), lease_seconds).run()

    @post(f"/xrpc/{NSID_REQUEST}", status_code=200)
    async def request_scan(request: Request[Any, Any, Any]) -> dict[str, Any]:
        service = require()
        body = await json_body(request)
        digest = body.get("digest")
        if not isinstance(digest, str):
            raise InvalidRequest("digest is required")
        issuer = await services.auth.authenticate(bearer_token(request), lxm=NSID_REQUEST)
        return await service.rescan(digest, issuer)

    @get(f"/xrpc/{NSID_STATUS}")
    async def scan_status(request: Request[Any, Any, Any]) -> dict[str, Any]:
        service = require()
        digest = request.query_params.get("digest")
        if not digest:
            raise InvalidRequest("digest is required")
        return await service.status(digest)

    return Router(path="/", route_handlers=[subscribe, request_scan, scan_status], include_in_schema=False)
