"""Hold settings (ATCR names where ATCR has one: ATCR-NOTES.md §5.1)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from atcr.config import NetworkSettings
from atcr.errors import ConfigError
from atcr.settings import check_addr, check_did, check_positive, check_url, default_data_dir, setting

# The part sizes an AppView sends (appview/oci/parts.py): from S3's 5 MiB minimum (a request
# that ends early) up to a 16 MiB part that took a remainder of under 5 MiB.
APPVIEW_PART_MIN = 5 * 1024**2
APPVIEW_PART_MAX = 21 * 1024**2


@dataclass(frozen=True)
class HoldSettings(NetworkSettings):
    http_addr: str = setting("127.0.0.1:8080", "HOLD_HTTP_ADDR", "address the hold listens on (host:port)")
    public_url: str = setting(
        "http://localhost:8080", "HOLD_PUBLIC_URL", "public URL of the hold; its host becomes the did:web"
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
    direct_uploads: bool = setting(
        True,
        "HOLD_DIRECT_UPLOADS",
        "take OCI blob uploads directly from clients on capability URLs the AppView hands out "
        "(advertised in the DID document; needs Valkey)",
    )
    direct_upload_ttl: int = setting(
        3600, "HOLD_DIRECT_UPLOAD_TTL", "seconds a direct upload's capability URL stays valid"
    )
    max_open_uploads: int = setting(
        100, "HOLD_MAX_OPEN_UPLOADS", "direct uploads one user may have open at once (0: no cap)"
    )
    upload_max_age: int = setting(
        24 * 3600, "HOLD_UPLOAD_MAX_AGE", "seconds after which an unfinished upload is cleaned up"
    )
    upload_part_max_size: int = setting(
        64 * 1024**2, "HOLD_UPLOAD_PART_MAX_SIZE",
        "largest part accepted by uploadPart, in bytes (AppViews send up to 21 MiB)",
    )
    upload_part_min_size: int = setting(
        5 * 1024**2, "HOLD_UPLOAD_PART_MIN_SIZE",
        "smallest part but the last, in bytes (S3 needs 5 MiB; AppViews send 5 MiB and up)",
    )
    reservation_ttl: int = setting(
        3600,
        "HOLD_RESERVATION_TTL",
        "seconds an uploaded blob counts against its uploader's quota before a manifest uses it",
    )
    staged_grace: int = setting(
        24 * 3600,
        "HOLD_STAGED_GRACE",
        "seconds an uploaded blob that no layer record references is kept before it is deleted",
    )
    upload_sweep_interval: int = setting(
        900, "HOLD_UPLOAD_SWEEP_INTERVAL", "seconds between sweeps for abandoned uploads (0: never)"
    )
    gc_grace: int = setting(
        24 * 3600,
        "HOLD_GC_GRACE",
        "seconds a blob must have been unreferenced (and a layer record's manifest gone) before the "
        "garbage collector deletes it",
    )
    gc_interval: int = setting(
        6 * 3600, "HOLD_GC_INTERVAL", "seconds between garbage-collection runs (0: never; `atcr hold gc` runs one)"
    )
    allow_token_reuse: bool = setting(
        False,
        "HOLD_ALLOW_TOKEN_REUSE",
        "accept a service token more than once until it expires (for AppViews that cache tokens); "
        "off: a replayed jti is refused",
    )
    storage_threads: int = setting(32, "HOLD_STORAGE_THREADS", "threads for blocking storage calls (boto3, disk)")
    s3_max_attempts: int = setting(5, "S3_MAX_ATTEMPTS", "s3 driver: attempts per call on throttling/5xx")
    s3_retry_base_delay: float = setting(0.2, "S3_RETRY_BASE_DELAY", "s3 driver: first backoff ceiling, seconds")
    s3_retry_max_delay: float = setting(5.0, "S3_RETRY_MAX_DELAY", "s3 driver: largest backoff ceiling, seconds")
    s3_read_timeout: float = setting(
        60.0, "S3_READ_TIMEOUT", "s3 driver: seconds to wait for an S3 answer before the call is retried"
    )
    quotas_path: Path | None = setting(
        None, "HOLD_QUOTAS_PATH", "quota tiers file (ATCR's quotas.yaml shape, YAML or JSON); unset: no quotas"
    )
    trust_pull_notifications: bool = setting(
        True,
        "HOLD_TRUST_PULL_NOTIFICATIONS",
        "count pull notifications without a token from a trusted AppView, for repositories this hold stores "
        "(anyone can inflate their pull counts); production: false, with HOLD_TRUSTED_APPVIEWS",
    )
    trusted_appviews: tuple[str, ...] = setting(
        (),
        "HOLD_TRUSTED_APPVIEWS",
        "comma-separated AppView DIDs (did:web:...) whose service tokens may send pull counts and set crew tiers",
    )
    stats_flush_interval: float = setting(
        5.0, "HOLD_STATS_FLUSH_INTERVAL", "seconds between moves of pending pull/push counts into stats records"
    )
    scanner_secret: str = setting(
        "",
        "HOLD_SCANNER_SECRET",
        "shared secret scanners present to subscribeScanJobs (X-Scanner-Secret); empty: scanning is off",
        secret=True,
    )
    scan_all_pushes: bool = setting(
        False, "HOLD_SCAN_ALL_PUSHES", "scan every push, not only pushes by users whose tier has scanOnPush"
    )
    scan_lease: int = setting(
        300, "HOLD_SCAN_LEASE", "seconds a scan job stays leased to a scanner the hold lost contact with"
    )
    scan_max_attempts: int = setting(
        3, "HOLD_SCAN_MAX_ATTEMPTS", "leases of one scan job that may run out before the scan is marked failed"
    )

    bluesky_posts: bool = setting(
        False,
        "HOLD_BLUESKY_POSTS",
        "first start only: the captain record's enableBlueskyPosts (post app.bsky.feed.post about pushes from the "
        "hold's account); afterwards the record decides",
    )
    appview_url: str = setting(
        "", "HOLD_APPVIEW_URL", "AppView whose repository pages the push posts link to (empty: posts carry no link)"
    )
    bluesky_post_interval: float = setting(
        3600.0, "HOLD_BLUESKY_POST_INTERVAL", "seconds between two posts about the same repository (0: every push)"
    )

    def validate(self) -> None:
        super().validate()
        check_addr("HOLD_HTTP_ADDR", self.http_addr)
        if self.appview_url:
            check_url("HOLD_APPVIEW_URL", self.appview_url)
        if self.bluesky_post_interval < 0:
            raise ConfigError("HOLD_BLUESKY_POST_INTERVAL: must be 0 or more")
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
        check_positive("HOLD_DIRECT_UPLOAD_TTL", self.direct_upload_ttl)
        if self.max_open_uploads < 0:
            raise ConfigError("HOLD_MAX_OPEN_UPLOADS: must be 0 (no cap) or positive")
        check_positive("HOLD_RESERVATION_TTL", self.reservation_ttl)
        check_positive("HOLD_STAGED_GRACE", self.staged_grace)
        check_positive("HOLD_UPLOAD_PART_MAX_SIZE", self.upload_part_max_size)
        check_positive("HOLD_UPLOAD_PART_MIN_SIZE", self.upload_part_min_size)
        if self.upload_part_min_size > self.upload_part_max_size:
            raise ConfigError("HOLD_UPLOAD_PART_MIN_SIZE: must not exceed HOLD_UPLOAD_PART_MAX_SIZE")
        if self.upload_part_min_size > APPVIEW_PART_MIN:
            raise ConfigError("HOLD_UPLOAD_PART_MIN_SIZE: AppViews send parts as short as 5 MiB; at most 5242880")
        if self.upload_part_max_size < APPVIEW_PART_MAX:
            raise ConfigError(
                f"HOLD_UPLOAD_PART_MAX_SIZE: AppViews send parts of up to 21 MiB; at least {APPVIEW_PART_MAX}"
            )
        if self.upload_part_max_size > 5 * 1024**3:
            raise ConfigError("HOLD_UPLOAD_PART_MAX_SIZE: S3 parts are at most 5 GiB")
        if self.storage_driver == "s3" and self.upload_part_min_size < 5 * 1024**2:
            raise ConfigError("HOLD_UPLOAD_PART_MIN_SIZE: S3 needs at least 5 MiB per part but the last")
        if self.upload_sweep_interval < 0:
            raise ConfigError("HOLD_UPLOAD_SWEEP_INTERVAL: must be 0 (never) or positive")
        if self.gc_grace < 0:
            raise ConfigError("HOLD_GC_GRACE: must be 0 or positive")
        if self.gc_interval < 0:
            raise ConfigError("HOLD_GC_INTERVAL: must be 0 (never) or positive")
        check_positive("HOLD_STORAGE_THREADS", self.storage_threads)
        for did in self.trusted_appviews:
            check_did("HOLD_TRUSTED_APPVIEWS", did)
        check_positive("HOLD_STATS_FLUSH_INTERVAL", self.stats_flush_interval)
        check_positive("HOLD_SCAN_LEASE", self.scan_lease)
        check_positive("HOLD_SCAN_MAX_ATTEMPTS", self.scan_max_attempts)
        check_positive("S3_MAX_ATTEMPTS", self.s3_max_attempts)
        check_positive("S3_READ_TIMEOUT", self.s3_read_timeout)
        if self.s3_retry_base_delay < 0 or self.s3_retry_max_delay < self.s3_retry_base_delay:
            raise ConfigError("S3_RETRY_BASE_DELAY/S3_RETRY_MAX_DELAY: need 0 <= base <= max")

    @property
    def signing_key_path(self) -> Path:
        return self.key_path or self.data_dir / "signing.key"

    @property
    def url_secret_path(self) -> Path:
        """The secret the filesystem driver's signed URLs are keyed from (created on first start)."""
        return self.data_dir / "url-signing.key"
