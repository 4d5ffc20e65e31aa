"""Limits and faults seen from outside: shared rate limits, Valkey dying and coming back."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from atcr.valkey import EmbeddedValkey
from tests.support.fixtures_stack import RegistryStack
from tests.support.stack import appview_env, free_port, network_env, start_service

pytestmark = pytest.mark.e2e


def test_rate_limit_shared_by_two_replicas(tmp_path: Path, registry_stack: RegistryStack) -> None:
    own = EmbeddedValkey()  # its own counters: the session stack's traffic shares this address
    net = network_env(own.start(), registry_stack.network.plc_url, registry_stack.network.pds_url)
    replicas = []
    try:
        for i in range(2):
            port = free_port()
            env = {**net, **appview_env(tmp_path / f"r{i}", port, registry_stack.hold_did), "ATCR_RATE_LIMIT_ADDRESS": "30"}
            # Both replicas share keys, as a deployment would.
            env["ATCR_AUTH_KEY_PATH"] = str(tmp_path / "token.pem")
            env["ATCR_SECRET_KEY_PATH"] = str(tmp_path / "secret.key")
            replicas.append(start_service(f"appview{i}", "appview", env, tmp_path / f"r{i}", f"http://127.0.0.1:{port}"))
        statuses = []
        for n in range(60):
            r = httpx.get(f"{replicas[n % 2].url}/v2/x.test/app/tags/list", timeout=10)
            statuses.append(r.status_code)
            if r.status_code == 429:
                assert r.json()["errors"][0]["code"] == "TOOMANYREQUESTS"
                assert int(r.headers["Retry-After"]) >= 1
            time.sleep(0.02)
        allowed = sum(1 for s in statuses if s != 429)
        # 30 per minute across both replicas, with at most one sync interval of overshoot each.
        assert 30 <= allowed <= 40, statuses
        assert statuses[-1] == 429
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
        r = httpx.get(f"{app.url}/v2/x.test/app/tags/list", headers=bearer, timeout=30)
        assert time.monotonic() - started < 10
        assert r.status_code == 503, r.text
        assert r.json()["errors"][0]["code"] == "UNAVAILABLE"
        assert r.headers["Retry-After"]
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
