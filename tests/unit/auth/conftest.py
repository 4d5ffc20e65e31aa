"""Unit fixtures for sign-in: fakeredis, the fake authorization server, and the real services on them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import fakeredis
import httpx
import pytest

from appview.auth.oauth import OAuthClient, OAuthClientConfig, OAuthSessions
from appview.auth.sessions import PdsSessionStore, SessionCipher
from atcr.http import SafeHttpClient, SsrfPolicy
from tests.unit.auth.fake_as import FakeAuthServer, FakeResolver

SECRET = b"k" * 32
BASE = "http://127.0.0.1:5000"
BROWSER = "b" * 64  # the pre-login cookie hash a sign-in is bound to (appview/web/auth_routes.py)


@pytest.fixture
async def fv() -> AsyncIterator[Any]:
    client = fakeredis.FakeAsyncValkey()
    yield client
    await client.aclose()


@pytest.fixture
def fake_as() -> FakeAuthServer:
    return FakeAuthServer()


@pytest.fixture
async def http(fake_as: FakeAuthServer) -> AsyncIterator[SafeHttpClient]:
    client = SafeHttpClient(
        policy=SsrfPolicy(allowed_hosts=frozenset({"as.example.com", "pds.example.com"})),
        transport=httpx.MockTransport(fake_as.handle),
    )
    yield client
    await client.aclose()


@pytest.fixture
def resolver() -> FakeResolver:
    return FakeResolver()


@pytest.fixture
def config() -> OAuthClientConfig:
    return OAuthClientConfig.for_base_url(BASE)


@pytest.fixture
def store(fv: Any, http: SafeHttpClient) -> PdsSessionStore:
    return PdsSessionStore(fv, SessionCipher(SECRET), http)


@pytest.fixture
def oauth(
    fv: Any, http: SafeHttpClient, resolver: FakeResolver, config: OAuthClientConfig, store: PdsSessionStore
) -> OAuthSessions:
    sessions = OAuthSessions(OAuthClient(http, resolver, config), store, fv, SessionCipher(SECRET))  # type: ignore[arg-type]
    store.use_oauth(sessions)
    return sessions
