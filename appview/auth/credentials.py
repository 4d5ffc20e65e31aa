"""Checking `docker login` credentials: ATProto app passwords (and, later, device secrets).

An app password is proven by opening a session at the user's PDS (`createSession`); that
session is what the AppView later writes records with, so it is kept (sealed) in Valkey.
Docker asks for a token at the start of every push and pull, so a successful check is
remembered for a while as an HMAC of the password, never the password itself: repeated
logins then cost one Valkey read instead of a PDS round trip.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from dataclasses import dataclass
from typing import Protocol

import valkey.asyncio as avalkey
from valkey.exceptions import ValkeyError

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
from atcr.xrpc import XrpcClient

log = logging.getLogger("appview.auth")

PROOF_TTL = 3600


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
    ) -> None:
        self._v = valkey
        self._http = http
        self._ids = identities
        self._sessions = sessions
        self._mac_key = hashlib.sha256(b"atcr app-password proof v1" + secret).digest()
        self._devices = devices

    def _proof(self, did: str, password: str) -> bytes:
        return hmac.new(self._mac_key, f"{did}\0{password}".encode(), hashlib.sha256).digest()

    async def login(self, username: str, password: str) -> Principal:
        """Check Basic credentials; raise Unauthorized with a message a user can act on."""
        if not username or not password or len(username) > 300 or len(password) > 1024:
            raise Unauthorized("username and password required")
        try:
            ident = await self._ids.identity(username.strip().removeprefix("@"))
        except (HandleNotFound, DidNotFound, InvalidIdentifier, InvalidDidDocument):
            raise Unauthorized("unknown handle or DID") from None
        except NetworkError:
            raise Unavailable("cannot resolve your identity right now", headers={"Retry-After": "5"}) from None

        if self._devices is not None and password.startswith("atcr_"):
            if await self._devices.verify(ident.did, password):
                return Principal(ident.did, ident.handle, "oauth")
            raise Unauthorized("device secret revoked or invalid: run docker-credential-atcr login")

        proof_key = f"av:apppw:{ident.did}"
        try:
            remembered = await self._v.get(proof_key)
            proven = remembered is not None and hmac.compare_digest(remembered, self._proof(ident.did, password))
            if proven and await self._sessions.load(ident.did) is not None:
                return Principal(ident.did, ident.handle, "app_password")
        except ValkeyError:
            pass  # Valkey is down: the PDS can still prove the password (pulls keep working)

        pds = XrpcClient(self._http, ident.pds_endpoint)
        try:
            session = await pds.create_session(ident.did, password)
        except (AuthenticationRequired, XrpcError) as exc:
            if isinstance(exc, XrpcError) and exc.status >= 500:
                raise Unavailable("your PDS is failing; try again", headers={"Retry-After": "10"}) from None
            raise Unauthorized("invalid username or password") from None
        except NetworkError:
            raise Unavailable("your PDS is unreachable", headers={"Retry-After": "10"}) from None
        if session.get("did") != ident.did:
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
