"""The sign-in HTTP layer in-process (ASGI), on fakeredis and the fake authorization server."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import httpx
import pytest
from joserfc.jwk import ECKey
from litestar import Litestar

from appview.auth.oauth import ClientKeys, OAuthClientConfig
from appview.auth.sessions import PdsSessionStore, SessionCipher
from appview.web.auth_routes import SignIn, build_sign_in, safe_next
from atcr.http import SafeHttpClient
from tests.support.signin import settings_for
from tests.unit.auth.conftest import SECRET
from tests.unit.auth.fake_as import DID, HANDLE, OTHER_DID, FakeAuthServer, FakeResolver

pytestmark = pytest.mark.unit


def make(
    tmp_path: Path, fv: Any, http: SafeHttpClient, base: str, config: OAuthClientConfig | None = None
) -> tuple[Litestar, SignIn]:
    settings = settings_for(
        tmp_path, base_url=base, plc_url="https://plc.example.com", pds_url="https://pds.example.com"
    )
    store = PdsSessionStore(fv, SessionCipher(SECRET), http)
    sign_in = build_sign_in(
        settings,
        http=http,
        resolver=FakeResolver(),
        valkey=fv,
        secret=SECRET,  # type: ignore[arg-type]
        sessions=store,
        client_config=config,
    )
    store.use_oauth(sign_in.oauth)
    return Litestar(route_handlers=sign_in.web.handlers(), logging_config=None), sign_in


@pytest.fixture
async def app(tmp_path: Path, fv: Any, http: SafeHttpClient) -> tuple[Litestar, SignIn]:
    return make(tmp_path, fv, http, "http://127.0.0.1:5000")


@pytest.fixture
async def client(app: tuple[Litestar, SignIn]) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app[0]), base_url="http://127.0.0.1:5000") as c:
        yield c


def csrf_of(html: str) -> str:
    return html.split('name="csrf_token" value="')[1].split('"', maxsplit=1)[0]


async def login(client: httpx.AsyncClient, fake_as: FakeAuthServer, next_path: str = "/") -> httpx.Response:
    page = await client.get("/auth/login")
    resp = await client.post(
        "/auth/login", data={"handle": HANDLE, "csrf_token": csrf_of(page.text), "next": next_path}
    )
    assert resp.status_code == 303, resp.text
    callback = fake_as.approve(resp.headers["location"])
    return await client.get("/auth/oauth/callback?" + urlencode(callback))


@pytest.mark.parametrize(
    ("raw", "safe"),
    [
        ("/settings", "/settings"),
        ("/device?code=AB", "/device?code=AB"),
        (None, "/"),
        ("", "/"),
        ("//evil.example", "/"),
        ("https://evil.example/", "/"),
        ("/\\evil.example", "/"),
        ("evil", "/"),
    ],
)
def test_safe_next(raw: str | None, safe: str) -> None:
    assert safe_next(raw) == safe


async def test_pages_are_not_frameable_and_set_a_csrf_cookie(client: httpx.AsyncClient) -> None:
    resp = await client.get("/auth/login?next=/settings")
    assert resp.status_code == 200
    assert "frame-ancestors 'none'" in resp.headers["content-security-policy"]
    assert resp.headers["x-frame-options"] == "DENY" and resp.headers["cache-control"] == "no-store"
    cookie = resp.headers["set-cookie"]
    assert cookie.startswith("atcr_csrf=") and "HttpOnly" in cookie and "SameSite=lax" in cookie
    assert 'name="next" value="/settings"' in resp.text
    assert '<label for="handle">' in resp.text


async def test_login_needs_a_valid_csrf_token(client: httpx.AsyncClient) -> None:
    page = await client.get("/auth/login")
    token = csrf_of(page.text)
    assert (await client.post("/auth/login", data={"handle": HANDLE})).status_code == 403
    assert (await client.post("/auth/login", data={"handle": HANDLE, "csrf_token": "x" * 43})).status_code == 403
    cross = await client.post(
        "/auth/login", data={"handle": HANDLE, "csrf_token": token}, headers={"Origin": "https://evil.example"}
    )
    assert cross.status_code == 403
    other_browser = httpx.AsyncClient(transport=client._transport, base_url="http://127.0.0.1:5000")
    stolen = await other_browser.post("/auth/login", data={"handle": HANDLE, "csrf_token": token})
    assert stolen.status_code == 403  # the token is bound to the first browser's cookie
    ok = await client.post(
        "/auth/login", data={"handle": HANDLE, "csrf_token": token}, headers={"Origin": "http://127.0.0.1:5000"}
    )
    assert ok.status_code == 303 and ok.headers["location"].startswith("https://as.example.com/oauth/authorize?")


async def test_unknown_handle(client: httpx.AsyncClient) -> None:
    page = await client.get("/auth/login")
    resp = await client.post("/auth/login", data={"handle": "nobody.example.com", "csrf_token": csrf_of(page.text)})
    assert resp.status_code == 400 and "could not be found" in resp.text
    assert 'value="nobody.example.com"' in resp.text


async def test_callback_signs_in(client: httpx.AsyncClient, fake_as: FakeAuthServer) -> None:
    resp = await login(client, fake_as, "/settings/devices")
    assert resp.status_code == 303 and resp.headers["location"] == "/settings/devices"
    cookies = resp.headers.get_list("set-cookie")
    session = next(c for c in cookies if c.startswith("atcr_session="))
    assert "HttpOnly" in session and "SameSite=lax" in session and "Secure" not in session
    assert any(c.startswith("atcr_csrf=") and "Max-Age=0" in c for c in cookies)
    me = (await client.get("/auth/session")).json()
    assert (me["did"], me["handle"]) == (DID, HANDLE) and me["csrf_token"]
    page = await client.get("/settings/devices")
    assert "Signed in as" in page.text and HANDLE in page.text


async def test_callback_refusals(client: httpx.AsyncClient, fake_as: FakeAuthServer, fv: Any) -> None:
    assert (await client.get("/auth/oauth/callback?code=x&state=nope&iss=https://as.example.com")).status_code == 400
    assert (await client.get("/auth/oauth/callback")).status_code == 400
    page = await client.get("/auth/login")
    resp = await client.post("/auth/login", data={"handle": HANDLE, "csrf_token": csrf_of(page.text)})
    state = dict(parse_qsl(urlsplit(resp.headers["location"]).query))
    pending_state = next(iter(fake_as.requests.values()))["state"]
    assert "state" not in state  # the state travels only through the AS
    denied = await client.get(
        "/auth/oauth/callback?"
        + urlencode({"error": "access_denied", "state": pending_state, "iss": "https://as.example.com"})
    )
    assert denied.status_code == 400 and "You declined" in denied.text
    assert [k async for k in fv.scan_iter("av:oauth:state:*")] == []
    assert (await client.get("/auth/session")).status_code == 401


async def test_cookies_are_secure_on_https(
    tmp_path: Path, fv: Any, http: SafeHttpClient, fake_as: FakeAuthServer
) -> None:
    keys = ClientKeys(current=ECKey.generate_key("P-256"))
    config = OAuthClientConfig.for_base_url("https://atcr.example.com", keys=keys)
    fake_as.confidential_jwks, fake_as.client_id = config.jwks(), config.client_id
    app, _ = make(tmp_path, fv, http, "https://atcr.example.com", config)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="https://atcr.example.com") as c:
        meta = await c.get("/client-metadata.json")
        assert meta.status_code == 200 and meta.json()["client_id"] == config.client_id
        assert (await c.get("/auth/oauth/jwks.json")).json() == config.jwks()
        resp = await login(c, fake_as)
        session = next(v for v in resp.headers.get_list("set-cookie") if v.startswith("atcr_session="))
        assert "Secure" in session
        page = await c.get("/auth/login")
        start = await c.post("/auth/login", data={"handle": HANDLE, "csrf_token": csrf_of(page.text)})
        binding = next(v for v in start.headers.get_list("set-cookie") if v.startswith("atcr_signin="))
        assert "Secure" in binding and "HttpOnly" in binding


async def test_loopback_client_serves_no_metadata_document(client: httpx.AsyncClient) -> None:
    assert (await client.get("/client-metadata.json")).status_code == 404


async def test_logout(client: httpx.AsyncClient, fake_as: FakeAuthServer) -> None:
    await login(client, fake_as)
    page = await client.get("/settings/devices")
    assert (await client.post("/auth/logout", data={"csrf_token": "forged"})).status_code == 403
    resp = await client.post("/auth/logout", data={"csrf_token": csrf_of(page.text)})
    assert resp.status_code == 303
    assert "atcr_session=" in resp.headers["set-cookie"] and "Max-Age=0" in resp.headers["set-cookie"]
    assert (await client.get("/auth/session")).status_code == 401


async def test_device_flow_over_http(client: httpx.AsyncClient, fake_as: FakeAuthServer, fv: Any) -> None:
    start = (await client.post("/auth/device/code", json={"client_name": "laptop"})).json()
    assert set(start) == {
        "device_code",
        "user_code",
        "verification_uri",
        "verification_uri_complete",
        "expires_in",
        "interval",
    }
    poll = {"grant_type": "urn:ietf:params:oauth:grant-type:device_code", "device_code": start["device_code"]}
    pending = await client.post("/auth/device/token", data=poll)
    assert pending.status_code == 400 and pending.json()["error"] == "authorization_pending"
    assert pending.headers["cache-control"] == "no-store"

    anonymous = await client.get("/device", params={"code": start["user_code"]})
    assert anonymous.status_code == 303 and anonymous.headers["location"].startswith("/auth/login?next=%2Fdevice")
    await login(client, fake_as)
    page = await client.get("/device", params={"code": start["user_code"]})
    assert page.status_code == 200 and "laptop" in page.text and start["user_code"] in page.text
    assert (await client.post("/device/approve", data={"code": start["user_code"]})).status_code == 403
    done = await client.post("/device/approve", data={"code": start["user_code"], "csrf_token": csrf_of(page.text)})
    assert done.status_code == 200 and "Device approved" in done.text

    client.cookies.clear()  # the device polls without the browser's cookies
    grant = None
    for _ in range(3):
        resp = await client.post("/auth/device/token", data=poll)
        if resp.status_code == 200:
            grant = resp.json()
            break
        assert resp.json()["error"] == "slow_down"
        await fv.delete(*[k async for k in fv.scan_iter("av:devflow-poll:*")])  # instead of sleeping
    assert grant is not None and grant["did"] == DID and grant["device_secret"].startswith("atcr_")

    # The device can revoke itself (the helper's logout); the secret then stops working.
    assert (await client.post("/auth/device/revoke", auth=(DID, "atcr_0000000000000000_x"))).status_code == 401
    ok = await client.post("/auth/device/revoke", auth=(DID, grant["device_secret"]))
    assert ok.status_code == 200 and ok.json()["revoked"] == grant["device_id"]


async def test_device_json_api_needs_session_and_csrf(
    client: httpx.AsyncClient, fake_as: FakeAuthServer, app: tuple[Litestar, SignIn]
) -> None:
    assert (await client.get("/api/devices")).status_code == 401
    await login(client, fake_as)
    devices = app[1].devices
    auth = await devices.start("ci", "127.0.0.1", "ua")
    device = await devices.approve(auth.user_code, did=DID, handle=HANDLE, ip="127.0.0.1")
    listed = (await client.get("/api/devices")).json()["devices"]
    assert [d["id"] for d in listed] == [device.id] and "hash" not in listed[0]
    assert (await client.delete(f"/api/devices/{device.id}")).status_code == 403
    token = (await client.get("/auth/session")).json()["csrf_token"]
    assert (await client.delete(f"/api/devices/{device.id}", headers={"X-CSRF-Token": token})).status_code == 204
    assert (await client.delete(f"/api/devices/{device.id}", headers={"X-CSRF-Token": token})).status_code == 404
    assert (await client.get("/api/devices")).json()["devices"] == []


async def test_a_sign_in_finishes_only_in_the_browser_that_started_it(
    client: httpx.AsyncClient, fake_as: FakeAuthServer, app: tuple[Litestar, SignIn]
) -> None:
    """Login CSRF (RFC 9700 §4.7): an attacker starts a sign-in as themselves, stops before the
    callback and has a signed-in victim open it. The victim must stay who they were."""
    victim = client
    await login(victim, fake_as)
    assert (await victim.get("/auth/session")).json()["did"] == DID
    transport = httpx.ASGITransport(app=app[0])
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:5000") as attacker:
        page = await attacker.get("/auth/login")
        start = await attacker.post(
            "/auth/login",
            data={"handle": "mallory.example.com", "csrf_token": csrf_of(page.text), "next": "/settings/devices"},
        )
        assert start.status_code == 303
        binding = next(c for c in start.headers.get_list("set-cookie") if c.startswith("atcr_signin="))
        assert "HttpOnly" in binding and "SameSite=lax" in binding and "Path=/auth" in binding
        assert "Secure" not in binding  # http base URL
        callback = fake_as.approve(start.headers["location"], did=OTHER_DID)
    spent_before = fake_as.count("authorization_code")

    refused = await victim.get("/auth/oauth/callback?" + urlencode(callback))
    assert refused.status_code == 400 and "started in another browser" in refused.text
    assert not any(c.startswith("atcr_session=") for c in refused.headers.get_list("set-cookie"))
    me = (await victim.get("/auth/session")).json()
    assert me["did"] == DID and me["handle"] == HANDLE  # the victim's own session survives
    assert fake_as.count("authorization_code") == spent_before  # the attacker's code was never spent
    assert await app[1].oauth.load(OTHER_DID) is None

    # A browser without any pre-login cookie cannot finish someone's sign-in either.
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:5000") as attacker:
        page = await attacker.get("/auth/login")
        start = await attacker.post(
            "/auth/login", data={"handle": "mallory.example.com", "csrf_token": csrf_of(page.text)}
        )
        callback = fake_as.approve(start.headers["location"], did=OTHER_DID)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:5000") as fresh:
        refused = await fresh.get("/auth/oauth/callback?" + urlencode(callback))
        assert refused.status_code == 400
        assert (await fresh.get("/auth/session")).status_code == 401


@pytest.mark.parametrize("path", ["/auth/device/code", "/auth/device/token"])
@pytest.mark.parametrize("body", [b"[" * 5000 + b"]" * 5000, b'{"client_name": ' + b"[" * 1000 + b"]" * 1000 + b"}",
                                  b'{"client_name": "laptop"'])
async def test_device_endpoints_answer_400_to_deep_or_broken_json(
    client: httpx.AsyncClient, fv: Any, path: str, body: bytes
) -> None:
    resp = await client.post(path, content=body, headers={"Content-Type": "application/json"})
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"] == "invalid_request" and "JSON" in resp.json()["error_description"]
    assert [k async for k in fv.scan_iter("av:devflow:*")] == []  # no device code was issued
