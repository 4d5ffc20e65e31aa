"""The consumer's numbers: Prometheus metrics for scraping, and a rate for humans.

Each consumer owns its own registry (not the process-global one) so that several consumers
in one process (tests, `atcr dev`) never collide over metric names.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest


class EventRate:
    """Events per second over the last `window` seconds (what `--status` shows)."""

    def __init__(self, window: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._window = window
        self._clock = clock
        self._marks: deque[tuple[float, int]] = deque()

    def add(self, count: int) -> None:
        now = self._clock()
        self._marks.append((now, count))
        self._trim(now)

    def _trim(self, now: float) -> None:
        while self._marks and self._marks[0][0] < now - self._window:
            self._marks.popleft()

    def per_second(self) -> float:
        now = self._clock()
        self._trim(now)
        return sum(c for _, c in self._marks) / self._window


class Metrics:
    """Every metric the consumer exports, registered in a registry of its own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.events = Counter(
            "atcr_jetstream_events",
            "Events handled, by source, kind and outcome (applied, ignored, hidden, malformed; kind scan: "
            "queued, replayed, foreign, unknown, invalid, error).",
            ["source", "kind", "outcome"],
            registry=r,
        )
        self.lag = Gauge(
            "atcr_jetstream_lag_seconds", "Now minus the time of the newest applied event.", ["source"], registry=r
        )
        self.cursor = Gauge(
            "atcr_jetstream_cursor",
            "Saved cursor (Jetstream: unix microseconds; firehose: seq).",
            ["source"],
            registry=r,
        )
        self.connected = Gauge(
            "atcr_jetstream_connected", "1 while the source has an open stream.", ["source"], registry=r
        )
        self.reconnects = Counter(
            "atcr_jetstream_reconnects", "Connections lost or refused, by source.", ["source"], registry=r
        )
        self.gaps = Counter(
            "atcr_jetstream_gaps", "Detected gaps (cursor older than the stream's lookback).", ["source"], registry=r
        )
        self.apply_seconds = Histogram(
            "atcr_jetstream_apply_seconds",
            "Time to apply one batch of events to Valkey.",
            registry=r,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
        )
        self.batch_size = Histogram(
            "atcr_jetstream_batch_events",
            "Events per applied batch.",
            registry=r,
            buckets=(1, 2, 5, 10, 25, 50, 100, 250, 500, 1000),
        )
        self.backfill_running = Gauge("atcr_jetstream_backfill_running", "1 while a backfill runs.", registry=r)
        self.backfill_repos_total = Gauge(
            "atcr_jetstream_backfill_repos_total", "Repositories the current backfill found.", registry=r
        )
        self.backfill_repos_done = Gauge(
            "atcr_jetstream_backfill_repos_done", "Repositories the current backfill finished.", registry=r
        )
        self.backfill_records = Counter("atcr_jetstream_backfill_records", "Records read by backfills.", registry=r)
        self.backfill_failures = Counter(
            "atcr_jetstream_backfill_failures", "Repositories a backfill could not list.", registry=r
        )
        self.backfill_runs = Counter(
            "atcr_jetstream_backfill_runs", "Backfill runs finished, by outcome.", ["outcome"], registry=r
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
