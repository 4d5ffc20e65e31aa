"""The OAuth client against a strict fake authorization server: PAR, PKCE, DPoP, callback checks."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
from joserfc.jwk import ECKey

from appview.auth.oauth import ClientKeys, OAuthClient, OAuthClientConfig, OAuthSessions
from appview.auth.sessions import PdsSessionStore, SessionCipher
from atcr.errors import AuthServerInvalid, OAuthCallbackInvalid, OAuthError
from atcr.http import SafeHttpClient
from tests.unit.auth.conftest import BROWSER, SECRET
from tests.unit.auth.fake_as import DID, HANDLE, ISSUER, OTHER_DID, FakeAuthServer, FakeResolver

pytestmark = pytest.mark.unit


def pushed(fake: FakeAuthServer, url: str) -> dict[str, str]:
    uri = dict(parse_qsl(urlsplit(url).query))["request_uri"]
    return fake.requests[uri]


async def test_sign_in_round_trip(oauth: OAuthSessions, fake_as: FakeAuthServer) -> None:
    url = await oauth.begin("@" + HANDLE, {"next": "/settings"}, browser=BROWSER)
    assert url.startswith(f"{ISSUER}/oauth/authorize?client_id=")
    par = pushed(fake_as, url)
    assert par["code_challenge_method"] == "S256" and len(par["code_challenge"]) == 43
    assert par["login_hint"] == HANDLE and par["response_type"] == "code"
    assert par["redirect_uri"] == "http://127.0.0.1:5000/auth/oauth/callback"
    assert "client_assertion" not in par  # the loopback client is public
    assert fake_as.count("par") == 2  # first refused for want of a nonce, then retried with it
    callback = fake_as.approve(url)
    session, app_data = await oauth.complete(callback["state"], callback["code"], callback["iss"], browser=BROWSER)
    assert app_data == {"next": "/settings"}
    assert (session.did, session.handle, session.issuer) == (DID, HANDLE, ISSUER)
    assert session.token_endpoint == f"{ISSUER}/oauth/token"
    assert fake_as.count("authorization_code") == 1  # the nonce was remembered: no second round trip
    stored = await oauth.load(DID)
    assert stored == session


async def test_state_is_single_use(oauth: OAuthSessions, fake_as: FakeAuthServer) -> None:
    url = await oauth.begin(HANDLE, browser=BROWSER)
    callback = fake_as.approve(url)
    await oauth.complete(callback["state"], callback["code"], callback["iss"], browser=BROWSER)
    with pytest.raises(OAuthCallbackInvalid) as info:
        await oauth.complete(callback["state"], callback["code"], callback["iss"], browser=BROWSER)
    assert info.value.error == "invalid_state"


async def test_unknown_state(oauth: OAuthSessions) -> None:
    with pytest.raises(OAuthCallbackInvalid):
        await oauth.complete("never-issued", "code", ISSUER, browser=BROWSER)


@pytest.mark.parametrize("iss", ["https://evil.example.com", None, ""])
async def test_issuer_must_match(oauth: OAuthSessions, fake_as: FakeAuthServer, iss: str | None) -> None:
    url = await oauth.begin(HANDLE, browser=BROWSER)
    callback = fake_as.approve(url)
    with pytest.raises(OAuthCallbackInvalid) as info:
        await oauth.complete(callback["state"], callback["code"], iss, browser=BROWSER)
    assert info.value.error == "issuer_mismatch"
    assert fake_as.count("authorization_code") == 0  # refused before the code was spent
    assert await oauth.load(DID) is None


async def test_sub_must_be_the_account_that_signed_in(oauth: OAuthSessions, fake_as: FakeAuthServer) -> None:
    url = await oauth.begin(HANDLE, browser=BROWSER)
    callback = fake_as.approve(url, did=OTHER_DID)
    fake_as.sub_override = OTHER_DID
    with pytest.raises(OAuthCallbackInvalid) as info:
        await oauth.complete(callback["state"], callback["code"], callback["iss"], browser=BROWSER)
    assert info.value.error == "account_mismatch"
    assert await oauth.load(DID) is None and await oauth.load(OTHER_DID) is None


async def test_sub_whose_pds_names_another_server(
    oauth: OAuthSessions, fake_as: FakeAuthServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = await oauth.begin(HANDLE, browser=BROWSER)
    callback = fake_as.approve(url)

    async def elsewhere(pds: str) -> str:
        return "https://other-as.example.com"

    monkeypatch.setattr(oauth.client.discovery, "issuer_for_pds", elsewhere)
    with pytest.raises(OAuthCallbackInvalid) as info:
        await oauth.complete(callback["state"], callback["code"], callback["iss"], browser=BROWSER)
    assert info.value.error == "issuer_mismatch"


@pytest.mark.parametrize(
    ("attr", "value", "error"),
    [
        ("token_type", "Bearer", "invalid_response"),
        ("scope_override", "transition:generic", "invalid_scope"),
    ],
)
async def test_token_answers_that_are_refused(
    oauth: OAuthSessions, fake_as: FakeAuthServer, attr: str, value: str, error: str
) -> None:
    url = await oauth.begin(HANDLE, browser=BROWSER)
    callback = fake_as.approve(url)
    setattr(fake_as, attr, value)
    with pytest.raises(OAuthError) as info:
        await oauth.complete(callback["state"], callback["code"], callback["iss"], browser=BROWSER)
    assert info.value.error == error


async def test_wrong_code_is_invalid_grant(oauth: OAuthSessions, fake_as: FakeAuthServer) -> None:
    url = await oauth.begin(HANDLE, browser=BROWSER)
    callback = fake_as.approve(url)
    with pytest.raises(OAuthError) as info:
        await oauth.complete(callback["state"], "cod-forged", callback["iss"], browser=BROWSER)
    assert info.value.error == "invalid_grant"


async def test_unknown_account(oauth: OAuthSessions) -> None:
    with pytest.raises(OAuthError) as info:
        await oauth.begin("nobody.example.com", browser=BROWSER)
    assert info.value.error == "unknown_account"


async def test_server_without_par_is_refused(oauth: OAuthSessions, fake_as: FakeAuthServer) -> None:
    fake_as.metadata_overrides = {"require_pushed_authorization_requests": False}
    with pytest.raises(AuthServerInvalid):
        await oauth.begin(HANDLE, browser=BROWSER)


async def test_confidential_client(
    fv: Any, http: SafeHttpClient, resolver: FakeResolver, fake_as: FakeAuthServer
) -> None:
    keys = ClientKeys(current=ECKey.generate_key("P-256"))
    config = OAuthClientConfig.for_base_url("https://atcr.example.com", keys=keys)
    fake_as.confidential_jwks = config.jwks()
    fake_as.client_id = config.client_id
    store = PdsSessionStore(fv, SessionCipher(SECRET), http)
    oauth = OAuthSessions(OAuthClient(http, resolver, config), store, fv, SessionCipher(SECRET))  # type: ignore[arg-type]
    url = await oauth.begin(DID, browser=BROWSER)
    assert "client_assertion" in pushed(fake_as, url)
    callback = fake_as.approve(url)
    session, _ = await oauth.complete(callback["state"], callback["code"], callback["iss"], browser=BROWSER)
    assert session.client_kid == keys.current_kid
    refreshed = await oauth.client.refresh(session)
    assert refreshed.refresh_token != session.refresh_token
    assert fake_as.count("refresh_token") == 1


async def test_pending_sign_ins_are_sealed(oauth: OAuthSessions, fv: Any, fake_as: FakeAuthServer) -> None:
    await oauth.begin(HANDLE, browser=BROWSER)
    keys = [k async for k in fv.scan_iter("av:oauth:state:*")]
    assert len(keys) == 1
    raw = await fv.get(keys[0])
    assert b"verifier" not in raw and b"dpop_jwk" not in raw
    assert 0 < await fv.ttl(keys[0]) <= 600


async def test_callback_from_another_browser_is_refused_before_the_code_is_spent(
    oauth: OAuthSessions, fake_as: FakeAuthServer
) -> None:
    """RFC 9700 §4.7: only the browser that started a sign-in may finish it."""
    for other in ("c" * 64, ""):  # another browser's cookie, or none at all
        url = await oauth.begin(HANDLE, browser=BROWSER)
        callback = fake_as.approve(url)
        with pytest.raises(OAuthCallbackInvalid) as info:
            await oauth.complete(callback["state"], callback["code"], callback["iss"], browser=other)
        assert info.value.error == "browser_mismatch"
        # The refused callback used the state up: not even the right browser can finish it now.
        with pytest.raises(OAuthCallbackInvalid) as info:
            await oauth.complete(callback["state"], callback["code"], callback["iss"], browser=BROWSER)
        assert info.value.error == "invalid_state"
    assert fake_as.count("authorization_code") == 0  # no code was ever exchanged
    assert await oauth.load(DID) is None


async def test_a_sign_in_must_be_bound_to_a_browser(oauth: OAuthSessions) -> None:
    with pytest.raises(ValueError, match="bound to the browser"):
        await oauth.begin(HANDLE, browser="")
