"""Checking `docker login` credentials: ATProto app passwords and device secrets.

An app password is proven by opening a session at the user's PDS (`createSession`); that
session is what the AppView later writes records with, so it is kept (sealed) in Valkey.
Only *app passwords* are accepted: the account's main password opens a full-scope session
(it could change the handle or delete the account), which a registry must never hold. The
session's scope tells them apart; a full-scope one is deleted at the PDS at once.

Docker asks for a token at the start of every push and pull, so a successful check is
remembered for a while as an HMAC of the password, never the password itself: repeated
logins then cost one Valkey read instead of a PDS round trip. Checks that do cost something
(the PDS, bcrypt) first reserve a failure with the login limiter (`loginlimit.py`), and
identical checks running at the same moment share one PDS call.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Protocol

import valkey.asyncio as avalkey
from valkey.exceptions import ValkeyError

from appview.auth.loginlimit import LoginLimiter
from appview.auth.sessions import PdsSessionStore
from appview.errors import Unauthorized, Unavailable
from atcr.errors import (
    AuthenticationRequired,
    DidNotFound,
    HandleNotFound,
    InvalidDidDocument,
    InvalidIdentifier,
    NetworkError,
    XrpcError,
)
from atcr.http import SafeHttpClient
from atcr.identity import Identity
from atcr.xrpc import BearerAuth, XrpcClient

log = logging.getLogger("appview.auth")

PROOF_TTL = 3600
# Scopes of sessions opened with an app password (@atproto/pds AuthScope); the main password
# gets com.atproto.access.
APP_PASSWORD_SCOPES = frozenset({"com.atproto.appPass", "com.atproto.appPassPrivileged"})
ACCOUNT_LOGIN_REFUSED = (
    "that is your account password: docker login takes an app password "
    "(create one in your account's settings under App passwords), or use docker-credential-atcr login"
)


def session_scope(session: dict[str, Any]) -> str | None:
    """The `scope` claim of a createSession answer's access token (read, not verified: it came
    straight from the PDS over our own connection)."""
    token = session.get("accessJwt")
    if not isinstance(token, str) or token.count(".") != 2:
        return None
    payload = token.split(".")[1]
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (binascii.Error, ValueError, RecursionError):
        return None
    scope = claims.get("scope") if isinstance(claims, dict) else None
    return scope if isinstance(scope, str) else None


class IdentitySource(Protocol):
    async def identity(self, identifier: str) -> Identity: ...


@dataclass(frozen=True)
class Principal:
    did: str
    handle: str | None
    method: str  # "app_password" | "oauth" | "anonymous"


class DeviceSecretVerifier(Protocol):
    async def verify(self, did: str, secret: str) -> bool: ...


class Authenticator:
    def __init__(
        self,
        valkey: avalkey.Valkey,
        http: SafeHttpClient,
        identities: IdentitySource,
        sessions: PdsSessionStore,
        secret: bytes,
        devices: DeviceSecretVerifier | None = None,
        limiter: LoginLimiter | None = None,
    ) -> None:
        self._v = valkey
        self._http = http
        self._ids = identities
        self._sessions = sessions
        self._mac_key = hashlib.sha256(b"atcr app-password proof v1" + secret).digest()
        self._devices = devices
        self._limiter = limiter
        self._inflight: dict[tuple[str, bytes], asyncio.Task[Principal]] = {}

    def _proof(self, did: str, password: str) -> bytes:
        return hmac.new(self._mac_key, f"{did}\0{password}".encode(), hashlib.sha256).digest()

    @asynccontextmanager
    async def _attempt(self, address: str, did: str, *, address_wide: bool = True) -> AsyncIterator[None]:
        """Reserve a failure before a costly check; a wrong credential keeps it counted."""
        reservation = None
        if self._limiter is not None:
            reservation = await self._limiter.reserve(address, did, address_wide=address_wide)
        if reservation is None:
            yield
            return
        try:
            yield
        except Unauthorized:
            raise
        except BaseException:
            await reservation.release()
            raise
        await reservation.release()

    async def login(self, username: str, password: str, *, address: str = "") -> Principal:
        """Check Basic credentials; raise Unauthorized with a message a user can act on.

        `address` is the client address (`appview/clientaddr.py`) failures are counted under.
        An (address, account) budget used up answers 429 before the credentials are looked
        at; an address whose own budget is used up still gets in with credentials proven
        before (its other users are not locked out), but no new password reaches the PDS.
        """
        if not username or not password or len(username) > 300 or len(password) > 1024:
            raise Unauthorized("username and password required")
        try:
            ident = await self._ids.identity(username.strip().removeprefix("@"))
        except (HandleNotFound, DidNotFound, InvalidIdentifier, InvalidDidDocument):
            if self._limiter is not None:
                await self._limiter.reserve(address)  # a failure of the address (no account to charge)
            raise Unauthorized("unknown handle or DID") from None
        except NetworkError:
            raise Unavailable("cannot resolve your identity right now", headers={"Retry-After": "5"}) from None
        proof_key = f"av:apppw:{ident.did}"
        remembered: asyncio.Future[Any] | None = None
        if not (self._devices is not None and password.startswith("atcr_")):
            # Read meanwhile, looked at only once the budget check below has passed.
            remembered = asyncio.ensure_future(self._remembered(proof_key, ident.did))
        try:
            if self._limiter is not None:
                # Before the remembered-proof check too: guesses must not be tried against it freely.
                await self._limiter.check(address, ident.did)
        except BaseException:
            if remembered is not None:
                remembered.cancel()
                await asyncio.gather(remembered, return_exceptions=True)
            raise

        if self._devices is not None and password.startswith("atcr_"):
            async with self._attempt(address, ident.did, address_wide=False):
                if await self._devices.verify(ident.did, password):
                    return Principal(ident.did, ident.handle, "oauth")
                raise Unauthorized("device secret revoked or invalid: run docker-credential-atcr login")

        assert remembered is not None
        proof, has_session = await remembered
        if proof is not None and has_session and hmac.compare_digest(proof, self._proof(ident.did, password)):
            return Principal(ident.did, ident.handle, "app_password")

        # The same credentials from the same address at the same moment (a CI job's parallel
        # pulls) share one PDS check instead of each spending a PDS call and a reservation.
        flight = (address, self._proof(ident.did, password))
        task = self._inflight.get(flight)
        if task is None:
            task = asyncio.ensure_future(self._check_at_pds(ident, password, proof_key, address))
            self._inflight[flight] = task
            task.add_done_callback(lambda t: self._landed(flight, t))
        return await asyncio.shield(task)

    async def _remembered(self, proof_key: str, did: str) -> tuple[bytes | None, bool]:
        """The remembered proof of an app password and whether a PDS session is kept, read in
        one round; (None, False) when Valkey is down (the PDS can still prove the password,
        so pulls keep working)."""
        try:
            proof, session = await asyncio.gather(self._v.get(proof_key), self._sessions.load(did))
        except ValkeyError:
            return None, False
        return proof, session is not None

    def _landed(self, flight: tuple[str, bytes], task: asyncio.Task[Principal]) -> None:
        if self._inflight.get(flight) is task:
            del self._inflight[flight]
        if not task.cancelled():
            task.exception()  # retrieved: every waiter may have gone away

    async def _check_at_pds(self, ident: Identity, password: str, proof_key: str, address: str) -> Principal:
        async with self._attempt(address, ident.did):
            return await self._create_session(ident, password, proof_key)

    async def _end_session(self, pds_endpoint: str, session: dict[str, Any]) -> None:
        """Delete a session we must not keep (best effort; its refresh token is the credential)."""
        refresh = session.get("refreshJwt")
        if not isinstance(refresh, str):
            return
        try:
            pds = XrpcClient(self._http, pds_endpoint, BearerAuth(refresh))
            await pds.procedure("com.atproto.server.deleteSession")
        except (AuthenticationRequired, XrpcError, NetworkError) as exc:
            log.warning("could not delete a full-scope session at %s: %s", pds_endpoint, type(exc).__name__)

    async def _create_session(self, ident: Identity, password: str, proof_key: str) -> Principal:
        pds = XrpcClient(self._http, ident.pds_endpoint)
        try:
            session = await pds.create_session(ident.did, password)
        except (AuthenticationRequired, XrpcError) as exc:
            if isinstance(exc, XrpcError) and exc.status >= 500:
                raise Unavailable("your PDS is failing; try again", headers={"Retry-After": "10"}) from None
            raise Unauthorized("invalid username or password") from None
        except NetworkError:
            raise Unavailable("your PDS is unreachable", headers={"Retry-After": "10"}) from None
        if session_scope(session) not in APP_PASSWORD_SCOPES:
            await self._end_session(ident.pds_endpoint, session)
            log.info("login for %s with a password that is not an app password: refused", ident.did)
            raise Unauthorized(ACCOUNT_LOGIN_REFUSED)
        if session.get("did") != ident.did:
            await self._end_session(ident.pds_endpoint, session)
            raise Unauthorized("the PDS answered for a different account")
        try:
            await self._sessions.save(
                ident.did,
                {
                    "kind": "app_password",
                    "pds": ident.pds_endpoint,
                    "handle": ident.handle,
                    "accessJwt": session["accessJwt"],
                    "refreshJwt": session["refreshJwt"],
                },
            )
            await self._v.set(proof_key, self._proof(ident.did, password), ex=PROOF_TTL)
        except ValkeyError:
            # The credentials are good; without Valkey the session cannot be kept, so pushes
            # will answer 503 until it is back, but pulls with this login still work.
            log.warning("app-password login for %s checked at the PDS; session not kept (valkey unavailable)",
                        ident.did)
            return Principal(ident.did, ident.handle, "app_password")
        log.info("app-password login for %s", ident.did)
        return Principal(ident.did, ident.handle, "app_password")
