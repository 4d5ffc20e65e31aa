"""The consumer: sources -> one queue -> the processor -> Valkey, plus cursors and backfill.

Everything runs as tasks in the service's event loop (started from the status app's
lifespan), so `atcr jetstream` and `atcr dev` run it the same way. Nothing here is allowed
to end the process: a source that cannot connect backs off, a relay that cannot be reached
makes the backfill retry later, an event that cannot be applied is logged and skipped.
Readiness therefore depends on Valkey alone; the stream's state is reported in `/status`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final

import valkey.asyncio as avalkey
from valkey.exceptions import ConnectionError as ValkeyConnectionError
from valkey.exceptions import TimeoutError as ValkeyTimeoutError

from atcr.errors import AtcrError, NetworkError
from atcr.http import SafeHttpClient
from atcr.identity import IdentityResolver
from atcr.serviceauth import atproto_key_of
from atcr.tasks import cancel_and_wait
from jetstream.backfill import Backfill, HoldRegistry
from jetstream.cursor import Checkpointer, CursorStore
from jetstream.errors import BackfillError, MalformedEvent, SourceError
from jetstream.events import AccountEvent, Event
from jetstream.firehose import CommitVerifier
from jetstream.metrics import EventRate, Metrics
from jetstream.model import ReadModel, ValkeyReadModel
from jetstream.processor import BatchResult, Processor
from jetstream.scanhooks import ScanHooks
from jetstream.settings import JetstreamSettings
from jetstream.sources import Backoff, Delivery, FirehoseSource, JetstreamSource, Source, firehose_source_name

log = logging.getLogger("jetstream")

QUEUE_MAX: Final = 20_000
HIDDEN_MEMORY: Final = 100_000
PIPELINE_DEPTH: Final = 3
"""Batches in flight at once (one being recorded, the next ones being applied)."""
RESYNC_WORKERS: Final = 2
TICK: Final = 0.5
DRAIN_ON_STOP: Final = 3.0


@dataclass
class _InFlight:
    task: asyncio.Task[None]
    dids: set[str]
    accounts: set[str]  # DIDs with account events in the batch


class Consumer:
    """Runs the sources, applies what they deliver, saves cursors and runs backfills."""

    def __init__(
        self,
        settings: JetstreamSettings,
        valkey: avalkey.Valkey,
        http: SafeHttpClient,
        resolver: IdentityResolver,
        *,
        metrics: Metrics | None = None,
        model: ReadModel | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.valkey = valkey
        self.metrics = metrics or Metrics()
        scans = (ScanHooks(valkey, base_url=settings.base_url, http=http, resolver=resolver)
                 if settings.scan_webhooks else None)
        self.processor = Processor(model or ValkeyReadModel(valkey), scans=scans)
        self.holds = HoldRegistry(valkey, settings.backfill_holds)
        self.backfill = Backfill(
            self.processor,
            valkey,
            http,
            resolver,
            relay=settings.relay_endpoint,
            collections=settings.wanted_collections,
            holds=self.holds,
            concurrency=settings.backfill_concurrency,
            metrics=self.metrics,
        )
        self._resolver = resolver
        self._clock = clock
        self.queue: asyncio.Queue[Delivery] = asyncio.Queue(maxsize=QUEUE_MAX)
        self.sources: list[Source] = []
        self.checkpoints: dict[str, Checkpointer] = {}
        self.rate = EventRate()
        self.events_total = 0
        self.last_event_us: int | None = None
        self.last_applied_at: float | None = None
        self.lag_seconds: float | None = None
        self.started_at: float | None = None
        self.apply_errors = 0
        self._tasks: list[asyncio.Task[None]] = []
        self._source_tasks: list[asyncio.Task[None]] = []
        self._backfill_task: asyncio.Task[None] | None = None
        self._stopping = False  # set by stop(): no new backfill starts behind its back
        self._resync_queue: asyncio.Queue[str] = asyncio.Queue()
        self._resync_pending: set[str] = set()
        self._hidden: dict[str, None] = {}  # accounts this process saw hidden, oldest first
        self._build_sources()

    # -- construction ----------------------------------------------------------------------------

    def _checkpoint(self, name: str) -> Checkpointer:
        cp = Checkpointer(
            CursorStore(self.valkey, name),
            every_events=self.settings.cursor_save_events,
            every_seconds=self.settings.cursor_save_seconds,
        )
        self.checkpoints[name] = cp
        return cp

    def _build_sources(self) -> None:
        s = self.settings
        if s.jetstream_urls:
            cp = self._checkpoint("jetstream")
            self.sources.append(
                JetstreamSource(
                    s.jetstream_urls,
                    load_position=self._loader(cp),
                    collections=s.wanted_collections,
                    dids=s.wanted_dids,
                    max_message_bytes=s.max_message_bytes,
                    rewind_us=int(s.rewind_seconds * 1_000_000),
                    gap_us=int(s.gap_seconds * 1_000_000),
                    backoff_min=s.reconnect_min_seconds,
                    backoff_max=s.reconnect_max_seconds,
                    on_malformed=self._on_malformed,
                    on_connection_change=self._on_connection_change,
                )
            )
        verifier = CommitVerifier(self._signing_key) if s.firehose_verify else None
        for url in s.firehose_urls:
            source = FirehoseSource(
                url,
                load_position=self._loader(self._checkpoint(firehose_source_name(url))),
                collections=s.wanted_collections,
                dids=s.wanted_dids,
                max_message_bytes=s.firehose_max_message_bytes,
                backoff_min=s.reconnect_min_seconds,
                backoff_max=s.reconnect_max_seconds,
                verifier=verifier,
                on_malformed=self._on_malformed,
                on_connection_change=self._on_connection_change,
            )
            self.sources.append(source)

    def _loader(self, cp: Checkpointer) -> Callable[[], Awaitable[int | None]]:
        async def load() -> int | None:
            if cp.applied is None:
                cp.restore(await cp.store.load())
            return cp.applied

        return load

    async def _signing_key(self, did: str, refresh: bool) -> str | None:
        """The `did:key` a firehose commit must be signed with. A resolution that fails for
        network reasons is a SourceError, so the stream retries instead of dropping events."""
        if refresh:
            self._resolver.invalidate(did)
        try:
            doc = await self._resolver.resolve_did(did)
        except AtcrError as exc:
            if isinstance(exc, NetworkError):
                raise SourceError(f"cannot resolve {did} to verify its commit: {exc}") from None
            return None
        key = atproto_key_of(doc.raw, did)  # Multikey or the legacy PLC form
        return f"did:key:{key}" if key else None

    def _on_malformed(self, source: str, exc: MalformedEvent) -> None:
        self.metrics.events.labels(source=source, kind="unknown", outcome="malformed").inc()

    def _on_connection_change(self, source: str, connected: bool) -> None:
        self.metrics.connected.labels(source=source).set(1 if connected else 0)
        if not connected:
            self.metrics.reconnects.labels(source=source).inc()

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        """Start every task; returns at once. Valkey being down only delays the work."""
        self.started_at = self._clock()
        self._stopping = False
        for source in self.sources:
            self.metrics.connected.labels(source=source.name).set(0)
            self._source_tasks.append(asyncio.create_task(source.run(self.queue), name=f"source-{source.name}"))
        self._tasks.append(asyncio.create_task(self._process_loop(), name="jetstream-process"))
        self._tasks.append(asyncio.create_task(self._tick_loop(), name="jetstream-tick"))
        for i in range(RESYNC_WORKERS):
            self._tasks.append(asyncio.create_task(self._resync_loop(), name=f"jetstream-resync-{i}"))
        if self.settings.backfill_enabled:
            self._tasks.append(asyncio.create_task(self._initial_backfill(), name="jetstream-backfill-check"))

    async def stop(self) -> None:
        """Stop reading, apply what was already read (briefly), save cursors."""
        self._stopping = True
        await cancel_and_wait(*self._source_tasks)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(DRAIN_ON_STOP):
                await self.queue.join()
        tasks = [*self._tasks]
        if self._backfill_task is not None:
            tasks.append(self._backfill_task)
        await cancel_and_wait(*tasks)
        for cp in self.checkpoints.values():
            with contextlib.suppress(Exception):
                await cp.flush()
        self._tasks.clear()
        self._source_tasks.clear()

    # -- applying --------------------------------------------------------------------------------

    async def _process_loop(self) -> None:
        """Collect batches from the queue and apply them, up to `PIPELINE_DEPTH` at once.

        Python prepares the next batch while Valkey runs the previous one's scripts; without
        that, each side waits for the other half of the time. Overlap is safe because every
        record change is judged by its rev inside one atomic script. The exception is an
        account event that hides an account (or restores one we hid): a batch that shares a
        DID with such an event in flight waits for it, so no commit slips in after a purge.
        (A restore of an account hidden before this process started may race its commits;
        the restore lists the account's records again, which settles it.) Results, cursors
        and metrics are recorded strictly in batch order, so a cursor never passes an
        unapplied event.
        """
        inflight: deque[_InFlight] = deque()
        try:
            while True:
                batch = [await self.queue.get()]
                count = len(batch[0].events)
                while count < self.settings.batch_max:
                    try:
                        item = self.queue.get_nowait()
                    except asyncio.QueueEmpty:
                        break
                    batch.append(item)
                    count += len(item.events)
                events = [e for d in batch for e in d.events]
                dids = {e.did for e in events}
                accounts = {
                    e.did for e in events if isinstance(e, AccountEvent) and (not e.active or e.did in self._hidden)
                }
                if any(f.accounts & dids or accounts & f.dids for f in inflight):
                    while inflight:
                        await inflight.popleft().task
                prev = inflight[-1].task if inflight else None
                task = asyncio.create_task(self._run_batch(batch, events, prev))
                inflight.append(_InFlight(task, dids, accounts))
                while inflight and (len(inflight) >= PIPELINE_DEPTH or inflight[0].task.done()):
                    await inflight.popleft().task
        finally:
            await cancel_and_wait(*(f.task for f in inflight))

    async def _run_batch(self, batch: list[Delivery], events: list[Event], prev: asyncio.Task[None] | None) -> None:
        """Apply one batch (maybe while `prev` still runs), then record it after `prev`."""
        backoff = Backoff(0.2, 10.0)
        result = BatchResult()
        while True:
            try:
                result = await self._apply_events(events)
                break
            except (ValkeyConnectionError, ValkeyTimeoutError, OSError) as exc:
                delay = backoff.next()
                self.apply_errors += 1
                log.warning("valkey unavailable (%s); retrying the batch in %.1fs", exc, delay)
                await asyncio.sleep(delay)
        if prev is not None:
            await prev
        try:
            await self._finish(batch, events, result)
        except (ValkeyConnectionError, ValkeyTimeoutError, OSError) as exc:
            log.warning("valkey unavailable (%s): cursor not saved this time", exc)
        except Exception:  # a bug: report it loudly, but keep following the stream
            self.apply_errors += 1
            log.exception("recording a batch of %d deliveries failed", len(batch))
        finally:
            for _ in batch:
                self.queue.task_done()

    async def _finish(self, batch: list[Delivery], events: list[Event], result: BatchResult) -> None:
        """Metrics, follow-up work and cursors of an applied batch (in batch order)."""
        self._record(batch, events, result)
        positions: dict[str, tuple[int, int]] = {}
        gaps: list[str] = []
        for d in batch:
            if d.gap:
                gaps.append(d.source)
            for did in d.resync:
                self.request_resync(did)
            if d.position is not None:
                prev = positions.get(d.source, (d.position, 0))
                positions[d.source] = (max(prev[0], d.position), prev[1] + len(d.events))
        for did in result.resync:
            self.request_resync(did)
            self._hidden.pop(did, None)
        for did in result.hidden:
            self._hidden[did] = None
            if len(self._hidden) > HIDDEN_MEMORY:
                del self._hidden[next(iter(self._hidden))]
        for name in gaps:
            self.metrics.gaps.labels(source=name).inc()
            self.request_backfill(f"gap detected on {name}")
        if result.holds:
            for hold in await self.holds.add(result.holds):
                self.request_resync(hold)  # a hold we never listed: its captain and crew now
        for name, (position, n) in positions.items():
            cp = self.checkpoints.get(name)
            if cp is not None and await cp.advance(position, max(n, 1)):
                self.metrics.cursor.labels(source=name).set(position)

    async def _apply_events(self, events: list[Event]) -> BatchResult:
        """Apply a batch; if it fails for a reason other than Valkey being away, apply the
        events one by one so that the one bad event is skipped and the others are kept."""
        if not events:
            return BatchResult()
        try:
            return await self.processor.apply(events)
        except (ValkeyConnectionError, ValkeyTimeoutError, OSError):
            raise
        except Exception:
            log.warning("a batch of %d events failed; applying them one by one", len(events))
        merged = BatchResult()
        for event in events:
            try:
                one = await self.processor.apply([event])
            except (ValkeyConnectionError, ValkeyTimeoutError, OSError):
                raise
            except Exception as exc:  # a bug or a record the model cannot take: skip it, keep going
                merged.count(event.kind, "failed")
                log.error("skipped %s event of %s: %s: %s", event.kind, event.did, type(exc).__name__, exc)
                continue
            merged.outcomes.update(one.outcomes)
            merged.resync += one.resync
            merged.hidden += one.hidden
            merged.holds |= one.holds
        merged.newest_us = max(e.time_us for e in events)
        return merged

    def _record(self, batch: list[Delivery], events: list[Event], result: BatchResult) -> None:
        source = batch[0].source if len({d.source for d in batch}) == 1 else "mixed"
        for (kind, outcome), n in result.outcomes.items():
            self.metrics.events.labels(source=source, kind=kind, outcome=outcome).inc(n)
        if not events:
            return
        self.metrics.apply_seconds.observe(result.seconds)
        self.metrics.batch_size.observe(len(events))
        self.events_total += len(events)
        self.rate.add(len(events))
        self.last_applied_at = self._clock()
        if result.newest_us:
            self.last_event_us = result.newest_us
            self.lag_seconds = max(0.0, self._clock() - result.newest_us / 1e6)
            for name in {d.source for d in batch if d.events}:
                self.metrics.lag.labels(source=name).set(self.lag_seconds)

    async def _tick_loop(self) -> None:
        while True:
            await asyncio.sleep(TICK)
            for name, cp in self.checkpoints.items():
                try:
                    if await cp.tick() and cp.saved is not None:
                        self.metrics.cursor.labels(source=name).set(cp.saved)
                except (ValkeyConnectionError, ValkeyTimeoutError, OSError):
                    pass  # saved at the next tick
                except Exception:  # a bug: report it, keep ticking
                    log.exception("saving the cursor of %s failed", name)

    # -- backfill --------------------------------------------------------------------------------

    async def _initial_backfill(self) -> None:
        """Decide at start whether the stream alone can bring the model up to date."""
        while True:
            try:
                reason = await self._backfill_reason()
                break
            except (ValkeyConnectionError, ValkeyTimeoutError, OSError):
                await asyncio.sleep(2.0)
        if reason:
            self.request_backfill(reason)

    async def _backfill_reason(self) -> str | None:
        if await self.backfill.interrupted():
            return "resuming an interrupted backfill"
        for name, cp in self.checkpoints.items():
            saved = await cp.store.load()
            if saved is None:
                return "first start" if name == "jetstream" or len(self.checkpoints) == 1 else f"first start of {name}"
            if name == "jetstream" and self._clock() - saved / 1e6 > self.settings.lookback_seconds:
                return "saved cursor is older than the stream's lookback"
        return None

    def request_backfill(self, reason: str) -> bool:
        """Start a backfill unless one is running (it already covers what this one would)."""
        if not self.settings.backfill_enabled or self._stopping:
            return False
        if self._backfill_task is not None and not self._backfill_task.done():
            return False
        self._backfill_task = asyncio.create_task(self._backfill_until_done(reason), name="jetstream-backfill")
        return True

    async def _backfill_until_done(self, reason: str) -> None:
        backoff = Backoff(15.0, 1800.0)
        while True:
            try:
                await self.backfill.run(reason)
                return
            except BackfillError as exc:
                delay = backoff.next()
                level = logging.WARNING if backoff.attempt == 1 else logging.INFO
                log.log(level, "backfill could not run (%s); retrying in %.0fs", exc, delay)
            except (ValkeyConnectionError, ValkeyTimeoutError, OSError) as exc:
                delay = backoff.next()
                log.warning("backfill interrupted: valkey unavailable (%s); retrying in %.0fs", exc, delay)
            except Exception:  # a bug: report it loudly; the run resumes where it stopped
                delay = backoff.next()
                log.exception("backfill failed; retrying in %.0fs", delay)
            await asyncio.sleep(delay)

    def request_resync(self, did: str) -> None:
        """List one repository again (its stream said something we cannot apply as is)."""
        if not self.settings.backfill_enabled or did in self._resync_pending:
            return
        self._resync_pending.add(did)
        self._resync_queue.put_nowait(did)

    async def _resync_loop(self) -> None:
        while True:
            did = await self._resync_queue.get()
            try:
                hold = did in set(await self.holds.all())
                await self.backfill.sync_repo(did, hold=hold)
                log.info("listed %s again", did)
            except BackfillError as exc:
                log.info("could not list %s again: %s", did, exc)
            except (ValkeyConnectionError, ValkeyTimeoutError, OSError) as exc:
                log.warning("could not list %s again: valkey unavailable (%s)", did, exc)
            except Exception:  # a bug: report it loudly, keep the worker alive
                log.exception("listing %s again failed", did)
            finally:
                self._resync_pending.discard(did)

    # -- status ----------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """Everything `/status` and `atcr jetstream --status` show."""
        now = self._clock()
        cursors: dict[str, dict[str, int | None]] = defaultdict(dict)
        for name, cp in self.checkpoints.items():
            cursors[name] = {"applied": cp.applied, "saved": cp.saved}
        return {
            "state": "running" if self._tasks else "stopped",
            "started_at": self.started_at,
            "sources": [s.status.as_dict() for s in self.sources],
            "cursors": dict(cursors),
            "events_total": self.events_total,
            "events_per_second": round(self.rate.per_second(), 2),
            "last_event_time_us": self.last_event_us,
            "last_applied_ago_seconds": None if self.last_applied_at is None else round(now - self.last_applied_at, 3),
            "lag_seconds": None if self.lag_seconds is None else round(self.lag_seconds, 3),
            "queue": self.queue.qsize(),
            "apply_errors": self.apply_errors,
            "backfill": self.backfill.status.as_dict(),
            "resync_pending": len(self._resync_pending),
        }
