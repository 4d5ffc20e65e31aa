"""Cursor checkpoints, backoff, rates, URLs, settings and the status text."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

import fakeredis
import pytest

from atcr.errors import ConfigError
from atcr.settings import load
from jetstream.cursor import Checkpointer, CursorStore
from jetstream.metrics import EventRate
from jetstream.settings import JetstreamSettings
from jetstream.sources import Backoff, JetstreamSource, describe, firehose_source_name, firehose_url
from jetstream.status import render, status_url

pytestmark = pytest.mark.unit


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def test_checkpointer_saves_every_n_events_or_t_seconds() -> None:
    v = fakeredis.FakeAsyncRedis()
    store = CursorStore(v, "jetstream")  # type: ignore[arg-type]
    clock = Clock()
    cp = Checkpointer(store, every_events=3, every_seconds=2.0, clock=clock)
    assert not await cp.advance(10)
    assert not await cp.advance(11)
    assert await store.load() is None
    assert await cp.advance(12)  # third event
    assert await store.load() == 12
    assert not await cp.advance(13)
    assert not await cp.tick()  # not yet 2 s
    clock.now += 2.5
    assert await cp.tick()
    assert await store.load() == 13
    assert not await cp.tick()  # nothing new
    assert not await cp.advance(9)  # never moves back
    assert cp.applied == 13
    await cp.flush()
    assert await store.load() == 13
    await store.clear()
    assert await store.load() is None


def test_backoff_grows_with_jitter_and_is_capped() -> None:
    b = Backoff(0.5, 8.0, rng=lambda: 1.0)
    assert [b.next() for _ in range(6)] == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0]
    low = Backoff(0.5, 8.0, rng=lambda: 0.0)
    assert [low.next() for _ in range(3)] == [0.25, 0.5, 1.0]
    b.reset()
    assert b.next() == 0.5
    assert 0 <= Backoff(0.5, 8.0).short() <= 0.5


def test_event_rate_window() -> None:
    clock = Clock()
    rate = EventRate(window=10, clock=clock)
    rate.add(50)
    clock.now += 5
    rate.add(50)
    assert rate.per_second() == 10
    clock.now += 6
    assert rate.per_second() == 5


def _source(**over: Any) -> JetstreamSource:
    async def load() -> int | None:
        return None

    args: dict[str, Any] = {
        "load_position": load,
        "collections": ("io.atcr.*",),
        "dids": (),
        "max_message_bytes": 1000,
        "rewind_us": 5_000_000,
        "gap_us": 1,
        "backoff_min": 0.1,
        "backoff_max": 1,
    }
    args.update(over)
    return JetstreamSource(["wss://js.example/subscribe", "wss://js2.example/subscribe"], **args)


def test_jetstream_url_carries_filter_cursor_and_hello() -> None:
    src = _source()
    url = src.connect_url("wss://js.example/subscribe", 20_000_000)
    q = parse_qs(urlsplit(url).query)
    assert q == {
        "wantedCollections": ["io.atcr.*"],
        "maxMessageSizeBytes": ["1000"],
        "requireHello": ["true"],
        "cursor": ["15000000"],
    }
    assert "cursor" not in parse_qs(urlsplit(src.connect_url("wss://js.example/subscribe", None)).query)
    assert src.max_size > 1000


def test_options_update_shape() -> None:
    import json

    src = _source(dids=("did:plc:a",))
    assert json.loads(src.options_update()) == {
        "type": "options_update",
        "payload": {"wantedCollections": ["io.atcr.*"], "wantedDids": ["did:plc:a"], "maxMessageSizeBytes": 1000},
    }


def test_firehose_urls() -> None:
    assert firehose_url("https://pds.example") == "wss://pds.example/xrpc/com.atproto.sync.subscribeRepos"
    assert firehose_url("http://127.0.0.1:8080/") == "ws://127.0.0.1:8080/xrpc/com.atproto.sync.subscribeRepos"
    assert (
        firehose_url("wss://relay.example/xrpc/com.atproto.sync.subscribeRepos")
        == "wss://relay.example/xrpc/com.atproto.sync.subscribeRepos"
    )
    assert firehose_source_name("http://127.0.0.1:8080") == "fh:127.0.0.1:8080"


def test_failures_are_described_in_one_line() -> None:
    assert describe(TimeoutError()) == "timed out"
    assert describe(ConnectionRefusedError(111, "Connection refused")) == "ConnectionRefusedError: Connection refused"


def test_settings_defaults_and_validation() -> None:
    s = load(JetstreamSettings, {})
    assert s.wanted_collections == ("io.atcr.*",) and s.jetstream_urls and s.rewind_seconds == 5.0
    fh_only = load(JetstreamSettings, {"JETSTREAM_URL": "", "ATCR_FIREHOSE_URLS": "https://pds.example"})
    assert fh_only.jetstream_urls == () and fh_only.firehose_urls == ("https://pds.example",)
    for env in (
        {"JETSTREAM_URL": ""},
        {"JETSTREAM_URL": "https://not-ws.example"},
        {"ATCR_JETSTREAM_COLLECTIONS": "io..atcr"},
        {"ATCR_JETSTREAM_DIDS": "alice"},
        {"ATCR_BACKFILL_HOLDS": "nope"},
        {"ATCR_JETSTREAM_BATCH": "0"},
        {"ATCR_JETSTREAM_REWIND": "-1"},
        {"ATCR_JETSTREAM_BACKOFF_MIN": "5", "ATCR_JETSTREAM_BACKOFF_MAX": "1"},
        {"ATCR_FIREHOSE_URLS": "ftp://x"},
    ):
        with pytest.raises(ConfigError):
            load(JetstreamSettings, env)


def test_status_url_and_render() -> None:
    assert (
        status_url(load(JetstreamSettings, {"ATCR_JETSTREAM_STATUS_ADDR": ":7001"})) == "http://127.0.0.1:7001/status"
    )
    body = {
        "state": "running",
        "sources": [
            {"name": "jetstream", "kind": "jetstream", "connected": True, "url": "wss://js", "reconnects": 2},
            {"name": "fh:pds", "kind": "firehose", "connected": False, "last_error": "timed out", "next_retry_in": 4},
        ],
        "cursors": {"jetstream": {"saved": 1_700_000_000_000_000}, "fh:pds": {"saved": 17}},
        "events_total": 12,
        "events_per_second": 1.5,
        "lag_seconds": 0.25,
        "last_applied_ago_seconds": 1.0,
        "backfill": {"running": True, "reason": "first start", "repos_done": 3, "repos_total": 9, "records": 40},
    }
    text = render(body, now=1_700_000_060.0)
    assert "jetstream: connected to wss://js; reconnects 2" in text
    assert "fh:pds: disconnected (timed out; retry in 4s)" in text
    assert "2023-11-14 22:13:20 UTC, 60.0s ago" in text and "seq 17" in text
    assert "12 applied, 1.5/s; lag 0.250s" in text
    assert "backfill: running (first start): 3/9 repositories, 40 records" in text
    idle = render(
        {"state": "running", "backfill": {"runs": 1, "finished_at": 1.0, "repos_total": 2, "repos_done": 2}}, now=61.0
    )
    assert "backfill: last run 60.0s ago: 2/2 repositories" in idle
    assert "backfill: none yet" in render({}, now=0)


async def test_hold_registry_reports_new_holds_once() -> None:
    from jetstream.backfill import HoldRegistry

    v = fakeredis.FakeAsyncRedis()
    reg = HoldRegistry(v, configured=["did:web:configured.example"])  # type: ignore[arg-type]
    assert await reg.add(["did:web:a.example", "not a did", "did:web:b.example"]) == [
        "did:web:a.example",
        "did:web:b.example",
    ]
    assert await reg.add(["did:web:a.example"]) == []
    other = HoldRegistry(v)  # type: ignore[arg-type]  # another process: Valkey already has a
    assert await other.add(["did:web:a.example", "did:web:c.example"]) == ["did:web:c.example"]
    assert await reg.all() == [
        "did:web:a.example",
        "did:web:b.example",
        "did:web:c.example",
        "did:web:configured.example",
    ]
