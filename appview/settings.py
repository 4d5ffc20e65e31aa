"""AppView settings (ATCR names where ATCR has one: ATCR-NOTES.md §4.1)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from atcr.config import NetworkSettings
from atcr.errors import ConfigError
from atcr.settings import check_addr, check_did, check_positive, check_url, default_data_dir, setting


@dataclass(frozen=True)
class AppViewSettings(NetworkSettings):
    http_addr: str = setting("127.0.0.1:5000", "ATCR_HTTP_ADDR", "address the AppView listens on (host:port)")
    base_url: str = setting(
        "http://127.0.0.1:5000",
        "ATCR_BASE_URL",
        "public URL of the AppView: token realm, OAuth redirects, its did:web",
    )
    default_hold_did: str = setting(
        "", "ATCR_DEFAULT_HOLD_DID", "hold used for users without a defaultHold in their profile (required)"
    )
    service_name: str = setting("", "ATCR_SERVICE_NAME", "registry token `service`/`aud`; default: base URL host")
    token_expiration: int = setting(300, "ATCR_TOKEN_EXPIRATION", "registry JWT lifetime in seconds")
    data_dir: Path = setting(
        default_data_dir() / "appview",
        "ATCR_DATA_DIR",
        "where keys are created when no key path is given (share keys between replicas)",
    )
    auth_key_path: Path | None = setting(
        None, "ATCR_AUTH_KEY_PATH", "ES256 PEM key that signs registry tokens; created if missing"
    )
    workers: int = setting(1, "ATCR_WORKERS", "uvicorn worker processes")

    def validate(self) -> None:
        super().validate()
        check_addr("ATCR_HTTP_ADDR", self.http_addr)
        check_url("ATCR_BASE_URL", self.base_url)
        if not self.default_hold_did:
            raise ConfigError("ATCR_DEFAULT_HOLD_DID: required (the DID of the hold new users push to)")
        check_did("ATCR_DEFAULT_HOLD_DID", self.default_hold_did)
        check_positive("ATCR_TOKEN_EXPIRATION", self.token_expiration)
        if not 1 <= self.workers <= 64:
            raise ConfigError(f"ATCR_WORKERS={self.workers}: must be 1-64")

    @property
    def key_path(self) -> Path:
        return self.auth_key_path or self.data_dir / "auth" / "token-signing.pem"
