"""The settings page shows a hold's captain its garbage-collection runs (io.atcr.hold.listGcRuns)."""

from __future__ import annotations

import asyncio
from typing import Any

from appview.holds.client import HoldError
from appview.web.ui import GcSummary, UiService, Viewer
from tests.unit.web.fakes import HOLD, OWNER, FakeLoader
from tests.unit.web.test_pages_render import Holds, render

RUNS = [
    {"finished_at": 1765000000.0, "dry_run": False, "blobs_deleted": 3, "bytes_reclaimed": 3_000_000},
    {"finished_at": 1764990000.0, "dry_run": True, "blobs_deleted": 9, "bytes_reclaimed": 9_000_000},
    {"finished_at": 1764980000.0, "dry_run": False, "blobs_deleted": 1, "bytes_reclaimed": 2_000_000},
    {"finished_at": 1764970000.0, "skipped": "another sweeper holds the lock"},
]


class CaptainLoader(FakeLoader):
    async def captain(self, hold: str) -> dict[str, Any] | None:
        return {"owner": OWNER, "public": True}


def service(loader: FakeLoader, runs: Any) -> UiService:
    return UiService(loader, Holds(), registry_host="registry.test", default_hold_did=HOLD,  # type: ignore[arg-type]
                     gc_runs=runs)


def test_summary_counts_real_runs_only() -> None:
    s = GcSummary.of(RUNS)
    assert (s.runs, s.last_blobs, s.last_bytes, s.total_blobs, s.total_bytes) == (2, 3, 3_000_000, 4, 5_000_000)
    assert GcSummary.of([]).last_finished is None


def test_captain_sees_runs_others_do_not() -> None:
    asked: list[tuple[str, str]] = []

    async def runs(hold: str, user: str) -> list[dict[str, Any]]:
        asked.append((hold, user))
        return RUNS

    page = asyncio.run(service(CaptainLoader(), runs).settings(Viewer(OWNER, "owner.test")))
    (hold,) = page.holds
    assert hold.role == "captain" and hold.gc is not None and asked == [(HOLD, OWNER)]
    html = render("settings.html", page=page, devices=[], message=None)
    assert 'data-gc-runs="2"' in html and "last run reclaimed 3 blob(s)" in html

    asked.clear()
    page = asyncio.run(service(FakeLoader(), runs).settings(Viewer(OWNER, "owner.test")))
    assert page.holds[0].gc is None and asked == []  # crew, not captain: not asked


def test_a_hold_that_refuses_leaves_the_page_as_it_was() -> None:
    async def refused(hold: str, user: str) -> list[dict[str, Any]]:
        raise HoldError(403, "Forbidden", "not an admin")

    page = asyncio.run(service(CaptainLoader(), refused).settings(Viewer(OWNER, "owner.test")))
    assert page.holds[0].gc is None
    assert "Garbage collection" not in render("settings.html", page=page, devices=[], message=None)
