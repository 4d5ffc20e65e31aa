"""Jetstream consumer settings."""

from __future__ import annotations

from dataclasses import dataclass

from atcr.config import NetworkSettings
from atcr.errors import ConfigError
from atcr.settings import check_addr, check_url, setting


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
    status_addr: str = setting(
        "127.0.0.1:5001", "ATCR_JETSTREAM_STATUS_ADDR", "address of the status/metrics endpoint"
    )
    enabled: bool = setting(True, "ATCR_JETSTREAM_ENABLED", "connect to Jetstream (off: status endpoint only)")
    backfill_enabled: bool = setting(True, "ATCR_BACKFILL_ENABLED", "backfill from the relay at start and after gaps")

    def validate(self) -> None:
        super().validate()
        check_addr("ATCR_JETSTREAM_STATUS_ADDR", self.status_addr)
        if not self.jetstream_urls:
            raise ConfigError("JETSTREAM_URL: at least one URL is required")
        for url in self.jetstream_urls:
            check_url("JETSTREAM_URL", url, schemes=("ws", "wss"))
        check_url("ATCR_RELAY_ENDPOINT", self.relay_endpoint)
