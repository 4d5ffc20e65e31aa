"""ATProto OAuth against the real PDS provider, as the loopback public client (local runs)."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit

import httpx
import pytest

from tests.integration.auth.conftest import csrf_of, login, start_login
from tests.support.pds_oauth import approve_sign_in, deny_sign_in
from tests.support.pdsnet import Account
from tests.support.signin import Harness

pytestmark = pytest.mark.integration


async def test_login_round_trip(harness: Harness, browser: httpx.AsyncClient, pds_account: Account) -> None:
    authorize_url = await start_login(browser, pds_account, next_path="/settings/devices")
    assert "request_uri=" in authorize_url and "client_id=http%3A%2F%2Flocalhost" in authorize_url
    resp = await browser.get(approve_sign_in(authorize_url, pds_account.handle, pds_account.password, pds_account.did))
    assert resp.status_code == 303 and resp.headers["location"] == "/settings/devices"
    cookie = resp.headers["set-cookie"]
    assert "atcr_session=" in cookie and "HttpOnly" in cookie and "SameSite=lax" in cookie
    assert "Secure" not in cookie  # a local (http) run
    me = (await browser.get("/auth/session")).json()
    assert (me["did"], me["handle"]) == (pds_account.did, pds_account.handle)
    assert [p.did for p in harness.logins] == [pds_account.did]
    session = await harness.sign_in.oauth.load(pds_account.did)
    assert session is not None and "atproto" in session.scope.split()


async def test_login_by_did(harness: Harness, browser: httpx.AsyncClient, pds_account: Account) -> None:
    page = await browser.get("/auth/login")
    resp = await browser.post("/auth/login", data={"handle": pds_account.did, "csrf_token": csrf_of(page.text)})
    resp = await browser.get(
        approve_sign_in(resp.headers["location"], pds_account.handle, pds_account.password, pds_account.did)
    )
    assert resp.status_code == 303
    assert (await browser.get("/auth/session")).json()["did"] == pds_account.did


async def test_pds_writes_use_dpop(harness: Harness, browser: httpx.AsyncClient, pds_account: Account) -> None:
    await login(browser, pds_account)
    client = await harness.sessions.client(pds_account.did)
    assert client is not None
    out = await client.put_record(
        pds_account.did,
        "io.atcr.sailor.profile",
        "self",
        {"defaultHold": "did:web:hold.example.com", "createdAt": "2026-01-01T00:00:00Z"},
    )
    assert out["uri"] == f"at://{pds_account.did}/io.atcr.sailor.profile/self"
    blob = await client.upload_blob(b'{"schemaVersion":2}', "application/vnd.oci.image.manifest.v1+json")
    assert blob["mimeType"] == "application/vnd.oci.image.manifest.v1+json"
    token = await client.get_service_auth(aud="did:web:hold.example.com", lxm="io.atcr.hold.initiateUpload")
    assert token.count(".") == 2
    # The session's tokens are DPoP-bound: the bare access token is refused as a Bearer token.
    session = await harness.sign_in.oauth.load(pds_account.did)
    assert session is not None
    bare = httpx.get(
        f"{session.pds}/xrpc/com.atproto.server.getSession", headers={"Authorization": f"Bearer {session.access_token}"}
    )
    assert bare.status_code in (400, 401)


async def test_replayed_state_is_refused(harness: Harness, browser: httpx.AsyncClient, pds_account: Account) -> None:
    authorize_url = await start_login(browser, pds_account)
    callback = approve_sign_in(authorize_url, pds_account.handle, pds_account.password, pds_account.did)
    assert (await browser.get(callback)).status_code == 303
    async with httpx.AsyncClient(base_url=harness.settings.base_url, trust_env=False) as attacker:
        replay = await attacker.get(callback)
    assert replay.status_code == 400
    assert "could not be verified" in replay.text
    assert "atcr_session" not in replay.headers.get("set-cookie", "")


async def test_mismatched_iss_is_refused(harness: Harness, browser: httpx.AsyncClient, pds_account: Account) -> None:
    authorize_url = await start_login(browser, pds_account)
    callback = approve_sign_in(authorize_url, pds_account.handle, pds_account.password, pds_account.did)
    parts = urlsplit(callback)
    params = dict(parse_qsl(parts.query))
    forged = dict(params, iss="https://evil.example.com")
    resp = await browser.get(f"{parts.path}?{urlencode(forged)}")
    assert resp.status_code == 400
    assert (await browser.get("/auth/session")).status_code == 401
    # The state is spent: the genuine answer cannot be used after a forged one.
    assert (await browser.get(f"{parts.path}?{urlencode(params)}")).status_code == 400
    assert await harness.sign_in.oauth.load(pds_account.did) is None


async def test_denied_at_the_pds(harness: Harness, browser: httpx.AsyncClient, pds_account: Account) -> None:
    authorize_url = await start_login(browser, pds_account)
    resp = await browser.get(deny_sign_in(authorize_url))
    assert resp.status_code == 400
    assert "declined" in resp.text
    assert (await browser.get("/auth/session")).status_code == 401


async def test_logout_needs_csrf_and_ends_the_session(
    harness: Harness, browser: httpx.AsyncClient, pds_account: Account
) -> None:
    await login(browser, pds_account)
    assert (await browser.post("/auth/logout", data={})).status_code == 403
    page = await browser.get("/settings/devices")
    resp = await browser.post("/auth/logout", data={"csrf_token": csrf_of(page.text)})
    assert resp.status_code == 303
    assert (await browser.get("/auth/session")).status_code == 401
    # The OAuth session stays: device secrets keep working after a browser signs out.
    assert await harness.sign_in.oauth.load(pds_account.did) is not None
