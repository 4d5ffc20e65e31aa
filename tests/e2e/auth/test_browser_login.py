"""A real browser signs in through the real PDS OAuth pages and approves a device.

Chromium (Debian) clicks through the AppView login page, the PDS's sign-in and consent pages,
and lands signed in on the AppView. The AppView here is the production sign-in stack
(`build_sign_in`) served on loopback, as the loopback public client.
"""

from __future__ import annotations

import asyncio
import io
import re
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from atcr import credhelper
from tests.e2e.auth.conftest import pds_sign_in_and_authorize
from tests.support.pds_oauth import callback_of
from tests.support.pdsnet import Account, TestNetwork, create_account
from tests.support.services import free_port
from tests.support.signin import Harness, build_harness, serving, settings_for

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

CODE = re.compile(r"\b([BCDFGHJKLMNPQRSTVWXZ]{4}-[BCDFGHJKLMNPQRSTVWXZ]{4})\b")


@pytest.fixture
async def harness(tmp_path: Path, pds_network: TestNetwork, valkey) -> AsyncIterator[Harness]:  # type: ignore[no-untyped-def]
    port = free_port()
    settings = settings_for(
        tmp_path, base_url=f"http://127.0.0.1:{port}", plc_url=pds_network.plc_url, pds_url=pds_network.pds_url
    )
    h = build_harness(settings, valkey)
    async with serving(h.app, port):
        yield h
    await h.http.aclose()


async def browser_login(page, harness: Harness, account: Account, shots: Path, next_path: str) -> None:  # type: ignore[no-untyped-def]
    await page.goto(f"{harness.settings.base_url}/auth/login?next={next_path}")
    await page.get_by_label("Handle or DID").fill(account.handle)
    await page.screenshot(path=str(shots / "1-appview-login.png"))
    await page.get_by_role("button", name="Sign in").click()
    await pds_sign_in_and_authorize(page, account, shots)
    await page.wait_for_url(f"{harness.settings.base_url}{next_path}")


async def test_browser_login_lands_signed_in(chromium, harness: Harness, pds_account: Account, shots: Path) -> None:  # type: ignore[no-untyped-def]
    context = await chromium.new_context()
    page = await context.new_page()
    await browser_login(page, harness, pds_account, shots, "/settings/devices")
    await page.screenshot(path=str(shots / "4-signed-in.png"))
    assert await page.get_by_text(f"Signed in as {pds_account.handle}").is_visible()
    cookies = {c["name"]: c for c in await context.cookies()}
    session = cookies["atcr_session"]
    assert session["httpOnly"] and session["sameSite"] == "Lax"
    assert [p.did for p in harness.logins] == [pds_account.did]
    stored = await harness.sign_in.oauth.load(pds_account.did)
    assert stored is not None and stored.handle == pds_account.handle

    await page.get_by_role("button", name="Sign out").click()
    await page.wait_for_url(f"{harness.settings.base_url}/")
    assert "atcr_session" not in {c["name"] for c in await context.cookies()}
    await context.close()


async def test_browser_deny_at_consent(chromium, harness: Harness, pds_account: Account, shots: Path) -> None:  # type: ignore[no-untyped-def]
    page = await chromium.new_page()
    await page.goto(f"{harness.settings.base_url}/auth/login")
    await page.get_by_label("Handle or DID").fill(pds_account.handle)
    await page.get_by_role("button", name="Sign in").click()
    await pds_sign_in_and_authorize(page, pds_account, shots, deny=True)
    await page.wait_for_url(re.compile(r".*/auth/oauth/callback.*"))
    await page.screenshot(path=str(shots / "4-declined.png"))
    assert await page.get_by_role("alert").inner_text() == "You declined the sign-in."


async def test_device_approval_in_the_browser(
    chromium,
    harness: Harness,
    pds_account: Account,
    shots: Path,  # type: ignore[no-untyped-def]
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    """`docker-credential-atcr login` prints a code; the user approves it in chromium; the helper stores the secret."""
    page = await chromium.new_page()
    err = io.StringIO()
    store = credhelper.CredentialStore(tmp_path / "credentials.json")
    stop = threading.Event()

    def sleep(seconds: float) -> None:
        if stop.wait(seconds):
            raise credhelper.HelperError("test over")

    helper = asyncio.create_task(
        asyncio.to_thread(
            credhelper.cmd_login,
            store,
            harness.settings.base_url,
            err=err,
            environ={},
            open_browser=False,
            device_name="build-box",
            sleep=sleep,
        )
    )
    request.addfinalizer(stop.set)
    for _ in range(200):
        if CODE.search(err.getvalue()):
            break
        await asyncio.sleep(0.05)
    code = CODE.search(err.getvalue())
    assert code, err.getvalue()
    complete = f"{harness.settings.base_url}/device?code={code.group(1)}"
    assert complete in err.getvalue() or f"{harness.settings.base_url}/device" in err.getvalue()

    # Not signed in yet: the verification page sends the user through the OAuth sign-in first.
    await page.goto(complete)
    await page.get_by_label("Handle or DID").fill(pds_account.handle)
    await page.get_by_role("button", name="Sign in").click()
    await pds_sign_in_and_authorize(page, pds_account, shots)
    await page.wait_for_url(re.compile(r".*/device\?code=.*"))
    assert await page.locator("#device-name").inner_text() == "build-box"
    assert await page.locator("#device-ip").inner_text() == "127.0.0.1"
    assert await page.locator("#device-code").inner_text() == code.group(1)
    await page.screenshot(path=str(shots / "5-device-confirm.png"))
    await page.get_by_role("button", name="Approve").click()
    await page.get_by_text("Device approved").wait_for()
    await page.screenshot(path=str(shots / "6-device-approved.png"))

    assert await asyncio.wait_for(helper, 30) == 0
    account = credhelper.CredentialStore(tmp_path / "credentials.json").registry(harness.settings.base_url)
    assert account is not None and account.current() is not None
    secret = account.current().secret  # type: ignore[union-attr]
    async with httpx.AsyncClient(trust_env=False) as client:
        resp = await client.get(
            f"{harness.settings.base_url}/auth/token",
            params={"service": harness.settings.service, "scope": f"repository:{pds_account.handle}/app:pull,push"},
            auth=(pds_account.handle, secret),
        )
    assert resp.status_code == 200, resp.text

    # Settings list the device; revoking it by clicking kills the secret.
    await page.goto(f"{harness.settings.base_url}/settings/devices")
    await page.screenshot(path=str(shots / "7-devices.png"))
    await page.locator("#device-table summary", has_text="Revoke").click()  # asks first
    await page.get_by_role("button", name="Revoke build-box").click()
    await page.get_by_text("Device revoked.").wait_for()
    async with httpx.AsyncClient(trust_env=False) as client:
        resp = await client.get(
            f"{harness.settings.base_url}/auth/token",
            params={"service": harness.settings.service},
            auth=(pds_account.handle, secret),
        )
    assert resp.status_code == 401


async def test_a_callback_opened_in_another_browser_is_refused(  # type: ignore[no-untyped-def]
    chromium, harness: Harness, pds_account: Account, pds_network: TestNetwork, shots: Path
) -> None:
    """Login CSRF (RFC 9700 §4.7): the attacker signs in as themselves in their own browser,
    stops before the callback and has a signed-in victim open it."""
    victim_context = await chromium.new_context()
    victim = await victim_context.new_page()
    await browser_login(victim, harness, pds_account, shots, "/settings/devices")

    mallory = create_account(pds_network.pds_url, "mallory")
    attacker_context = await chromium.new_context()
    attacker = await attacker_context.new_page()
    captured: list[str] = []

    async def hold_back(route) -> None:  # type: ignore[no-untyped-def]
        # The PDS's redirect page names the callback (code, state, iss): the attacker keeps that
        # URL instead of following it (a redirect is followed without asking the route again).
        captured.append(callback_of(route.request.url))
        await route.abort()

    await attacker.route(re.compile(r".*/oauth/authorize/redirect.*"), hold_back)
    await attacker.goto(f"{harness.settings.base_url}/auth/login?next=/settings/devices")
    await attacker.get_by_label("Handle or DID").fill(mallory.handle)
    await attacker.get_by_role("button", name="Sign in").click()
    await pds_sign_in_and_authorize(attacker, mallory, shots)
    deadline = asyncio.get_running_loop().time() + 30
    while not captured:
        assert asyncio.get_running_loop().time() < deadline, "the PDS never sent the attacker to the callback"
        await asyncio.sleep(0.05)
    await attacker_context.close()

    await victim.goto(captured[0])
    await victim.screenshot(path=str(shots / "5-callback-refused.png"))
    assert "started in another browser" in await victim.get_by_role("alert").inner_text()
    await victim.goto(f"{harness.settings.base_url}/settings/devices")
    assert await victim.get_by_text(f"Signed in as {pds_account.handle}").is_visible()
    assert [p.did for p in harness.logins] == [pds_account.did]
    assert await harness.sign_in.oauth.load(mallory.did) is None
    await victim_context.close()
