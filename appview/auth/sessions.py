"""Users' PDS sessions, kept encrypted in Valkey so any replica can write records for them.

A session is what lets the AppView write to a user's PDS after `docker login`: for an app
password it is the PDS's access/refresh JWT pair. Tokens are sealed with AES-GCM (the DID is
the associated data, so a blob cannot be replayed under another user's key). Refreshing takes
a short Valkey lock, because PDS refresh tokens are single-use: two replicas refreshing at
once would burn the session.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
from typing import Any, Protocol

import httpx
import valkey.asyncio as avalkey
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from atcr.errors import AuthenticationRequired, XrpcError
from atcr.http import SafeHttpClient
from atcr.xrpc import XrpcAuth, XrpcClient

log = logging.getLogger("appview.sessions")


class OAuthSessionHook(Protocol):
    """Makes XRPC auth (DPoP, nonce and refresh retries) for `kind: "oauth"` sessions.

    Implemented by `appview.auth.oauth.OAuthSessions`; plugged in with `use_oauth`.
    """

    def xrpc_auth(self, did: str, session: dict[str, Any]) -> XrpcAuth: ...


SESSION_TTL = 60 * 24 * 3600  # refresh tokens of app-password sessions live ~90 days at the PDS


class SessionCipher:
    def __init__(self, secret: bytes) -> None:
        from cryptography.hazmat.primitives.hashes import SHA256
        from cryptography.hazmat.primitives.kdf.hkdf import HKDF

        key = HKDF(algorithm=SHA256(), length=32, salt=None, info=b"atcr session seal v1").derive(secret)
        self._aead = AESGCM(key)

    def seal(self, data: dict[str, Any], context: str) -> bytes:
        nonce = os.urandom(12)
        return nonce + self._aead.encrypt(nonce, json.dumps(data).encode(), context.encode())

    def open(self, blob: bytes, context: str) -> dict[str, Any] | None:
        try:
            plain = self._aead.decrypt(blob[:12], blob[12:], context.encode())
        except (InvalidTag, ValueError):
            return None
        out: dict[str, Any] = json.loads(plain)
        return out


class PdsSessionStore:
    """Sealed PDS sessions per DID."""

    def __init__(self, valkey: avalkey.Valkey, cipher: SessionCipher, http: SafeHttpClient) -> None:
        self._v = valkey
        self._cipher = cipher
        self._http = http
        self._oauth: OAuthSessionHook | None = None

    def use_oauth(self, hook: OAuthSessionHook) -> None:
        """Let `client()` serve OAuth sessions (the OAuth client is built after this store)."""
        self._oauth = hook

    @staticmethod
    def _key(did: str) -> str:
        return f"av:pdssess:{did}"

    async def save(self, did: str, session: dict[str, Any]) -> None:
        await self._v.set(self._key(did), self._cipher.seal(session, did), ex=SESSION_TTL)

    async def load(self, did: str) -> dict[str, Any] | None:
        blob = await self._v.get(self._key(did))
        if blob is None:
            return None
        return self._cipher.open(blob, did)

    async def drop(self, did: str) -> None:
        await self._v.delete(self._key(did))

    async def client(self, did: str) -> XrpcClient | None:
        """An XRPC client on the user's PDS acting as the user, or None without a session."""
        session = await self.load(did)
        if session is None:
            return None
        if session.get("kind") == "oauth":
            if self._oauth is None:
                return None
            return XrpcClient(self._http, session["pds"], auth=self._oauth.xrpc_auth(did, session))
        return XrpcClient(self._http, session["pds"], auth=_SessionAuth(self, did, session))

    async def refresh(self, did: str, stale_access: str) -> dict[str, Any] | None:
        """Refresh once across replicas; others wait and reuse the result."""
        lock = f"av:pdssess-lock:{did}"
        token = secrets.token_hex(8)
        for _ in range(50):
            current = await self.load(did)
            if current is None:
                return None
            if current.get("accessJwt") != stale_access:
                return current  # someone else refreshed already
            if await self._v.set(lock, token, nx=True, px=10_000):
                try:
                    pds = XrpcClient(self._http, current["pds"])
                    resp = await self._http.post(
                        pds.url("com.atproto.server.refreshSession"),
                        headers={"Authorization": f"Bearer {current['refreshJwt']}"},
                    )
                    if resp.status_code != 200:
                        log.info("PDS session refresh for %s refused (%s)", did, resp.status_code)
                        await self.drop(did)
                        return None
                    body = resp.json()
                    current = {**current, "accessJwt": body["accessJwt"], "refreshJwt": body["refreshJwt"]}
                    await self.save(did, current)
                    return current
                finally:
                    await self._v.delete(lock)
            await asyncio.sleep(0.1)
        return None


class _SessionAuth:
    def __init__(self, store: PdsSessionStore, did: str, session: dict[str, Any]) -> None:
        self._store = store
        self._did = did
        self._session = session

    async def headers(self, method: str, url: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._session['accessJwt']}"}

    async def should_retry(self, response: httpx.Response) -> bool:
        if response.status_code not in (400, 401):
            return False
        try:
            error = response.json().get("error")
        except ValueError:
            return False
        if error not in ("ExpiredToken", "InvalidToken"):
            return False
        fresh = await self._store.refresh(self._did, self._session["accessJwt"])
        if fresh is None:
            raise AuthenticationRequired(401, "SessionExpired", "PDS session expired: run docker login again")
        self._session = fresh
        return True


__all__ = ["PdsSessionStore", "SessionCipher", "XrpcError"]
