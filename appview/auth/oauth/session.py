"""OAuth sessions at rest and in use: pending sign-ins, refresh under a lock, DPoP on every call.

Sessions live in the shared `PdsSessionStore` (sealed, one per DID) as `kind: "oauth"`, so
the push path asks `PdsSessionStore.client(did)` as before and gets a client that signs each
request with the session's DPoP key. Refresh tokens are single-use: if two replicas refreshed
one session at once, the AS would see a replay and revoke the whole session. So refreshes take
a Valkey lock, and whoever waits re-reads the session the winner saved.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import secrets
from collections.abc import Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import httpx
import valkey.asyncio as avalkey

from appview.auth.oauth.client import OAuthClient, OAuthSession, PendingAuth
from appview.auth.oauth.dpop import error_code, origin_of, response_origin, wants_nonce
from atcr.errors import (
    AuthenticationRequired,
    InvalidGrant,
    NetworkError,
    OAuthCallbackInvalid,
    OAuthError,
    UpstreamUnavailable,
)
from atcr.valkey import compare_and_delete

if TYPE_CHECKING:
    from appview.auth.sessions import PdsSessionStore, SessionCipher

log = logging.getLogger("appview.oauth")

STATE_TTL = 600  # a sign-in must finish within 10 minutes
LOCK_TTL_MS = 15_000
LOCK_WAIT = 12.0


def _state_key(state: str) -> str:
    return "av:oauth:state:" + hashlib.sha256(state.encode()).hexdigest()


def _lock_key(did: str) -> str:
    return f"av:pdssess-lock:{did}"


class PendingStore:
    """Pending sign-ins by `state`, sealed; taking one deletes it, so a state works once."""

    def __init__(self, valkey: avalkey.Valkey, cipher: SessionCipher) -> None:
        self._v = valkey
        self._cipher = cipher

    async def put(self, pending: PendingAuth) -> None:
        blob = self._cipher.seal(pending.to_dict(), "oauth-state")
        await self._v.set(_state_key(pending.state), blob, ex=STATE_TTL)

    async def take(self, state: str) -> PendingAuth | None:
        if not state or len(state) > 200:
            return None
        blob = await self._v.getdel(_state_key(state))
        if blob is None:
            return None
        data = self._cipher.open(blob, "oauth-state")
        return PendingAuth.from_dict(data) if data is not None else None


class OAuthSessions:
    """Sign-in start/finish plus the live sessions' refresh and DPoP auth."""

    def __init__(
        self, client: OAuthClient, store: PdsSessionStore, valkey: avalkey.Valkey, cipher: SessionCipher
    ) -> None:
        self.client = client
        self.store = store
        self.pending = PendingStore(valkey, cipher)
        self._v = valkey

    # --- sign-in ------------------------------------------------------------------------------

    async def begin(self, identifier: str, app_data: Mapping[str, str] | None = None, *, browser: str) -> str:
        """Start a sign-in bound to `browser` (a hash of its pre-login cookie); returns the URL
        to send the browser to."""
        if not browser:
            raise ValueError("a sign-in must be bound to the browser that starts it")
        pending, url = await self.client.start(identifier, app_data)
        await self.pending.put(replace(pending, browser=browser))
        return url

    async def complete(
        self, state: str, code: str, iss: str | None, *, browser: str
    ) -> tuple[OAuthSession, dict[str, str]]:
        """Finish a sign-in and keep the session; returns it with the app data saved at start.

        The callback must come from the browser that started the sign-in (`browser` is the
        hash of its pre-login cookie). Otherwise an attacker could stop before their own
        callback and have a victim open it: the victim would be signed in as the attacker
        (login CSRF, RFC 9700 §4.7). The check runs before the code is spent, and a refused
        callback still uses up the state.
        """
        pending = await self.pending.take(state)
        if pending is None:
            raise OAuthCallbackInvalid("invalid_state", "this sign-in link is unknown, expired or already used")
        if not pending.browser or not browser or not hmac.compare_digest(pending.browser, browser):
            raise OAuthCallbackInvalid("browser_mismatch", "this sign-in was started in another browser")
        session = await self.client.finish(pending, code, iss)
        previous = await self.load(session.did)
        await self.save(session)
        if previous is not None and previous.refresh_token != session.refresh_token:
            # One session per account: the older one would only linger at the AS.
            await self.client.revoke(previous)
        log.info("oauth sign-in for %s", session.did)
        return session, pending.app_data

    async def abandon(self, state: str) -> dict[str, str] | None:
        """The AS answered with an error: forget the pending sign-in, return its app data."""
        pending = await self.pending.take(state)
        return pending.app_data if pending is not None else None

    # --- stored sessions ----------------------------------------------------------------------

    async def load(self, did: str) -> OAuthSession | None:
        data = await self.store.load(did)
        if data is None or data.get("kind") != OAuthSession.KIND:
            return None
        try:
            return OAuthSession.from_record(data)
        except (KeyError, TypeError):
            return None

    async def save(self, session: OAuthSession) -> None:
        await self.store.save(session.did, session.to_record())

    async def _release(self, lock: str, token: bytes) -> None:
        await compare_and_delete(self._v, lock, token)

    async def refresh(self, did: str, stale_access: str) -> OAuthSession | None:
        """Refresh once across replicas; None when the session is dead (the user must sign in).

        Network trouble raises OAuthError (temporarily_unavailable) and keeps the session:
        only an `invalid_grant` from the AS ends it.
        """
        lock = _lock_key(did)
        token = secrets.token_hex(16).encode()
        deadline = asyncio.get_running_loop().time() + LOCK_WAIT
        while True:
            current = await self.load(did)
            if current is None:
                return None
            if current.access_token != stale_access:
                return current  # another request (or replica) refreshed it already
            if await self._v.set(lock, token, nx=True, px=LOCK_TTL_MS):
                try:
                    current = await self.load(did)  # re-read under the lock
                    if current is None or current.access_token != stale_access:
                        return current
                    try:
                        fresh = await self.client.refresh(current)
                    except InvalidGrant:
                        log.info("oauth session of %s ended by its authorization server", did)
                        await self.store.drop(did)
                        return None
                    await self.save(fresh)
                    return fresh
                finally:
                    await self._release(lock, token)
            if asyncio.get_running_loop().time() > deadline:
                raise OAuthError("temporarily_unavailable", "session refresh is taking too long")
            await asyncio.sleep(0.05)

    async def current(self, did: str) -> OAuthSession | None:
        """The session with an access token that is not about to expire, or None if dead."""
        session = await self.load(did)
        if session is None:
            return None
        if session.expiring():
            return await self.refresh(did, session.access_token)
        return session

    async def ensure_alive(self, did: str) -> bool:
        """For `/auth/token` with a device secret: is there a usable session with the PDS?

        App-password sessions count as alive (they refresh themselves on use); OAuth sessions
        are refreshed here when due, so a dead one is reported now, not mid-push.
        """
        data = await self.store.load(did)
        if data is None:
            return False
        if data.get("kind") != OAuthSession.KIND:
            return True
        return await self.current(did) is not None

    # --- the PdsSessionStore hook -------------------------------------------------------------

    def xrpc_auth(self, did: str, session: Mapping[str, Any]) -> DpopXrpcAuth:
        return DpopXrpcAuth(self, OAuthSession.from_record(session))


class DpopXrpcAuth:
    """`XrpcAuth` for OAuth sessions: `Authorization: DPoP`, a proof per request, nonce and refresh retries."""

    def __init__(self, sessions: OAuthSessions, session: OAuthSession) -> None:
        self._sessions = sessions
        self._session = session
        self._key = session.dpop_key

    async def _fresh(self) -> OAuthSession:
        try:
            fresh = await self._sessions.refresh(self._session.did, self._session.access_token)
        except OAuthError:
            raise UpstreamUnavailable("cannot refresh your PDS session right now") from None
        if fresh is None:
            raise AuthenticationRequired(
                401, "SessionExpired", "your sign-in has expired: sign in again (docker-credential-atcr login)"
            )
        self._session = fresh
        self._key = fresh.dpop_key
        return fresh

    async def _learn_nonce(self, url: str, session: OAuthSession) -> None:
        """Ask a server we have not heard from for its nonce before the real request.

        `XrpcClient` retries a request once; spending that retry on the nonce would leave none
        for a refresh when the server also finds the token expired. A proof without a nonce
        draws `use_dpop_nonce` and the nonce at the price the retry would have cost anyway.
        """
        nonces = self._sessions.client.nonces
        probe = origin_of(url) + "/xrpc/com.atproto.server.getSession"
        proof = self._key.proof("GET", probe, access_token=session.access_token)
        try:
            resp = await self._sessions.client.http.get(
                probe,
                headers={"Authorization": f"DPoP {session.access_token}", "DPoP": proof},
                max_bytes=64 * 1024,
                follow_redirects=False,
            )
        except NetworkError:
            return  # the real request will report the trouble
        if not nonces.remember(resp):
            nonces.put(response_origin(resp), "")

    async def headers(self, method: str, url: str) -> dict[str, str]:
        session = self._session
        if session.expiring():
            session = await self._fresh()
        nonces = self._sessions.client.nonces
        if not nonces.known(url):
            await self._learn_nonce(url, session)
        proof = self._key.proof(method, url, nonce=nonces.get(url), access_token=session.access_token)
        return {"Authorization": f"DPoP {session.access_token}", "DPoP": proof}

    async def should_retry(self, response: httpx.Response) -> bool:
        nonce = response.headers.get("dpop-nonce")
        if nonce:
            self._sessions.client.nonces.put(response_origin(response), nonce)
        if wants_nonce(response):
            return True
        if response.status_code == 401 and error_code(response) in ("invalid_token", "InvalidToken", "ExpiredToken"):
            await self._fresh()
            return True
        return False
