"""How pending counts become a stats record: parsing the Valkey hash, and the merge rule."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from atcr.lexicon import validate_record
from hold.stats import STATS, Delta, iso_ms, merge, parse_pending

pytestmark = pytest.mark.unit

OWNER = "did:plc:ownerownerownerowner0000"
NOW = datetime(2026, 3, 31, 12, 0, tzinfo=UTC)


def ms(text: str) -> int:
    return int(datetime.fromisoformat(text).timestamp() * 1000)


def test_parse_pending() -> None:
    raw = {
        b"#id": b"f1",
        b"m|abc": f"{OWNER}\x00team/app".encode(),
        b"n|abc": b"5",
        b"N|abc": b"2",
        b"l|abc": b"1000",
        b"L|abc": b"900",
        b"d|abc|2026-03-30": b"3",
        b"d|abc|2026-03-31": b"2",
        b"m|pushonly": f"{OWNER}\x00other".encode(),
        b"N|pushonly": b"1",
        b"n|orphan": b"9",  # no owner/repository: cannot be placed, dropped (logged)
    }
    flush_id, deltas = parse_pending(raw)
    assert flush_id == "f1"
    assert deltas["abc"] == Delta(OWNER, "team/app", 5, 2, 1000, 900, {"2026-03-30": 3, "2026-03-31": 2})
    assert deltas["pushonly"] == Delta(OWNER, "other", 0, 1)
    assert "orphan" not in deltas


def test_merge_into_nothing_is_a_valid_record() -> None:
    delta = Delta(OWNER, "app", pulls=3, last_pull_ms=ms("2026-03-31T11:00:00+00:00"), days={"2026-03-31": 3})
    record = merge(None, delta, "f1", NOW)
    validate_record(STATS, record)
    assert record == {
        "$type": STATS,
        "ownerDid": OWNER,
        "repository": "app",
        "pullCount": 3,
        "pushCount": 0,
        "lastPull": "2026-03-31T11:00:00.000Z",
        "updatedAt": "2026-03-31T12:00:00.000Z",
        "dailyPulls": [{"day": "2026-03-31", "count": 3}],
        "flushId": "f1",
    }


def test_merge_adds_counts_keeps_later_times_and_a_30_day_window() -> None:
    existing = {
        "$type": STATS,
        "ownerDid": OWNER,
        "repository": "app",
        "pullCount": 100,
        "pushCount": 4,
        "lastPull": "2026-03-31T11:30:00Z",  # later than this delta's pulls: kept as written
        "lastPush": "2026-01-01T00:00:00.000Z",
        "updatedAt": "2026-03-30T00:00:00.000Z",
        "dailyPulls": [
            {"day": "2026-02-28", "count": 50},  # 31 days before NOW: dropped
            {"day": "2026-03-02", "count": 7},  # the oldest day kept
            {"day": "2026-03-31", "count": 1},
        ],
        "flushId": "f0",
    }
    delta = Delta(
        OWNER, "app", pulls=5, pushes=1,
        last_pull_ms=ms("2026-03-31T11:00:00+00:00"), last_push_ms=ms("2026-03-31T10:00:00+00:00"),
        days={"2026-03-31": 4, "2026-03-30": 1},
    )
    record = merge(existing, delta, "f1", NOW)
    validate_record(STATS, record)
    assert record["pullCount"] == 105 and record["pushCount"] == 5
    assert record["lastPull"] == "2026-03-31T11:30:00Z"
    assert record["lastPush"] == "2026-03-31T10:00:00.000Z"
    assert record["dailyPulls"] == [
        {"day": "2026-03-02", "count": 7},
        {"day": "2026-03-30", "count": 1},
        {"day": "2026-03-31", "count": 5},
    ]
    assert record["flushId"] == "f1"


def test_merge_tolerates_foreign_or_broken_fields() -> None:
    """Records written by another implementation may miss or mangle fields; counting goes on."""
    existing = {"pullCount": -3, "pushCount": "7", "lastPull": "yesterday", "dailyPulls": "lots", "extra": 1}
    record = merge(existing, Delta(OWNER, "app", pushes=1), "f", NOW)
    validate_record(STATS, record)
    assert (record["pullCount"], record["pushCount"]) == (0, 1)
    assert "lastPull" not in record and "lastPush" not in record and "dailyPulls" not in record


def test_iso_ms() -> None:
    assert iso_ms(0) == "1970-01-01T00:00:00.000Z"
    assert iso_ms(1_700_000_000_123) == "2023-11-14T22:13:20.123Z"
