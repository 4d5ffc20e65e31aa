"""Limits and faults seen from outside: shared rate limits (per address and per user), Valkey dying and
coming back. More faults, under load, in tests/reliability/."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from atcr.valkey import EmbeddedValkey
from tests.support.fixtures_stack import Pusher, RegistryStack
from tests.support.stack import appview_env, free_port, network_env, start_service

pytestmark = pytest.mark.e2e


def _in_one_window(phase: Callable[[], list[int]], tries: int = 3) -> list[int]:
    """Run a phase inside one 60 s rate-limit window (counters restart at its boundary).

    A phase takes a few seconds; when less than 10 s of the window remain, wait for the next
    one first. A busy machine can still make a phase cross a boundary: its statuses then say
    nothing, and it runs again from the start of a window none of its requests reached (the
    one after the boundary it crossed into), with the whole minute ahead of it.
    """
    remaining = 60 - time.time() % 60
    if remaining < 10:
        time.sleep(remaining + 0.2)
    for _ in range(tries):
        window = int(time.time() // 60)
        statuses = phase()
        if int(time.time() // 60) == window:
            return statuses
        time.sleep(60 - time.time() % 60 + 0.2)
    raise AssertionError(f"the phase crossed a rate-limit window boundary {tries} times")


def test_rate_limit_shared_by_two_replicas(tmp_path: Path, registry_stack: RegistryStack, pusher: Pusher) -> None:
    own = EmbeddedValkey()  # its own counters: the session stack's traffic shares this address
    net = network_env(own.start(), registry_stack.network.plc_url, registry_stack.network.pds_url)
    replicas = []
    base_url = ""
    try:
        for i in range(2):
            port = free_port()
            env = {
                **net, **appview_env(tmp_path / f"r{i}", port, registry_stack.hold_did),
                "ATCR_RATE_LIMIT_ADDRESS": "30", "ATCR_RATE_LIMIT_USER": "20", "ATCR_TRUST_FORWARDED_FOR": "true",
            }
            # Both replicas share keys and their public name, as a deployment behind a balancer would.
            base_url = base_url or env["ATCR_BASE_URL"]
            env["ATCR_BASE_URL"] = base_url
            env["ATCR_AUTH_KEY_PATH"] = str(tmp_path / "token.pem")
            env["ATCR_SECRET_KEY_PATH"] = str(tmp_path / "secret.key")
            replicas.append(start_service(f"appview{i}", "appview", env, tmp_path / f"r{i}", f"http://127.0.0.1:{port}"))

        def per_address() -> list[int]:
            statuses = []
            for n in range(60):
                r = httpx.get(f"{replicas[n % 2].url}/v2/x.test/app/tags/list", timeout=10)
                statuses.append(r.status_code)
                if r.status_code == 429:
                    assert r.json()["errors"][0]["code"] == "TOOMANYREQUESTS"
                    assert int(r.headers["Retry-After"]) >= 1
                time.sleep(0.02)
            return statuses

        statuses = _in_one_window(per_address)
        allowed = sum(1 for s in statuses if s != 429)
        # 30 per minute across both replicas, with at most one sync interval of overshoot each.
        assert 30 <= allowed <= 40, statuses
        assert statuses[-1] == 429

        # Per user: one signed-in user spread over 50 client addresses still gets 20 a minute.
        name = f"{pusher.handle}/app"
        r = httpx.get(f"{replicas[0].url}/auth/token", params={"scope": f"repository:{name}:pull"},
                      auth=(pusher.handle, pusher.app_password), timeout=30)
        assert r.status_code == 200, r.text
        bearer = {"Authorization": f"Bearer {r.json()['token']}"}

        def per_user() -> list[int]:
            statuses = []
            for n in range(50):
                headers = {**bearer, "X-Forwarded-For": f"10.0.{n}.1"}
                r = httpx.get(f"{replicas[n % 2].url}/v2/{name}/tags/list", headers=headers, timeout=10)
                statuses.append(r.status_code)
                if r.status_code == 429:
                    assert r.json()["errors"][0]["code"] == "TOOMANYREQUESTS"
                    assert int(r.headers["Retry-After"]) >= 1
                time.sleep(0.02)
            return statuses

        statuses = _in_one_window(per_user)
        allowed = sum(1 for s in statuses if s != 429)
        assert 20 <= allowed <= 30, statuses
        assert statuses[-1] == 429
        # Anonymous requests from one of those addresses are not held back by the user's limit.
        r = httpx.get(f"{replicas[1].url}/v2/{name}/tags/list", headers={"X-Forwarded-For": "10.0.1.1"}, timeout=10)
        assert r.status_code == 401
    finally:
        for r in replicas:
            r.stop()
        own.stop()


def test_valkey_outage_fails_fast_and_recovers(tmp_path: Path, registry_stack: RegistryStack) -> None:
    valkey = EmbeddedValkey(tmp_path / "valkey", persist=True, port=free_port())
    url = valkey.start()
    port = free_port()
    net = network_env(url, registry_stack.network.plc_url, registry_stack.network.pds_url)
    app = start_service("appview", "appview", {**net, **appview_env(tmp_path, port, registry_stack.hold_did)},
                        tmp_path, f"http://127.0.0.1:{port}")
    try:
        token = httpx.get(f"{app.url}/auth/token", params={"scope": "repository:x.test/app:pull"}, timeout=10)
        assert token.status_code == 200
        bearer = {"Authorization": f"Bearer {token.json()['token']}"}
        valkey.stop()
        started = time.monotonic()
        # What Valkey alone knows (the catalog) fails fast with 503 + Retry-After ...
        r = httpx.get(f"{app.url}/v2/_catalog", headers=bearer, timeout=30)
        assert time.monotonic() - started < 10
        assert r.status_code == 503, r.text
        assert r.json()["errors"][0]["code"] == "UNAVAILABLE"
        assert r.headers["Retry-After"]
        # ... while reads the PLC and PDSes can answer still get their answer (tests/reliability).
        r = httpx.get(f"{app.url}/v2/x.test/app/tags/list", headers=bearer, timeout=30)
        assert r.status_code == 404 and r.json()["errors"][0]["code"] == "NAME_UNKNOWN", r.text
        assert httpx.get(f"{app.url}/readyz", timeout=10).status_code == 503
        assert httpx.get(f"{app.url}/livez", timeout=10).status_code == 200
        assert "Traceback" not in app.logs()
        valkey.start()
        deadline = time.monotonic() + 20
        while httpx.get(f"{app.url}/readyz", timeout=10).status_code != 200:
            assert time.monotonic() < deadline, "did not recover"
            time.sleep(0.2)
        r = httpx.get(f"{app.url}/v2/x.test/app/tags/list", headers=bearer, timeout=30)
        assert r.status_code == 404  # back to normal: the name simply does not exist
        assert r.json()["errors"][0]["code"] == "NAME_UNKNOWN"
    finally:
        app.stop()
        valkey.stop()
