"""The doors a penetration test found open, tried again against real `atcr appview` processes
(issue #24): client addresses the client cannot choose, app passwords only, a cap on open
uploads, and JSON nested too deeply answered with 400.

Each test runs its own AppView on its own Valkey (so its counters are its own) against the
session's PDS and hold.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from atcr.valkey import EmbeddedValkey
from tests.support.fixtures_stack import Pusher, RegistryStack
from tests.support.pdsnet import create_account, create_app_password
from tests.support.stack import Service, appview_env, free_port, network_env, start_service

pytestmark = pytest.mark.e2e

LIMIT = 3
DEEP = b"[" * 5000 + b"]" * 5000


@pytest.fixture
def appview_with(tmp_path: Path, registry_stack: RegistryStack) -> Iterator[object]:
    """`appview_with(**env)` starts an AppView with these settings on a Valkey of its own."""
    started: list[tuple[Service, EmbeddedValkey]] = []

    def start(**env: str) -> Service:
        own = EmbeddedValkey()
        net = network_env(own.start(), registry_stack.network.plc_url, registry_stack.network.pds_url)
        port = free_port()
        workdir = tmp_path / f"appview{len(started)}"
        service = start_service(
            "appview", "appview", {**net, **appview_env(workdir, port, registry_stack.hold_did), **env},
            workdir, f"http://127.0.0.1:{port}",
        )
        started.append((service, own))
        return service

    yield start
    for service, own in started:
        service.stop()
        own.stop()


def token(app: Service, user: str, password: str, scope: str | None = None, **headers: str) -> httpx.Response:
    params = {"scope": scope} if scope else {}
    return httpx.get(f"{app.url}/auth/token", params=params, auth=(user, password), headers=headers, timeout=30)


def too_many(resp: httpx.Response) -> bool:
    if resp.status_code != 429:
        return False
    assert resp.json()["errors"][0]["code"] == "TOOMANYREQUESTS" and int(resp.headers["Retry-After"]) >= 1
    return True


def test_forwarded_for_from_loopback_changes_nothing_when_not_trusted(
    appview_with, registry_stack: RegistryStack  # type: ignore[no-untyped-def]
) -> None:
    """ATCR_TRUST_FORWARDED_FOR off: after the lockout, X-Forwarded-For does not open the door
    (uvicorn must not rewrite the client address on its own)."""
    app = appview_with(ATCR_RATE_LIMIT_LOGIN_FAILURES=str(LIMIT))
    victim = create_account(registry_stack.network.pds_url, "victim")
    app_password = create_app_password(victim, "docker")
    for n in range(LIMIT):
        assert token(app, victim.handle, f"wrong-{n}-aaaa-bbbb").status_code == 401
    assert too_many(token(app, victim.handle, app_password, **{"X-Forwarded-For": "10.9.9.9"}))
    assert too_many(token(app, victim.handle, app_password, **{"X-Forwarded-For": "10.9.9.9, 10.8.8.8"}))
    assert too_many(token(app, victim.handle, app_password))
    assert "Traceback" not in app.logs()


def test_rotating_left_most_forwarded_entries_still_reaches_429(
    appview_with, registry_stack: RegistryStack  # type: ignore[no-untyped-def]
) -> None:
    """Behind a trusted proxy (here: the test, on loopback) that appends the client address."""
    app = appview_with(ATCR_RATE_LIMIT_LOGIN_FAILURES=str(LIMIT), ATCR_TRUST_FORWARDED_FOR="true")
    victim = create_account(registry_stack.network.pds_url, "victim")
    app_password = create_app_password(victim, "docker")
    statuses = [
        token(app, victim.handle, f"wrong-{n}-aaaa-bbbb", **{"X-Forwarded-For": f"10.9.{n}.9, 203.0.113.9"})
        for n in range(LIMIT + 5)
    ]
    assert [r.status_code for r in statuses[:LIMIT]] == [401] * LIMIT
    assert all(too_many(r) for r in statuses[LIMIT:]), [r.status_code for r in statuses]
    # Another client behind the same proxy is not affected.
    assert token(app, victim.handle, app_password, **{"X-Forwarded-For": "203.0.113.10"}).status_code == 200


def test_the_account_password_is_no_docker_password(appview_with, pusher: Pusher) -> None:  # type: ignore[no-untyped-def]
    app = appview_with()
    resp = token(app, pusher.handle, pusher.account.password)
    assert resp.status_code == 401, resp.text
    error = resp.json()["errors"][0]
    assert error["code"] == "UNAUTHORIZED" and "app password" in error["message"]
    assert token(app, pusher.handle, pusher.app_password).status_code == 200


def test_open_uploads_are_capped_per_user(appview_with, pusher: Pusher) -> None:  # type: ignore[no-untyped-def]
    app = appview_with(ATCR_MAX_OPEN_UPLOADS="3")
    name = f"{pusher.handle}/app"
    grant = token(app, pusher.handle, pusher.app_password, f"repository:{name}:pull,push")
    assert grant.status_code == 200, grant.text
    bearer = {"Authorization": f"Bearer {grant.json()['token']}"}
    with httpx.Client(base_url=app.url, headers=bearer, timeout=30) as client:
        opened = []
        for _ in range(3):
            r = client.post(f"/v2/{name}/blobs/uploads/")
            assert r.status_code == 202, r.text
            opened.append(r.headers["location"])
        refused = client.post(f"/v2/{name}/blobs/uploads/")
        assert refused.status_code == 429, refused.text
        assert refused.json()["errors"][0]["code"] == "TOOMANYREQUESTS" and refused.headers["Retry-After"]
        assert "at most 3" in refused.json()["errors"][0]["message"]
        # Cancelling one frees its place.
        assert client.delete(opened[0]).status_code == 204
        assert client.post(f"/v2/{name}/blobs/uploads/").status_code == 202
    assert "Traceback" not in app.logs()


def test_deeply_nested_json_is_a_400(appview_with, pusher: Pusher) -> None:  # type: ignore[no-untyped-def]
    app = appview_with()
    name = f"{pusher.handle}/app"
    grant = token(app, pusher.handle, pusher.app_password, f"repository:{name}:pull,push")
    headers = {"Authorization": f"Bearer {grant.json()['token']}",
               "Content-Type": "application/vnd.oci.image.manifest.v1+json"}
    nested_field = b'{"schemaVersion": 2, "config": ' + b"{\"a\":" * 1000 + b"1" + b"}" * 1000 + b"}"
    for body in (DEEP, nested_field):
        r = httpx.put(f"{app.url}/v2/{name}/manifests/v1", content=body, headers=headers, timeout=30)
        assert r.status_code == 400, r.text
        assert r.json()["errors"][0]["code"] == "MANIFEST_INVALID"
    for body in (DEEP, b'{"client_name": ' + b"[" * 1000 + b"]" * 1000 + b"}"):
        r = httpx.post(f"{app.url}/auth/device/code", content=body, headers={"Content-Type": "application/json"},
                       timeout=30)
        assert r.status_code == 400, r.text
        assert r.json()["error"] == "invalid_request"
    logs = app.logs()
    assert "Traceback" not in logs and "RecursionError" not in logs
