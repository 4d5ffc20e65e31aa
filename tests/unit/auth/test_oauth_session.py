"""Live OAuth sessions: DPoP on PDS calls, nonce and refresh retries, the refresh lock."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

import pytest

from appview.auth.oauth import OAuthSessions
from appview.auth.sessions import PdsSessionStore, SessionCipher
from atcr.errors import AuthenticationRequired, InvalidGrant
from atcr.http import SafeHttpClient
from tests.unit.auth.conftest import BROWSER, SECRET
from tests.unit.auth.fake_as import DID, HANDLE, FakeAuthServer

pytestmark = pytest.mark.unit

PROFILE = {"defaultHold": "did:web:hold.example.com", "createdAt": "2026-01-01T00:00:00Z"}


async def signed_in(oauth: OAuthSessions, fake_as: FakeAuthServer) -> None:
    url = await oauth.begin(HANDLE, browser=BROWSER)
    callback = fake_as.approve(url)
    await oauth.complete(callback["state"], callback["code"], callback["iss"], browser=BROWSER)


async def write(store: PdsSessionStore) -> dict[str, Any]:
    client = await store.client(DID)
    assert client is not None
    return await client.put_record(DID, "io.atcr.sailor.profile", "self", PROFILE)


async def test_pds_calls_carry_dpop(oauth: OAuthSessions, store: PdsSessionStore, fake_as: FakeAuthServer) -> None:
    await signed_in(oauth, fake_as)
    assert (await write(store))["cid"] == "bafyrec"
    client = await store.client(DID)
    assert client is not None
    assert await client.get_service_auth(aud="did:web:hold.example.com", lxm="io.atcr.hold.initiateUpload") == "h.e.s"
    assert [c[0] for c in fake_as.resource_calls] == ["com.atproto.repo.putRecord", "com.atproto.server.getServiceAuth"]


async def test_rotated_nonce_is_retried_once(
    oauth: OAuthSessions, store: PdsSessionStore, fake_as: FakeAuthServer
) -> None:
    await signed_in(oauth, fake_as)
    await write(store)
    fake_as.rotate_nonce()
    await write(store)
    assert len(fake_as.resource_calls) == 2


async def test_expiring_token_is_refreshed_before_use(
    oauth: OAuthSessions, store: PdsSessionStore, fake_as: FakeAuthServer
) -> None:
    await signed_in(oauth, fake_as)
    session = await oauth.load(DID)
    assert session is not None
    await oauth.save(replace(session, expires_at=0))
    await write(store)
    assert fake_as.count("refresh_token") == 1
    fresh = await oauth.load(DID)
    assert fresh is not None and fresh.refresh_token != session.refresh_token


async def test_token_refused_by_the_pds_is_refreshed_and_retried(
    oauth: OAuthSessions, store: PdsSessionStore, fake_as: FakeAuthServer
) -> None:
    await signed_in(oauth, fake_as)
    fake_as.expire_all_access()  # the PDS says invalid_token although we think it is fresh
    await write(store)
    assert fake_as.count("refresh_token") == 1
    assert len(fake_as.resource_calls) == 1


async def test_concurrent_requests_refresh_once(
    oauth: OAuthSessions, store: PdsSessionStore, fake_as: FakeAuthServer
) -> None:
    """Two replicas (here: two stores on one Valkey) and many requests: one refresh, no replay."""
    await signed_in(oauth, fake_as)
    session = await oauth.load(DID)
    assert session is not None
    await oauth.save(replace(session, expires_at=0))
    replica = PdsSessionStore(oauth._v, SessionCipher(SECRET), oauth.client.http)
    replica_oauth = OAuthSessions(oauth.client, replica, oauth._v, SessionCipher(SECRET))
    replica.use_oauth(replica_oauth)
    results = await asyncio.gather(*(write(store if i % 2 else replica) for i in range(10)))
    assert len(results) == 10
    assert fake_as.count("refresh_token") == 1
    assert not fake_as.revoked_families


async def test_refresh_token_replay_ends_the_session(
    oauth: OAuthSessions, store: PdsSessionStore, fake_as: FakeAuthServer
) -> None:
    await signed_in(oauth, fake_as)
    old = await oauth.load(DID)
    assert old is not None
    await oauth.save(await oauth.client.refresh(old))
    with pytest.raises(InvalidGrant):
        await oauth.client.refresh(old)  # replay: the AS revokes the session family
    current = await oauth.load(DID)
    assert current is not None
    await oauth.save(replace(current, expires_at=0))
    with pytest.raises(AuthenticationRequired) as info:
        await write(store)
    assert info.value.error == "SessionExpired"
    assert await store.load(DID) is None
    assert not await oauth.ensure_alive(DID)


async def test_ensure_alive(oauth: OAuthSessions, store: PdsSessionStore, fake_as: FakeAuthServer) -> None:
    assert not await oauth.ensure_alive(DID)
    await store.save(
        DID,
        {
            "kind": "app_password",
            "pds": "https://pds.example.com",
            "handle": HANDLE,
            "accessJwt": "a",
            "refreshJwt": "r",
        },
    )
    assert await oauth.ensure_alive(DID)
    await signed_in(oauth, fake_as)
    assert await oauth.ensure_alive(DID)


async def test_signing_in_again_revokes_the_previous_session(oauth: OAuthSessions, fake_as: FakeAuthServer) -> None:
    await signed_in(oauth, fake_as)
    await signed_in(oauth, fake_as)
    assert fake_as.count("revoke") == 1
    assert len(fake_as.revoked_families) == 1


async def test_store_without_oauth_hook_has_no_client(
    fv: Any, http: SafeHttpClient, oauth: OAuthSessions, fake_as: FakeAuthServer
) -> None:
    await signed_in(oauth, fake_as)
    bare = PdsSessionStore(fv, SessionCipher(SECRET), http)
    assert await bare.client(DID) is None


async def test_sessions_are_sealed_at_rest(oauth: OAuthSessions, fv: Any, fake_as: FakeAuthServer) -> None:
    await signed_in(oauth, fake_as)
    session = await oauth.load(DID)
    assert session is not None
    raw = await fv.get(f"av:pdssess:{DID}")
    for secret in (session.access_token, session.refresh_token, session.dpop_jwk["d"]):
        assert secret.encode() not in raw
