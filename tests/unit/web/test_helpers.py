"""Small pure pieces of the UI: URL parsing, formatting, sparkline, record keys."""

from __future__ import annotations

from datetime import date

import pytest

from appview.web import humanize
from appview.web.actions import sniff_image, star_rkey
from appview.web.blobs import image_type
from appview.web.errors import PageNotFound
from appview.web.pages import parse_repo_path
from appview.web.sparkline import build
from appview.web.ui import page_rkey, page_uri, referrer_category
from atcr.readmodel.records import daily_pulls, star_subject
from atcr.syntax import is_record_key

pytestmark = pytest.mark.unit

D = "sha256:" + "a" * 64


@pytest.mark.parametrize(
    ("rest", "owner", "repo", "digest", "action"),
    [
        ("/alice.test/app", "alice.test", "app", None, None),
        ("alice.test/team/app/", "alice.test", "team/app", None, None),
        (f"alice.test/app/manifest/{D}", "alice.test", "app", D, None),
        (f"alice.test/manifest/manifest/{D}", "alice.test", "manifest", D, None),
        ("alice.test/manifest", "alice.test", "manifest", None, None),
        ("did:plc:abc/a/b/c/-/star", "did:plc:abc", "a/b/c", None, "star"),
        ("alice.test/star/-/star", "alice.test", "star", None, "star"),
    ],
)
def test_repo_paths(rest: str, owner: str, repo: str, digest: str | None, action: str | None) -> None:
    p = parse_repo_path(rest)
    assert (p.owner, p.repository, p.digest, p.action) == (owner, repo, digest, action)


@pytest.mark.parametrize("rest", ["alice.test", "alice.test/UPPER", "alice.test/-/star", "a/b/-/star/more", "a/../b"])
def test_bad_repo_paths(rest: str) -> None:
    with pytest.raises(PageNotFound):
        parse_repo_path(rest)


def test_sizes_and_counts() -> None:
    assert humanize.size(512) == "512 B"
    assert humanize.size(10_700) == "10.7 KB"
    assert humanize.size(3_000_000) == "3 MB"
    assert humanize.size("junk") == "—"
    assert humanize.count(999) == "999" and humanize.count(1234) == "1.2k" and humanize.count(2_500_000) == "2.5M"


def test_times() -> None:
    now = 1_800_000_000.0
    assert humanize.ago(now - 5, now) == "just now"
    assert humanize.ago(now - 120, now) == "2 minutes ago"
    assert humanize.ago((now - 3600) * 1000, now) == "1 hour ago"  # epoch ms, as the model stores
    assert humanize.ago("2020-01-02T03:04:05Z", now) == "2 Jan 2020"
    assert humanize.ago("not a time") == "—"
    assert humanize.iso("2026-01-02T03:04:05.123Z") == "2026-01-02T03:04:05Z"
    assert humanize.short_digest(D) == "a" * 12
    assert humanize.platform({"os": "linux", "architecture": "arm64", "variant": "v8"}) == "linux/arm64/v8"


def test_sparkline_fills_missing_days_with_zero() -> None:
    s = build({"2026-11-20": 3, "2026-11-21": 1, "2026-01-01": 99}, today=date(2026, 11, 21))
    assert len(s.counts) == 30 and s.counts[-2:] == (3, 1) and sum(s.counts) == 4
    assert s.total == 4 and s.peak == 3 and "4 pulls" in s.label
    assert len(s.points.split()) == 30
    empty = build({}, today=date(2026, 11, 21))
    assert empty.total == 0 and empty.label == "No pulls in the last 30 days."


def test_daily_pulls_from_hold_stats_records() -> None:
    assert daily_pulls({"dailyPulls": [{"day": "2026-11-20", "count": 2}, {"day": "bad", "count": 1},
                                       {"day": "2026-11-21", "count": -1}, {"day": "2026-11-21", "count": True}]}) == {
        "2026-11-20": 2}
    assert daily_pulls({"pullsByDay": {"2026-11-19": 4}}) == {"2026-11-19": 4}
    assert daily_pulls({}) == {}


def test_nested_repository_pages_and_stars_round_trip() -> None:
    assert page_rkey("app") == "app"
    assert page_rkey("team/app") == "team:app" and is_record_key("team:app")
    record = {"subject": page_uri("did:plc:abc", "team/app"), "createdAt": "2026-01-01T00:00:00Z"}
    assert star_subject(record) == ("did:plc:abc", "team/app")
    assert star_subject({"subject": {"did": "did:plc:abc", "repository": "app"}}) == ("did:plc:abc", "app")
    assert star_rkey(record["subject"]) == star_rkey(record["subject"]) and is_record_key(star_rkey("x"))


def test_only_real_images_are_served_or_accepted() -> None:
    png = b"\x89PNG\r\n\x1a\n" + b"0" * 10
    assert image_type(png) == sniff_image(png) == "image/png"
    assert image_type(b"RIFF1234WEBPVP8 ") == "image/webp"
    assert image_type(b"<svg onload=alert(1)>") is None and sniff_image(b"<html>") is None
    assert sniff_image(b"GIF89a...") is None  # the repo.page lexicon takes png/jpeg/webp only


def test_referrer_categories() -> None:
    assert referrer_category("application/vnd.dev.cosign.artifact.sig.v1+json") == "signature"
    assert referrer_category("application/spdx+json") == "sbom"
    assert referrer_category("application/vnd.in-toto+json") == "attestation"
    assert referrer_category("application/x-custom") == "artifact"
    assert referrer_category(None) == "artifact"
