"""Browser sessions: an opaque random cookie, stored in Valkey only as its SHA-256.

A web session says which account a browser is signed in as; it holds no PDS tokens (those
live in the account's OAuth session). Hashing the cookie value means a Valkey dump or a
`KEYS av:websess:*` listing gives nothing that can be replayed as a cookie.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

import valkey.asyncio as avalkey

from appview.auth.device import awaited

COOKIE_NAME = "atcr_session"
DEFAULT_TTL = 30 * 24 * 3600


def session_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class WebSession:
    id_hash: str  # sha256 of the cookie value: also what CSRF tokens are bound to
    did: str
    handle: str | None
    created: int


class WebSessionStore:
    """`av:websess:<sha256(cookie)>` -> {did, handle, created}, and `av:websess-user:<did>` (a set)."""

    def __init__(
        self, valkey: avalkey.Valkey, *, ttl: int = DEFAULT_TTL, clock: Callable[[], float] = time.time
    ) -> None:
        self._v = valkey
        self.ttl = ttl
        self._clock = clock

    async def create(self, did: str, handle: str | None) -> tuple[str, WebSession]:
        """A new session; returns (cookie value, session). The cookie value is shown only here."""
        token = secrets.token_urlsafe(32)
        session = WebSession(id_hash=session_hash(token), did=did, handle=handle, created=int(self._clock()))
        body = {"did": did, "handle": handle, "created": session.created}
        await self._v.set(f"av:websess:{session.id_hash}", json.dumps(body), ex=self.ttl)
        await awaited(self._v.sadd(f"av:websess-user:{did}", session.id_hash))
        await self._v.expire(f"av:websess-user:{did}", self.ttl)
        return token, session

    async def get(self, token: str | None) -> WebSession | None:
        if not token or len(token) > 100:
            return None
        id_hash = session_hash(token)
        raw = await self._v.get(f"av:websess:{id_hash}")
        if raw is None:
            return None
        data = json.loads(raw)
        return WebSession(id_hash=id_hash, did=data["did"], handle=data.get("handle"), created=data["created"])

    async def delete(self, token: str | None) -> None:
        session = await self.get(token)
        if session is None:
            return
        await self._v.delete(f"av:websess:{session.id_hash}")
        await awaited(self._v.srem(f"av:websess-user:{session.did}", session.id_hash))

    async def delete_all(self, did: str) -> int:
        """Sign an account out of every browser."""
        members = await awaited(self._v.smembers(f"av:websess-user:{did}"))
        keys = [f"av:websess:{m.decode() if isinstance(m, bytes) else m}" for m in members]
        if keys:
            await self._v.delete(*keys)
        await self._v.delete(f"av:websess-user:{did}")
        return len(keys)


__all__ = ["COOKIE_NAME", "WebSession", "WebSessionStore", "session_hash"]
