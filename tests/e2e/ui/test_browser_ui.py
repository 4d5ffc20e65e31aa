"""A person's afternoon with the web UI, in Debian chromium against the real stack.

Sign in through the real PDS's pages, push an image with skopeo, find it by search, open its
page, star it (the count changes without a reload), edit its description, approve a device
login and revoke it from settings. Screenshots of the home, repository and settings pages
(desktop and phone width) go to test-artifacts/ui/.
"""

from __future__ import annotations

import asyncio
import io
import re
from pathlib import Path

import httpx
import pytest
from playwright.async_api import expect

from atcr import credhelper
from tests.e2e.auth.conftest import pds_sign_in_and_authorize
from tests.support.fixtures_stack import Pusher
from tests.support.ui_stack import UiStack, push_image

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ARTIFACTS = Path(__file__).resolve().parents[3] / "test-artifacts" / "ui"
CODE = re.compile(r"\b([BCDFGHJKLMNPQRSTVWXZ]{4}-[BCDFGHJKLMNPQRSTVWXZ]{4})\b")
PHONE = {"width": 375, "height": 740}


async def test_sign_in_push_search_star_edit_and_revoke(browser, ui_stack: UiStack, pusher: Pusher,  # type: ignore[no-untyped-def]
                                                        tmp_path: Path) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    base = ui_stack.url
    repo = f"shipyard-{pusher.did[-6:]}"
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))

    # Sign in through the real PDS sign-in and consent pages.
    await page.goto(f"{base}/")
    await page.get_by_role("link", name="Sign in").click()
    await page.get_by_label("Handle or DID").fill(pusher.handle)
    await page.get_by_role("button", name="Sign in").click()
    await pds_sign_in_and_authorize(page, pusher.account, ARTIFACTS)
    await page.wait_for_url(f"{base}/")
    assert await page.get_by_text(f"Signed in as {pusher.handle}").is_visible()

    # Push an image with a real client, then find it by search from the header.
    await asyncio.to_thread(push_image, ui_stack, pusher, tmp_path, repo, "1.0")
    await asyncio.to_thread(push_image, ui_stack, pusher, tmp_path, repo, "latest")
    await page.get_by_label("Search repositories and users").fill(repo[:8])
    await page.get_by_label("Search repositories and users").press("Enter")
    await page.wait_for_url(re.compile(r".*/search\?q=.*"))
    link = page.get_by_role("link", name=re.compile(re.escape(repo)))
    await link.first.click()
    await page.wait_for_url(f"{base}/r/{pusher.handle}/{repo}")
    assert await page.locator("#pull-command").inner_text() == f"docker pull {ui_stack.host}/{pusher.handle}/{repo}:latest"
    assert await page.locator("#tags tbody tr").count() == 2

    # Star it: the button's script updates the count in place (no navigation).
    star = page.locator("#star-button")
    assert await star.get_attribute("aria-pressed") == "false"
    assert await page.locator("#star-count").inner_text() == "0"
    url_before = page.url
    await star.click()
    await expect(page.locator("#star-count")).to_have_text("1", timeout=30_000)  # a PDS write behind it
    assert await star.get_attribute("aria-pressed") == "true"
    assert page.url == url_before
    await page.reload()
    assert await page.locator("#star-count").inner_text() == "1"  # it was written, not just drawn

    # The copy button copies the pull command.
    await context.grant_permissions(["clipboard-read", "clipboard-write"], origin=base)
    await page.get_by_role("button", name="Copy").click()
    await page.get_by_text("Copied to the clipboard.").wait_for()

    # Edit the description: Markdown is rendered, HTML is not.
    await page.get_by_role("link", name="Edit description").click()
    await page.get_by_label("Description (Markdown)").fill(
        "# Shipyard\n\nBuilds **ships** in bottles. <script>window.pwned = 1</script>\n\n- fast\n- small")
    await page.get_by_role("button", name="Save").click()
    await page.wait_for_url(re.compile(rf".*/r/{re.escape(pusher.handle)}/{repo}\?done=saved"))
    await page.get_by_text("Saved.").wait_for()
    assert await page.locator("#readme strong").inner_text() == "ships"
    assert await page.evaluate("window.pwned === undefined")
    await page.screenshot(path=str(ARTIFACTS / "repository.png"), full_page=True)

    # Manifest page from the tags table.
    await page.locator("#tags a.mono").first.click()
    await page.wait_for_url(re.compile(r".*/manifest/sha256:[0-9a-f]{64}"))
    assert await page.locator("#layers tbody tr").count() == 1
    await page.screenshot(path=str(ARTIFACTS / "manifest.png"), full_page=True)

    # Home shows it among recent pushes with its star.
    await page.goto(f"{base}/")
    assert await page.get_by_role("link", name=re.compile(re.escape(repo))).first.is_visible()
    await page.screenshot(path=str(ARTIFACTS / "home.png"), full_page=True)

    # A device logs in with the credential helper; the user approves it in this browser ...
    err = io.StringIO()
    store = credhelper.CredentialStore(tmp_path / "credentials.json")
    helper = asyncio.create_task(asyncio.to_thread(
        credhelper.cmd_login, store, base, err=err, environ={}, open_browser=False, device_name="ci-runner"))
    for _ in range(200):
        if CODE.search(err.getvalue()):
            break
        await asyncio.sleep(0.05)
    code = CODE.search(err.getvalue())
    assert code, err.getvalue()
    await page.goto(f"{base}/device?code={code.group(1)}")
    await page.screenshot(path=str(ARTIFACTS / "device-approval.png"), full_page=True)
    await page.get_by_role("button", name="Approve").click()
    await page.get_by_text("Device approved").wait_for()
    assert await asyncio.wait_for(helper, 30) == 0
    secret = store.registry(base).current().secret  # type: ignore[union-attr]

    # ... and revokes it from settings; its secret stops working at once.
    await page.goto(f"{base}/settings")
    assert await page.locator("#holds input[checked]").count() == 1
    await page.screenshot(path=str(ARTIFACTS / "settings.png"), full_page=True)
    await page.get_by_role("link", name="Revoke ci-runner").click()
    await page.get_by_role("button", name="Revoke ci-runner").click()  # on the confirmation page
    await page.get_by_text("The device was revoked").wait_for()
    assert await page.locator("#no-devices").is_visible()
    async with httpx.AsyncClient(trust_env=False) as client:
        resp = await client.get(f"{base}/auth/token", params={"service": ui_stack.host}, auth=(pusher.handle, secret))
    assert resp.status_code == 401

    # Phone width: no sideways scrolling of the page itself.
    phone = await browser.new_context(viewport=PHONE, storage_state=await context.storage_state())
    small = await phone.new_page()
    for name, path in (("home", "/"), ("repository", f"/r/{pusher.handle}/{repo}"), ("settings", "/settings")):
        await small.goto(base + path)
        overflow = await small.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        culprit = await small.evaluate(
            "[...document.querySelectorAll('body *')].filter(e => e.getBoundingClientRect().right > window.innerWidth"
            " + 1).map(e => e.tagName + '.' + e.className + '#' + e.id).slice(0, 8).join(' ')")
        await small.screenshot(path=str(ARTIFACTS / f"{name}-phone.png"), full_page=True)
        assert overflow <= 0, f"{name} scrolls sideways by {overflow}px at phone width: {culprit}"
    await phone.close()
    assert errors == [], errors
    await context.close()


async def test_reading_works_without_javascript_and_keyboard_reaches_everything(  # type: ignore[no-untyped-def]
    browser, ui_stack: UiStack, pusher: Pusher, tmp_path: Path
) -> None:
    repo = f"nojs-{pusher.did[-6:]}"
    await asyncio.to_thread(push_image, ui_stack, pusher, tmp_path, repo, "v1")
    context = await browser.new_context(java_script_enabled=False)
    page = await context.new_page()
    resp = await page.goto(f"{ui_stack.url}/r/{pusher.handle}/{repo}")
    assert resp is not None and resp.status == 200
    assert await page.locator("#pull-command").inner_text() == f"docker pull {ui_stack.host}/{pusher.handle}/{repo}:v1"
    assert await page.get_by_role("button", name="Copy").count() == 0  # hidden until the script runs
    # The first Tab lands on the skip link; the next ones walk the header in order.
    await page.keyboard.press("Tab")
    assert await page.evaluate("document.activeElement.textContent.trim()") == "Skip to content"
    await page.keyboard.press("Enter")
    assert page.url.endswith("#main")
    missing = await page.goto(f"{ui_stack.url}/r/{pusher.handle}/no-such-repo")
    assert missing is not None and missing.status == 404
    assert await page.get_by_role("heading", name="Not found").is_visible()
    await page.screenshot(path=str(ARTIFACTS / "not-found.png"))
    await context.close()
