"""A scanner's subscription to one hold: connect, announce, take jobs, answer, reconnect.

The connection is re-opened after any failure with exponential backoff (capped at
MAX_BACKOFF s, reset after a connection that lasted). Jobs run concurrently up to
SCANNER_CONCURRENCY (the hold sends no more than that at once). When the connection drops
mid-job the job's answer is lost with it; the hold has already queued the job again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException

from atcr.http import SafeHttpClient
from scanner.analysis import SCANNER_VERSION
from scanner.jobs import run_job
from scanner.settings import ScannerSettings
from scanner.vulndb import CurrentDB

log = logging.getLogger("scanner.holds")

NSID = "io.atcr.hold.subscribeScanJobs"
MAX_BACKOFF = 30.0
MAX_MESSAGE = 64 * 1024 * 1024


class HoldSubscription:
    def __init__(self, hold_url: str, settings: ScannerSettings, db: CurrentDB, http: SafeHttpClient) -> None:
        self.hold_url = hold_url.rstrip("/")
        self.settings = settings
        self.db = db
        self.http = http
        self.connected = False
        self.jobs_done = 0
        self.active: set[str] = set()
        self._ws: ClientConnection | None = None
        db.listeners.append(self._db_changed)

    @property
    def ws_url(self) -> str:
        base = self.hold_url.replace("https://", "wss://", 1).replace("http://", "ws://", 1)
        return f"{base}/xrpc/{NSID}?cursor=-1&concurrency={self.settings.concurrency}"

    def _hello(self) -> str:
        return json.dumps({"type": "hello", "scannerVersion": SCANNER_VERSION, "dbVersion": self.db.version})

    def _db_changed(self, version: str) -> None:
        ws = self._ws
        if ws is not None:
            task = asyncio.get_running_loop().create_task(self._send(ws, self._hello()))
            task.add_done_callback(lambda t: t.exception() if not t.cancelled() else None)

    async def _send(self, ws: ClientConnection, text: str) -> None:
        with contextlib.suppress(ConnectionClosed):
            await ws.send(text)

    async def run_forever(self) -> None:
        backoff = 0.5
        while True:
            started = time.monotonic()
            try:
                await self._session()
            except asyncio.CancelledError:
                raise
            except InvalidStatus as exc:
                log.warning("scanner: %s refused the subscription (%s)", self.hold_url, exc.response.status_code)
            except (OSError, WebSocketException, TimeoutError) as exc:
                log.info("scanner: %s: connection lost (%s); reconnecting", self.hold_url, type(exc).__name__)
            finally:
                self.connected = False
                self._ws = None
            if time.monotonic() - started > 60:
                backoff = 0.5
            await asyncio.sleep(backoff)
            backoff = min(MAX_BACKOFF, backoff * 2)

    async def _session(self) -> None:
        async with connect(
            self.ws_url,
            additional_headers={"X-Scanner-Secret": self.settings.secret},
            open_timeout=self.settings.http_timeout,
            max_size=MAX_MESSAGE,
            ping_interval=20,
            ping_timeout=20,
        ) as ws:
            self._ws = ws
            self.connected = True
            log.info("scanner: subscribed to %s", self.hold_url)
            await ws.send(self._hello())
            tasks: set[asyncio.Task[None]] = set()
            try:
                async for raw in ws:
                    msg = self._parse(raw)
                    if msg is None:
                        continue
                    task = asyncio.create_task(self._job(ws, msg))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
            finally:
                for task in tasks:
                    task.cancel()

    def _parse(self, raw: str | bytes) -> dict[str, Any] | None:
        try:
            msg = json.loads(raw)
        except ValueError:
            return None
        if not isinstance(msg, dict):
            return None
        if msg.get("type") == "error":
            log.warning("scanner: %s says %s: %.200s", self.hold_url, msg.get("error"), msg.get("message"))
            return None
        return msg if msg.get("type") == "scan_job" else None

    async def _job(self, ws: ClientConnection, job: dict[str, Any]) -> None:
        digest = str(job.get("digest", ""))
        db = self.db.db
        if db is None:
            return  # not ready: the hold gets the job back when this connection closes
        self.active.add(digest)
        try:
            started = time.monotonic()
            try:
                result = await run_job(job, hold_url=self.hold_url, http=self.http, db=db, settings=self.settings)
            except Exception as exc:  # a bug or a full disk here: the job must still get an answer
                log.exception("scanner: %s: unexpected failure", digest)
                result = {"type": "scan_result", "digest": digest, "summary": {}, "sbom": None, "vulnReport": None,
                          "scannerVersion": SCANNER_VERSION, "error": f"scanner error: {type(exc).__name__}"}
            text = await asyncio.to_thread(json.dumps, result, separators=(",", ":"))
            await ws.send(text)
            self.jobs_done += 1
            log.info("scanner: %s scanned in %.2f s: %s", digest, time.monotonic() - started,
                     result.get("error") or result.get("summary"))
        finally:
            self.active.discard(digest)
