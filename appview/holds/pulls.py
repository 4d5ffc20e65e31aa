"""Pull counting that never slows a pull.

A manifest GET only increments an in-process counter; a background task flushes the counts
to each hold's `io.atcr.hold.notifyManifest` (operation "pull", with `count`) once a second
and at shutdown. Under load that turns thousands of hold calls per second into one call per
repository per second, and a slow or failing hold only delays counts, never pulls. A failed
flush keeps its counts for the next round (bounded), so nothing is lost while the hold is
briefly away.

Every notification carries an ``Idempotency-Key``, and a failed one is sent again *as it
was* (same key, same count) rather than merged into newer counts: when a hold counted a
notification but its answer was lost (a timeout, a proxy's 502), the hold recognises the
retry and counts it once. Counts are exact, not at-least-once.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections import Counter
from collections.abc import Callable
from typing import Any, Protocol

from atcr.periodic import Periodic

log = logging.getLogger("appview.pulls")

Key = tuple[str, str, str, str]  # (hold DID, owner DID, repository, manifest digest)
Unsent = tuple[Key, int, str]  # (key, count, idempotency key)
MAX_PENDING_KEYS = 100_000
MAX_RETRIES_KEPT = 100_000


class Notifier(Protocol):
    async def notify_manifest(
        self,
        hold_did: str,
        user_did: str | None,
        body: dict[str, Any],
        *,
        service_token: str | None = None,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]: ...


# Mints a service token signed by the AppView's own did:web key for (hold DID, lxm).
AppViewMinter = Callable[[str, str], str]


class PullCounter:
    def __init__(self, notifier: Notifier, *, mint: AppViewMinter | None = None, interval: float = 1.0) -> None:
        self._notifier = notifier
        self._mint = mint
        self._interval = interval
        self._pending: Counter[Key] = Counter()
        self._retry: list[tuple[Key, int, str]] = []  # sent, outcome unknown: resent as they were
        self._loop = Periodic(self._interval, self.flush, name="pull-counter")

    def count(self, hold_did: str, owner_did: str, repository: str, digest: str) -> None:
        if len(self._pending) >= MAX_PENDING_KEYS and (hold_did, owner_did, repository, digest) not in self._pending:
            return  # a hold unreachable for a long time must not grow memory without bound
        self._pending[(hold_did, owner_did, repository, digest)] += 1

    def start(self) -> None:
        self._loop.start()

    async def stop(self) -> None:
        await self._loop.stop()
        await self.flush()

    def take_unsent(self) -> list[Unsent]:
        """Hand over what no hold has acknowledged yet (after `stop`), each with its idempotency key."""
        items = [(key, n, secrets.token_urlsafe(18)) for key, n in self._pending.items()] + self._retry
        self._pending, self._retry = Counter(), []
        return items

    def resend(self, items: list[Unsent]) -> None:
        """Send these again as they were (same key, same count) with the next flush."""
        self._retry.extend(items)

    async def flush(self) -> None:
        if not self._pending and not self._retry:
            return
        batch = [(key, n, secrets.token_urlsafe(18)) for key, n in self._pending.items()]
        batch.extend(self._retry)
        self._pending, self._retry = Counter(), []
        failed: list[tuple[Key, int, str]] = []

        async def send(key: Key, n: int, idempotency_key: str) -> None:
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
                await self._notifier.notify_manifest(
                    hold, None, body, service_token=token, idempotency_key=idempotency_key
                )
            except Exception as exc:  # any other failure: send the same notification again next round
                status = getattr(exc, "status", 0)
                if isinstance(status, int) and 400 <= status < 500 and status not in (401, 408, 429):
                    log.warning("hold %s refused %d pull count(s) for %s: %s", hold, n, repository, exc)
                    return
                log.debug("pull count flush to %s failed: %s", hold, exc)
                failed.append((key, n, idempotency_key))

        await asyncio.gather(*(send(*item) for item in batch))
        if len(failed) > MAX_RETRIES_KEPT:
            log.warning("dropping %d pull counts for unreachable holds", len(failed) - MAX_RETRIES_KEPT)
            failed = failed[-MAX_RETRIES_KEPT:]
        self._retry.extend(failed)
