"""`atcr hold gc [--grace SECONDS] [--dry-run]` parses, and its report reads as documented."""

from __future__ import annotations

from io import StringIO

from atcr.cli import make_parser
from hold.gc.cli import format_report
from hold.gc.collector import GcReport


def test_hold_gc_arguments() -> None:
    ns = make_parser().parse_args(["hold", "gc", "--grace", "0", "--dry-run"])
    assert (ns.command, ns.action, ns.grace, ns.dry_run) == ("hold", "gc", 0, True)
    ns = make_parser().parse_args(["hold"])
    assert ns.action is None and ns.grace is None and not ns.dry_run


def test_report_lists_blobs_and_bytes() -> None:
    report = GcReport(started_at=10.0, finished_at=10.5, dry_run=True, grace=0)
    report.deleted = [("sha256:" + "a" * 64, 5000)]
    report.blobs_deleted, report.bytes_reclaimed, report.blobs_seen = 1, 5000, 3
    report.users_unreachable = ["did:plc:bob"]
    out = StringIO()
    format_report(report.to_json(digests=None), out)
    text = out.getvalue()
    assert f"would delete sha256:{'a' * 64} 5000" in text
    assert "gc (dry run): 1 blob(s), 5000 bytes would be reclaimed; 3 blob(s) seen" in text
    assert "did:plc:bob's PDS could not be asked: nothing of theirs was deleted" in text


def test_skipped_run() -> None:
    out = StringIO()
    format_report(GcReport(started_at=0, dry_run=False, grace=0, skipped="another sweeper holds the lock").to_json(), out)
    assert out.getvalue() == "gc: not run: another sweeper holds the lock\n"
