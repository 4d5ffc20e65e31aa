"""Pull counting that never slows a pull.

A manifest GET only increments an in-process counter; a background task flushes the counts
to each hold's `io.atcr.hold.notifyManifest` (operation "pull", with `count`) once a second
and at shutdown. Under load that turns thousands of hold calls per second into one call per
repository per second, and a slow or failing hold only delays counts, never pulls. A failed
flush keeps its counts for the next round (bounded), so nothing is lost while the hold is
briefly away.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Callable
from typing import Any, Protocol

log = logging.getLogger("appview.pulls")

Key = tuple[str, str, str, str]  # (hold DID, owner DID, repository, manifest digest)
MAX_PENDING_KEYS = 100_000


class Notifier(Protocol):
    async def notify_manifest(
        self, hold_did: str, user_did: str | None, body: dict[str, Any], *, service_token: str | None = None
    ) -> dict[str, Any]: ...


# Mints a service token signed by the AppView's own did:web key for (hold DID, lxm).
AppViewMinter = Callable[[str, str], str]


class PullCounter:
    def __init__(self, notifier: Notifier, *, mint: AppViewMinter | None = None, interval: float = 1.0) -> None:
        self._notifier = notifier
        self._mint = mint
        self._interval = interval
        self._pending: Counter[Key] = Counter()
        self._task: asyncio.Task[None] | None = None

    def count(self, hold_did: str, owner_did: str, repository: str, digest: str) -> None:
        if len(self._pending) >= MAX_PENDING_KEYS and (hold_did, owner_did, repository, digest) not in self._pending:
            return  # a hold unreachable for a long time must not grow memory without bound
        self._pending[(hold_did, owner_did, repository, digest)] += 1

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="pull-counter")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.flush()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            await self.flush()

    async def flush(self) -> None:
        if not self._pending:
            return
        batch, self._pending = self._pending, Counter()

        async def send(key: Key, n: int) -> None:
            hold, owner, repository, digest = key
            body = {
                "repository": repository,
                "userDid": owner,
                "manifestDigest": digest,
                "operation": "pull",
                "count": n,
            }
            try:
                token = self._mint(hold, "io.atcr.hold.notifyManifest") if self._mint else None
                await self._notifier.notify_manifest(hold, None, body, service_token=token)
            except Exception as exc:  # any failure: keep the counts for the next round
                log.debug("pull count flush to %s failed: %s", hold, exc)
                self._pending[key] += n

        await asyncio.gather(*(send(k, n) for k, n in batch.items()))
