"""Delivering queued webhook events: sign, POST through the SSRF-guarded client, log, retry.

Every AppView process runs one worker; they share the queue in Valkey. A claimed delivery is
leased (`WebhookStore.claim`): should this process die while sending it, the lease runs out
and a worker (this one after a restart, or another replica) sends it again. Delivery is at
least once; receivers de-duplicate on `webhook-id`.

A failed attempt (no answer, or a status other than 2xx) is retried after
``base * 2**(attempt-1)`` seconds, capped at an hour, until the delivery is `max_age` old
(a day by default); then it is dropped and the webhook marked failing until a delivery to
it succeeds again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime

from standardwebhooks.webhooks import Webhook as Signer

from appview.webhooks.errors import WebhookUnknown
from appview.webhooks.store import Attempt, Pending, Webhook, WebhookStore
from atcr.errors import BlockedAddress, NetworkError
from atcr.http import SafeHttpClient
from atcr.tasks import cancel_and_wait

log = logging.getLogger("appview.webhooks")

MAX_BACKOFF = 3600.0
RESPONSE_LIMIT = 64 * 1024


def backoff(attempt: int, base: float) -> float:
    """Seconds before retry number `attempt` (1-based)."""
    return float(min(base * 2 ** max(attempt - 1, 0), MAX_BACKOFF))


class DeliveryWorker:
    def __init__(
        self,
        store: WebhookStore,
        http: SafeHttpClient,
        *,
        retry_base: float = 30.0,
        max_age: float = 86400.0,
        lease: float = 60.0,
        timeout: float = 10.0,
        poll: float = 1.0,
        concurrency: int = 8,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.http = http
        self.retry_base = retry_base
        self.max_age = max_age
        self.lease = lease
        self.timeout = timeout
        self.poll = poll
        self.concurrency = concurrency
        self._clock = clock
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    def wake(self) -> None:
        """Something was queued: look now instead of at the next poll."""
        self._wake.set()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="webhook-worker")

    async def stop(self, grace: float = 5.0) -> None:
        """Stop claiming; let the deliveries in flight finish (and be logged) for up to
        `grace` seconds, then cancel them. A cancelled one is still queued and is sent again."""
        task, self._task = self._task, None
        if task is None:
            return
        self._stopping = True
        self._wake.set()
        try:
            await asyncio.wait_for(asyncio.shield(task), grace)
        except TimeoutError:
            await cancel_and_wait(task)
        finally:
            self._stopping = False

    async def _run(self) -> None:
        failures = 0
        while not self._stopping:
            try:
                handled = await self.run_once()
                failures = 0
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Valkey down: back off, keep the worker alive
                failures += 1
                log.warning("webhook worker: %s; retrying", type(exc).__name__)
                handled = 0
                await asyncio.sleep(min(0.5 * 2**failures, 30.0))
            if handled == 0 and not self._stopping:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=self.poll)

    async def run_once(self) -> int:
        """Claim what is due and send it; how many deliveries were attempted."""
        pending = await self.store.claim(self.concurrency, self.lease)
        if pending:
            await asyncio.gather(*(self.deliver(p) for p in pending))
        return len(pending)

    async def deliver(self, pending: Pending) -> None:
        try:
            hook: Webhook | None = await self.store.get(pending.hook_id)
            secret = await self.store.secret(pending.hook_id)
        except WebhookUnknown:  # deleted since it was queued
            hook, secret = None, None
        if hook is None or secret is None:
            await self.store.done(pending)
            return
        attempt_no = pending.attempts + 1
        now = self._clock()
        headers = {
            "content-type": "application/json",
            "webhook-id": pending.message_id,
            "webhook-timestamp": str(int(now)),
            "webhook-signature": Signer(secret).sign(
                pending.message_id, datetime.fromtimestamp(int(now), tz=UTC), pending.body
            ),
        }
        started = time.perf_counter()
        status: int | None = None
        error: str | None = None
        permanent = False
        try:
            resp = await self.http.request(
                "POST", hook.url, content=pending.body.encode(), headers=headers, follow_redirects=False,
                max_bytes=RESPONSE_LIMIT, timeout=self.timeout,
            )
            status = resp.status_code
            if not 200 <= status < 300:
                error = f"HTTP {status}"
        except BlockedAddress as exc:
            error, permanent = f"refused: {exc}", True
        except NetworkError as exc:
            error = str(exc)[:200] or type(exc).__name__
        latency = (time.perf_counter() - started) * 1000
        if error is None:
            outcome = "delivered"
        elif permanent or now - pending.first >= self.max_age:
            outcome = "failed"
        else:
            outcome = "retrying"
        # Logged before the queue lets the message go: an empty queue means every attempt is in
        # the delivery log, and a stop between the two at worst sends and logs it once more.
        await self.store.log(
            hook.id,
            Attempt(pending.message_id, pending.type, now, status, latency, attempt_no, outcome, error),
            pending.body,
        )
        if outcome == "retrying":
            await self.store.retry_at(pending, now + backoff(attempt_no, self.retry_base))
            return
        await self.store.done(pending)
        await self.store.set_health(hook.id, failing=outcome == "failed", error=error)
        if outcome == "failed":
            log.info("webhook %s: delivery %s given up after %d attempt(s): %s", hook.id, pending.message_id,
                     attempt_no, error)


__all__ = ["DeliveryWorker", "backoff"]
