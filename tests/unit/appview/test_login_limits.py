"""`/auth/token` logins against a fake PDS: failures are reserved before the PDS is asked, limited
per (address, account) and per address, keyed on the trusted client address, and only app
passwords are accepted."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import fakeredis
import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from litestar import Litestar

from appview.auth.credentials import Authenticator
from appview.auth.loginlimit import LoginLimiter
from appview.auth.routes import TokenApi
from appview.auth.sessions import PdsSessionStore, SessionCipher
from appview.auth.tokens import TokenService
from appview.clientaddr import ClientAddresses, parse_networks
from atcr.errors import HandleNotFound
from atcr.http import SafeHttpClient, SsrfPolicy
from atcr.identity import Identity

pytestmark = pytest.mark.unit

PDS = "https://pds.example.com"
SECRET = b"p" * 32
ACCOUNTS = {"alice.example.com": "did:plc:alice000000000000000000", "bob.example.com": "did:plc:bob00000000000000000000"}
APP_PASSWORD = "abcd-efgh-ijkl-mnop"
MAIN_PASSWORD = "the-account-password"  # noqa: S105 - a test fixture
LIMIT = 20


def _jwt(claims: dict[str, Any]) -> str:
    def part(obj: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'ES256K', 'typ': 'at+jwt'})}.{part(claims)}.c2ln"


@dataclass
class FakePds:
    """createSession as the reference PDS answers it; counts calls and how many overlap."""

    create_calls: int = 0
    in_flight: int = 0
    deleted: list[str] = field(default_factory=list)

    async def handle(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/com.atproto.server.deleteSession"):
            self.deleted.append(request.headers["authorization"].removeprefix("Bearer "))
            return httpx.Response(200)
        assert request.url.path.endswith("/com.atproto.server.createSession"), request.url
        self.create_calls += 1
        self.in_flight += 1
        try:
            await asyncio.sleep(0.01)  # the PDS takes a moment: concurrent logins overlap here
            body = json.loads(request.content)
            scope = {APP_PASSWORD: "com.atproto.appPass", MAIN_PASSWORD: "com.atproto.access"}.get(body["password"])
            if scope is None:
                return httpx.Response(
                    401, json={"error": "AuthenticationRequired", "message": "Invalid identifier or password"}
                )
            did = body["identifier"]
            return httpx.Response(
                200,
                json={
                    "did": did,
                    "handle": next(h for h, d in ACCOUNTS.items() if d == did),
                    "accessJwt": _jwt({"scope": scope, "sub": did}),
                    "refreshJwt": _jwt({"scope": "com.atproto.refresh", "sub": did, "jti": f"r-{self.create_calls}"}),
                },
            )
        finally:
            self.in_flight -= 1


class Identities:
    async def identity(self, identifier: str) -> Identity:
        did = ACCOUNTS.get(identifier)
        if did is None:
            raise HandleNotFound(identifier)
        return Identity(did=did, handle=identifier, pds_endpoint=PDS, signing_key=None)


@dataclass
class Stack:
    pds: FakePds
    client: httpx.AsyncClient
    valkey: Any
    sessions: PdsSessionStore

    async def token(self, user: str, password: str, *, forwarded: str | None = None) -> httpx.Response:
        headers = {"X-Forwarded-For": forwarded} if forwarded else {}
        return await self.client.get("/auth/token", auth=(user, password), headers=headers)


async def _stack(addresses: ClientAddresses) -> AsyncIterator[Stack]:
    pds = FakePds()
    valkey = fakeredis.FakeAsyncValkey()
    http = SafeHttpClient(
        policy=SsrfPolicy(allowed_hosts=frozenset({"pds.example.com"})), transport=httpx.MockTransport(pds.handle)
    )
    sessions = PdsSessionStore(valkey, SessionCipher(SECRET), http)
    limiter = LoginLimiter(valkey, per_account=LIMIT, per_address=5 * LIMIT)
    authenticator = Authenticator(valkey, http, Identities(), sessions, SECRET, limiter=limiter)

    async def owner_of(identity: str) -> str | None:
        return ACCOUNTS.get(identity)

    tokens = TokenService(ec.generate_private_key(ec.SECP256R1()), issuer="http://reg", service="reg", lifetime=60)
    api = TokenApi(tokens, authenticator, owner_of, addresses=addresses)
    app = Litestar(route_handlers=api.handlers(), logging_config=None)
    # httpx's ASGI transport connects from 127.0.0.1: the "proxy" in front of the AppView.
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:5000") as client:
        yield Stack(pds, client, valkey, sessions)
    await http.aclose()
    await valkey.aclose()


@pytest.fixture
async def direct() -> AsyncIterator[Stack]:
    """Clients connect straight to the AppView (ATCR_TRUST_FORWARDED_FOR off)."""
    async for stack in _stack(ClientAddresses()):
        yield stack


@pytest.fixture
async def proxied() -> AsyncIterator[Stack]:
    """Behind a proxy on 127.0.0.1 that appends the client address to X-Forwarded-For."""
    async for stack in _stack(ClientAddresses(trust_forwarded_for=True, proxies=parse_networks(["127.0.0.1"]))):
        yield stack


def _refused(resp: httpx.Response) -> bool:
    if resp.status_code != 429:
        return False
    assert resp.json()["errors"][0]["code"] == "TOOMANYREQUESTS"
    assert int(resp.headers["Retry-After"]) >= 1
    return True


async def test_a_burst_of_wrong_passwords_sends_at_most_the_limit_to_the_pds(direct: Stack) -> None:
    answers = await asyncio.gather(*(direct.token("alice.example.com", f"guess-{n}") for n in range(150)))
    statuses = sorted(r.status_code for r in answers)
    assert direct.pds.create_calls <= LIMIT, direct.pds.create_calls
    assert statuses.count(401) == direct.pds.create_calls and statuses.count(429) == 150 - direct.pds.create_calls
    assert all(_refused(r) for r in answers if r.status_code == 429)
    # Locked out for this account from this address, even with the right password now.
    assert _refused(await direct.token("alice.example.com", APP_PASSWORD))
    assert direct.pds.create_calls <= LIMIT


async def test_the_same_credentials_at_once_share_one_pds_call(direct: Stack) -> None:
    answers = await asyncio.gather(*(direct.token("alice.example.com", APP_PASSWORD) for _ in range(50)))
    assert {r.status_code for r in answers} == {200}
    assert direct.pds.create_calls == 1
    # Remembered afterwards: no PDS call, no reservation left behind.
    assert (await direct.token("alice.example.com", APP_PASSWORD)).status_code == 200
    assert direct.pds.create_calls == 1


async def test_an_attacker_behind_a_nat_locks_out_only_the_account_attacked(direct: Stack) -> None:
    for n in range(LIMIT):
        assert (await direct.token("alice.example.com", f"guess-{n}")).status_code == 401
    assert _refused(await direct.token("alice.example.com", f"guess-{LIMIT}"))
    # Someone else behind the same address logs in to their own account.
    assert (await direct.token("bob.example.com", APP_PASSWORD)).status_code == 200


async def test_rotating_left_most_forwarded_entries_behind_a_proxy_still_reaches_429(proxied: Stack) -> None:
    """The proxy appends the real client (203.0.113.9); the client writes whatever it likes left of it."""
    statuses = []
    for n in range(40):
        resp = await proxied.token("alice.example.com", f"guess-{n}", forwarded=f"10.9.{n}.9, 203.0.113.9")
        statuses.append(resp.status_code)
        if resp.status_code == 429:
            assert _refused(resp)
    assert statuses[:LIMIT] == [401] * LIMIT and set(statuses[LIMIT:]) == {429}, statuses
    assert proxied.pds.create_calls == LIMIT
    # Another client behind the same proxy is not affected.
    other = await proxied.token("alice.example.com", APP_PASSWORD, forwarded="203.0.113.10")
    assert other.status_code == 200


async def test_an_address_wide_lockout_spares_proven_credentials_but_not_guesses(direct: Stack) -> None:
    assert (await direct.token("bob.example.com", APP_PASSWORD)).status_code == 200  # a neighbour, remembered
    for n in range(5 * LIMIT):  # stuffing: unknown names count against the address
        assert (await direct.token(f"nobody{n}.example.com", "x")).status_code == 401
    assert _refused(await direct.token("nobody.example.com", "x"))
    calls = direct.pds.create_calls
    # The neighbour's working docker login keeps working ...
    assert (await direct.token("bob.example.com", APP_PASSWORD)).status_code == 200
    # ... but no new password from this address reaches the PDS.
    assert _refused(await direct.token("alice.example.com", APP_PASSWORD))
    assert direct.pds.create_calls == calls
    # Guessing at the remembered password is no oracle: each miss counts against the account,
    # and once its budget is gone even the right password is refused.
    for n in range(LIMIT):
        assert _refused(await direct.token("bob.example.com", f"guess-{n}"))
    assert _refused(await direct.token("bob.example.com", APP_PASSWORD))
    assert direct.pds.create_calls == calls


async def test_the_account_password_is_refused_and_its_session_deleted(direct: Stack) -> None:
    resp = await direct.token("alice.example.com", MAIN_PASSWORD)
    assert resp.status_code == 401
    error = resp.json()["errors"][0]
    assert error["code"] == "UNAUTHORIZED" and "app password" in error["message"]
    assert await direct.sessions.load(ACCOUNTS["alice.example.com"]) is None  # nothing kept
    assert len(direct.pds.deleted) == 1  # the full-scope session was ended at the PDS at once
    # The OAuth2 form (docker's identity-token path) says the same.
    form = await direct.client.post(
        "/auth/token", data={"grant_type": "password", "username": "alice.example.com", "password": MAIN_PASSWORD}
    )
    assert form.status_code == 400 and form.json()["error"] == "invalid_grant"
    assert "app password" in form.json()["error_description"]
    # An app password works, and is what gets kept.
    assert (await direct.token("alice.example.com", APP_PASSWORD)).status_code == 200
    stored = await direct.sessions.load(ACCOUNTS["alice.example.com"])
    assert stored is not None and stored["kind"] == "app_password"
