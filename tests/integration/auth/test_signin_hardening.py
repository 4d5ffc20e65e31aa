"""Against the real PDS: a sign-in finishes only in the browser that started it (login CSRF),
and `docker login` takes app passwords only, never the account password."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlencode

import httpx
import pytest

from tests.integration.auth.conftest import login, start_login
from tests.support.pds_oauth import approve_sign_in
from tests.support.pdsnet import Account, TestNetwork, create_account, create_app_password
from tests.support.services import free_port
from tests.support.signin import Harness, build_harness, serving, settings_for

pytestmark = pytest.mark.integration


async def test_a_callback_opened_in_another_browser_is_refused_and_the_session_there_survives(
    harness: Harness, browser: httpx.AsyncClient, pds_account: Account, pds_network: TestNetwork
) -> None:
    victim = browser
    await login(victim, pds_account)
    assert (await victim.get("/auth/session")).json()["did"] == pds_account.did

    # The attacker signs in as themselves in their own browser and stops before the callback.
    mallory = create_account(pds_network.pds_url, "mallory")
    async with httpx.AsyncClient(base_url=harness.settings.base_url, trust_env=False, timeout=30) as attacker:
        authorize_url = await start_login(attacker, mallory, next_path="/settings/devices")
    callback = approve_sign_in(authorize_url, mallory.handle, mallory.password, mallory.did)

    # The victim is made to open it: refused, and still signed in as themselves.
    refused = await victim.get(callback)
    assert refused.status_code == 400, refused.text
    assert "started in another browser" in refused.text
    assert not any(c.startswith("atcr_session=") for c in refused.headers.get_list("set-cookie"))
    me = (await victim.get("/auth/session")).json()
    assert (me["did"], me["handle"]) == (pds_account.did, pds_account.handle)
    assert [p.did for p in harness.logins] == [pds_account.did]  # the attacker was never signed in
    assert await harness.sign_in.oauth.load(mallory.did) is None  # and their code never spent

    # A client without any cookie fares no better.
    async with httpx.AsyncClient(base_url=harness.settings.base_url, trust_env=False, timeout=30) as attacker:
        authorize_url = await start_login(attacker, mallory)
    callback = approve_sign_in(authorize_url, mallory.handle, mallory.password, mallory.did)
    async with httpx.AsyncClient(trust_env=False, timeout=30) as fresh:
        refused = await fresh.get(callback)
        assert refused.status_code == 400
        assert (await fresh.get(f"{harness.settings.base_url}/auth/session")).status_code == 401


class SessionRecorder(httpx.AsyncBaseTransport):
    """Passes requests on; keeps the createSession answers (so the test can try their tokens)."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport(retries=0)
        self.sessions: list[dict[str, str]] = []
        self.deleted = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        resp = await self.inner.handle_async_request(request)
        if request.url.path.endswith("/com.atproto.server.deleteSession"):
            self.deleted += 1
        if request.url.path.endswith("/com.atproto.server.createSession") and resp.status_code == 200:
            body = await resp.aread()
            self.sessions.append(httpx.Response(200, content=body).json())
            return httpx.Response(resp.status_code, headers=resp.headers, content=body, request=request)
        return resp

    async def aclose(self) -> None:
        await self.inner.aclose()


@pytest.fixture
async def recorded(tmp_path: Path, pds_network: TestNetwork, valkey) -> AsyncIterator[tuple[Harness, SessionRecorder]]:  # type: ignore[no-untyped-def]
    from atcr.http import SafeHttpClient, SsrfPolicy

    port = free_port()
    settings = settings_for(
        tmp_path, base_url=f"http://127.0.0.1:{port}", plc_url=pds_network.plc_url, pds_url=pds_network.pds_url
    )
    recorder = SessionRecorder()
    http = SafeHttpClient(policy=SsrfPolicy(allow_private=True), timeout=15, transport=recorder)
    h = build_harness(settings, valkey, http=http)
    async with serving(h.app, port):
        yield h, recorder
    await h.http.aclose()


async def test_the_account_password_is_refused_as_a_docker_password(
    recorded: tuple[Harness, SessionRecorder], pds_account: Account, pds_network: TestNetwork
) -> None:
    harness, recorder = recorded
    url = f"{harness.settings.base_url}/auth/token?" + urlencode({"scope": f"repository:{pds_account.handle}/app:push"})
    async with httpx.AsyncClient(trust_env=False, timeout=30) as docker:
        resp = await docker.get(url, auth=(pds_account.handle, pds_account.password))
        assert resp.status_code == 401, resp.text
        error = resp.json()["errors"][0]
        assert error["code"] == "UNAUTHORIZED" and "app password" in error["message"]
        assert await harness.sessions.load(pds_account.did) is None  # nothing sealed in Valkey

        # The full-scope session the PDS opened was ended at once: its refresh token is dead.
        assert len(recorder.sessions) == 1 and recorder.deleted == 1
        full = recorder.sessions[0]
        refresh = await docker.post(
            f"{pds_network.pds_url}/xrpc/com.atproto.server.refreshSession",
            headers={"Authorization": f"Bearer {full['refreshJwt']}"},
        )
        assert refresh.status_code in (400, 401), refresh.text

        # An app password (privileged or not) works, and that session is the one kept.
        for privileged in (False, True):
            app_password = create_app_password(pds_account, f"docker-{privileged}", privileged=privileged)
            resp = await docker.get(url, auth=(pds_account.handle, app_password))
            assert resp.status_code == 200, resp.text
            stored = await harness.sessions.load(pds_account.did)
            assert stored is not None and stored["kind"] == "app_password"
