"""The scanner's current vulnerability database: loaded at start, reloaded on a schedule.

Loading parses every OSV record, so it runs in a thread; the old database keeps serving jobs
until the new one is complete, then is swapped in whole. A reload that fails keeps the old one
(logged); `version` only changes when the content did, and listeners (the hold connections)
are told so they can announce it (holds re-queue scans on a version they have not seen).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from atcr.http import SsrfPolicy
from scanner.analysis import VulnDB
from scanner.settings import ScannerSettings

log = logging.getLogger("scanner.vulndb")


def load_db(settings: ScannerSettings) -> VulnDB:
    policy = SsrfPolicy(allow_private=settings.allow_private_networks, allowed_hosts=frozenset(settings.allowed_hosts))
    return VulnDB.load(settings.vuln_db, policy=policy, timeout=settings.db_timeout)


class CurrentDB:
    def __init__(self, settings: ScannerSettings) -> None:
        self._settings = settings
        self.db: VulnDB | None = None
        self.listeners: list[Callable[[str], None]] = []

    @property
    def version(self) -> str | None:
        return self.db.version if self.db is not None else None

    async def reload(self) -> bool:
        """Load SCANNER_VULN_DB again; True when the content changed."""
        db = await asyncio.to_thread(load_db, self._settings)
        changed = self.db is None or db.version != self.db.version
        self.db = db
        log.info("scanner: vulnerability database %s: %d record(s)%s", db.version[:19], db.records,
                 "" if changed else " (unchanged)")
        if changed:
            for listener in list(self.listeners):
                listener(db.version)
        return changed

    async def refresh_forever(self) -> None:
        interval = self._settings.db_refresh_interval
        if interval <= 0:
            return
        while True:
            await asyncio.sleep(interval)
            try:
                await self.reload()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("scanner: reloading the vulnerability database failed, keeping the old one: %s", exc)
