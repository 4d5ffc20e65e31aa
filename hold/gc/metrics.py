"""The collector's Prometheus metrics, in a registry of its own (served at the hold's /metrics)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

if TYPE_CHECKING:
    from hold.gc.collector import GcReport


class GcMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.runs = Counter("hold_gc_runs", "garbage-collection runs by outcome", ["outcome"], registry=r)
        self.blobs = Counter("hold_gc_blobs_reclaimed", "blobs deleted by garbage collection", registry=r)
        self.bytes = Counter("hold_gc_bytes_reclaimed", "bytes deleted by garbage collection", registry=r)
        self.records = Counter("hold_gc_layer_records_removed", "stale layer records deleted", registry=r)
        self.pds_calls = Counter("hold_gc_pds_calls", "listRecords calls to users' PDSes", registry=r)
        self.duration = Histogram(
            "hold_gc_run_duration_seconds", "duration of a garbage-collection run", registry=r,
            buckets=(0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600),
        )
        self.last_run = Gauge("hold_gc_last_run_timestamp_seconds", "when the last run finished", registry=r)
        self.unreachable = Gauge("hold_gc_users_unreachable", "users whose PDS the last run could not ask", registry=r)

    def observe(self, report: GcReport, outcome: str) -> None:
        if report.skipped:
            self.runs.labels(outcome="skipped").inc()
            return
        self.runs.labels(outcome=outcome).inc()
        self.pds_calls.inc(report.pds_calls)
        self.duration.observe(report.duration)
        self.last_run.set(report.finished_at)
        self.unreachable.set(len(report.users_unreachable))
        if not report.dry_run:
            self.blobs.inc(report.blobs_deleted)
            self.bytes.inc(report.bytes_reclaimed)
            self.records.inc(report.records_removed)

    def render(self) -> bytes:
        return generate_latest(self.registry)
