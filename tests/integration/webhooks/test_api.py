"""The webhook JSON API and the registry's events, through a running AppView, a real receiver,
the test PDS (app-password Basic auth) and skopeo pushes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from standardwebhooks.webhooks import Webhook as Verifier

from tests.support.fixtures_stack import Pusher
from tests.support.ui_stack import csrf_of, push_image, sign_in
from tests.support.webhook_receiver import Received, wait_for
from tests.support.webhooks_stack import WebhooksStack

pytestmark = pytest.mark.integration


def _api(stack: WebhooksStack, pusher: Pusher | None) -> httpx.Client:
    auth = (pusher.handle, pusher.app_password) if pusher else None
    return httpx.Client(base_url=stack.url, auth=auth, timeout=30)


def _for(stack: WebhooksStack, hook_id: str, secret: str) -> list[tuple[Received, dict[str, Any]]]:
    """What the receiver got for this webhook (matched by signature), verified, in order."""
    out = []
    verifier = Verifier(secret)
    for req in stack.receiver.snapshot():
        try:
            out.append((req, verifier.verify(req.body, req.headers)))
        except Exception:  # another webhook's delivery
            continue
    return out


def test_create_list_test_deliveries_delete_with_an_app_password(webhooks_stack: WebhooksStack,
                                                                  pusher: Pusher) -> None:
    stack = webhooks_stack
    with _api(stack, pusher) as api:
        made = api.post("/api/webhooks", json={"url": stack.receiver.url, "events": ["push", "scan:first"]})
        assert made.status_code == 201, made.text
        hook = made.json()
        assert hook["secret"].startswith("whsec_") and hook["events"] == ["push", "scan:first"]
        listed = api.get("/api/webhooks").json()["webhooks"]
        assert [h["id"] for h in listed] == [hook["id"]] and "secret" not in listed[0]

        sent = api.post(f"/api/webhooks/{hook['id']}/test")
        assert sent.status_code == 202
        got = wait_for(lambda: _for(stack, hook["id"], hook["secret"]), what="the test event")
        assert [event["type"] for _, event in got] == ["test"]
        assert got[0][0].headers["webhook-id"] == sent.json()["id"]

        log = wait_for(lambda: api.get(f"/api/webhooks/{hook['id']}/deliveries").json()["deliveries"],
                       what="the delivery log")
        assert log[0]["status"] == 200 and log[0]["outcome"] == "delivered" and log[0]["type"] == "test"
        again = api.post(f"/api/webhooks/{hook['id']}/deliveries/{log[0]['id']}/redeliver")
        assert again.status_code == 202
        wait_for(lambda: len(_for(stack, hook["id"], hook["secret"])) == 2, what="the redelivery")
        ids = {req.headers["webhook-id"] for req, _ in _for(stack, hook["id"], hook["secret"])}
        assert ids == {log[0]["id"]}  # redelivered as the same message

        assert api.delete(f"/api/webhooks/{hook['id']}").status_code == 204
        gone = api.delete(f"/api/webhooks/{hook['id']}")
        assert gone.status_code == 404 and gone.json()["errors"][0]["code"] == "WEBHOOK_UNKNOWN"
        assert api.get("/api/webhooks").json()["webhooks"] == []


def test_bad_requests_get_exact_errors(webhooks_stack: WebhooksStack, pusher: Pusher) -> None:
    stack = webhooks_stack
    anon = httpx.post(f"{stack.url}/api/webhooks", json={"url": stack.receiver.url, "events": ["push"]}, timeout=30)
    assert anon.status_code == 401 and anon.json()["errors"][0]["code"] == "UNAUTHORIZED"
    assert "basic" in anon.headers["www-authenticate"].lower()
    wrong = httpx.get(f"{stack.url}/api/webhooks", auth=(pusher.handle, "wrong-pass-word"), timeout=30)
    assert wrong.status_code == 401
    with _api(stack, pusher) as api:
        for body, code in (
            ({"url": "http://10.1.2.3/hook", "events": ["push"]}, "WEBHOOK_URL_REFUSED"),
            ({"url": "http://127.0.0.1:9/hook", "events": ["push"]}, "WEBHOOK_URL_REFUSED"),
            ({"url": "http://169.254.169.254/latest/meta-data", "events": ["push"]}, "WEBHOOK_URL_REFUSED"),
            ({"url": "file:///etc/passwd", "events": ["push"]}, "WEBHOOK_URL_REFUSED"),
            ({"url": stack.receiver.url, "events": ["pushed"]}, "WEBHOOK_INVALID"),
            ({"url": stack.receiver.url, "events": []}, "WEBHOOK_INVALID"),
            ({"url": stack.receiver.url, "events": ["push"], "repository": "Bad Name"}, "WEBHOOK_INVALID"),
        ):
            resp = api.post("/api/webhooks", json=body)
            assert resp.status_code == 400, (body, resp.text)
            assert resp.json()["errors"][0]["code"] == code, (body, resp.text)
        resp = api.post("/api/webhooks", content=b"{not json", headers={"content-type": "application/json"})
        assert resp.status_code == 400 and resp.json()["errors"][0]["code"] == "WEBHOOK_INVALID"
        assert api.get("/api/webhooks").json()["webhooks"] == []  # nothing half-written
        assert api.get("/api/webhooks/whnope/deliveries").status_code == 404


@pytest.mark.e2e
def test_push_tag_and_delete_events_arrive_once_each(webhooks_stack: WebhooksStack, pusher: Pusher,
                                                       tmp_path: Path) -> None:
    stack = webhooks_stack
    with _api(stack, pusher) as api:
        hook = api.post("/api/webhooks", json={"url": stack.receiver.url, "events": ["push", "tag", "delete"],
                                               "repository": "hooked"}).json()
    first = push_image(stack, pusher, tmp_path, "hooked", "v1")  # type: ignore[arg-type]
    second = push_image(stack, pusher, tmp_path / "b", "hooked", "v1", annotations={"n": "2"})  # type: ignore[arg-type]
    push_image(stack, pusher, tmp_path / "c", "other", "v1")  # type: ignore[arg-type]  # filtered out
    token = httpx.get(f"{stack.url}/auth/token", params={
        "service": stack.host, "scope": f"repository:{pusher.handle}/hooked:pull,push,delete",
    }, auth=(pusher.handle, pusher.app_password), timeout=30).json()["token"]
    auth = {"Authorization": f"Bearer {token}"}
    base = f"{stack.url}/v2/{pusher.handle}/hooked/manifests"
    assert httpx.delete(f"{base}/v1", headers=auth, timeout=30).status_code == 202
    assert httpx.delete(f"{base}/{first}", headers=auth, timeout=30).status_code == 202

    def events() -> list[dict[str, Any]]:
        return [e for _, e in _for(stack, hook["id"], hook["secret"])]

    wait_for(lambda: len(events()) >= 6, what="six events")
    got = events()
    summary = [(e["type"], e["data"]["tag"], e["data"]["digest"]) for e in got]
    assert sorted(summary, key=str) == sorted([
        ("push", "v1", first), ("tag", "v1", first),
        ("push", "v1", second), ("tag", "v1", second),
        ("tag:deleted", "v1", second),
        ("manifest:deleted", None, first),
    ], key=str)
    moved = next(e for e in got if e["type"] == "tag" and e["data"]["digest"] == second)
    assert moved["data"]["previousDigest"] == first
    push = next(e for e in got if e["type"] == "push")
    assert push["data"]["actor"]["did"] == pusher.did and push["data"]["owner"]["handle"] == pusher.handle
    assert push["data"]["repository"] == "hooked" and push["data"]["registry"] == stack.host
    assert push["data"]["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    reqs = [r for r, _ in _for(stack, hook["id"], hook["secret"])]
    assert len({r.headers["webhook-id"] for r in reqs}) == len(reqs) == 6


@pytest.mark.slow
def test_appview_killed_with_deliveries_pending_delivers_after_restart(webhooks_stack: WebhooksStack,
                                                                        pusher: Pusher) -> None:
    stack = webhooks_stack
    with _api(stack, pusher) as api:
        hook = api.post("/api/webhooks", json={"url": stack.receiver.url, "events": ["push"]}).json()
        stack.receiver.hold()  # the AppView's worker is mid-delivery when it is killed
        try:
            ids = [api.post(f"/api/webhooks/{hook['id']}/test").json()["id"] for _ in range(2)]
            wait_for(lambda: stack.receiver.held >= 2, what="both deliveries in flight")
            stack.restart(kill=True)
        finally:
            stack.receiver.release()
    with _api(stack, pusher) as api:
        log = wait_for(
            lambda: [d for d in api.get(f"/api/webhooks/{hook['id']}/deliveries").json()["deliveries"]
                     if d["outcome"] == "delivered"],
            timeout=60, what="delivery after the restart",
        )
        assert {d["id"] for d in log} == set(ids)
    got = _for(stack, hook["id"], hook["secret"])
    assert {r.headers["webhook-id"] for r, _ in got} == set(ids)
    assert json.loads(got[-1][0].body)["type"] == "test"


def test_branding_from_settings_on_the_running_appview(webhooks_stack: WebhooksStack) -> None:
    stack = webhooks_stack
    home = httpx.get(f"{stack.url}/", timeout=30)
    assert home.status_code == 200
    html = home.text
    assert "<title>Harbor · container images on the AT Protocol</title>" in html and "<span>Harbor</span>" in html
    assert '<img src="/static/logo.svg"' in html and "--accent:#7a1fa2;--accent-fg:#ffffff" in html
    assert '<a href="https://example.com/terms" rel="noopener">Terms</a>' in html
    logo = httpx.get(f"{stack.url}/static/logo.svg", timeout=30)
    assert logo.status_code == 200 and logo.headers["content-type"].startswith("image/svg+xml")
    assert b"#7a1fa2" in logo.content


def test_the_api_accepts_a_web_session_with_its_csrf_token(webhooks_stack: WebhooksStack, pusher: Pusher) -> None:
    stack = webhooks_stack
    with httpx.Client(base_url=stack.url, timeout=60, follow_redirects=False) as browser:
        sign_in(browser, pusher.account, "/settings/webhooks")
        assert browser.get("/api/webhooks").json() == {"webhooks": []}
        body = {"url": stack.receiver.url, "events": ["tag"]}
        refused = browser.post("/api/webhooks", json=body)  # a cookie alone does not write
        assert refused.status_code == 403 and refused.json()["errors"][0]["code"] == "DENIED"
        foreign = browser.post("/api/webhooks", json=body, headers={
            "X-CSRF-Token": csrf_of(browser.get("/settings/webhooks").text), "Origin": "https://evil.example"})
        assert foreign.status_code == 403
        made = browser.post("/api/webhooks", json=body,
                            headers={"X-CSRF-Token": csrf_of(browser.get("/settings/webhooks").text)})
        assert made.status_code == 201, made.text
        assert [h["id"] for h in browser.get("/api/webhooks").json()["webhooks"]] == [made.json()["id"]]
