"""The device flow and `/auth/token` with device secrets, against the real PDS (OAuth sessions with DPoP).

The helper's `login` runs for real (in a thread, speaking HTTP to the served AppView) while the
test plays the user in a signed-in browser session.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import re
import stat
import threading
from dataclasses import replace
from pathlib import Path

import httpx
import pytest

from atcr import credhelper
from atcr.errors import InvalidGrant
from tests.integration.auth.conftest import csrf_of, login
from tests.support.pdsnet import Account, TestNetwork, create_account
from tests.support.signin import Harness
from tests.support.valkey_cluster import ON_SINGLE_AND_CLUSTER

pytestmark = pytest.mark.integration

CODE = re.compile(r"\b([BCDFGHJKLMNPQRSTVWXZ]{4}-[BCDFGHJKLMNPQRSTVWXZ]{4})\b")


class Lines(io.StringIO):
    """A stderr the helper writes to from its thread while the test reads it."""

    def isatty(self) -> bool:
        return False


async def wait_for_code(stream: Lines, timeout: float = 15) -> str:
    for _ in range(int(timeout / 0.05)):
        found = CODE.search(stream.getvalue())
        if found:
            return found.group(1)
        await asyncio.sleep(0.05)
    raise AssertionError(f"no user code printed:\n{stream.getvalue()}")


async def approve(browser: httpx.AsyncClient, code: str) -> str:
    page = await browser.get("/device", params={"code": code})
    assert page.status_code == 200, page.text
    resp = await browser.post("/device/approve", data={"code": code, "csrf_token": csrf_of(page.text)})
    assert resp.status_code == 200 and "Device approved" in resp.text, resp.text
    return page.text


async def token(harness: Harness, user: str, secret: str, scope: str) -> httpx.Response:
    """`docker login` as a client does it (the server runs on this event loop: no blocking calls)."""
    async with httpx.AsyncClient(trust_env=False, timeout=30) as client:
        return await client.get(
            f"{harness.settings.base_url}/auth/token",
            params={"service": harness.settings.service, "scope": scope},
            auth=(user, secret),
        )


def access(resp: httpx.Response) -> list[dict[str, object]]:
    payload = resp.json()["token"].split(".")[1]
    body = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    assert body["auth_method"] == "oauth"
    return list(body["access"])


async def cli_login(harness: Harness, tmp_path: Path, browser: httpx.AsyncClient) -> tuple[credhelper.Account, str]:
    """`docker-credential-atcr login` against the AppView, approved in the browser."""
    store = credhelper.CredentialStore(tmp_path / "creds" / "credentials.json")
    err = Lines()
    stop = threading.Event()

    def sleep(seconds: float) -> None:
        if stop.wait(seconds):  # the test failed: end the helper's polling now, not at code expiry
            raise credhelper.HelperError("test over")

    task = asyncio.create_task(
        asyncio.to_thread(
            credhelper.cmd_login,
            store,
            harness.settings.base_url,
            err=err,
            environ={},
            open_browser=False,
            device_name="ci-runner-7",
            sleep=sleep,
        )
    )
    try:
        code = await wait_for_code(err)
        page = await approve(browser, code)
        assert "ci-runner-7" in page and "127.0.0.1" in page  # the user sees who asks (RFC 8628 §5.4)
        assert await asyncio.wait_for(task, 30) == 0
    finally:
        stop.set()
    assert "Signed in to" in err.getvalue()
    reg = store.registry(harness.settings.base_url)
    assert reg is not None and reg.current() is not None
    path = tmp_path / "creds" / "credentials.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    account = reg.current()
    assert account is not None
    return account, code


@ON_SINGLE_AND_CLUSTER
async def test_cli_login_then_token(
    harness: Harness, browser: httpx.AsyncClient, pds_account: Account, pds_network: TestNetwork, tmp_path: Path
) -> None:
    await login(browser, pds_account)
    account, _ = await cli_login(harness, tmp_path, browser)
    assert account.did == pds_account.did and account.secret.startswith("atcr_")
    assert len(account.secret) >= 5 + 16 + 1 + 43  # 256 random bits after the id

    own = await token(harness, pds_account.handle, account.secret, f"repository:{pds_account.handle}/app:pull,push")
    assert own.status_code == 200, own.text
    [grant] = access(own)
    assert grant["name"] == f"{pds_account.handle}/app" and {"pull", "push"} <= set(grant["actions"])  # type: ignore[arg-type]
    assert account.login_name == pds_account.handle  # what `get` hands to docker as the user name
    # By DID too, where the user name travels outside Basic auth (which forbids ':' in it).
    async with httpx.AsyncClient(trust_env=False, timeout=30) as client:
        by_did = await client.post(
            f"{harness.settings.base_url}/auth/token",
            data={
                "grant_type": "password",
                "username": pds_account.did,
                "password": account.secret,
                "service": harness.settings.service,
                "scope": f"repository:{pds_account.did}/app:push",
            },
        )
    assert by_did.status_code == 200, by_did.text

    # Another user's namespace: authenticated, but push is not granted.
    other = create_account(pds_network.pds_url, "bob")
    theirs = await token(harness, pds_account.handle, account.secret, f"repository:{other.handle}/app:pull,push")
    assert theirs.status_code == 200
    assert access(theirs) == [{"type": "repository", "name": f"{other.handle}/app", "actions": ["pull"]}]
    # A device secret is bound to its account: it does not log in as someone else.
    assert (await token(harness, other.handle, account.secret, "")).status_code == 401

    listed = (await browser.get("/api/devices")).json()["devices"]
    assert [d["name"] for d in listed] == ["ci-runner-7"]
    assert listed[0]["last_used"] > 0
    stored = await harness.sign_in.devices._device(listed[0]["id"])
    assert stored is not None and account.secret not in json.dumps(stored) and stored["hash"].startswith("$2")


async def test_revoked_device_gets_401(
    harness: Harness, browser: httpx.AsyncClient, pds_account: Account, tmp_path: Path
) -> None:
    await login(browser, pds_account)
    account, _ = await cli_login(harness, tmp_path, browser)
    assert (await token(harness, pds_account.handle, account.secret, "")).status_code == 200
    page = await browser.get("/settings/devices")
    device_id = account.device_id
    assert device_id and f"device-{device_id}" in page.text
    # Without the CSRF token nothing happens.
    assert (await browser.post(f"/settings/devices/{device_id}/revoke", data={})).status_code == 403
    resp = await browser.post(f"/settings/devices/{device_id}/revoke", data={"csrf_token": csrf_of(page.text)})
    assert resp.status_code == 303
    denied = await token(harness, pds_account.handle, account.secret, f"repository:{pds_account.handle}/app:push")
    assert denied.status_code == 401
    assert "revoked" in denied.json()["errors"][0]["message"]
    # `docker-credential-atcr status` says so, with exit status 1.
    store = credhelper.CredentialStore(tmp_path / "creds" / "credentials.json")
    out = Lines()
    code = await asyncio.to_thread(credhelper.cmd_status, store, harness.settings.base_url, out=out, offline=False)
    assert code == 1, out.getvalue()
    assert "[revoked: this device was signed out; sign in again with `docker-credential-atcr login" in out.getvalue()


async def test_helper_logout_revokes_at_the_appview(
    harness: Harness, browser: httpx.AsyncClient, pds_account: Account, tmp_path: Path
) -> None:
    await login(browser, pds_account)
    account, _ = await cli_login(harness, tmp_path, browser)
    store = credhelper.CredentialStore(tmp_path / "creds" / "credentials.json")
    err = Lines()
    await asyncio.to_thread(credhelper.cmd_logout, store, harness.settings.base_url, None, everyone=False, err=err)
    assert (await token(harness, pds_account.handle, account.secret, "")).status_code == 401
    assert credhelper.CredentialStore(tmp_path / "creds" / "credentials.json").registries == {}


@ON_SINGLE_AND_CLUSTER
async def test_wrong_user_code_is_refused_then_rate_limited(
    harness: Harness, browser: httpx.AsyncClient, pds_account: Account
) -> None:
    await login(browser, pds_account)
    page = await browser.get("/device")
    csrf = csrf_of(page.text)
    for _ in range(10):
        resp = await browser.post("/device", data={"code": "BCDF-GHJK", "csrf_token": csrf})
        assert resp.status_code == 400 and "wrong or has expired" in resp.text
    resp = await browser.post("/device", data={"code": "BCDF-GHJK", "csrf_token": csrf})
    assert resp.status_code == 429


async def test_denied_approval(harness: Harness, browser: httpx.AsyncClient, pds_account: Account) -> None:
    await login(browser, pds_account)
    start = (await browser.post("/auth/device/code", data={"client_id": "x", "client_name": "laptop"})).json()
    page = await browser.get("/device", params={"code": start["user_code"].lower().replace("-", " ")})
    resp = await browser.post("/device/deny", data={"code": start["user_code"], "csrf_token": csrf_of(page.text)})
    assert resp.status_code == 200 and "denied" in resp.text
    poll = await browser.post(
        "/auth/device/token",
        data={"grant_type": "urn:ietf:params:oauth:grant-type:device_code", "device_code": start["device_code"]},
    )
    assert poll.status_code == 400 and poll.json()["error"] == "access_denied"
    # The code is spent: it cannot be approved afterwards.
    again = await browser.post("/device/approve", data={"code": start["user_code"], "csrf_token": csrf_of(page.text)})
    assert again.status_code == 400


async def test_device_page_requires_sign_in(harness: Harness, browser: httpx.AsyncClient) -> None:
    resp = await browser.get("/device", params={"code": "BCDF-GHJK"})
    assert resp.status_code == 303
    assert resp.headers["location"] == "/auth/login?next=%2Fdevice%3Fcode%3DBCDF-GHJK"


class TestExpiry:
    @pytest.fixture
    def harness_env(self) -> dict[str, str]:
        return {"ATCR_DEVICE_CODE_TTL": "1"}

    async def test_expired_user_code(self, harness: Harness, browser: httpx.AsyncClient, pds_account: Account) -> None:
        await login(browser, pds_account)
        start = (await browser.post("/auth/device/code", data={"client_name": "old"})).json()
        assert start["expires_in"] == 1
        await asyncio.sleep(1.3)
        page = await browser.get("/device", params={"code": start["user_code"]})
        assert page.status_code == 400 and "expired" in page.text
        poll = await browser.post("/auth/device/token", data={"device_code": start["device_code"]})
        assert poll.json()["error"] == "expired_token"


class TestPolling:
    @pytest.fixture
    def harness_env(self) -> dict[str, str]:
        # The harness polls every second (its guard: 0.5 s); the second poll below must land
        # inside the guard however busy the machine is, so give it the default's 4.5 s.
        return {"ATCR_DEVICE_POLL_INTERVAL": "5"}

    async def test_polling_answers(self, harness: Harness, browser: httpx.AsyncClient) -> None:
        start = (await browser.post("/auth/device/code", json={"client_name": "json client"})).json()
        assert start["interval"] == 5
        form = {"grant_type": "urn:ietf:params:oauth:grant-type:device_code", "device_code": start["device_code"]}
        first = await browser.post("/auth/device/token", data=form)
        assert first.json()["error"] == "authorization_pending"
        fast = await browser.post("/auth/device/token", data=form)
        assert fast.status_code == 400 and fast.json()["error"] == "slow_down"
        bad = await browser.post("/auth/device/token", data={**form, "grant_type": "password"})
        assert bad.json()["error"] == "unsupported_grant_type"
        unknown = await browser.post("/auth/device/token", data={**form, "device_code": "nope"})
        assert unknown.json()["error"] == "expired_token"


async def test_dead_session_means_sign_in_again(
    harness: Harness, browser: httpx.AsyncClient, pds_account: Account, tmp_path: Path
) -> None:
    """Refresh-token reuse at the real AS kills the session; `/auth/token` then says how to recover."""
    await login(browser, pds_account)
    account, _ = await cli_login(harness, tmp_path, browser)
    oauth = harness.sign_in.oauth
    old = await oauth.load(pds_account.did)
    assert old is not None
    rotated = await oauth.client.refresh(old)  # the legitimate refresh
    await oauth.save(rotated)
    with pytest.raises(InvalidGrant):  # someone replays the spent refresh token...
        await oauth.client.refresh(old)
    # ...and the AS revoked the whole session: the next refresh fails too.
    await oauth.save(replace(rotated, expires_at=0))
    resp = await token(harness, pds_account.handle, account.secret, f"repository:{pds_account.handle}/app:push")
    assert resp.status_code == 401
    assert "sign in again" in resp.json()["errors"][0]["message"]
    assert await oauth.load(pds_account.did) is None

    # Signing in again in the browser revives the same device secret.
    await login(browser, pds_account)
    assert (await token(harness, pds_account.handle, account.secret, "")).status_code == 200


@ON_SINGLE_AND_CLUSTER
async def test_concurrent_refreshes_spend_the_refresh_token_once(
    harness: Harness, browser: httpx.AsyncClient, pds_account: Account
) -> None:
    await login(browser, pds_account)
    oauth = harness.sign_in.oauth
    session = await oauth.load(pds_account.did)
    assert session is not None
    await oauth.save(replace(session, expires_at=0))
    calls = 0
    real_refresh = oauth.client.refresh

    async def counting(s):  # type: ignore[no-untyped-def]
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.2)  # widen the race window
        return await real_refresh(s)

    oauth.client.refresh = counting  # type: ignore[method-assign]

    async def write(i: int) -> str:
        client = await harness.sessions.client(pds_account.did)
        assert client is not None
        blob = await client.upload_blob(f'{{"n":{i}}}'.encode(), "application/vnd.oci.image.manifest.v1+json")
        return str(blob["ref"]["$link"])

    results = await asyncio.gather(*(write(i) for i in range(6)))
    assert len(set(results)) == 6
    assert calls == 1
    fresh = await oauth.load(pds_account.did)
    assert fresh is not None and fresh.refresh_token != session.refresh_token
