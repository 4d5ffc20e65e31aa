"""Hold settings (ATCR names where ATCR has one: ATCR-NOTES.md §5.1)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from atcr.config import NetworkSettings
from atcr.errors import ConfigError
from atcr.settings import check_addr, check_did, check_positive, check_url, default_data_dir, setting


@dataclass(frozen=True)
class HoldSettings(NetworkSettings):
    http_addr: str = setting("127.0.0.1:8080", "HOLD_HTTP_ADDR", "address the hold listens on (host:port)")
    public_url: str = setting(
        "http://127.0.0.1:8080", "HOLD_PUBLIC_URL", "public URL of the hold; its host becomes the did:web"
    )
    owner: str = setting("", "HOLD_OWNER", "DID of the captain (owner) of this hold")
    public: bool = setting(False, "HOLD_PUBLIC", "anyone may read blobs (pull) without being crew")
    allow_all_crew: bool = setting(
        False, "HOLD_ALLOW_ALL_CREW", "any authenticated user may join the crew with blob:read+blob:write"
    )
    storage_driver: str = setting("filesystem", "STORAGE_DRIVER", "s3 or filesystem")
    storage_root_dir: Path = setting(
        default_data_dir() / "hold" / "blobs", "STORAGE_ROOT_DIR", "filesystem driver: where blobs live"
    )
    s3_bucket: str = setting("", "S3_BUCKET", "s3 driver: bucket name")
    s3_endpoint: str = setting("", "S3_ENDPOINT", "s3 driver: endpoint URL for non-AWS S3 APIs (R2, MinIO...)")
    s3_region: str = setting("us-east-1", "AWS_REGION", "s3 driver: region")
    s3_path_style: bool = setting(False, "S3_FORCE_PATH_STYLE", "s3 driver: path-style addressing")
    s3_prefix: str = setting("", "S3_PREFIX", "s3 driver: key prefix inside the bucket")
    data_dir: Path = setting(
        default_data_dir() / "hold", "HOLD_DATA_DIR", "hold state: signing key, repo database"
    )
    key_path: Path | None = setting(None, "HOLD_KEY_PATH", "signing key (created on first start, mode 0600)")
    url_expiry: int = setting(900, "HOLD_URL_EXPIRY", "seconds a presigned download/upload URL stays valid")
    upload_max_size: int = setting(
        10 * 1024**3, "HOLD_UPLOAD_MAX_SIZE", "largest blob accepted, in bytes"
    )
    upload_max_age: int = setting(
        24 * 3600, "HOLD_UPLOAD_MAX_AGE", "seconds after which an unfinished upload is cleaned up"
    )

    def validate(self) -> None:
        super().validate()
        check_addr("HOLD_HTTP_ADDR", self.http_addr)
        check_url("HOLD_PUBLIC_URL", self.public_url)
        if self.owner:
            check_did("HOLD_OWNER", self.owner)
        if self.storage_driver not in ("s3", "filesystem"):
            raise ConfigError(f"STORAGE_DRIVER={self.storage_driver!r}: expected s3 or filesystem")
        if self.storage_driver == "s3" and not self.s3_bucket:
            raise ConfigError("S3_BUCKET: required when STORAGE_DRIVER=s3")
        if self.s3_endpoint:
            check_url("S3_ENDPOINT", self.s3_endpoint)
        check_positive("HOLD_URL_EXPIRY", self.url_expiry)
        check_positive("HOLD_UPLOAD_MAX_SIZE", self.upload_max_size)
        check_positive("HOLD_UPLOAD_MAX_AGE", self.upload_max_age)

    @property
    def signing_key_path(self) -> Path:
        return self.key_path or self.data_dir / "signing.key"
