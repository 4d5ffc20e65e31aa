"""Jetstream consumer settings."""

from __future__ import annotations

from dataclasses import dataclass

from atcr.config import NetworkSettings
from atcr.errors import ConfigError
from atcr.settings import check_addr, check_did, check_positive, check_url, setting


@dataclass(frozen=True)
class JetstreamSettings(NetworkSettings):
    jetstream_urls: tuple[str, ...] = setting(
        ("wss://jetstream2.us-east.bsky.network/subscribe", "wss://jetstream1.us-west.bsky.network/subscribe"),
        "JETSTREAM_URL",
        "Jetstream /subscribe URLs, comma-separated; later ones are failovers",
    )
    relay_endpoint: str = setting(
        "https://relay1.us-east.bsky.network", "ATCR_RELAY_ENDPOINT", "relay used for backfill"
    )
    status_addr: str = setting("127.0.0.1:5001", "ATCR_JETSTREAM_STATUS_ADDR", "address of the status/metrics endpoint")
    enabled: bool = setting(True, "ATCR_JETSTREAM_ENABLED", "connect to Jetstream (off: status endpoint only)")
    backfill_enabled: bool = setting(True, "ATCR_BACKFILL_ENABLED", "backfill from the relay at start and after gaps")
    wanted_collections: tuple[str, ...] = setting(
        ("io.atcr.*",),
        "ATCR_JETSTREAM_COLLECTIONS",
        "collections to follow, comma-separated; full NSIDs or prefix.* wildcards",
    )
    wanted_dids: tuple[str, ...] = setting(
        (), "ATCR_JETSTREAM_DIDS", "follow only these DIDs, comma-separated (empty: every DID)"
    )
    max_message_bytes: int = setting(
        2 * 1024 * 1024, "ATCR_JETSTREAM_MAX_MESSAGE_BYTES", "largest Jetstream event accepted, in bytes"
    )
    cursor_save_events: int = setting(
        1000, "ATCR_JETSTREAM_CURSOR_EVERY", "save the cursor after this many applied events ..."
    )
    cursor_save_seconds: float = setting(
        2.0, "ATCR_JETSTREAM_CURSOR_SECONDS", "... or after this many seconds, whichever comes first"
    )
    rewind_seconds: float = setting(
        5.0, "ATCR_JETSTREAM_REWIND", "seconds to rewind the saved cursor on reconnect (replays are idempotent)"
    )
    reconnect_min_seconds: float = setting(0.5, "ATCR_JETSTREAM_BACKOFF_MIN", "first reconnect delay, seconds")
    reconnect_max_seconds: float = setting(60.0, "ATCR_JETSTREAM_BACKOFF_MAX", "longest reconnect delay, seconds")
    gap_seconds: float = setting(
        300.0,
        "ATCR_JETSTREAM_GAP_SECONDS",
        "a first event after reconnect this much newer than the cursor means events were skipped: backfill",
    )
    lookback_seconds: float = setting(
        34 * 3600.0,
        "ATCR_JETSTREAM_LOOKBACK",
        "a saved cursor older than this is past the stream's replay window: backfill at start",
    )
    batch_max: int = setting(500, "ATCR_JETSTREAM_BATCH", "most events applied in one Valkey round trip")
    firehose_urls: tuple[str, ...] = setting(
        (),
        "ATCR_FIREHOSE_URLS",
        "hosts whose com.atproto.sync.subscribeRepos to follow too (a relay, a PDS, a hold), comma-separated",
    )
    firehose_verify: bool = setting(
        True, "ATCR_FIREHOSE_VERIFY", "check firehose commit signatures and MST proofs against the DID's key"
    )
    firehose_max_message_bytes: int = setting(
        8 * 1024 * 1024, "ATCR_FIREHOSE_MAX_MESSAGE_BYTES", "largest firehose frame accepted, in bytes"
    )
    backfill_concurrency: int = setting(8, "ATCR_BACKFILL_CONCURRENCY", "repositories listed at the same time")
    scan_webhooks: bool = setting(
        True, "ATCR_JETSTREAM_SCAN_WEBHOOKS", "queue the owners' scan:* webhooks when a hold writes a new scan record"
    )
    base_url: str = setting(
        "http://127.0.0.1:5000", "ATCR_BASE_URL", "public URL of the AppView (the links in scan webhook payloads)"
    )
    backfill_holds: tuple[str, ...] = setting(
        (), "ATCR_BACKFILL_HOLDS", "hold DIDs to list at every backfill, besides the holds records name"
    )

    def validate(self) -> None:
        super().validate()
        check_addr("ATCR_JETSTREAM_STATUS_ADDR", self.status_addr)
        if not self.jetstream_urls and not self.firehose_urls:
            raise ConfigError("JETSTREAM_URL: at least one URL is required (or ATCR_FIREHOSE_URLS)")
        for url in self.jetstream_urls:
            check_url("JETSTREAM_URL", url, schemes=("ws", "wss"))
        check_url("ATCR_RELAY_ENDPOINT", self.relay_endpoint)
        check_url("ATCR_BASE_URL", self.base_url)
        for url in self.firehose_urls:
            check_url("ATCR_FIREHOSE_URLS", url, schemes=("ws", "wss", "http", "https"))
        for nsid in self.wanted_collections:
            base = nsid[:-2] if nsid.endswith(".*") else nsid
            if not base or not all(part for part in base.split(".")):
                raise ConfigError(f"ATCR_JETSTREAM_COLLECTIONS: {nsid!r} is not an NSID or prefix.*")
        for did in self.wanted_dids:
            check_did("ATCR_JETSTREAM_DIDS", did)
        for did in self.backfill_holds:
            check_did("ATCR_BACKFILL_HOLDS", did)
        for name, value in (
            ("ATCR_JETSTREAM_MAX_MESSAGE_BYTES", self.max_message_bytes),
            ("ATCR_JETSTREAM_CURSOR_EVERY", self.cursor_save_events),
            ("ATCR_JETSTREAM_CURSOR_SECONDS", self.cursor_save_seconds),
            ("ATCR_JETSTREAM_BACKOFF_MIN", self.reconnect_min_seconds),
            ("ATCR_JETSTREAM_BACKOFF_MAX", self.reconnect_max_seconds),
            ("ATCR_JETSTREAM_GAP_SECONDS", self.gap_seconds),
            ("ATCR_JETSTREAM_LOOKBACK", self.lookback_seconds),
            ("ATCR_JETSTREAM_BATCH", self.batch_max),
            ("ATCR_FIREHOSE_MAX_MESSAGE_BYTES", self.firehose_max_message_bytes),
            ("ATCR_BACKFILL_CONCURRENCY", self.backfill_concurrency),
        ):
            check_positive(name, value)
        if self.rewind_seconds < 0:
            raise ConfigError(f"ATCR_JETSTREAM_REWIND={self.rewind_seconds!r}: must not be negative")
        if self.reconnect_max_seconds < self.reconnect_min_seconds:
            raise ConfigError("ATCR_JETSTREAM_BACKOFF_MAX: must not be below ATCR_JETSTREAM_BACKOFF_MIN")
