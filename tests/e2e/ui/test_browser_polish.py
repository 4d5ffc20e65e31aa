"""What a new user tripped over in the web UI (issue 21), checked in Debian chromium against the
real stack: images pushed with skopeo, the real hold, the real PDS sign-in, the credential
helper's device flow. Every check reads the DOM; screenshots (desktop and phone width) go to
a temporary directory whose path the test prints.
"""

from __future__ import annotations

import asyncio
import io
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from atcr import credhelper
from atcr.identity import did_web_for_url
from atcr.readmodel.keys import tag_rkey
from tests.e2e.auth.conftest import pds_sign_in_and_authorize
from tests.support.fixtures_stack import Pusher
from tests.support.ocilayout import Layout
from tests.support.ui_stack import UiStack, skopeo_push

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

PHONE = {"width": 375, "height": 740}
COMPLETE = re.compile(r"(http://\S+/device\?code=([BCDFGHJKLMNPQRSTVWXZ]{4}-[BCDFGHJKLMNPQRSTVWXZ]{4}))")
SBOM = "application/spdx+json"
GHOST = "sha256:" + "e" * 64  # a manifest nobody pushed


def _ghost_tag(pds_url: str, pusher: Pusher, repository: str, tag: str) -> None:
    """A tag record whose manifest was never pushed, written straight to the owner's PDS."""
    with httpx.Client(base_url=pds_url, timeout=30, trust_env=False) as pds:
        session = pds.post("/xrpc/com.atproto.server.createSession",
                           json={"identifier": pusher.handle, "password": pusher.account.password})
        session.raise_for_status()
        now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        r = pds.post(
            "/xrpc/com.atproto.repo.putRecord",
            headers={"Authorization": f"Bearer {session.json()['accessJwt']}"},
            json={
                "repo": pusher.did, "collection": "io.atcr.tag", "rkey": tag_rkey(repository, tag),
                "record": {"$type": "io.atcr.tag", "repository": repository, "tag": tag,
                           "manifest": f"at://{pusher.did}/io.atcr.manifest/{GHOST[7:]}",
                           "manifestDigest": GHOST, "createdAt": now},
            },
        )
        r.raise_for_status()


def _push(stack: UiStack, pusher: Pusher, tmp: Path) -> dict[str, Any]:
    """app: one amd64 image (tags 1, latest), a two-platform index (multi) and its arm64 child (arm);
    files: an SBOM artifact (sbom); ghost: a tag pointing at a manifest that does not exist."""
    _ghost_tag(stack.registry.network.pds_url, pusher, "ghost", "gone")
    one = Layout(tmp / "one")
    single = one.image(arch="amd64")
    one.tag(single, "1")
    one.tag(single, "latest")
    multi = Layout(tmp / "multi")
    amd, arm = multi.image(arch="amd64"), multi.image(arch="arm64")
    index = multi.index_of([amd, arm])
    multi.tag(index, "multi")
    multi.tag(arm, "arm")
    art = Layout(tmp / "sbom")
    sbom = art.image(artifact_type=SBOM, config_media_type="application/vnd.oci.empty.v1+json",
                     layers=[art.add_blob(b'{"spdxVersion":"SPDX-2.3"}')])
    art.tag(sbom, "sbom")
    name = pusher.handle
    skopeo_push(stack, pusher, one.root, "1", f"{name}/app:1")
    skopeo_push(stack, pusher, one.root, "latest", f"{name}/app:latest")
    skopeo_push(stack, pusher, multi.root, "multi", f"{name}/app:multi", all_=True)
    skopeo_push(stack, pusher, multi.root, "arm", f"{name}/app:arm")
    skopeo_push(stack, pusher, art.root, "sbom", f"{name}/files:sbom")
    return {"single": single["digest"], "index": index["digest"], "amd": amd["digest"], "arm": arm["digest"],
            "sbom": sbom["digest"]}


async def _no_cut_off_tables(page: Any, what: str) -> None:
    """No table (and no cell) reaches past the viewport or hides columns in a scroll box."""
    problems = await page.evaluate("""() => {
      const out = [];
      for (const t of document.querySelectorAll('main table')) {
        const r = t.getBoundingClientRect();
        if (r.right > window.innerWidth + 0.5) out.push(`${t.id || 'table'} ends at ${r.right}`);
        if (t.scrollWidth > t.clientWidth + 1) out.push(`${t.id || 'table'} scrolls: ${t.scrollWidth} > ${t.clientWidth}`);
        const box = t.closest('.table-scroll');
        if (box && box.scrollWidth > box.clientWidth + 1) out.push(`${t.id || 'table'} box scrolls`);
        for (const c of t.querySelectorAll('td')) {
          if (c.getBoundingClientRect().right > window.innerWidth + 0.5) { out.push(`${t.id} cell past the edge`); break; }
        }
      }
      const page = document.documentElement.scrollWidth - window.innerWidth;
      if (page > 0) out.push(`page scrolls sideways by ${page}px`);
      return out;
    }""")
    assert problems == [], f"{what}: {problems}"


async def _pull_box_shows_everything(page: Any, expected: str) -> None:
    box = page.locator("#pull-command")
    assert await box.inner_text() == expected
    hidden = await box.evaluate("e => [e.scrollWidth - e.clientWidth, e.getBoundingClientRect().right,"
                                " e.closest('.panel').getBoundingClientRect().right]")
    assert hidden[0] <= 0 and hidden[1] <= hidden[2] + 0.5, f"pull command cut off: {hidden}"


async def test_what_a_new_user_noticed(browser, ui_stack: UiStack, pusher: Pusher,  # type: ignore[no-untyped-def]
                                      tmp_path: Path) -> None:
    shots = tmp_path / "screenshots"
    shots.mkdir()
    print(f"screenshots: {shots}")
    base, host, name = ui_stack.url, ui_stack.host, pusher.handle
    hold_did = ui_stack.registry.hold_did
    hold_host = hold_did.removeprefix("did:web:").replace("%3A", ":")
    digests = await asyncio.to_thread(_push, ui_stack, pusher, tmp_path)
    assert did_web_for_url(f"http://{hold_host}") == hold_did

    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))

    # One charset in the content type; a favicon.
    resp = await page.goto(f"{base}/")
    assert resp is not None and resp.headers["content-type"] == "text/html; charset=utf-8"
    assert await page.locator('link[rel="icon"]').get_attribute("href") == "/favicon.ico"
    icon = await page.request.get(f"{base}/favicon.ico")
    assert icon.status == 200 and icon.headers["content-type"] == "image/x-icon"
    assert (await icon.body())[:4] == b"\x00\x00\x01\x00"

    # Home: each popular list has its own empty text.
    for by, empty, other in (("stars", "No repository has been starred yet.", "pulled"),
                             ("pulls", "No repository has been pulled yet.", "starred")):
        await page.goto(f"{base}/?popular={by}")
        section = page.locator("section[aria-labelledby=popular-h]")
        text = await section.inner_text()
        assert other not in text and "starred or pulled" not in text
        if await section.locator(".card").count() == 0:
            assert await section.locator(".empty").inner_text() == empty

    # Search: one search box, holding the query.
    await page.goto(f"{base}/search?q=app")
    assert await page.locator('input[type="search"]').count() == 1
    assert await page.locator('input[type="search"]').input_value() == "app"

    # Sign in through the PDS (settings and the device flow need it).
    await page.goto(f"{base}/")
    await page.get_by_role("link", name="Sign in").click()
    await page.get_by_label("Handle or DID").fill(pusher.handle)
    await page.get_by_role("button", name="Sign in").click()
    await pds_sign_in_and_authorize(page, pusher.account, shots)
    await page.wait_for_url(f"{base}/")

    # The repository: platforms of single images, index children, the pull box, the hold.
    await page.goto(f"{base}/r/{name}/app")
    platforms = {t: await page.locator(f'#tags tr[data-tag="{t}"] td.platforms').inner_text()
                 for t in ("1", "latest", "multi", "arm")}
    assert platforms == {"1": "linux/amd64", "latest": "linux/amd64", "multi": "linux/amd64, linux/arm64",
                         "arm": "linux/arm64"}
    assert await page.locator("#manifests-h").inner_text() == "Manifests (4)"
    children = page.locator(f'#manifests tr[data-parent="{digests["index"]}"]')
    assert await children.count() == 2
    arm_row = page.locator(f'#manifests tr[data-digest="{digests["arm"]}"]')
    assert await arm_row.get_attribute("data-parent") == digests["index"]
    assert await arm_row.locator('td[data-label="Tags"]').inner_text() == "arm"
    assert "linux/arm64" in await arm_row.locator('td[data-label="Kind"]').inner_text()
    await _pull_box_shows_everything(page, f"docker pull {host}/{name}/app:latest")
    link = page.locator("#hold a.hold-link")
    assert await link.inner_text() == hold_host
    assert await link.get_attribute("href") == f"http://{hold_host}"
    assert await link.get_attribute("title") == hold_did
    assert "did:web:" not in await page.locator("aside").inner_text()
    await page.screenshot(path=str(shots / "repository.png"), full_page=True)

    # The single image's manifest page names its platform (read from the config on the hold).
    await page.goto(f"{base}/r/{name}/app/manifest/{digests['single']}")
    assert await page.locator("#manifest-platform").inner_text() == "linux/amd64"
    await _pull_box_shows_everything(page, f"docker pull {host}/{name}/app@{digests['single']}")
    # The index's platform table shows which child is tagged.
    await page.goto(f"{base}/r/{name}/app/manifest/{digests['index']}")
    arm_child = page.locator("#platforms tr", has_text="linux/arm64")
    assert await arm_child.locator('td[data-label="Tags"]').inner_text() == "arm"

    # The hold link says what the hold is.
    await page.goto(f"{base}/r/{name}/app")
    await link.click()
    await page.wait_for_url(f"http://{hold_host}/")
    assert "ATCR hold" in await page.locator("body").inner_text()
    assert await page.locator("#hold-did").inner_text() == hold_did

    # An artifact: its own badge, and oras (not docker) to pull it.
    await page.goto(f"{base}/r/{name}/files")
    badge = page.locator('#tags tr[data-tag="sbom"] .badge')
    assert await badge.inner_text() == "artifact" and await badge.get_attribute("title") == SBOM
    await _pull_box_shows_everything(page, f"oras pull --plain-http {host}/{name}/files:sbom")
    await page.goto(f"{base}/r/{name}/files/manifest/{digests['sbom']}")
    assert await page.locator("#manifest-kind").inner_text() == "artifact"
    await _pull_box_shows_everything(page, f"oras pull --plain-http {host}/{name}/files@{digests['sbom']}")
    await page.screenshot(path=str(shots / "artifact.png"), full_page=True)

    # A tag whose manifest is missing: a different badge, no "unknown".
    await page.goto(f"{base}/r/{name}/ghost")
    ghost = page.locator('#tags tr[data-tag="gone"]')
    assert await ghost.locator(".badge.bad").inner_text() == "manifest missing"
    assert "unknown" not in await page.locator("#tags").inner_text()

    # The device flow: the helper prints the complete URL; the page names the time like a person.
    err = io.StringIO()
    store = credhelper.CredentialStore(tmp_path / "credentials.json")
    helper = asyncio.create_task(asyncio.to_thread(
        credhelper.cmd_login, store, base, err=err, environ={}, open_browser=False, device_name="laptop-7"))
    found = None
    for _ in range(400):
        found = COMPLETE.search(err.getvalue())
        if found:
            break
        await asyncio.sleep(0.05)
    assert found, err.getvalue()
    assert found.group(1) == f"{base}/device?code={found.group(2)}"
    # A wrong code first: the message reads as a sentence.
    await page.goto(f"{base}/device")
    await page.get_by_label("Code").fill("BCDF-BCDF")
    await page.get_by_role("button", name="Continue").click()
    assert await page.locator("#device-error").inner_text() == "That code is wrong or has expired."
    await page.goto(found.group(1))
    asked = await page.locator("#device-asked").inner_text()
    assert re.fullmatch(r"(just now|\d+ minutes? ago), \d{1,2} [A-Z][a-z]{2} \d{4}, \d\d:\d\d UTC", asked), asked
    colours = [await page.locator(sel).evaluate("e => [getComputedStyle(e).backgroundColor, getComputedStyle(e).color]")
               for sel in ("#approve", "#deny")]
    assert colours[0] != colours[1], colours
    await page.screenshot(path=str(shots / "device-approval.png"), full_page=True)
    await page.get_by_role("button", name="Approve").click()
    await page.get_by_text("Device approved").wait_for()
    assert await asyncio.wait_for(helper, 60) == 0
    secret = store.registry(base).current().secret  # type: ignore[union-attr]

    # Phone width: tables reflow, the pull command wraps, nothing is cut off.
    phone = await browser.new_context(viewport=PHONE, storage_state=await context.storage_state())
    small = await phone.new_page()
    for label, path in (("home", "/"), ("repository", f"/r/{name}/app"),
                        ("index", f"/r/{name}/app/manifest/{digests['index']}"),
                        ("manifest", f"/r/{name}/app/manifest/{digests['single']}"), ("artifacts", f"/r/{name}/files"),
                        ("settings", "/settings"), ("devices", "/settings/devices")):
        await small.goto(base + path)
        await small.screenshot(path=str(shots / f"{label}-phone.png"), full_page=True)
        await _no_cut_off_tables(small, label)
        if await small.locator("#pull-command").count():
            box = await small.locator("#pull-command").evaluate("e => e.scrollWidth - e.clientWidth")
            assert box <= 0, f"{label}: pull command cut off at phone width"
    await small.goto(f"{base}/r/{name}/app")
    label = await small.locator('#tags tr[data-tag="multi"] td.platforms').evaluate(
        "e => getComputedStyle(e, '::before').content")
    assert label == '"Platforms"'  # each cell says which column it is
    await phone.close()

    # Revoking asks first; Cancel keeps the device.
    await page.goto(f"{base}/settings")
    await page.get_by_role("link", name="Revoke laptop-7").click()
    await page.wait_for_url(re.compile(r".*/settings/devices/revoke\?device_id=.*"))
    assert await page.get_by_role("heading", name="Revoke this device?").is_visible()
    await page.screenshot(path=str(shots / "revoke-confirm.png"), full_page=True)
    await page.get_by_role("link", name="Cancel").click()
    await page.wait_for_url(f"{base}/settings#devices")
    assert await page.locator("#device-table", has_text="laptop-7").count() == 1
    async with httpx.AsyncClient(trust_env=False) as client:
        resp = await client.get(f"{base}/auth/token", params={"service": host}, auth=(pusher.handle, secret))
    assert resp.status_code == 200  # still signed in
    await page.get_by_role("link", name="Revoke laptop-7").click()
    await page.get_by_role("button", name="Revoke laptop-7").click()
    await page.get_by_text("The device was revoked").wait_for()
    assert await page.locator("#no-devices").is_visible()
    async with httpx.AsyncClient(trust_env=False) as client:
        resp = await client.get(f"{base}/auth/token", params={"service": host}, auth=(pusher.handle, secret))
    assert resp.status_code == 401
    assert errors == [], errors
    await context.close()
