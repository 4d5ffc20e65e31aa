"""The webhook settings page in Debian chromium: create a webhook, send a test event, read the
delivery log, redeliver, delete. Screenshots go to test-artifacts/webhooks/."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from standardwebhooks.webhooks import Webhook as Verifier

from tests.e2e.auth.conftest import pds_sign_in_and_authorize
from tests.support.fixtures_stack import Pusher
from tests.support.webhook_receiver import await_for
from tests.support.webhooks_stack import WebhooksStack

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ARTIFACTS = Path(__file__).resolve().parents[3] / "test-artifacts" / "webhooks"


async def test_create_test_event_log_redeliver_and_delete(chromium, webhooks_stack: WebhooksStack,  # type: ignore[no-untyped-def]
                                                          pusher: Pusher) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    stack = webhooks_stack
    base = stack.url
    context = await chromium.new_context(viewport={"width": 1280, "height": 900})
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))

    await page.goto(f"{base}/settings/webhooks")
    await page.get_by_label("Handle or DID").fill(pusher.handle)
    await page.get_by_role("button", name="Sign in").click()
    await pds_sign_in_and_authorize(page, pusher.account, ARTIFACTS)
    await page.wait_for_url(f"{base}/settings/webhooks")
    assert await page.locator("#no-webhooks").is_visible()

    # A private address is refused with the reason on the page, the form kept.
    await page.get_by_label("Payload URL").fill("http://10.0.0.1/hook")
    await page.get_by_role("button", name="Add webhook").click()
    assert "refused" in await page.locator("#webhook-error").inner_text()
    assert await page.get_by_label("Payload URL").input_value() == "http://10.0.0.1/hook"

    await page.get_by_label("Payload URL").fill(stack.receiver.url)
    await page.get_by_label("tag", exact=True).check()
    await page.get_by_role("button", name="Add webhook").click()
    secret = (await page.locator("#webhook-secret").inner_text()).strip()
    assert secret.startswith("whsec_")
    await page.screenshot(path=str(ARTIFACTS / "created.png"), full_page=True)
    hook = page.locator("article.webhook")
    assert await hook.count() == 1
    assert "push, tag" in await hook.inner_text()

    seen = len(stack.receiver.snapshot())
    await page.get_by_role("button", name="Send test event").click()
    await page.wait_for_url(re.compile(r".*/settings/webhooks\?done=test#wh.*"))
    assert "test event was queued" in await page.locator("#webhook-notice").inner_text()

    async def logged() -> bool:
        await page.reload()
        return await page.locator("tr.delivery.delivered").count() >= 1

    await await_for(logged, what="the delivery in the log")
    row = page.locator("tr.delivery").first
    text = await row.inner_text()
    assert "test" in text and "200" in text and "delivered" in text and " ms" in text
    await page.screenshot(path=str(ARTIFACTS / "delivery-log.png"), full_page=True)
    got = stack.receiver.snapshot()[seen:]
    assert [Verifier(secret).verify(r.body, r.headers)["type"] for r in got] == ["test"]

    await row.get_by_role("button", name="Redeliver").click()
    await page.wait_for_url(re.compile(r".*done=redeliver.*"))

    async def twice() -> bool:
        await page.reload()
        return await page.locator("tr.delivery.delivered").count() >= 2

    await await_for(twice, what="the redelivery in the log")
    again = stack.receiver.snapshot()[seen:]
    assert len(again) == 2 and again[0].headers["webhook-id"] == again[1].headers["webhook-id"]

    small = await chromium.new_context(viewport={"width": 375, "height": 740}, storage_state=await context.storage_state())
    phone = await small.new_page()
    await phone.goto(f"{base}/settings/webhooks")
    await phone.screenshot(path=str(ARTIFACTS / "webhooks-phone.png"), full_page=True)
    await small.close()

    await page.get_by_role("button", name="Delete").click()
    await page.wait_for_url(re.compile(r".*done=deleted.*"))
    assert await page.locator("#no-webhooks").is_visible()
    assert errors == []
    await context.close()
