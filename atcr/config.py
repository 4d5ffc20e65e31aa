"""Settings shared by every service: how to reach the network and Valkey."""

from __future__ import annotations

from dataclasses import dataclass

from atcr.errors import ConfigError
from atcr.settings import check_positive, check_url, setting
from atcr.valkey import CLUSTER_SCHEMES, ClusterUrl


@dataclass(frozen=True)
class NetworkSettings:
    """How a service reaches PLC, handles, and upstream servers; shared by all three services."""

    valkey_url: str = setting(
        "",
        "VALKEY_URL",
        "Valkey URL (redis://, rediss://, valkey+sentinel://host:26379,host2:26379/<service> for Sentinel, or "
        "valkey+cluster://host:port,host2:port for a Valkey Cluster, valkeys+cluster:// with TLS); "
        "empty in `atcr dev` starts an embedded one",
        secret=True,
    )
    plc_url: str = setting("https://plc.directory", "ATCR_PLC_URL", "PLC directory for did:plc resolution")
    handle_resolver_url: str = setting(
        "",
        "ATCR_HANDLE_RESOLVER_URL",
        "resolve handles through this PDS's com.atproto.identity.resolveHandle instead of DNS/https "
        "(for networks whose handles have no DNS, e.g. .test)",
    )
    allow_private_networks: bool = setting(
        False,
        "ATCR_ALLOW_PRIVATE_NETWORKS",
        "let outbound fetches reach loopback/private addresses (dev and tests only)",
    )
    http_timeout: float = setting(10.0, "ATCR_HTTP_TIMEOUT", "seconds before any outbound request gives up")
    allowed_hosts: tuple[str, ...] = setting(
        (),
        "ATCR_ALLOWED_HOSTS",
        "comma-separated host or host:port that outbound fetches may reach even when private (an internal PLC "
        "mirror); everything else stays behind the SSRF guard",
    )
    server_header_timeout: float = setting(
        10.0, "ATCR_SERVER_HEADER_TIMEOUT", "seconds a client may take to send a request's line and headers (408)"
    )
    server_body_timeout: float = setting(
        60.0, "ATCR_SERVER_BODY_TIMEOUT", "seconds a request body may stall while it is being read (408, closed)"
    )
    server_max_header_bytes: int = setting(
        64 * 1024, "ATCR_SERVER_MAX_HEADER_BYTES", "largest request line + headers accepted, in bytes (431)"
    )
    log_level: str = setting("info", "ATCR_LOG_LEVEL", "debug, info, warning or error")

    def validate(self) -> None:
        check_url("ATCR_PLC_URL", self.plc_url)
        if self.handle_resolver_url:
            check_url("ATCR_HANDLE_RESOLVER_URL", self.handle_resolver_url)
        if self.valkey_url.startswith(("valkey+sentinel://", "redis+sentinel://")):
            from atcr.valkey import SentinelUrl

            SentinelUrl.parse(self.valkey_url)  # ConfigError naming what is wrong
        elif self.valkey_url.startswith(CLUSTER_SCHEMES):
            ClusterUrl.parse(self.valkey_url)
        elif self.valkey_url and not self.valkey_url.startswith(("redis://", "rediss://", "unix://", "valkey://")):
            raise ConfigError(
                "VALKEY_URL: expected redis://, rediss://, valkey://, unix://, valkey+sentinel:// "
                "or valkey+cluster:// URL"
            )
        check_positive("ATCR_HTTP_TIMEOUT", self.http_timeout)
        check_positive("ATCR_SERVER_HEADER_TIMEOUT", self.server_header_timeout)
        check_positive("ATCR_SERVER_BODY_TIMEOUT", self.server_body_timeout)
        if self.server_max_header_bytes < 4096:
            raise ConfigError("ATCR_SERVER_MAX_HEADER_BYTES: must be at least 4096")
        if self.log_level.lower() not in ("debug", "info", "warning", "error"):
            raise ConfigError(f"ATCR_LOG_LEVEL={self.log_level!r}: expected debug, info, warning or error")
