"""The confidential client (https client_id, private_key_jwt) against the real PDS provider.

TEST-NETWORK.md: the client_id must be https on a non-local name; the PDS process resolves
`client.atcr.internal` to 127.0.0.1 and trusts a test CA, and the AppView serves TLS with a
certificate from that CA. The PDS fetches our metadata document and JWKS for real.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path

import httpx
import pytest

from tests.support.pds_oauth import approve_sign_in
from tests.support.pdsnet import Account, TestNetwork, create_account, ensure_installed
from tests.support.services import free_port
from tests.support.signin import Harness, PinnedTransport, TestCA, build_harness, make_test_ca, serving, settings_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

HOST = "client.atcr.internal"


@pytest.fixture(scope="module")
def test_ca(tmp_path_factory: pytest.TempPathFactory) -> TestCA:
    return make_test_ca(tmp_path_factory.mktemp("ca"), HOST)


@pytest.fixture(scope="module")
def conf_network(test_ca: TestCA) -> Iterator[TestNetwork]:
    with TestNetwork(install_dir=ensure_installed(), loopback_hosts=(HOST,), extra_ca_certs=test_ca.ca_pem) as net:
        yield net


@pytest.fixture
def account(conf_network: TestNetwork) -> Account:
    return create_account(conf_network.pds_url, "carol")


@pytest.fixture
async def harness(tmp_path: Path, conf_network: TestNetwork, test_ca: TestCA, valkey) -> AsyncIterator[Harness]:  # type: ignore[no-untyped-def]
    port = free_port()
    settings = settings_for(
        tmp_path, base_url=f"https://{HOST}:{port}", plc_url=conf_network.plc_url, pds_url=conf_network.pds_url
    )
    h = build_harness(settings, valkey)
    async with serving(h.app, port, ssl_certfile=str(test_ca.cert_pem), ssl_keyfile=str(test_ca.key_pem)):
        yield h
    await h.http.aclose()


@pytest.fixture
async def browser(harness: Harness, test_ca: TestCA) -> AsyncIterator[httpx.AsyncClient]:
    ctx = ssl.create_default_context(cafile=str(test_ca.ca_pem))
    transport = PinnedTransport(HOST, httpx.AsyncHTTPTransport(verify=ctx))
    async with httpx.AsyncClient(
        base_url=harness.settings.base_url, transport=transport, trust_env=False, timeout=30
    ) as client:
        yield client


async def start_login(client: httpx.AsyncClient, account: Account) -> str:
    page = await client.get("/auth/login")
    token = page.text.split('name="csrf_token" value="')[1].split('"')[0]
    resp = await client.post("/auth/login", data={"handle": account.handle, "csrf_token": token, "next": "/"})
    assert resp.status_code == 303, resp.text
    return resp.headers["location"]


async def test_metadata_document_and_jwks(harness: Harness, browser: httpx.AsyncClient) -> None:
    meta = (await browser.get("/client-metadata.json")).json()
    base = harness.settings.base_url
    assert meta["client_id"] == f"{base}/client-metadata.json"
    assert meta["token_endpoint_auth_method"] == "private_key_jwt"
    assert meta["redirect_uris"] == [f"{base}/auth/oauth/callback"]
    assert meta["dpop_bound_access_tokens"] is True
    jwks = (await browser.get("/auth/oauth/jwks.json")).json()
    assert [k["kid"] for k in jwks["keys"]] == [harness.sign_in.client_config.current_kid]
    assert all("d" not in k for k in jwks["keys"])


async def test_confidential_login_write_and_refresh(
    harness: Harness, browser: httpx.AsyncClient, account: Account
) -> None:
    authorize_url = await start_login(browser, account)
    resp = await browser.get(approve_sign_in(authorize_url, account.handle, account.password, account.did))
    assert resp.status_code == 303, resp.text
    assert (await browser.get("/auth/session")).json()["did"] == account.did
    session = await harness.sign_in.oauth.load(account.did)
    assert session is not None
    assert session.client_id.startswith("https://")
    assert session.client_kid == harness.sign_in.client_config.current_kid

    # Pretend the access token expired: the next PDS call refreshes with a fresh client assertion.
    await harness.sign_in.oauth.save(replace(session, expires_at=0))
    client = await harness.sessions.client(account.did)
    assert client is not None
    await client.put_record(
        account.did,
        "io.atcr.sailor.profile",
        "self",
        {"defaultHold": "did:web:hold.example.com", "createdAt": "2026-01-01T00:00:00Z"},
    )
    fresh = await harness.sign_in.oauth.load(account.did)
    assert fresh is not None
    assert fresh.refresh_token != session.refresh_token
    assert fresh.access_token != session.access_token
