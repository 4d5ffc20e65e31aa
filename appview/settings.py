"""AppView settings (ATCR names where ATCR has one: ATCR-NOTES.md §4.1)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from appview.clientaddr import DEFAULT_TRUSTED_PROXIES, parse_networks
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
    hold_timeout: float = setting(
        2.0,
        "ATCR_HOLD_TIMEOUT",
        "seconds a call to a hold (blob lookups, redirects, notifications; not upload bytes) waits before failing",
    )
    hold_down_seconds: float = setting(
        10.0, "ATCR_HOLD_DOWN_SECONDS", "seconds a hold that timed out is given up on (requests fail fast)"
    )
    push_hold_pin_seconds: int = setting(
        900, "ATCR_PUSH_HOLD_PIN_SECONDS", "seconds a user's push hold, once chosen, stays the same for their pushes"
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
    secret_key_path: Path | None = setting(
        None,
        "ATCR_SECRET_KEY_PATH",
        "32+ random bytes that seal sessions at rest; created if missing (share between replicas)",
    )
    max_blob_size: int = setting(10 * 1024**3, "ATCR_MAX_BLOB_SIZE", "largest blob accepted by a push, in bytes")
    workers: int = setting(1, "ATCR_WORKERS", "uvicorn worker processes")
    rate_limit_address: int = setting(
        6000, "ATCR_RATE_LIMIT_ADDRESS", "requests per minute per client address across replicas (0: off)"
    )
    rate_limit_user: int = setting(
        12000, "ATCR_RATE_LIMIT_USER", "requests per minute per signed-in user across replicas (0: off)"
    )
    rate_limit_login_failures: int = setting(
        20,
        "ATCR_RATE_LIMIT_LOGIN_FAILURES",
        "failed logins per 10 minutes per client address and account, counted before the PDS is asked (0: off)",
    )
    rate_limit_login_failures_address: int = setting(
        100,
        "ATCR_RATE_LIMIT_LOGIN_FAILURES_ADDRESS",
        "failed logins per 10 minutes per client address over all accounts (0: off)",
    )
    trust_forwarded_for: bool = setting(
        False,
        "ATCR_TRUST_FORWARDED_FOR",
        "take the client address from X-Forwarded-For: the right-most entry that is not a trusted proxy "
        "(docs/security.md)",
    )
    trusted_proxies: tuple[str, ...] = setting(
        DEFAULT_TRUSTED_PROXIES,
        "ATCR_TRUSTED_PROXIES",
        "comma-separated proxy addresses or CIDR networks whose X-Forwarded-For entries are believed",
    )
    trusted_proxy_hops: int = setting(
        0,
        "ATCR_TRUSTED_PROXY_HOPS",
        "or: how many proxies stand in front of the AppView (the TCP peer is the first), trusted whatever "
        "their address",
    )
    max_open_uploads: int = setting(
        100, "ATCR_MAX_OPEN_UPLOADS", "blob upload sessions one user may have open at once (0: no cap)"
    )
    direct_uploads: str = setting(
        "auto",
        "ATCR_DIRECT_UPLOADS",
        "auto: a push's layer bytes go from the client straight to the user's hold when the hold takes direct "
        "uploads (its DID document says so); off: every byte passes through the AppView (clients cannot reach "
        "holds)",
    )
    sparse_indexes: bool = setting(
        True,
        "ATCR_SPARSE_INDEXES",
        "accept an image index (manifest list) naming child manifests the repository does not have; "
        "pulling an absent child answers MANIFEST_UNKNOWN (false: refuse the index with MANIFEST_BLOB_UNKNOWN)",
    )
    retention_interval: float = setting(
        3600.0,
        "ATCR_RETENTION_INTERVAL",
        "seconds between scheduled runs of repositories' retention rules, for owners with a live session "
        "(0: only when the owner pushes)",
    )
    provenance_referrers: str = setting(
        "all",
        "ATCR_PROVENANCE_REFERRERS",
        "list each manifest's repo proof (artifactType application/vnd.atproto.signature.v1+json) among its "
        "referrers: all, filtered (only when a client asks for that artifactType; for suites that expect exact "
        "referrer lists) or off",
    )
    cache_fresh_ttl: float = setting(
        60.0, "ATCR_CACHE_FRESH_TTL", "seconds a cached record is served without a refresh"
    )
    cache_max_stale: float = setting(
        3600.0, "ATCR_CACHE_MAX_STALE", "seconds a stale entry may still be served while its PDS is failing"
    )
    cache_negative_ttl: float = setting(30.0, "ATCR_CACHE_NEGATIVE_TTL", "seconds an unknown name is remembered")
    cache_blob_hint_ttl: float = setting(
        3600.0,
        "ATCR_CACHE_BLOB_HINT_TTL",
        "seconds the owner's HEAD before an upload trusts that a blob a manifest named is on its hold "
        "(0: always ask the hold); keep it below the holds' HOLD_GC_GRACE",
    )
    cache_upstream_timeout: float = setting(
        5.0, "ATCR_CACHE_UPSTREAM_TIMEOUT", "seconds a cache miss waits on a PDS before failing fast"
    )
    cache_near_ttl: float = setting(
        2.0,
        "ATCR_CACHE_NEAR_TTL",
        "seconds a process keeps hot answers (identity, tag, manifest) in memory; Valkey's invalidation "
        "messages drop them on any change (0: off)",
    )
    # --- sign-in (docs/auth.md) ---
    oauth_client: str = setting(
        "auto",
        "ATCR_OAUTH_CLIENT",
        "OAuth client kind: confidential (https base URL), loopback (local runs), or auto (pick by base URL)",
    )
    oauth_key_path: Path | None = setting(
        None, "ATCR_OAUTH_KEY_PATH", "ES256 PEM key of the confidential OAuth client; created if missing"
    )
    oauth_retired_key_paths: tuple[str, ...] = setting(
        (), "ATCR_OAUTH_RETIRED_KEY_PATHS", "older client keys still published in the JWKS (comma-separated paths)"
    )
    oauth_scope: str = setting(
        "", "ATCR_OAUTH_SCOPE", "OAuth scope to request; default: granular io.atcr.* scopes (docs/auth.md)"
    )
    oauth_permission_set: bool = setting(
        False, "ATCR_OAUTH_PERMISSION_SET", "ask for include:io.atcr.authFullApp instead of granular repo: scopes"
    )
    oauth_client_name: str = setting("ATCR", "ATCR_OAUTH_CLIENT_NAME", "client name shown on the consent page")
    web_session_ttl: int = setting(30 * 24 * 3600, "ATCR_WEB_SESSION_TTL", "browser session lifetime in seconds")
    device_code_ttl: int = setting(600, "ATCR_DEVICE_CODE_TTL", "seconds a device login code stays valid")
    device_poll_interval: int = setting(5, "ATCR_DEVICE_POLL_INTERVAL", "seconds between device-flow polls")
    bcrypt_rounds: int = setting(12, "ATCR_BCRYPT_ROUNDS", "bcrypt cost for device secrets (4-16)")
    # --- web UI (docs/web-ui.md) ---
    ui_hold_wait: float = setting(
        0.4,
        "ATCR_UI_HOLD_WAIT",
        "seconds a page waits for hold stats and health before it is shown without them (a later view has them)",
    )
    ui_discovery_relay: str = setting(
        "",
        "ATCR_UI_DISCOVERY_RELAY",
        "relay (or PDS) whose listReposByCollection/listRepos re-seeds home and search after a cache flush "
        "(empty: holds only)",
    )

    # --- webhooks (docs/webhooks.md) ---
    webhook_worker: bool = setting(
        True, "ATCR_WEBHOOK_WORKER", "deliver queued webhook events from this process (replicas share the queue)"
    )
    webhook_allowed_hosts: tuple[str, ...] = setting(
        (),
        "ATCR_WEBHOOK_ALLOWED_HOSTS",
        "comma-separated host or host:port webhook URLs may name even when private (an internal receiver); "
        "every other private address is refused (ATCR_ALLOW_PRIVATE_NETWORKS does not apply to webhooks)",
    )
    webhook_retry_base: float = setting(
        30.0,
        "ATCR_WEBHOOK_RETRY_BASE",
        "seconds before a failed delivery's first retry; doubled per retry, capped at 1 h",
    )
    webhook_max_age: float = setting(
        86400.0,
        "ATCR_WEBHOOK_MAX_AGE",
        "seconds a delivery is retried before it is dropped and the webhook marked failing",
    )
    webhook_timeout: float = setting(10.0, "ATCR_WEBHOOK_TIMEOUT", "seconds a receiver has to answer a delivery")
    webhook_lease: float = setting(
        60.0,
        "ATCR_WEBHOOK_LEASE",
        "seconds a claimed delivery stays invisible to other workers; a worker that dies holding it delays it "
        "this long",
    )

    recent_auth_seconds: int = setting(
        600,
        "ATCR_RECENT_AUTH_SECONDS",
        "how recent a browser sign-in must be to download or delete the account's data (else: sign in again)",
    )

    # --- branding (docs/web-ui.md) ---
    ui_name: str = setting("ATCR", "ATCR_UI_NAME", "registry name in the header, page titles and footer")
    ui_logo_url: str = setting(
        "",
        "ATCR_UI_LOGO_URL",
        "logo shown in the header instead of the built-in one: a path on this AppView or an https URL",
    )
    ui_accent_color: str = setting(
        "", "ATCR_UI_ACCENT_COLOR", "accent colour of links and buttons, #rrggbb (empty: built-in)"
    )
    ui_footer_links: tuple[str, ...] = setting(
        (), "ATCR_UI_FOOTER_LINKS", "comma-separated Label=URL links shown in the footer (terms, privacy, status...)"
    )
    ui_template_dir: Path | None = setting(
        None,
        "ATCR_UI_TEMPLATE_DIR",
        "directory of templates (and static/ files) that replace the built-in ones of the same name",
    )

    def validate(self) -> None:
        super().validate()
        from appview.web.branding import Branding

        Branding.from_settings(self)  # ConfigError naming the bad branding setting
        check_positive("ATCR_RECENT_AUTH_SECONDS", self.recent_auth_seconds)
        for env, value in (
            ("ATCR_WEBHOOK_RETRY_BASE", self.webhook_retry_base),
            ("ATCR_WEBHOOK_MAX_AGE", self.webhook_max_age),
            ("ATCR_WEBHOOK_TIMEOUT", self.webhook_timeout),
            ("ATCR_WEBHOOK_LEASE", self.webhook_lease),
        ):
            check_positive(env, value)
        if self.webhook_lease <= self.webhook_timeout:
            raise ConfigError("ATCR_WEBHOOK_LEASE: must be longer than ATCR_WEBHOOK_TIMEOUT")
        check_addr("ATCR_HTTP_ADDR", self.http_addr)
        check_url("ATCR_BASE_URL", self.base_url)
        if not self.default_hold_did:
            raise ConfigError("ATCR_DEFAULT_HOLD_DID: required (the DID of the hold new users push to)")
        if self.direct_uploads not in ("auto", "off"):
            raise ConfigError("ATCR_DIRECT_UPLOADS: expected auto or off")
        if self.provenance_referrers not in ("all", "filtered", "off"):
            raise ConfigError("ATCR_PROVENANCE_REFERRERS: expected all, filtered or off")
        check_did("ATCR_DEFAULT_HOLD_DID", self.default_hold_did)
        check_positive("ATCR_TOKEN_EXPIRATION", self.token_expiration)
        for env, value in (
            ("ATCR_CACHE_FRESH_TTL", self.cache_fresh_ttl),
            ("ATCR_CACHE_MAX_STALE", self.cache_max_stale),
            ("ATCR_CACHE_NEGATIVE_TTL", self.cache_negative_ttl),
            ("ATCR_CACHE_BLOB_HINT_TTL", self.cache_blob_hint_ttl),
            ("ATCR_CACHE_UPSTREAM_TIMEOUT", self.cache_upstream_timeout),
            ("ATCR_HOLD_TIMEOUT", self.hold_timeout),
            ("ATCR_HOLD_DOWN_SECONDS", self.hold_down_seconds),
            ("ATCR_PUSH_HOLD_PIN_SECONDS", self.push_hold_pin_seconds),
        ):
            check_positive(env, value)
        if not 0 <= self.cache_near_ttl <= 60:
            raise ConfigError(f"ATCR_CACHE_NEAR_TTL={self.cache_near_ttl:g}: must be 0-60 seconds")
        parse_networks(self.trusted_proxies)
        if not 0 <= self.trusted_proxy_hops <= 16:
            raise ConfigError(f"ATCR_TRUSTED_PROXY_HOPS={self.trusted_proxy_hops}: must be 0-16")
        for env, limit in (
            ("ATCR_RATE_LIMIT_LOGIN_FAILURES", self.rate_limit_login_failures),
            ("ATCR_RATE_LIMIT_LOGIN_FAILURES_ADDRESS", self.rate_limit_login_failures_address),
            ("ATCR_MAX_OPEN_UPLOADS", self.max_open_uploads),
        ):
            if limit < 0:
                raise ConfigError(f"{env}={limit}: must be 0 or more")
        if not 1 <= self.workers <= 64:
            raise ConfigError(f"ATCR_WORKERS={self.workers}: must be 1-64")
        if self.oauth_client not in ("auto", "confidential", "loopback"):
            raise ConfigError(f"ATCR_OAUTH_CLIENT={self.oauth_client!r}: expected auto, confidential or loopback")
        if self.oauth_scope and "atproto" not in self.oauth_scope.split():
            raise ConfigError("ATCR_OAUTH_SCOPE: must include 'atproto'")
        check_positive("ATCR_WEB_SESSION_TTL", self.web_session_ttl)
        check_positive("ATCR_DEVICE_CODE_TTL", self.device_code_ttl)
        check_positive("ATCR_DEVICE_POLL_INTERVAL", self.device_poll_interval)
        if not 4 <= self.bcrypt_rounds <= 16:
            raise ConfigError(f"ATCR_BCRYPT_ROUNDS={self.bcrypt_rounds}: must be 4-16")

    @property
    def secret_path(self) -> Path:
        return self.secret_key_path or self.data_dir / "auth" / "session-secret.key"

    @property
    def service(self) -> str:
        from urllib.parse import urlsplit

        return self.service_name or (urlsplit(self.base_url).netloc or "atcr")

    @property
    def oauth_key_file(self) -> Path:
        return self.oauth_key_path or self.data_dir / "oauth" / "client.pem"

    @property
    def key_path(self) -> Path:
        return self.auth_key_path or self.data_dir / "auth" / "token-signing.pem"
