"""The AppView's ATProto OAuth client: PAR + PKCE S256 + DPoP, code exchange, refresh, revoke.

Follows atproto.com/specs/oauth (and the bluesky cookbook's Python web app): the user's
handle or DID is resolved first, so the account that comes back can be checked against it
(`sub`), and the authorization server is the one that account's PDS names, so a callback
claiming another issuer is refused. Each session gets a fresh DPoP key; `state` is random,
single-use and carries no data (what the web layer needs is kept server-side with it).
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import urlencode

import httpx
from authlib.oauth2.rfc7636 import create_s256_code_challenge

from appview.auth.oauth.discovery import AuthServer, Discovery
from appview.auth.oauth.dpop import DpopKey, NonceCache, error_code, wants_nonce
from appview.auth.oauth.metadata import OAuthClientConfig, redact, scope_tokens
from atcr.errors import (
    IdentityError,
    InvalidGrant,
    NetworkError,
    OAuthCallbackInvalid,
    OAuthError,
)
from atcr.http import SafeHttpClient
from atcr.identity import IdentityResolver

log = logging.getLogger("appview.oauth")

MAX_TOKEN_RESPONSE = 64 * 1024
EXPIRY_MARGIN = 30  # seconds: refresh a little before the AS says the token expires


@dataclass(frozen=True)
class PendingAuth:
    """What the callback needs to finish one sign-in; stored sealed, keyed by `state`."""

    state: str
    issuer: str
    did: str
    handle: str | None
    pds: str
    verifier: str
    dpop_jwk: dict[str, Any]
    client_id: str
    redirect_uri: str
    created: int
    app_data: dict[str, str] = field(default_factory=dict)
    # SHA-256 of the pre-login cookie of the browser that started this sign-in (RFC 9700 §4.7):
    # only that browser may finish it. Empty on sign-ins sealed before this field existed,
    # which therefore cannot finish.
    browser: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PendingAuth:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


@dataclass(frozen=True)
class OAuthSession:
    """A live OAuth session with a user's PDS; stored sealed as a `kind: "oauth"` PDS session."""

    did: str
    handle: str | None
    pds: str
    issuer: str
    token_endpoint: str
    revocation_endpoint: str | None
    client_id: str
    client_kid: str | None
    dpop_jwk: dict[str, Any]
    access_token: str
    refresh_token: str
    expires_at: int
    scope: str
    created_at: int

    KIND = "oauth"

    def to_record(self) -> dict[str, Any]:
        return {"kind": self.KIND, **asdict(self)}

    @classmethod
    def from_record(cls, data: Mapping[str, Any]) -> OAuthSession:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})

    def expiring(self, now: float | None = None, margin: int = EXPIRY_MARGIN) -> bool:
        return self.expires_at - margin <= (time.time() if now is None else now)

    @property
    def dpop_key(self) -> DpopKey:
        return DpopKey.from_jwk(self.dpop_jwk)


def new_pkce() -> tuple[str, str]:
    """(verifier, S256 challenge); 64 random bytes give a 86-char verifier (43-128 allowed)."""
    verifier = secrets.token_urlsafe(64)
    return verifier, create_s256_code_challenge(verifier)


class OAuthClient:
    def __init__(
        self,
        http: SafeHttpClient,
        resolver: IdentityResolver,
        config: OAuthClientConfig,
        *,
        discovery: Discovery | None = None,
        nonces: NonceCache | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.http = http
        self.resolver = resolver
        self.config = config
        self.discovery = discovery or Discovery(http, confidential=config.confidential)
        self.nonces = nonces or NonceCache()
        self._clock = clock

    # --- transport ------------------------------------------------------------------------------

    async def _post(self, url: str, dpop: DpopKey, form: Callable[[], dict[str, str]], what: str) -> httpx.Response:
        """POST a form with a DPoP proof; one retry when the server wants a (new) nonce.

        `form` is called per attempt so a retry carries a fresh client assertion (its `jti`
        must not repeat).
        """
        resp: httpx.Response | None = None
        for _attempt in range(2):
            proof = dpop.proof("POST", url, nonce=self.nonces.get(url), now=self._clock())
            fields = form()
            log.debug("%s: POST %s %s", what, url, redact(fields))
            try:
                resp = await self.http.post(
                    url,
                    content=urlencode(fields).encode(),
                    headers={
                        "Content-Type": "application/x-www-form-urlencoded",
                        "DPoP": proof,
                        "Accept": "application/json",
                    },
                    max_bytes=MAX_TOKEN_RESPONSE,
                    follow_redirects=False,
                )
            except NetworkError as exc:
                raise OAuthError("temporarily_unavailable", f"{what}: {exc}") from None
            self.nonces.remember(resp)
            if not wants_nonce(resp):
                return resp
        assert resp is not None
        return resp

    @staticmethod
    def _body(resp: httpx.Response, what: str) -> dict[str, Any]:
        """The JSON body of a successful answer, or the AS's error as a typed exception."""
        try:
            body = resp.json()
        except ValueError:
            body = None
        if 200 <= resp.status_code < 300 and isinstance(body, dict):
            return body
        code = error_code(resp) or f"http_{resp.status_code}"
        desc = ""
        if isinstance(body, dict) and isinstance(body.get("error_description"), str):
            desc = body["error_description"][:200]
        if code == "invalid_grant":
            raise InvalidGrant(code, f"{what}: {desc or 'refused'}")
        if resp.status_code >= 500:
            raise OAuthError("temporarily_unavailable", f"{what}: server answered {resp.status_code}")
        raise OAuthError(code, f"{what}: {desc or 'refused'}")

    # --- sign-in --------------------------------------------------------------------------------

    async def start(self, identifier: str, app_data: Mapping[str, str] | None = None) -> tuple[PendingAuth, str]:
        """Resolve the account, push the authorization request; returns (pending, browser URL)."""
        try:
            ident = await self.resolver.resolve(identifier)
        except IdentityError as exc:
            raise OAuthError("unknown_account", f"cannot resolve {identifier!r}: {exc}") from None
        except NetworkError:
            raise OAuthError("temporarily_unavailable", "identity resolution is unavailable") from None
        server = await self.discovery.for_pds(ident.pds_endpoint)
        verifier, challenge = new_pkce()
        state = secrets.token_urlsafe(32)
        dpop = DpopKey.generate()
        hint = identifier.strip().removeprefix("@").removeprefix("at://")

        def form() -> dict[str, str]:
            return {
                "response_type": "code",
                "code_challenge": challenge,
                "code_challenge_method": "S256",
                "state": state,
                "redirect_uri": self.config.redirect_uri,
                "scope": self.config.scope,
                "login_hint": hint,
                **self.config.auth_params(server.issuer, now=self._clock()),
            }

        body = self._body(
            await self._post(server.par_endpoint, dpop, form, "pushed authorization request"),
            "pushed authorization request",
        )
        request_uri = body.get("request_uri")
        if not isinstance(request_uri, str):
            raise OAuthError("invalid_response", "PAR answer lacks request_uri")
        pending = PendingAuth(
            state=state,
            issuer=server.issuer,
            did=ident.did,
            handle=ident.handle,
            pds=ident.pds_endpoint,
            verifier=verifier,
            dpop_jwk=dpop.to_jwk(),
            client_id=self.config.client_id,
            redirect_uri=self.config.redirect_uri,
            created=int(self._clock()),
            app_data=dict(app_data or {}),
        )
        url = (
            server.authorization_endpoint
            + "?"
            + urlencode({"client_id": self.config.client_id, "request_uri": request_uri})
        )
        return pending, url

    async def finish(self, pending: PendingAuth, code: str, iss: str | None) -> OAuthSession:
        """Exchange the code; check issuer, account and scope before trusting the tokens."""
        if not iss or iss.rstrip("/") != pending.issuer.rstrip("/"):
            raise OAuthCallbackInvalid("issuer_mismatch", "the sign-in answer came from an unexpected server")
        if pending.client_id != self.config.client_id:
            raise OAuthCallbackInvalid("client_changed", "the sign-in started under another client configuration")
        server = await self.discovery.server(pending.issuer)
        dpop = DpopKey.from_jwk(pending.dpop_jwk)
        kid = self.config.current_kid

        def form() -> dict[str, str]:
            return {
                "grant_type": "authorization_code",
                "code": code,
                "code_verifier": pending.verifier,
                "redirect_uri": pending.redirect_uri,
                **self.config.auth_params(server.issuer, kid, now=self._clock()),
            }

        body = self._body(await self._post(server.token_endpoint, dpop, form, "token exchange"), "token exchange")
        session = self._session_from(
            body,
            server,
            dpop,
            kid=kid,
            did=pending.did,
            handle=pending.handle,
            pds=pending.pds,
            created=int(self._clock()),
        )
        await self._check_account(session)
        return session

    def _session_from(
        self,
        body: Mapping[str, Any],
        server: AuthServer,
        dpop: DpopKey,
        *,
        kid: str | None,
        did: str,
        handle: str | None,
        pds: str,
        created: int,
    ) -> OAuthSession:
        sub = body.get("sub")
        if sub != did:
            raise OAuthCallbackInvalid("account_mismatch", "the server signed in a different account than asked for")
        if str(body.get("token_type", "")).lower() != "dpop":
            raise OAuthError("invalid_response", "token is not DPoP-bound")
        scope = body.get("scope")
        if not isinstance(scope, str) or "atproto" not in scope_tokens(scope):
            raise OAuthError("invalid_scope", "the granted scope lacks 'atproto'")
        access, refresh = body.get("access_token"), body.get("refresh_token")
        if not isinstance(access, str) or not isinstance(refresh, str):
            raise OAuthError("invalid_response", "token answer lacks access or refresh token")
        expires_in = body.get("expires_in")
        lifetime = int(expires_in) if isinstance(expires_in, int | float) and expires_in > 0 else 300
        return OAuthSession(
            did=did,
            handle=handle,
            pds=pds,
            issuer=server.issuer,
            token_endpoint=server.token_endpoint,
            revocation_endpoint=server.revocation_endpoint,
            client_id=self.config.client_id,
            client_kid=kid,
            dpop_jwk=dpop.to_jwk(),
            access_token=access,
            refresh_token=refresh,
            expires_at=int(self._clock()) + lifetime,
            scope=scope,
            created_at=created,
        )

    async def _check_account(self, session: OAuthSession) -> None:
        """The DID's own document must name a PDS whose authorization server is this issuer.

        The identity was resolved before the sign-in, but an AS could answer for any `sub`;
        resolving again from the DID closes that gap (spec: "verify sub").
        """
        try:
            doc = await self.resolver.resolve_did(session.did)
        except (IdentityError, NetworkError) as exc:
            raise OAuthCallbackInvalid("account_unverified", f"cannot verify {session.did}: {exc}") from None
        if not doc.pds_endpoint:
            raise OAuthCallbackInvalid("account_unverified", f"{session.did} names no PDS")
        issuer = await self.discovery.issuer_for_pds(doc.pds_endpoint)
        if issuer.rstrip("/") != session.issuer.rstrip("/"):
            raise OAuthCallbackInvalid("issuer_mismatch", "the account's PDS uses a different authorization server")

    # --- refresh / revoke ---------------------------------------------------------------------

    async def refresh(self, session: OAuthSession) -> OAuthSession:
        """Rotate the tokens; the old refresh token is dead afterwards (single use)."""
        if session.client_id != self.config.client_id:
            raise InvalidGrant("invalid_grant", "session belongs to another client configuration")
        dpop = session.dpop_key
        server = await self.discovery.server(session.issuer)

        def form() -> dict[str, str]:
            return {
                "grant_type": "refresh_token",
                "refresh_token": session.refresh_token,
                **self.config.auth_params(server.issuer, session.client_kid, now=self._clock()),
            }

        body = self._body(await self._post(server.token_endpoint, dpop, form, "token refresh"), "token refresh")
        return self._session_from(
            body,
            server,
            dpop,
            kid=session.client_kid,
            did=session.did,
            handle=session.handle,
            pds=session.pds,
            created=session.created_at,
        )

    async def revoke(self, session: OAuthSession) -> None:
        """Best effort: tell the AS to end the session (it may not offer revocation)."""
        if not session.revocation_endpoint:
            return
        endpoint = session.revocation_endpoint

        def form() -> dict[str, str]:
            return {
                "token": session.refresh_token,
                **self.config.auth_params(session.issuer, session.client_kid, now=self._clock()),
            }

        try:
            resp = await self._post(endpoint, session.dpop_key, form, "revocation")
            if resp.status_code >= 400:
                log.info("revocation at %s answered %s", session.issuer, resp.status_code)
        except OAuthError as exc:
            log.info("revocation at %s failed: %s", session.issuer, exc.error)
