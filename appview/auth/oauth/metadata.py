"""Who the AppView is as an OAuth client: client id, metadata document, keys, scopes.

Two shapes, as the ATProto OAuth profile allows:

* **confidential** (production): `client_id` is the https URL of the metadata document the
  AppView serves; it authenticates with `private_key_jwt` (an ES256 key made on first start
  and kept), so sessions may live long and refresh for months;
* **loopback public client** (local runs on 127.0.0.1): `client_id=http://localhost?...`
  carries the redirect URI and scope in its query; no client secret exists, sessions are short.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

from joserfc import jwt
from joserfc.jwk import ECKey

from atcr.errors import ConfigError
from atcr.oci import DOCKER_LIST, DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST

CLIENT_METADATA_PATH = "/client-metadata.json"
JWKS_PATH = "/auth/oauth/jwks.json"
CALLBACK_PATH = "/auth/oauth/callback"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"

# Collections the AppView writes in a user's repo (ATCR-NOTES.md §3.1).
WRITTEN_COLLECTIONS = (
    "io.atcr.manifest",
    "io.atcr.tag",
    "io.atcr.sailor.profile",
    "io.atcr.sailor.star",
    "io.atcr.repo.page",
    "io.atcr.repo.policy",  # ours (tag rules, docs/records.md); not in ATCR's permission set
)
# Blobs the AppView uploads: the exact manifest bytes, and repo-page avatars.
BLOB_TYPES = (OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST, "image/png", "image/jpeg", "image/webp")
# Hold methods the AppView calls with a service token the user's PDS mints (getServiceAuth).
HOLD_METHODS = (
    "com.atproto.sync.getBlob",
    "io.atcr.hold.initiateUpload",
    "io.atcr.hold.getPartUploadUrl",
    "io.atcr.hold.uploadPart",
    "io.atcr.hold.completeUpload",
    "io.atcr.hold.abortUpload",
    "io.atcr.hold.notifyManifest",
    "io.atcr.hold.requestCrew",
    "io.atcr.hold.listGcRuns",  # the settings page shows a hold's captain its garbage-collection runs
    "io.atcr.hold.requestScan",  # the manifest page's "Scan again" for its owner (hold/scan/)
)
PERMISSION_SET = "io.atcr.authFullApp"


def default_scope(*, permission_set: bool = False) -> str:
    """The narrowest scope that lets the AppView push for a user.

    Granular `repo:` scopes for the collections it writes (or ATCR's permission set, where the
    user's PDS can resolve it), `blob:` for the media types it uploads (permission sets cannot
    carry blob scopes), and one `rpc:` scope so the PDS mints hold tokens. The hold DID is not
    known in advance (each user picks theirs), hence `aud=*` with an explicit method list.
    """
    parts = ["atproto"]
    if permission_set:
        parts.append(f"include:{PERMISSION_SET}")
    else:
        parts.extend(f"repo:{c}" for c in WRITTEN_COLLECTIONS)
    parts.extend(f"blob:{t}" for t in BLOB_TYPES)
    parts.extend(f"rpc:{m}?aud=*" for m in HOLD_METHODS)
    return " ".join(parts)


def _is_loopback_host(host: str) -> bool:
    return host in ("127.0.0.1", "[::1]", "::1", "localhost") or host.endswith(".localhost")


def client_mode(base_url: str, mode: str = "auto") -> str:
    """`auto` means: the loopback public client for http on a loopback host, else confidential."""
    if mode != "auto":
        return mode
    parts = urlsplit(base_url)
    local = parts.scheme == "http" and _is_loopback_host((parts.hostname or "").lower())
    return "loopback" if local else "confidential"


@dataclass(frozen=True)
class ClientKeys:
    """The confidential client's signing keys: the current one signs, older ones stay published.

    The AS binds each session to the key that authenticated it, and refreshes must keep using
    that key; retired keys are therefore listed in the JWKS until no session needs them.
    """

    current: ECKey
    retired: tuple[ECKey, ...] = ()

    @property
    def current_kid(self) -> str:
        return self.current.thumbprint()

    def by_kid(self, kid: str | None) -> ECKey:
        if kid:
            for key in (self.current, *self.retired):
                if key.thumbprint() == kid:
                    return key
        return self.current

    def jwks(self) -> dict[str, Any]:
        keys = []
        for key in (self.current, *self.retired):
            pub = key.as_dict(private=False)
            keys.append(
                {**{k: pub[k] for k in ("kty", "crv", "x", "y")}, "kid": key.thumbprint(), "use": "sig", "alg": "ES256"}
            )
        return {"keys": keys}


@dataclass(frozen=True)
class OAuthClientConfig:
    client_id: str
    redirect_uri: str
    scope: str
    base_url: str
    client_name: str = "ATCR"
    keys: ClientKeys | None = None  # None: public (loopback) client

    @property
    def confidential(self) -> bool:
        return self.keys is not None

    @classmethod
    def for_base_url(
        cls,
        base_url: str,
        *,
        mode: str = "auto",
        scope: str = "",
        keys: ClientKeys | None = None,
        client_name: str = "ATCR",
    ) -> OAuthClientConfig:
        """Pick the client shape from the AppView's public URL (`mode` auto|confidential|loopback)."""
        base = base_url.rstrip("/")
        parts = urlsplit(base)
        host = (parts.hostname or "").lower()
        mode = client_mode(base, mode)
        scope = scope or default_scope()
        if "atproto" not in scope.split():
            raise ConfigError("ATCR_OAUTH_SCOPE: must include 'atproto'")
        if mode == "loopback":
            if parts.scheme != "http" or not _is_loopback_host(host):
                raise ConfigError(f"ATCR_OAUTH_CLIENT=loopback needs an http loopback ATCR_BASE_URL, not {base}")
            # The AS accepts only IP literals for loopback redirects (RFC 8252 §8.3).
            netloc = parts.netloc.replace("localhost", "127.0.0.1", 1) if host == "localhost" else parts.netloc
            redirect = urlunsplit(("http", netloc, parts.path + CALLBACK_PATH, "", ""))
            client_id = "http://localhost?" + urlencode({"redirect_uri": redirect, "scope": scope})
            return cls(
                client_id=client_id,
                redirect_uri=redirect,
                scope=scope,
                base_url=base,
                client_name=client_name,
                keys=None,
            )
        if mode != "confidential":
            raise ConfigError(f"ATCR_OAUTH_CLIENT={mode!r}: expected auto, confidential or loopback")
        if parts.scheme != "https":
            raise ConfigError("a confidential OAuth client needs an https ATCR_BASE_URL")
        if keys is None:
            raise ConfigError("a confidential OAuth client needs a signing key")
        return cls(
            client_id=base + CLIENT_METADATA_PATH,
            redirect_uri=base + CALLBACK_PATH,
            scope=scope,
            base_url=base,
            client_name=client_name,
            keys=keys,
        )

    def metadata(self) -> dict[str, Any]:
        """The client metadata document (served at `client_id` for the confidential client)."""
        doc: dict[str, Any] = {
            "client_id": self.client_id,
            "client_name": self.client_name,
            "application_type": "web" if self.confidential else "native",
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
            "redirect_uris": [self.redirect_uri],
            "scope": self.scope,
            "dpop_bound_access_tokens": True,
        }
        if self.confidential:
            doc.update(
                {
                    "client_uri": self.base_url,
                    "token_endpoint_auth_method": "private_key_jwt",
                    "token_endpoint_auth_signing_alg": "ES256",
                    "jwks_uri": self.base_url + JWKS_PATH,
                }
            )
        else:
            doc["token_endpoint_auth_method"] = "none"  # noqa: S105 - the public client's auth method
        return doc

    def jwks(self) -> dict[str, Any]:
        return self.keys.jwks() if self.keys is not None else {"keys": []}

    @property
    def current_kid(self) -> str | None:
        return self.keys.current_kid if self.keys is not None else None

    def auth_params(self, issuer: str, kid: str | None = None, now: float | None = None) -> dict[str, str]:
        """Form fields that authenticate the client at `issuer` (a fresh assertion each call)."""
        params = {"client_id": self.client_id}
        if self.keys is None:
            return params
        key = self.keys.by_kid(kid)
        issued = int(time.time() if now is None else now)
        claims = {
            "iss": self.client_id,
            "sub": self.client_id,
            "aud": issuer,
            "jti": secrets.token_urlsafe(16),
            "iat": issued,
            "exp": issued + 60,
        }
        assertion = jwt.encode(
            {"alg": "ES256", "kid": key.thumbprint(), "typ": "JWT"}, claims, key, algorithms=["ES256"]
        )
        params["client_assertion_type"] = ASSERTION_TYPE
        params["client_assertion"] = assertion
        return params


def scope_tokens(scope: str) -> set[str]:
    return {s for s in scope.split() if s}


def redact(params: Mapping[str, str]) -> dict[str, str]:
    """Form fields fit for a log line."""
    hidden = {"client_assertion", "code", "code_verifier", "refresh_token", "token"}
    return {k: ("***" if k in hidden else v) for k, v in params.items()}
