"""Download my data / delete my data through the running AppView and hold: a real sign-in, real
pushes (skopeo), a device approved in the browser session, a star, a webhook; then each store
(the AppView's Valkey, the hold's repo) is read after the delete, and the other user is intact."""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import valkey

from tests.support.fixtures_stack import Pusher
from tests.support.pdsnet import create_account, create_app_password
from tests.support.ui_stack import csrf_of, push_image, sign_in
from tests.support.webhooks_stack import WebhooksStack

pytestmark = [pytest.mark.integration, pytest.mark.e2e]


@contextmanager
def _browser(stack: WebhooksStack, pusher: Pusher) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.url, timeout=60, follow_redirects=False) as client:
        sign_in(client, pusher.account, "/settings/data")
        yield client


def _prepare(stack: WebhooksStack, pusher: Pusher, browser: httpx.Client, tmp: Path, repo: str) -> None:
    push_image(stack, pusher, tmp, repo, "v1")  # type: ignore[arg-type]
    code = httpx.post(f"{stack.url}/auth/device/code", data={"client_name": f"laptop-{repo}"}, timeout=30).json()
    page = browser.get("/device", params={"code": code["user_code"]})
    approved = browser.post("/device/approve", data={"code": code["user_code"], "csrf_token": csrf_of(page.text)})
    assert approved.status_code == 200 and "Device approved" in approved.text
    repo_page = browser.get(f"/r/{pusher.handle}/{repo}")
    starred = browser.post(f"/r/{pusher.handle}/{repo}/-/star", data={"star": "1", "csrf_token": csrf_of(repo_page.text)})
    assert starred.status_code in (200, 303), starred.text[:300]
    hook = httpx.post(f"{stack.url}/api/webhooks", auth=(pusher.handle, pusher.app_password), timeout=30,
                      json={"url": stack.receiver.url, "events": ["push"]})
    assert hook.status_code == 201, hook.text
    sent = httpx.post(f"{stack.url}/api/webhooks/{hook.json()['id']}/test", auth=(pusher.handle, pusher.app_password),
                      timeout=30)
    assert sent.status_code == 202


def _keys(v: valkey.Valkey, did: str) -> list[str]:
    """Every key of the AppView's Valkey that names this DID (or holds one of its webhooks)."""
    out = [k.decode() for k in v.scan_iter(match=f"*{did}*", count=1000)]
    for k in v.scan_iter(match="{wh}:hook:*", count=1000):
        if v.hget(k, "did") == did.encode():
            out.append(k.decode())
    return sorted(out)


def _hold_records(stack: WebhooksStack, collection: str) -> list[dict[str, Any]]:
    hold = stack.registry.hold.url
    r = httpx.get(f"{hold}/xrpc/com.atproto.repo.listRecords",
                  params={"repo": stack.registry.hold_did, "collection": collection, "limit": 100}, timeout=30)
    assert r.status_code == 200, r.text
    return [rec["value"] for rec in r.json()["records"]]


def test_export_has_everything_and_delete_removes_it_from_each_store(
    webhooks_stack: WebhooksStack, pusher: Pusher, tmp_path: Path
) -> None:
    stack = webhooks_stack
    other_account = create_account(stack.registry.network.pds_url, "bystander")
    other = Pusher(account=other_account, app_password=create_app_password(other_account, "docker"))
    with _browser(stack, pusher) as alice, _browser(stack, other) as bob:
        _prepare(stack, pusher, alice, tmp_path / "a", "mine")
        _prepare(stack, other, bob, tmp_path / "b", "theirs")

        page = alice.get("/settings/data")
        assert page.status_code == 200 and "What stays, and why" in page.text and stack.registry.hold_did in page.text
        token = csrf_of(page.text)
        refused = alice.post("/settings/data/export", data={"csrf_token": token})  # no confirmation
        assert refused.status_code == 400
        got = alice.post("/settings/data/export", data={"csrf_token": token, "confirm": "yes"})
        assert got.status_code == 200 and "attachment" in got.headers["content-disposition"]
        data = got.json()
        app = data["appview"]
        assert data["did"] == pusher.did
        assert [d["name"] for d in app["devices"]] == ["laptop-mine"]
        assert app["webSessions"] and app["pdsSession"] is not None
        assert not any("jwt" in k.lower() or "token" in k.lower() for k in app["pdsSession"])
        assert app["stars"] and "mine" in app["stats"]
        assert len(app["webhooks"]) == 1 and "secret" not in app["webhooks"][0]
        assert "mine" in app["repositories"] and "theirs" not in app["repositories"]
        hold = next(h for h in data["holds"] if h["holdDid"] == stack.registry.hold_did)["export"]
        assert hold["userDid"] == pusher.did and hold["crewRecord"]["role"]
        assert {layer["userDid"] for layer in hold["layerRecords"]} == {pusher.did} and hold["layerRecords"]
        assert "statsRecords" in hold and hold["blueskyPosts"] == [] and hold["scanRecords"] == []
        assert "laptop-theirs" not in got.text and other.did not in got.text

        zipped = alice.post("/settings/data/export", data={"csrf_token": token, "confirm": "yes", "format": "zip"})
        names = zipfile.ZipFile(io.BytesIO(zipped.content)).namelist()
        assert "export.json" in names and "appview/webhooks.json" in names and any(n.startswith("holds/") for n in names)

        wrong = alice.post("/settings/data/delete", data={"csrf_token": token, "confirm": "someone-else"})
        assert wrong.status_code == 400 and "Type your handle" in wrong.text
        v = valkey.Valkey.from_url(stack.valkey_url)
        try:
            assert _keys(v, pusher.did)  # nothing was deleted by the refused attempt
            done = alice.post("/settings/data/delete", data={"csrf_token": token, "confirm": pusher.handle})
            assert done.status_code == 200 and "Your data was deleted" in done.text, done.text[:500]
            assert "deleted 1 layer" in done.text

            # The AppView's store: nothing names Alice; Bob's keys are all still there.
            # Rate-limit counters (they protect the service) stay until they expire, a few minutes.
            left = [k for k in _keys(v, pusher.did) if not k.startswith("av:rl:")]
            assert left == [], "\n".join(left)
            assert all(0 < v.ttl(k) <= 3600 for k in _keys(v, pusher.did))
            assert any(k.startswith("av:devices:") for k in _keys(v, other.did))
            assert any(k.startswith("{wh}:user:") for k in _keys(v, other.did))
            # The hold's repo: Alice's crew and layer records gone, Bob's kept.
            layers = _hold_records(stack, "io.atcr.hold.layer")
            assert pusher.did not in {x["userDid"] for x in layers} and other.did in {x["userDid"] for x in layers}
            crew = {x["member"] for x in _hold_records(stack, "io.atcr.hold.crew")}
            assert pusher.did not in crew and other.did in crew
        finally:
            v.close()
        # Signed out: the old cookie opens nothing, the app password still works at the PDS (it is theirs).
        assert alice.get("/settings/data").status_code == 303
        assert bob.get("/settings/data").status_code == 200
        listed = httpx.get(f"{stack.url}/api/webhooks", auth=(other.handle, other.app_password), timeout=30)
        assert len(listed.json()["webhooks"]) == 1
        assert json.loads(httpx.get(f"{stack.url}/api/webhooks", auth=(pusher.handle, pusher.app_password),
                                    timeout=30).text)["webhooks"] == []


def test_a_stale_sign_in_must_sign_in_again(webhooks_stack: WebhooksStack, pusher: Pusher) -> None:
    stack = webhooks_stack
    with _browser(stack, pusher) as alice:
        v = valkey.Valkey.from_url(stack.valkey_url)
        try:  # age the session past ATCR_RECENT_AUTH_SECONDS
            for key in v.scan_iter(match="av:websess:*"):
                body = json.loads(v.get(key) or b"{}")
                if body.get("did") == pusher.did:
                    body["created"] -= 3600
                    v.set(key, json.dumps(body), keepttl=True)
        finally:
            v.close()
        page = alice.get("/settings/data")
        assert page.status_code == 200 and 'id="reauth"' in page.text and "export-form" not in page.text
        resp = alice.post("/settings/data/delete", data={"csrf_token": csrf_of(page.text), "confirm": pusher.handle})
        assert resp.status_code == 303 and resp.headers["location"].startswith("/auth/login?next=%2Fsettings%2Fdata")
