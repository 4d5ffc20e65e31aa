"""Debian chromium driven by playwright (TEST-NETWORK.md), plus page helpers for the PDS sign-in UI."""

from __future__ import annotations

import re
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.support.pdsnet import Account

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parents[3] / "test-artifacts" / "auth"


@pytest.fixture
async def chromium() -> AsyncIterator[object]:
    if not shutil.which(CHROMIUM):
        pytest.fail("Debian chromium is required: apt-get install -y --no-install-recommends chromium")
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield browser
        finally:
            await browser.close()


@pytest.fixture
def shots(request: pytest.FixtureRequest) -> Path:
    """Where this test's screenshots go (test-artifacts/ is git-ignored)."""
    out = ARTIFACTS / re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name)
    out.mkdir(parents=True, exist_ok=True)
    return out


async def pds_sign_in_and_authorize(page, account: Account, shots: Path, *, deny: bool = False) -> None:  # type: ignore[no-untyped-def]
    """On the PDS's own pages: type the password, sign in, then Authorize (or Deny access)."""
    await page.wait_for_url(re.compile(r".*/oauth/authorize.*"))
    password = page.locator("input[name=password]")
    await password.wait_for()
    await page.screenshot(path=str(shots / "2-pds-sign-in.png"))
    await password.fill(account.password)
    await page.get_by_role("button", name="Sign in").click()
    button = page.get_by_role("button", name="Deny access" if deny else "Authorize")
    await button.wait_for()
    await page.screenshot(path=str(shots / "3-pds-consent.png"))
    await button.click()
