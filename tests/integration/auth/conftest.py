"""Fixtures for the sign-in integration tests: the sign-in AppView served on loopback, a browser-ish client."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from tests.support.pds_oauth import approve_sign_in
from tests.support.pdsnet import Account, TestNetwork
from tests.support.services import free_port
from tests.support.signin import Harness, build_harness, serving, settings_for


@pytest.fixture
def harness_env() -> dict[str, str]:
    """Extra AppView settings for one test module (override the fixture to change them)."""
    return {}


@pytest.fixture
async def harness(  # type: ignore[no-untyped-def]
    tmp_path: Path, pds_network: TestNetwork, valkey, harness_env: dict[str, str]
) -> AsyncIterator[Harness]:
    port = free_port()
    settings = settings_for(
        tmp_path,
        base_url=f"http://127.0.0.1:{port}",
        plc_url=pds_network.plc_url,
        pds_url=pds_network.pds_url,
        **harness_env,
    )
    h = build_harness(settings, valkey)
    async with serving(h.app, port):
        yield h
    await h.http.aclose()


@pytest.fixture
async def browser(harness: Harness) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=harness.settings.base_url, trust_env=False, timeout=30) as client:
        yield client


def csrf_of(html: str) -> str:
    return html.split('name="csrf_token" value="')[1].split('"', maxsplit=1)[0]


async def start_login(client: httpx.AsyncClient, account: Account, next_path: str = "/") -> str:
    """Submit the login form; returns the authorization server URL the browser is sent to."""
    page = await client.get("/auth/login")
    resp = await client.post(
        "/auth/login", data={"handle": account.handle, "csrf_token": csrf_of(page.text), "next": next_path}
    )
    assert resp.status_code == 303, resp.text
    return resp.headers["location"]


async def login(client: httpx.AsyncClient, account: Account) -> None:
    authorize_url = await start_login(client, account)
    resp = await client.get(approve_sign_in(authorize_url, account.handle, account.password, account.did))
    assert resp.status_code == 303, resp.text
