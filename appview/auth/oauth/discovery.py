"""From a user's PDS to its authorization server, with the checks the ATProto profile requires.

The PDS names its AS in `/.well-known/oauth-protected-resource`; the AS describes itself in
`/.well-known/oauth-authorization-server`. Metadata that does not promise PAR, PKCE S256,
DPoP with ES256, metadata-document clients and the `iss` response parameter is refused:
each of those is a check the sign-in relies on. Fetches go through the SSRF-guarded client.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from atcr.errors import AuthServerInvalid, NetworkError
from atcr.http import SafeHttpClient

METADATA_TTL = 600.0  # the spec asks clients not to trust discovery results for long during auth
MAX_METADATA_BYTES = 64 * 1024


@dataclass(frozen=True)
class AuthServer:
    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    par_endpoint: str
    revocation_endpoint: str | None
    scopes_supported: tuple[str, ...]


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def _endpoint_url(issuer: str, value: Any, name: str) -> str:
    if not isinstance(value, str) or not value.startswith(("https://", "http://")):
        raise AuthServerInvalid("invalid_metadata", f"{issuer}: {name} missing or not a URL")
    return value


def check_server_metadata(url_origin: str, doc: Any, *, confidential: bool) -> AuthServer:
    """Validate AS metadata fetched from `url_origin`; raise AuthServerInvalid naming the gap."""
    if not isinstance(doc, dict):
        raise AuthServerInvalid("invalid_metadata", f"{url_origin}: metadata is not a JSON object")
    issuer = doc.get("issuer")
    if not isinstance(issuer, str) or issuer.rstrip("/") != url_origin.rstrip("/"):
        raise AuthServerInvalid("invalid_metadata", f"{url_origin}: issuer {issuer!r} differs from its origin")

    def has(name: str, value: str) -> bool:
        got = doc.get(name)
        return isinstance(got, list) and value in got

    problems = []
    if doc.get("require_pushed_authorization_requests") is not True:
        problems.append("PAR not required")
    if not has("code_challenge_methods_supported", "S256"):
        problems.append("no PKCE S256")
    if not has("dpop_signing_alg_values_supported", "ES256"):
        problems.append("no ES256 DPoP")
    if not has("response_types_supported", "code"):
        problems.append("no code response type")
    if doc.get("client_id_metadata_document_supported") is not True:
        problems.append("no client metadata documents")
    if doc.get("authorization_response_iss_parameter_supported") is not True:
        problems.append("no iss response parameter")
    if confidential:
        if not has("token_endpoint_auth_methods_supported", "private_key_jwt"):
            problems.append("no private_key_jwt")
        if not has("token_endpoint_auth_signing_alg_values_supported", "ES256"):
            problems.append("no ES256 client assertions")
    elif not has("token_endpoint_auth_methods_supported", "none"):
        problems.append("no public clients")
    scopes = doc.get("scopes_supported")
    if isinstance(scopes, list) and "atproto" not in scopes:
        problems.append("no atproto scope")
    if problems:
        raise AuthServerInvalid("invalid_metadata", f"{issuer}: " + ", ".join(problems))
    revocation = doc.get("revocation_endpoint")
    return AuthServer(
        issuer=issuer,
        authorization_endpoint=_endpoint_url(issuer, doc.get("authorization_endpoint"), "authorization_endpoint"),
        token_endpoint=_endpoint_url(issuer, doc.get("token_endpoint"), "token_endpoint"),
        par_endpoint=_endpoint_url(
            issuer, doc.get("pushed_authorization_request_endpoint"), "pushed_authorization_request_endpoint"
        ),
        revocation_endpoint=revocation if isinstance(revocation, str) else None,
        scopes_supported=tuple(str(s) for s in scopes) if isinstance(scopes, list) else (),
    )


class Discovery:
    """Looks up and caches authorization servers (per PDS and per issuer)."""

    def __init__(self, http: SafeHttpClient, *, confidential: bool, ttl: float = METADATA_TTL) -> None:
        self._http = http
        self._confidential = confidential
        self._ttl = ttl
        self._servers: dict[str, tuple[float, AuthServer]] = {}
        self._issuer_of_pds: dict[str, tuple[float, str]] = {}

    async def _json(self, url: str) -> Any:
        try:
            resp = await self._http.get(
                url, max_bytes=MAX_METADATA_BYTES, follow_redirects=False, headers={"Accept": "application/json"}
            )
        except NetworkError as exc:
            raise AuthServerInvalid("unreachable", f"cannot fetch {url}: {exc}") from None
        if resp.status_code != 200:
            raise AuthServerInvalid("invalid_metadata", f"{url} answered {resp.status_code}")
        try:
            return resp.json()
        except ValueError:
            raise AuthServerInvalid("invalid_metadata", f"{url} is not JSON") from None

    async def issuer_for_pds(self, pds_url: str) -> str:
        pds = pds_url.rstrip("/")
        hit = self._issuer_of_pds.get(pds)
        if hit and hit[0] > time.monotonic():
            return hit[1]
        doc = await self._json(pds + "/.well-known/oauth-protected-resource")
        servers = doc.get("authorization_servers") if isinstance(doc, dict) else None
        if not isinstance(servers, list) or not servers or not isinstance(servers[0], str):
            raise AuthServerInvalid("invalid_metadata", f"{pds}: no authorization server named")
        issuer = servers[0].rstrip("/")
        if not issuer.startswith(("https://", "http://")):
            raise AuthServerInvalid("invalid_metadata", f"{pds}: authorization server is not a URL")
        self._issuer_of_pds[pds] = (time.monotonic() + self._ttl, issuer)
        return issuer

    async def server(self, issuer: str) -> AuthServer:
        key = issuer.rstrip("/")
        hit = self._servers.get(key)
        if hit and hit[0] > time.monotonic():
            return hit[1]
        origin = _origin(key)
        if origin != key:
            raise AuthServerInvalid("invalid_metadata", f"{issuer}: issuer must be an origin")
        doc = await self._json(origin + "/.well-known/oauth-authorization-server")
        server = check_server_metadata(origin, doc, confidential=self._confidential)
        self._servers[key] = (time.monotonic() + self._ttl, server)
        return server

    async def for_pds(self, pds_url: str) -> AuthServer:
        return await self.server(await self.issuer_for_pds(pds_url))
